"""The CLI (``prefloop keys``, ``prefloop serve``) and the service on a real uvicorn over TCP."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from prefloop.cli import app
from prefloop.store import Store
from prefloop.store.models import ApiKey

PREFLOOP = str(Path(sys.executable).with_name("prefloop"))
BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_service.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_service", BENCH)
    assert spec is not None and spec.loader is not None
    if spec.name in sys.modules:
        return sys.modules[spec.name]
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_keys_create_prints_the_key_once_and_stores_its_hash(sqlite_store: Store) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "keys",
            "create",
            "--role",
            "labeler",
            "--name",
            "ana",
            "--db",
            sqlite_store.url,
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    with sqlite_store.session(readonly=True) as session:
        row = session.scalars(select(ApiKey)).one()
    assert (row.role, row.name, row.prefix) == ("labeler", "ana", created["prefix"])
    assert row.key_hash == hashlib.sha256(created["key"].encode()).hexdigest()
    listed = runner.invoke(app, ["keys", "list", "--db", sqlite_store.url, "--json"])
    assert created["key"] not in listed.stdout and created["prefix"] in listed.stdout
    wrong = runner.invoke(
        app, ["keys", "create", "--role", "wizard", "--name", "x", "--db", sqlite_store.url]
    )
    assert wrong.exit_code == 2 and "wizard" in wrong.output


def test_serve_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    done = subprocess.run(
        [PREFLOOP, "serve", "--db", url, "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert "no API key is configured" in done.stderr and "--insecure-no-auth" in done.stderr


@pytest.fixture
def served(store_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``prefloop serve`` in a subprocess on a free port; yields (base URL, admin key)."""
    bench = _bench()
    command = ["keys", "create", "--role", "admin", "--name", "ops", "--db", store_url, "--json"]
    made = subprocess.run(
        [PREFLOOP, *command], capture_output=True, text=True, timeout=120, check=True
    )
    key = json.loads(made.stdout)["key"]
    port = bench.free_port()
    log = tmp_path / "server.log"
    process = bench.start_server("prefloop", port, url=store_url, workers=1, log=log)
    try:
        yield f"http://127.0.0.1:{port}", key
    finally:
        bench.stop(process)


def test_serve_answers_503_beyond_its_concurrency_limit(store_url: str, tmp_path: Path) -> None:
    """``--limit-concurrency``: past the limit a request is refused at once (503), not queued;
    once connections close the server answers again."""
    import socket

    bench = _bench()
    port = bench.free_port()
    process = bench.start_server(
        "prefloop", port, url=store_url, workers=1, log=tmp_path / "server.log",
        extra=["--insecure-no-auth", "--limit-concurrency", "2"],
    )  # fmt: skip
    try:
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        time.sleep(0.3)  # the server has accepted them
        refused = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        for connection in held:
            connection.close()
        time.sleep(0.3)
        answered = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
    finally:
        bench.stop(process)
    assert refused.status_code == 503
    assert answered.status_code == 200


def test_the_loop_over_tcp_on_uvicorn(served: tuple[str, str]) -> None:
    base, key = served
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
        assert client.get("/healthz").json()["status"] == "ok"
        assert (
            client.post("/v1/tasks", json={"name": "t", "input_fields": ["x"]}).status_code == 201
        )
        for name in ("a", "b"):
            arm = client.post("/v1/tasks/t/arms", json={"name": name, "template": name + " {x}"})
            assert arm.status_code == 201
        chosen = client.post("/v1/select", json={"task": "t", "inputs": {"x": "1"}}).json()
        generation = chosen["generation_id"]
        done = client.post(f"/v1/generations/{generation}/output", json={"output": "o"})
        assert done.status_code == 200
        event = {"task": "t", "event": {"kind": "thumbs", "generation_id": generation, "up": True}}
        first = client.post("/v1/feedback", json=event, headers={"Idempotency-Key": "e1"})
        again = client.post("/v1/feedback", json=event, headers={"Idempotency-Key": "e1"})
        assert (first.status_code, again.status_code) == (201, 200)
        stats = client.get("/v1/stats", params={"task": "t"}).json()
        assert sum(arm["count"] for arm in stats["arms"]) == 1
        assert "prefloop_feedback_events_total" in client.get("/metrics").text
        too_big = client.post(
            "/v1/select", content=b"x" * 70_000, headers={"Content-Type": "application/json"}
        )
        assert too_big.status_code == 413


@pytest.mark.slow
def test_kill_9_under_load_loses_no_acknowledged_feedback(store_url: str, tmp_path: Path) -> None:
    """SIGKILL the server under load, restart it: every acknowledged event is stored exactly
    once (resent unacknowledged ones included) and the bandit state equals its recomputation."""
    result = _bench().crash_run(store_url, clients=8, seconds=4.0, workers=1, log=tmp_path / "log")
    integrity = result["integrity"]
    assert result["acked_before_kill"] > 0 and result["acked_after_restart"] > 0
    assert integrity["exactly_once"], integrity
    assert integrity["policy_states_checked"] >= 1
    assert integrity["policy_states_differing_from_recomputation"] == {}
    assert set(result["load"]["statuses"]) <= {"200", "201"}, result["load"]["statuses"]


def test_concurrent_first_selects_and_duplicate_feedback(served: tuple[str, str]) -> None:
    """Racing requests: the first decisions of a task (its state row does not exist yet) and one
    idempotency key sent by 12 clients at once — no error, one stored event."""
    base, key = served
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        client.post("/v1/tasks", json={"name": "t", "input_fields": ["x"]}).raise_for_status()
        for name in ("a", "b", "c"):
            client.post("/v1/tasks/t/arms", json={"name": name, "template": name + " {x}"})

    def post(
        path: str, body: dict[str, object], extra: dict[str, str] | None = None
    ) -> httpx.Response:
        with httpx.Client(base_url=base, headers={**headers, **(extra or {})}, timeout=60) as c:
            return c.post(path, json=body)

    with ThreadPoolExecutor(max_workers=12) as pool:
        selects = list(
            pool.map(lambda _: post("/v1/select", {"task": "t", "inputs": {"x": "1"}}), range(12))
        )
        assert [r.status_code for r in selects] == [200] * 12
        generation = selects[0].json()["generation_id"]
        assert post(f"/v1/generations/{generation}/output", {"output": "o"}).status_code == 200
        event = {"task": "t", "event": {"kind": "rating", "generation_id": generation, "value": 1}}
        answers = list(
            pool.map(lambda _: post("/v1/feedback", event, {"Idempotency-Key": "same"}), range(12))
        )
    assert sorted(r.status_code for r in answers) == [200] * 11 + [201]
    assert len({r.json()["feedback_id"] for r in answers}) == 1
    with httpx.Client(base_url=base, headers=headers) as client:
        stats = client.get("/v1/stats", params={"task": "t"}).json()
    assert stats["decisions"] == 12 and stats["feedbacks"] == 1
