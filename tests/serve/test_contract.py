"""The service keeps its OpenAPI contract: schemathesis fuzzes a live ``prefloop serve``.

Every operation gets schema-driven requests (valid and invalid), every check schemathesis has
(no 5xx, documented status codes, headers and content types, answers that match their schema,
valid bodies accepted, invalid ones refused, the ``Allow`` header, auth really required …),
then the stateful phase follows the document's OpenAPI links from a new task to its arms,
decisions, generations and feedback. Fixed seed, bounded examples: about 30-50 s a database.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from prefloop.store import Arm, Feedback, Generation, Store, Task
from tests.support.chat_server import ChatServer
from tests.support.live_server import live_server

pytest.importorskip(
    "schemathesis", reason="schemathesis is a dev dependency: pip install -e .[dev]"
)

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
SEED = 17
EXAMPLES_PER_OPERATION = 20
CONFIG = """
[phases.stateful]
max-steps = 20

[phases.stateful.inference]
# only the document's own links: the inferred ones guess that a task's id fills {task}
algorithms = []

[phases.stateful.generation]
max-examples = 30
"""


def test_the_live_service_keeps_its_openapi_contract(
    store_url: str, tmp_path: Path, chat_server: ChatServer
) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    settings = {
        "PREFLOOP_LLM_BASE_URL": chat_server.url,
        "PREFLOOP_LLM_API_KEY": "test",
        "PREFLOOP_LLM_MODEL": chat_server.model,
        # an edit's final text may be 100,000 characters: let the schema's largest bodies in
        "PREFLOOP_MAX_BODY_BYTES": str(2**20),
    }
    with live_server(store_url, tmp_path / "server.log", env=settings) as server:
        run = subprocess.run(
            [
                SCHEMATHESIS,
                "--config-file",
                str(config),
                "--no-color",
                "run",
                f"{server.url}/openapi.json",
                "--header",
                f"Authorization: Bearer {server.admin_key}",
                "--checks",
                "all",
                "--seed",
                str(SEED),
                "--max-examples",
                str(EXAMPLES_PER_OPERATION),
                "--workers",
                "1",
                "--generation-database",
                "none",
                "--request-timeout",
                "30",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,  # schemathesis keeps a .schemathesis cache in its working folder
        )
    report = run.stdout[-30_000:] + run.stderr[-5_000:]
    assert run.returncode == 0, f"schemathesis found failures:\n{report}"
    assert "Stateful" in run.stdout and "Coverage" in run.stdout and "Fuzzing" in run.stdout
    # the stateful phase got past 404s: real tasks, arms, generations and feedback exist
    with Store.open(store_url) as store, store.session(readonly=True) as session:
        counts = {
            table.__tablename__: session.scalar(select(func.count()).select_from(table)) or 0
            for table in (Task, Arm, Generation, Feedback)
        }
        produced = session.scalar(
            select(func.count()).select_from(Generation).where(Generation.status == "ok")
        )
    assert all(counts.values()) and produced, f"the fuzzer reached too little: {counts}"
