"""Load and crash benchmark of ``prefloop serve`` against a bare FastAPI endpoint.

    .venv/bin/python bench/bench_service.py [--quick] [--db sqlite|postgres|both] [--crash]

For each database it starts the real service (``prefloop serve``, uvicorn in a subprocess on
127.0.0.1) and, with the same uvicorn settings, a trivial FastAPI app (one POST endpoint that
validates a small JSON body and answers JSON). Then 64 concurrent clients (asyncio, keep-alive
connections) run the loop a client app runs: ``POST /v1/select`` → ``POST
/v1/generations/{id}/output`` → ``POST /v1/feedback`` (a rating with an ``Idempotency-Key``);
against the bare app the same three POSTs go to its one endpoint.

Phases (each ``--duration`` seconds, 30 by default, 3 with ``--quick``):

* ``saturation``: closed loop, no pause — the most requests per second each server answers;
  the service's figure is compared with the bare endpoint's (target >= 50 %).
* ``paced``: the 64 clients together offer half of the service's saturation rate — the latency
  a service sees when it is not overloaded (target p99 <= 25 ms). Under saturation latency is
  queueing: 64 clients / throughput (Little's law), whatever the code does.

Afterwards every acknowledged feedback event must be in the store exactly once and no other
event of the run may be there; the bandit state must equal its recomputation from the log.

``--crash`` adds a run per database in which the server is killed with SIGKILL half way through
the load and started again; clients resend what was not acknowledged with the same idempotency
key. The same checks must hold after the restart.

Prints one JSON object. The clients are a hand-written HTTP/1.1 client on asyncio streams
(httpx costs several times the CPU per request, and the load generator shares the machine's
cores with the server).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # for tests.support.postgres (the throwaway cluster)
    sys.path.insert(0, str(REPO))

from pydantic import BaseModel  # noqa: E402

from prefloop.serve import create_api_key, ops  # noqa: E402
from prefloop.store import Feedback, PolicyState, Store  # noqa: E402

TASK = "bench"
ARM_QUALITY = {"terse": 0.3, "plain": 0.5, "vivid": 0.7}  # P(rating = +1); else -1
TEMPLATES = {
    "terse": "One line of diary about {topic}.",
    "plain": "Write a short diary entry about {topic}.",
    "vivid": "Write a vivid diary entry about {topic}, with colours and sounds.",
}
PRE = "  "


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- a small keep-alive HTTP/1.1 client --------------------------------------------------------
class Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def post(
        self, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, Any]:
        if self.writer is None:
            await self._open()
        assert self.reader is not None and self.writer is not None
        payload = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + "\r\n"
        )
        try:
            self.writer.write(head.encode() + payload)
            status_line = await self.reader.readline()
            if not status_line:
                raise ConnectionResetError("the server closed the connection")
            status = int(status_line.split()[1])
            length = 0
            while True:
                line = await self.reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            raw = await self.reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            self.close()
            raise ConnectionError("request failed") from None
        return status, json.loads(raw) if raw else None


# -- what the clients record ---------------------------------------------------------------------
@dataclass
class Record:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    connection_errors: int = 0
    iterations: int = 0
    acked: set[str] = field(default_factory=set)  # idempotency keys answered 200/201
    unacked: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> feedback body
    lateness: list[float] = field(default_factory=list)

    def add(self, kind: str, status: int, seconds: float) -> None:
        self.latencies.setdefault(kind, []).append(seconds)
        self.statuses[status] = self.statuses.get(status, 0) + 1


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def summary(record: Record, seconds: float) -> dict[str, Any]:
    every = [x for values in record.latencies.values() for x in values]
    requests = len(every)

    def ms(values: list[float], q: float) -> float | None:
        value = percentile(values, q)
        return None if value is None else round(value * 1000, 2)

    return {
        "seconds": round(seconds, 2),
        "requests": requests,
        "requests_per_s": round(requests / seconds, 1),
        "iterations_per_s": round(record.iterations / seconds, 1),
        "latency_ms": {
            "p50": ms(every, 50),
            "p90": ms(every, 90),
            "p99": ms(every, 99),
            "max": ms(every, 100),
            "mean": round(statistics.fmean(every) * 1000, 2) if every else None,
        },
        "p99_ms_by_request": {kind: ms(values, 99) for kind, values in record.latencies.items()},
        "statuses": {str(k): v for k, v in sorted(record.statuses.items())},
        "server_errors_5xx": sum(v for k, v in record.statuses.items() if k >= 500),
        "connection_errors": record.connection_errors,
    }


# -- the client loops --------------------------------------------------------------------------
async def timed(
    record: Record,
    conn: Connection,
    kind: str,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
) -> tuple[int, Any]:
    started = time.perf_counter()
    status, answer = await conn.post(path, body, headers)
    record.add(kind, status, time.perf_counter() - started)
    return status, answer


async def prefloop_iteration(
    conn: Connection, record: Record, rng: random.Random, client: int, key: str
) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    status, chosen = await timed(
        record,
        conn,
        "select",
        "/v1/select",
        {"task": TASK, "inputs": {"topic": f"day {rng.randrange(1000)}"}, "end_user": f"u{client}"},
        auth,
    )
    if status != 200:
        return
    generation = chosen["generation_id"]
    status, _ = await timed(
        record,
        conn,
        "output",
        f"/v1/generations/{generation}/output",
        {"output": f"Dear diary, {rng.random():.6f}", "model": "bench-client-llm"},
        auth,
    )
    if status != 200:
        return
    value = 1.0 if rng.random() < ARM_QUALITY[chosen["arm"]["name"]] else -1.0
    idem = uuid.uuid4().hex
    body = {"task": TASK, "event": {"kind": "rating", "generation_id": generation, "value": value}}
    record.unacked[idem] = body
    status, _ = await timed(
        record, conn, "feedback", "/v1/feedback", body, {**auth, "Idempotency-Key": idem}
    )
    if status in (200, 201):
        record.acked.add(idem)
        del record.unacked[idem]
    record.iterations += 1


async def bare_iteration(
    conn: Connection, record: Record, rng: random.Random, client: int, path: str
) -> None:
    for kind in ("select", "output", "feedback"):
        body = {"task": TASK, "inputs": {"topic": f"day {rng.randrange(1000)}"}, "n": client}
        await timed(record, conn, kind, path, body, {"Authorization": "Bearer x"})
    record.iterations += 1


async def run_load(
    port: int,
    *,
    target: str,
    key: str,
    clients: int,
    seconds: float,
    rate: float | None = None,
    record: Record | None = None,
    seed: int = 0,
    stop_event: asyncio.Event | None = None,
) -> Record:
    """``clients`` loops for ``seconds`` (or until ``stop_event``); closed loop, or ``rate``
    iterations/s in total."""
    record = record or Record()
    deadline = time.perf_counter() + seconds

    def going() -> bool:
        if stop_event is not None:
            return not stop_event.is_set()
        return time.perf_counter() < deadline

    async def client_loop(client: int) -> None:
        rng = random.Random(seed * 1000 + client)
        conn = Connection(port)
        interval = clients / rate if rate else 0.0
        next_start = time.perf_counter() + rng.random() * interval
        while going():
            if interval:
                delay = next_start - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    record.lateness.append(-delay)
                next_start += interval
            try:
                if target == "prefloop":
                    await prefloop_iteration(conn, record, rng, client, key)
                else:
                    await bare_iteration(conn, record, rng, client, target)
            except ConnectionError:
                record.connection_errors += 1
                await asyncio.sleep(0.05)
        conn.close()

    await asyncio.gather(*(client_loop(c) for c in range(clients)))
    return record


async def resend_unacked(port: int, key: str, record: Record) -> dict[str, int]:
    """After a crash: send each unacknowledged event again with its idempotency key."""
    conn = Connection(port)
    outcome = {"resent": 0, "stored_now": 0, "already_stored": 0}
    for idem, body in list(record.unacked.items()):
        status, answer = await conn.post(
            "/v1/feedback", body, {"Authorization": f"Bearer {key}", "Idempotency-Key": idem}
        )
        outcome["resent"] += 1
        if status in (200, 201):
            outcome["already_stored" if answer["duplicate"] else "stored_now"] += 1
            record.acked.add(idem)
            del record.unacked[idem]
    conn.close()
    return outcome


class BareBody(BaseModel):
    task: str
    inputs: dict[str, Any] = {}
    n: int = 0


# -- servers -----------------------------------------------------------------------------------
def bare_app_factory() -> Any:
    """The baseline: a trivial FastAPI app with one validated JSON endpoint."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/echo")
    def echo(body: BareBody) -> dict[str, Any]:  # a thread-pool route, as prefloop's are
        return {"task": body.task, "n": body.n, "ok": True}

    @app.post("/echo-async")
    async def echo_async(body: BareBody) -> dict[str, Any]:  # on the event loop
        return {"task": body.task, "n": body.n, "ok": True}

    return app


def wait_healthy(
    port: int, process: subprocess.Popen[bytes], path: str, timeout: float = 60
) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} while starting")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the server on port {port} did not become healthy in {timeout} s")


@contextlib.contextmanager
def server(
    kind: str, port: int, *, url: str, workers: int, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    process = start_server(kind, port, url=url, workers=workers, log=log)
    try:
        yield process
    finally:
        stop(process)


def start_server(
    kind: str, port: int, *, url: str, workers: int, log: Path, extra: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """A server in a subprocess, once it answers; ``extra`` goes to ``prefloop serve``."""
    env = {**os.environ, "PREFLOOP_DATABASE_URL": url}
    common = ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    if kind == "prefloop":
        command = [
            str(Path(sys.executable).with_name("prefloop")),
            "serve",
            *common,
            "--no-access-log",
            *extra,
        ]
        health = "/healthz"
    else:
        command = [
            sys.executable, "-m", "uvicorn", "bench_service:bare_app_factory", "--factory",
            "--app-dir", str(Path(__file__).parent), "--no-access-log", "--log-level", "warning",
            *common,
        ]  # fmt: skip
        health = "/docs"
    with log.open("ab") as sink:
        process = subprocess.Popen(
            command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    wait_healthy(port, process, health)
    return process


def stop(process: subprocess.Popen[bytes], *, hard: bool = False) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL if hard else signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# -- databases and checks ----------------------------------------------------------------------
@dataclass(frozen=True)
class Db:
    url: str
    server_pid: int | None  # PostgreSQL's postmaster (its backends are its children)


@contextlib.contextmanager
def database(kind: str, folder: Path) -> Iterator[Db]:
    if kind == "sqlite":
        yield Db(f"sqlite:///{folder / 'bench.db'}", None)
        return
    from sqlalchemy import create_engine, text
    from tests.support import postgres

    cluster = postgres.start_cluster()
    try:
        engine = create_engine(cluster.admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text('CREATE DATABASE "bench"'))
        engine.dispose()
        postmaster = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
        yield Db(cluster.url("bench"), postmaster)
    finally:
        cluster.stop()


# -- CPU accounting (robust to other load on the machine, unlike wall-clock throughput) ----------
def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # from field 3 (state) on


def cpu_seconds(*, pgid: int | None = None, parent: int | None = None) -> float:
    """CPU time (user + system, reaped children included) of a process group, or of a process
    and its children."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None:
            continue
        mine = (pgid is not None and int(fields[2]) == pgid) or (
            parent is not None and (int(entry) == parent or int(fields[1]) == parent)
        )
        if mine:
            ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def measured(
    coroutine: Any, *, server: subprocess.Popen[bytes], db: Db, seconds: float
) -> tuple[Record, dict[str, Any]]:
    """Run a load and report it with the CPU each party spent per request."""
    before = (cpu_seconds(pgid=server.pid), _db_cpu(db), time.process_time())
    record = asyncio.run(coroutine)
    after = (cpu_seconds(pgid=server.pid), _db_cpu(db), time.process_time())
    report = summary(record, seconds)
    requests = max(1, report["requests"])
    report["cpu_ms_per_request"] = {
        name: round((b - a) * 1000 / requests, 3)
        for name, a, b in zip(("server", "database", "clients"), before, after, strict=True)
        if name != "database" or db.server_pid is not None
    }
    return record, report


def _db_cpu(db: Db) -> float:
    return cpu_seconds(parent=db.server_pid) if db.server_pid is not None else 0.0


def prepare(url: str) -> str:
    """A fresh task with three arms; returns a client key."""
    with Store.open(url) as store, store.session() as session:
        ops.create_task(session, TASK, input_fields=["topic"])
        for name, template in TEMPLATES.items():
            ops.create_arm(session, TASK, name, template=template)
        create_api_key(session, name="bench-admin", role="admin")
        return create_api_key(session, name="bench-client", role="client").key


def verify(url: str, record: Record) -> dict[str, Any]:
    """Acknowledged events stored exactly once, nothing else stored, state = recomputation."""
    from sqlalchemy import func, select

    from prefloop import bandit

    with Store.open(url) as store, store.session(readonly=True) as session:
        rows = session.execute(
            select(Feedback.idempotency_key, func.count()).group_by(Feedback.idempotency_key)
        ).all()
        stored = {key: count for key, count in rows if key is not None}
        missing = [key for key in record.acked if key not in stored]
        repeated = [key for key, count in stored.items() if count != 1]
        unexpected = [key for key in stored if key not in record.acked]
        task = ops.get_task(session, TASK)
        states = session.scalars(select(PolicyState).where(PolicyState.task_id == task.id)).all()
        mismatched = {}
        for state in states:
            differences = bandit.check_state(session, task, state.policy).differences
            if differences:
                mismatched[state.policy] = differences[:5]
        stats = ops.task_stats(session, TASK)
    return {
        "acknowledged": len(record.acked),
        "stored": sum(stored.values()),
        "missing": len(missing),
        "stored_more_than_once": len(repeated),
        "stored_but_not_acknowledged": len(unexpected),
        "unacknowledged_left": len(record.unacked),
        "policy_states_checked": len(states),
        "policy_states_differing_from_recomputation": mismatched,
        "best_arm": stats.best_arm,
        "best_probability": stats.best_probability,
        "exactly_once": not missing and not repeated and not unexpected and not record.unacked,
    }


# -- where the time goes: the loop's steps, serial and in-process -------------------------------
class _Steps:
    """CPU (this process) and wall milliseconds per named step."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.wall: dict[str, float] = {}
        self._cpu = time.process_time()
        self._wall = time.perf_counter()

    def restart(self) -> None:
        self._cpu, self._wall = time.process_time(), time.perf_counter()

    def mark(self, step: str) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        self.cpu[step] = self.cpu.get(step, 0.0) + cpu - self._cpu
        self.wall[step] = self.wall.get(step, 0.0) + wall - self._wall
        self._cpu, self._wall = cpu, wall


def breakdown(url: str, iterations: int, *, warmup: int = 30) -> dict[str, Any]:
    """One client's loop without HTTP, timed step by step with the ORM-path functions (the
    service's fallback) and then with the hot path the service runs (``hot_path_*``).

    Also times a what-if: the decision made from an in-memory copy of the policy (no state row
    read, locked or written) and only the BanditDecision row appended — what a service would
    pay per decision if decisions were append-only and the state were folded in later.
    """
    from prefloop import bandit, feedback
    from prefloop.bandit.online import PolicyCache
    from prefloop.feedback import RatingEvent
    from prefloop.llm import render_template
    from prefloop.serve import ServeSettings
    from prefloop.serve.catalog import Catalog
    from prefloop.store import BanditDecision, Generation, repo

    rng = random.Random(7)
    steps = _Steps()
    catalog = Catalog(ttl=1.0)  # as the service keeps it
    policies = PolicyCache(refresh=ServeSettings().propensity_refresh)  # likewise
    with Store.open(url) as store:
        for n in range(warmup + iterations):
            if n == warmup:
                steps = _Steps()
            steps.restart()
            with store.session() as s:
                entry = catalog.entry(s, TASK)
                task = entry.task
                steps.mark("select: task and active arms (catalog cache)")
                decision = bandit.decide(
                    s, task, end_user=f"u{n % 64}", active_arms=entry.active_arms, cache=policies
                )
                steps.mark("select: bandit.decide (reads, locks, writes the state row)")
                arm = next(a for a in entry.active_arms if a.id == decision.arm_id)
                assert arm.template is not None
                generation = Generation(
                    task_id=task.id, arm_id=arm.id, input={"topic": "x"}, status="pending",
                    prompt=render_template(arm.template, {"topic": "x"}),
                    decision_id=decision.id, policy=decision.policy,
                    propensity=decision.propensity,
                )  # fmt: skip
                repo.insert_row(s, generation)
                steps.mark("select: render + insert generation")
            steps.mark("select: commit")
            with store.session() as s:
                ops.complete_generation(s, generation.id, output="text")
                steps.mark("output: load + update generation")
            steps.mark("output: commit")
            with store.session() as s:
                task = catalog.task(s, TASK)
                steps.mark("feedback: task look-up (catalog cache)")
                value = 1.0 if rng.random() < ARM_QUALITY[arm.name] else -1.0
                event = RatingEvent(
                    generation_id=generation.id, value=value, idempotency_key=uuid.uuid4().hex
                )
                result = feedback.record_feedback(s, task, event)
                steps.mark("feedback: feedback.record_feedback")
                for change in result.reward_changes:
                    bandit.apply_reward(
                        s, change.generation_id, change.old, change.new, cache=policies
                    )
                steps.mark("feedback: bandit.apply_reward (locks, writes the state row)")
            steps.mark("feedback: commit")
        # the same loop on the service's hot path (raw DBAPI transactions, no Session)
        from prefloop.serve.hotpath import HotPath

        hot, hot_steps = HotPath(store.engine, lambda: store.session(readonly=True)), _Steps()
        catalog = Catalog(ttl=3600.0)  # kept for the whole loop (the service reloads each 1 s)
        with store.session() as s:
            catalog.entry(s, TASK)
        for n in range(warmup + iterations):
            if n == warmup:
                hot_steps = _Steps()
            hot_steps.restart()
            picked = hot.select(
                catalog, policies, TASK, inputs={"topic": "x"}, end_user=f"u{n % 64}",
                context={}, policy="default", check=lambda _task: None,
            )  # fmt: skip
            hot_steps.mark("select")
            hot.complete(picked.generation_id, {"output": "text"})
            hot_steps.mark("output")
            value = 1.0 if rng.random() < ARM_QUALITY[picked.arm.name] else -1.0
            event = RatingEvent(
                generation_id=picked.generation_id, value=value, idempotency_key=uuid.uuid4().hex
            )
            hot.feedback(catalog, policies, TASK, event)
            hot_steps.mark("feedback")
        # the what-if: decisions from a cached policy, appended without touching the state row
        with store.session(readonly=True) as s:
            task = repo.get_task(s, TASK)
            row = s.scalars(select_policy_state(task.id)).one()
            live = bandit.policy_from_state({**row.state, "config": row.config}, seed=1)
            arms = {a.name: a.id for a in repo.active_arms(s, task)}
        what_if = _Steps()
        for n in range(iterations):
            what_if.restart()
            choice = live.select(end_user=f"u{n % 64}")
            what_if.mark("policy.select on a cached policy (no database)")
            with store.session() as s:
                s.add(
                    BanditDecision(
                        task_id=task.id, policy="default", arm_id=arms[choice.arm],
                        propensity=choice.propensity, probabilities=choice.probabilities,
                        end_user=f"u{n % 64}",
                    )
                )  # fmt: skip
                s.flush()
                what_if.mark("append the BanditDecision row")
            what_if.mark("commit")

    def per_iteration(values: dict[str, float], count: int) -> dict[str, float]:
        return {step: round(v * 1000 / count, 3) for step, v in values.items()}

    return {
        "iterations": iterations,
        "cpu_ms": per_iteration(steps.cpu, iterations),
        "wall_ms": per_iteration(steps.wall, iterations),
        "cpu_ms_total": round(sum(steps.cpu.values()) * 1000 / iterations, 3),
        "hot_path_cpu_ms": per_iteration(hot_steps.cpu, iterations),
        "hot_path_wall_ms": per_iteration(hot_steps.wall, iterations),
        "hot_path_cpu_ms_total": round(sum(hot_steps.cpu.values()) * 1000 / iterations, 3),
        "what_if_append_only_decision_cpu_ms": per_iteration(what_if.cpu, iterations),
        "what_if_append_only_decision_wall_ms": per_iteration(what_if.wall, iterations),
    }


def select_policy_state(task_id: int) -> Any:
    from sqlalchemy import select

    return select(PolicyState).where(
        PolicyState.task_id == task_id, PolicyState.policy == "default"
    )


# -- the runs ----------------------------------------------------------------------------------
def run_database(kind: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    clients, seconds = args.clients, args.duration
    with database(kind, _mk(folder / kind)) as db:
        key = prepare(db.url)
        log = folder / f"{kind}-server.log"
        port = free_port()
        with server("bare", port, url=db.url, workers=args.workers, log=log) as bare:
            for name, path in (
                ("bare_saturation", "/echo"),
                ("bare_async_saturation", "/echo-async"),
            ):
                load = run_load(port, target=path, key=key, clients=clients, seconds=seconds)
                _, out[name] = measured(load, server=bare, db=db, seconds=seconds)
        port = free_port()
        with server("prefloop", port, url=db.url, workers=args.workers, log=log) as service:
            load = run_load(port, target="prefloop", key=key, clients=clients, seconds=seconds)
            loaded, out["prefloop_saturation"] = measured(
                load, server=service, db=db, seconds=seconds
            )
            rate = 0.5 * loaded.iterations / seconds
            load = run_load(
                port,
                target="prefloop",
                key=key,
                clients=clients,
                seconds=seconds,
                rate=rate,
                seed=1,
            )
            paced, report = measured(load, server=service, db=db, seconds=seconds)
            out["prefloop_paced"] = {
                "offered_iterations_per_s": round(rate, 1),
                **report,
                "late_starts": len(paced.lateness),
            }
        merged = Record(
            acked=loaded.acked | paced.acked, unacked={**loaded.unacked, **paced.unacked}
        )
        out["integrity"] = verify(db.url, merged)
        out["breakdown"] = breakdown(db.url, 60 if args.quick else 300)
    sat, base = out["prefloop_saturation"], out["bare_saturation"]
    out["throughput_vs_bare"] = round(sat["requests_per_s"] / base["requests_per_s"], 3)
    out["throughput_vs_bare_async"] = round(
        sat["requests_per_s"] / out["bare_async_saturation"]["requests_per_s"], 3
    )
    # the same comparison in server CPU per request: less sensitive to other load on the machine
    # changing between the phases (throughput is what the target is about)
    out["server_cpu_per_request_bare_over_prefloop"] = round(
        base["cpu_ms_per_request"]["server"] / sat["cpu_ms_per_request"]["server"], 3
    )
    paced_out = out["prefloop_paced"]
    out["targets"] = {
        "throughput_at_least_half_of_bare": out["throughput_vs_bare"] >= 0.5,
        "paced_p99_at_most_25ms": (paced_out["latency_ms"]["p99"] or 1e9) <= 25,
        "zero_5xx": sat["server_errors_5xx"] == 0 and paced_out["server_errors_5xx"] == 0,
        "feedback_exactly_once": out["integrity"]["exactly_once"],
        "state_equals_recomputation": not out["integrity"][
            "policy_states_differing_from_recomputation"
        ],
    }
    return out


def run_crash(kind: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The kill -9 run on a fresh database of ``kind``."""
    crash_folder = _mk(folder / f"{kind}-crash")
    with database(kind, crash_folder) as db:
        return crash_run(
            db.url,
            clients=args.clients,
            seconds=args.duration,
            workers=args.workers,
            log=folder / f"{kind}-crash-server.log",
        )


def crash_run(url: str, *, clients: int, seconds: float, workers: int, log: Path) -> dict[str, Any]:
    """Load the service at ``url`` for ``seconds``; SIGKILL it half way and start it again.

    Clients keep going (connection errors while it is down are counted, not retried); at the
    end each event that was not acknowledged is sent again with its idempotency key. Returns
    the figures and :func:`verify`'s checks.
    """
    key = prepare(url)
    port = free_port()
    process = start_server("prefloop", port, url=url, workers=workers, log=log)
    record = Record()

    async def scenario() -> dict[str, Any]:
        nonlocal process
        done = asyncio.Event()
        load = asyncio.create_task(
            run_load(
                port,
                target="prefloop",
                key=key,
                clients=clients,
                seconds=seconds,
                record=record,
                stop_event=done,
            )
        )
        await asyncio.sleep(seconds / 2)
        acked_before = len(record.acked)
        stop(process, hard=True)
        killed_at = time.perf_counter()
        process = await asyncio.to_thread(
            start_server, "prefloop", port, url=url, workers=workers, log=log
        )
        restart_s = time.perf_counter() - killed_at
        await asyncio.sleep(seconds / 2)  # as long again under load after the restart
        done.set()
        await load
        unacked_after_load = len(record.unacked)
        resent = await resend_unacked(port, key, record)
        return {
            "acked_before_kill": acked_before,
            "restart_s": round(restart_s, 2),
            "unacked_after_load": unacked_after_load,
            **resent,
        }

    try:
        crash = asyncio.run(scenario())
        crash["load"] = summary(record, seconds)  # the seconds with a server up
        crash["acked_after_restart"] = len(record.acked) - crash["acked_before_kill"]
    finally:
        stop(process)
    crash["integrity"] = verify(url, record)
    return crash


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s phases (a smoke run)")
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--duration", type=float, default=None, help="seconds per phase (30)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of both servers")
    parser.add_argument("--crash", action="store_true", help="also the kill -9 run")
    args = parser.parse_args()
    if args.duration is None:
        args.duration = 3.0 if args.quick else 30.0
    kinds = ("sqlite", "postgres") if args.db == "both" else (args.db,)
    result: dict[str, Any] = {
        "benchmark": "service",
        "clients": args.clients,
        "workers": args.workers,
        "phase_seconds": args.duration,
        "cpus": os.cpu_count(),
        "loop": "select -> output -> feedback (rating, Idempotency-Key)",
        "baseline": "bare FastAPI endpoint on uvicorn, same workers, same client and request "
        "count: a thread-pool (def) route like prefloop's, and an async def one",
    }
    result["load_average_before"] = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="prefloop-bench-") as tmp:
        folder = Path(tmp)
        for kind in kinds:
            result[kind] = run_database(kind, args, folder)
            if args.crash:
                result[kind]["crash"] = run_crash(kind, args, folder)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    sys.stdout.write(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
