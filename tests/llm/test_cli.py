"""``prefloop llm …`` and ``prefloop propose`` end to end, against the local chat server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from prefloop.cli import app
from prefloop.llm import BACKEND_KINDS
from prefloop.store import Arm, Generation, Store
from prefloop.store.repo import create_arm, get_or_create_task
from tests.support.chat_server import ChatServer

runner = CliRunner()


@pytest.fixture
def env(chat_server: ChatServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The CLI pointed at the chat server and a fresh SQLite store with one task and arm."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("PREFLOOP_DATABASE_URL", url)
    monkeypatch.setenv("PREFLOOP_LLM_BACKEND", "openai")
    monkeypatch.setenv("PREFLOOP_LLM_BASE_URL", chat_server.url)
    monkeypatch.setenv("PREFLOOP_LLM_API_KEY", "cli-key")
    monkeypatch.setenv("PREFLOOP_LLM_MODEL", chat_server.model)
    monkeypatch.setenv("PREFLOOP_LLM_MAX_RETRIES", "0")
    with Store.open(url) as store, store.session() as s:
        task = get_or_create_task(s, "diary", input_fields=["place", "mood"])
        create_arm(s, task, "a", template="A diary about {place}, feeling {mood}.")
    return url


def test_llm_complete_prints_the_answer_as_json(env: str, chat_server: ChatServer) -> None:
    result = runner.invoke(
        app,
        ["llm", "complete", "hello world", "--system", "be kind", "--max-tokens", "9", "--json"],
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["text"] == "echo: hello world"
    assert answer["completion_tokens"] == 3
    (seen,) = chat_server.chat_requests
    assert seen.body["max_tokens"] == 9 and seen.messages[0]["content"] == "be kind"


def test_llm_generate_stores_a_generation(env: str, chat_server: ChatServer) -> None:
    result = runner.invoke(
        app,
        [
            "llm",
            "generate",
            "--task",
            "diary",
            "--arm",
            "a",
            "-i",
            "place=Seoul",
            "-i",
            "mood=calm",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["status"] == "ok" and row["output"] == "echo: A diary about Seoul, feeling calm."
    with Store.open(env) as store, store.session(readonly=True) as s:
        stored = s.get(Generation, row["id"])
        assert stored is not None and stored.output == row["output"]


def test_llm_generate_with_a_failing_llm_stores_a_failed_row_and_exits_1(
    env: str, chat_server: ChatServer
) -> None:
    chat_server.fail_next(500)
    result = runner.invoke(
        app,
        [
            "llm",
            "generate",
            "-t",
            "diary",
            "-a",
            "a",
            "--inputs-json",
            '{"place": "Seoul", "mood": "calm"}',
        ],
    )
    assert result.exit_code == 1
    assert "the LLM call failed" in result.output and "500" in result.output
    with Store.open(env) as store, store.session(readonly=True) as s:
        (stored,) = s.scalars(select(Generation)).all()
        assert stored.status == "failed" and stored.reward is None


def test_llm_generate_with_a_missing_field_names_it(env: str, chat_server: ChatServer) -> None:
    result = runner.invoke(app, ["llm", "generate", "-t", "diary", "-a", "a", "-i", "place=X"])
    assert result.exit_code != 0
    assert "mood" in str(result.exception) or "mood" in result.output
    assert chat_server.chat_requests == []


def test_propose_adds_arms_and_reports_json(env: str, chat_server: ChatServer) -> None:
    chat_server.reply_next(
        "<PROMPT>Describe a calm day in {place}; the feeling was {mood}. Be vivid.</PROMPT>"
    )
    result = runner.invoke(app, ["propose", "--task", "diary", "-n", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] and report["accepted"][0]["name"] == "proposed-1"
    with Store.open(env) as store, store.session(readonly=True) as s:
        arm = s.scalar(select(Arm).where(Arm.name == "proposed-1"))
        assert arm is not None and arm.created_by == "proposer"


def test_propose_without_usable_templates_exits_1_and_says_why(
    env: str, chat_server: ChatServer
) -> None:
    result = runner.invoke(app, ["propose", "--task", "diary", "-n", "1", "--max-calls", "2"])
    assert result.exit_code == 1
    assert "no usable template" in result.output
    assert len(chat_server.chat_requests) == 2


# What `prefloop --help` must not pay for: model code, ML libraries, the HTTP client, the store.
HEAVY_AT_START_UP = (
    "prefloop.llm",
    "prefloop.propose",
    "prefloop.bandit",
    "prefloop.demo",
    "torch",
    "transformers",
    "sklearn",
    "scipy",
    "matplotlib",
    "openai",
    "pydantic_settings",
    "sqlalchemy",
    "alembic",
)


def test_the_cli_loads_no_model_code_at_start_up() -> None:
    code = (
        "import sys, prefloop.cli; "
        f"print(sorted(m for m in {HEAVY_AT_START_UP!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert loaded.stdout.strip() == "[]", loaded.stdout


def test_the_backend_option_names_every_backend() -> None:
    for command in (["llm", "complete"], ["llm", "generate"], ["propose"], ["demo"]):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        for kind in BACKEND_KINDS:
            assert f"'{kind}'" in result.stdout or f" {kind} " in result.stdout, (command, kind)
