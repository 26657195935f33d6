"""Faults the service survives: a database that turns read-only, fills its disk or restarts
under load; an LLM backend that stalls; a key revoked while in use; /metrics behind a key.

Each test prints the figure docs/experiments/service-performance.md records (run with ``-s`` to
see them).
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, event, func, select, text

from prefloop.serve import revoke_api_key
from prefloop.serve.auth import create_api_key
from prefloop.store import Feedback, Store
from tests.conftest import fresh_postgres_url
from tests.serve.conftest import Api, AppFactory, row_counts
from tests.support import postgres
from tests.support.chat_server import ChatServer
from tests.support.live_server import live_server


def _writes_refused(api: Api, kind: str) -> None:
    before = row_counts(api.store)
    answer = api.call(
        "POST", "/v1/select", "client", json={"task": "diary", "inputs": {"place": "Jeju",
                                                                            "company": "Mina"}}
    )  # fmt: skip
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == kind and "nothing of this request was stored" in answer.text
    assert int(answer.headers["Retry-After"]) > 0
    created = api.call("POST", "/v1/tasks", json={"name": "another"})
    assert created.status_code == 503 and created.json()["error"] == kind
    for path in ("/v1/tasks", "/v1/tasks/diary/arms", "/v1/stats?task=diary"):  # reads work
        assert api.call("GET", path, "labeler").status_code == 200
    assert row_counts(api.store) == before


@pytest.fixture
def sqlite_api(sqlite_store: Store) -> Iterator[Api]:
    from fastapi.testclient import TestClient

    from prefloop.serve import ROLES, ServeSettings, create_app

    with sqlite_store.session() as session:
        keys = {role: create_api_key(session, name=f"{role}-k", role=role).key for role in ROLES}
    config = ServeSettings(database_url=sqlite_store.url, key_cache_seconds=0)
    with TestClient(create_app(config, store=sqlite_store)) as client:
        yield Api(client=client, store=sqlite_store, keys=keys)


def test_a_full_sqlite_disk_answers_writes_503_and_reads_keep_working(sqlite_api: Api) -> None:
    api = sqlite_api
    api.seed()
    engine = api.store.engine

    def full(dbapi_connection: Any, _record: Any) -> None:
        # SQLite's own limit: the file may not grow by a page (SQLITE_FULL, "disk is full")
        pages = dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

    event.listen(engine, "connect", full)
    engine.dispose()
    try:
        _writes_refused_until_the_table_grows(api)
    finally:
        event.remove(engine, "connect", full)
        engine.dispose()
    assert api.select()["generation_id"], "writes work again once there is room"


def _writes_refused_until_the_table_grows(api: Api) -> None:
    # a few rows may still fit in the pages' free space: write until the file must grow
    before = row_counts(api.store)
    refused = None
    for i in range(200):
        answer = api.call("POST", "/v1/tasks", json={"name": f"t{i}", "description": "x" * 2000})
        if answer.status_code != 201:
            refused = answer
            break
    assert refused is not None and refused.status_code == 503, refused and refused.text
    assert refused.json()["error"] == "disk_full" and "disk is full" in refused.text
    assert int(refused.headers["Retry-After"]) > 0
    for path in ("/v1/tasks", "/v1/tasks/diary/arms", "/v1/stats?task=diary"):
        assert api.call("GET", path, "labeler").status_code == 200
    assert row_counts(api.store)["tasks"] >= before["tasks"]


@pytest.mark.postgres
def test_a_read_only_postgres_answers_writes_503_and_reads_keep_working(
    postgres_admin_url: str, make_api: AppFactory, request: pytest.FixtureRequest
) -> None:
    if "postgres" not in request.node.callspec.id:
        pytest.skip("the PostgreSQL variant only")
    api = make_api()
    api.seed()
    database = api.store.engine.url.database
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on'))
    api.store.engine.dispose()
    try:
        _writes_refused(api, "read_only")
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(f'ALTER DATABASE "{database}" SET default_transaction_read_only = off')
            )
        admin.dispose()
        api.store.engine.dispose()
    assert api.select()["generation_id"], "writes work again once it is writable"


def test_metrics_can_require_a_key(make_api: AppFactory) -> None:
    assert make_api().client.get("/metrics").status_code == 200  # the default: open
    api = make_api(metrics_require_key=True)
    assert api.client.get("/metrics").status_code == 401
    assert api.call("GET", "/metrics", "labeler").status_code == 200
    assert api.call("GET", "/metrics", "client").status_code == 403  # a client may not read
    assert "prefloop_http_requests_total" in api.call("GET", "/metrics", "admin").text


def test_a_revoked_key_stops_working_within_the_key_cache_time(make_api: AppFactory) -> None:
    cache_s = 0.5
    api = make_api(key_cache_seconds=cache_s)
    with api.store.session() as session:
        created = create_api_key(session, name="leaving", role="labeler")
    headers = {"Authorization": f"Bearer {created.key}"}
    assert api.client.get("/v1/tasks", headers=headers).status_code == 200  # remembered now
    with api.store.session() as session:
        revoke_api_key(session, created.prefix)
    revoked_at = time.monotonic()
    while api.client.get("/v1/tasks", headers=headers).status_code == 200:
        assert time.monotonic() - revoked_at < cache_s + 0.5, "still accepted"
        time.sleep(0.02)
    took = time.monotonic() - revoked_at
    print(f"\nrevoked key refused after {took:.2f} s (key cache {cache_s} s)")
    assert took <= cache_s + 0.25


def test_a_stalled_llm_times_out_while_select_and_feedback_keep_their_latency(
    tmp_path: Path, chat_server: ChatServer
) -> None:
    timeout_s = 1.0
    settings = {
        "PREFLOOP_LLM_BASE_URL": chat_server.url,
        "PREFLOOP_LLM_API_KEY": "test",
        "PREFLOOP_LLM_MODEL": chat_server.model,
        "PREFLOOP_LLM_TIMEOUT": str(timeout_s),
        "PREFLOOP_LLM_MAX_RETRIES": "0",
    }
    url = f"sqlite:///{tmp_path / 'stall.db'}"
    with live_server(url, tmp_path / "server.log", env=settings) as server:
        auth = {"Authorization": f"Bearer {server.admin_key}"}
        with httpx.Client(base_url=server.url, headers=auth, timeout=30) as client:
            _seed(client)
            baseline = [_select_and_rate(client) for _ in range(20)]
            chat_server.stall_next(5.0, times=8)
            generate_times: list[tuple[int, float]] = []

            def generate() -> None:
                started = time.monotonic()
                answer = client.post("/v1/generate", json=_BODY)
                generate_times.append((answer.status_code, time.monotonic() - started))

            stalled = [threading.Thread(target=generate) for _ in range(8)]
            for thread in stalled:
                thread.start()
            time.sleep(0.2)  # the eight are waiting for the LLM now
            during = [_select_and_rate(client) for _ in range(20)]
            for thread in stalled:
                thread.join()
    worst_before, worst_during = max(baseline), max(during)
    slowest_generate = max(t for _status, t in generate_times)
    print(
        f"\nstalled LLM: /v1/generate answered {sorted(Counter(s for s, _ in generate_times))} "
        f"after at most {slowest_generate:.2f} s (timeout {timeout_s} s); select + output + "
        f"feedback worst {worst_before * 1000:.0f} ms before, {worst_during * 1000:.0f} ms "
        "during the stall"
    )
    assert [s for s, _ in generate_times] == [502] * 8
    assert slowest_generate < timeout_s + 2.0
    assert worst_during < max(0.5, 3 * worst_before), "the loop's routes were held up"


_BODY = {"task": "diary", "inputs": {"place": "Jeju"}}


def _seed(client: httpx.Client) -> None:
    assert client.post("/v1/tasks", json={"name": "diary", "input_fields": ["place"]}).is_success
    for name in ("a", "b"):
        arm = {"name": name, "template": f"{name}: a diary about {{place}}."}
        assert client.post("/v1/tasks/diary/arms", json=arm).is_success


def _select_and_rate(client: httpx.Client) -> float:
    started = time.monotonic()
    chosen = client.post("/v1/select", json=_BODY).json()
    generation = chosen["generation_id"]
    done = client.post(f"/v1/generations/{generation}/output", json={"output": "A day."})
    assert done.status_code == 200
    event = {"kind": "rating", "generation_id": generation, "value": 1}
    rated = client.post("/v1/feedback", json={"task": "diary", "event": event})
    assert rated.status_code == 201
    return time.monotonic() - started


@pytest.mark.postgres
def test_a_postgres_restart_under_load_is_503_then_recovers_with_each_event_once(
    tmp_path: Path,
) -> None:
    if postgres.find_bindir() is None:
        pytest.skip("PostgreSQL not installed")
    cluster = postgres.start_cluster()  # its own: this test restarts it
    try:
        _restart_under_load(cluster, tmp_path)
    finally:
        cluster.stop()


def _restart_under_load(cluster: postgres.Cluster, tmp_path: Path) -> None:
    url = fresh_postgres_url(cluster.admin_url)
    clients, stop = 8, threading.Event()
    acknowledged: list[str] = []
    statuses: Counter[int] = Counter()
    retry_after: set[str] = set()
    failures: list[str] = []
    last_transport_error = [""]
    outputs_in_doubt = [0]
    lock = threading.Lock()
    with live_server(url, tmp_path / "server.log") as server:
        auth = {"Authorization": f"Bearer {server.admin_key}"}
        with httpx.Client(base_url=server.url, headers=auth, timeout=30) as client:
            _seed(client)

        def send(client: httpx.Client, path: str, body: dict[str, Any], key: str | None) -> Any:
            """POST until answered 2xx; a 503 is retried after its Retry-After (capped)."""
            headers = {"Idempotency-Key": key} if key else {}
            deadline = time.monotonic() + 60
            sent = 0
            while True:
                resent = sent > 0
                sent += 1
                if time.monotonic() > deadline or failures:
                    raise TimeoutError(f"{path} got no answer but 503s for 60 s")
                try:
                    answer = client.post(path, json=body, headers=headers)
                except httpx.TransportError as exc:
                    with lock:
                        statuses[0] += 1
                    last_transport_error[0] = repr(exc)
                    time.sleep(0.05)
                    continue
                with lock:
                    statuses[answer.status_code] += 1
                    if answer.status_code == 503:
                        retry_after.add(answer.headers.get("Retry-After", "missing"))
                if answer.status_code == 503:
                    time.sleep(min(float(answer.headers.get("Retry-After", 1)), 0.2))
                    continue
                if answer.status_code == 409 and "already ok" in answer.text and resent:
                    # the attempt that met the outage had been stored before its connection
                    # broke: an output is recorded once, and this says so
                    with lock:
                        outputs_in_doubt[0] += 1
                    return answer.json()
                if not answer.is_success:
                    failures.append(f"{path}: {answer.status_code} {answer.text[:300]}")
                    raise AssertionError(failures[-1])
                return answer.json()

        def user(n: int) -> None:
            try:
                _use(n)
            except Exception as exc:  # reported below
                failures.append(repr(exc))

        def _use(n: int) -> None:
            with httpx.Client(base_url=server.url, headers=auth, timeout=30) as client:
                while not stop.is_set():
                    chosen = send(client, "/v1/select", _BODY, None)
                    generation = chosen["generation_id"]
                    send(client, f"/v1/generations/{generation}/output", {"output": "x"}, None)
                    key = f"u{n}-{uuid.uuid4().hex[:8]}"
                    event = {"kind": "rating", "generation_id": generation, "value": 1}
                    send(client, "/v1/feedback", {"task": "diary", "event": event}, key)
                    with lock:
                        acknowledged.append(key)

        threads = [threading.Thread(target=user, args=(n,)) for n in range(clients)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        before = len(acknowledged)
        down = time.monotonic()
        subprocess.run(
            [
                *cluster.runas,
                str(cluster.bindir / "pg_ctl"),
                "-D",
                str(cluster.datadir),
                "-l",
                str(cluster.datadir.parent / "log"),
                "-m",
                "fast",
                "-w",
                "restart",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )  # fmt: skip  (-l: the new server must not hold our pipes open)
        restarted_s = time.monotonic() - down
        time.sleep(2.0)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(Feedback.idempotency_key, func.count()).group_by(Feedback.idempotency_key)
        ).all()
    engine.dispose()
    per_key = {key: count for key, count in rows}
    assert not failures, f"{failures[:3]}; answers {statuses}; {last_transport_error[0]}"
    print(
        f"\nPostgreSQL restart ({restarted_s:.1f} s) under {clients} clients: "
        f"{len(acknowledged)} feedback events acknowledged ({before} before the restart), "
        f"answers {dict(sorted(statuses.items()))}, Retry-After {sorted(retry_after)}; "
        f"{outputs_in_doubt[0]} resent outputs had been stored (409 already ok)"
    )
    assert statuses[503] > 0, "the outage was seen"
    assert "missing" not in retry_after
    assert not [s for s in statuses if s >= 500 and s != 503], "only 503s during the outage"
    assert len(acknowledged) > before, "the server recovered by itself"
    assert all(per_key.get(key) == 1 for key in acknowledged), "each acknowledged event once"
