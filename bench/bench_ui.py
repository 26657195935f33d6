"""Server time of the web app's labeling and dashboard pages on a large store.

    .venv/bin/python bench/bench_ui.py [--quick] [--db sqlite|postgres|both]

For each database: a task with 4 arms, 100,000 completed generations (from 20,000 inputs, five
outputs each) with their bandit decisions, and 200,000 rating events (``--quick``: 5,000 and
10,000), written in bulk; cached rewards are derived from those events by the feedback layer
(:func:`prefloop.feedback.refresh_rewards`) and the bandit state rebuilt from the log. Then,
in-process through the ASGI app (no network), one signed-in labeler times:

* ``submit_next``: ``POST /app/label/{task}/rate/{lease}`` — record the rating through the
  feedback path, close the lease and render the next item (the ``decisive`` strategy);
* ``dashboard``: ``GET /app/tasks/{task}`` and its live fragment (statistics reused for 5 s,
  so most requests after the first use the cache; ``dashboard_cold`` times a full recount);
* ``bare``: a bare FastAPI endpoint answering a small JSON body, measured the same way.

Targets: submit-and-next p95 <= 150 ms, dashboard p95 <= 300 ms. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # for tests.support.postgres (the throwaway cluster)
    sys.path.insert(0, str(REPO))

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402

from prefloop import bandit  # noqa: E402
from prefloop.feedback import refresh_rewards  # noqa: E402
from prefloop.serve import ServeSettings, create_api_key, create_app, ops  # noqa: E402
from prefloop.store import BanditDecision, Feedback, Generation, Store, Task  # noqa: E402

ARMS = ("terse", "vivid", "plain", "warm")
MEANS = {"terse": 0.1, "vivid": 0.3, "plain": -0.2, "warm": 0.25}


@contextlib.contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'bench.db'}"
        return
    from sqlalchemy import create_engine, text
    from tests.support import postgres

    cluster = postgres.start_cluster()
    try:
        engine = create_engine(cluster.admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text('CREATE DATABASE "bench"'))
        engine.dispose()
        yield cluster.url("bench")
    finally:
        cluster.stop()


def fill(store: Store, generations: int, events: int, seed: int = 0) -> float:
    """The bulk data (seconds it took)."""
    started = time.perf_counter()
    rng = random.Random(seed)
    scale = (-1.0, -0.5, 0.0, 0.5, 1.0)
    with store.session() as session:
        task = ops.create_task(session, "bench", input_fields=["place"])
        arms = {
            name: ops.create_arm(session, "bench", name, template=f"{name}: {{place}}")
            for name in ARMS
        }
        task_id, arm_ids = task.id, {name: arm.id for name, arm in arms.items()}
    start = datetime.now(UTC) - timedelta(days=30)
    gen_ids: list[tuple[str, str]] = []
    chunk = 5000
    for first in range(0, generations, chunk):
        decisions, rows = [], []
        for n in range(first, min(first + chunk, generations)):
            arm = rng.choice(ARMS)
            moment = start + timedelta(seconds=20 * n)
            decision, gid = f"dec_{uuid.uuid4().hex}", f"gen_{uuid.uuid4().hex}"
            decisions.append(
                {
                    "id": decision,
                    "task_id": task_id,
                    "policy": "default",
                    "arm_id": arm_ids[arm],
                    "propensity": 0.25,
                    "probabilities": {},
                    "end_user": None,
                    "context": {},
                    "created_at": moment,
                }
            )
            rows.append(
                {
                    "id": gid,
                    "task_id": task_id,
                    "arm_id": arm_ids[arm],
                    "input": {"place": f"p{n // 5}"},
                    "prompt": f"{arm}: p{n // 5}",
                    "output": f"Output {n} of {arm} about place p{n // 5}.",
                    "status": "ok",
                    "error": None,
                    "model": "bench",
                    "latency_ms": 1.0,
                    "prompt_tokens": 5,
                    "completion_tokens": 9,
                    "cost": 0.0,
                    "policy": "default",
                    "propensity": 0.25,
                    "decision_id": decision,
                    "end_user": None,
                    "context": {},
                    "reward": None,
                    "created_at": moment,
                }
            )
            gen_ids.append((gid, arm))
        with store.session() as session:
            session.execute(insert(BanditDecision), decisions)
            session.execute(insert(Generation), rows)
    for first in range(0, events, chunk):
        rows = []
        for n in range(first, min(first + chunk, events)):
            gid, arm = gen_ids[rng.randrange(len(gen_ids))]
            value = min(scale, key=lambda v: abs(v - (MEANS[arm] + rng.gauss(0, 0.6))))
            rows.append(
                {
                    "task_id": task_id,
                    "kind": "rating",
                    "source": "end_user",
                    "author": f"u{n % 500}",
                    "generation_id": gid,
                    "other_generation_id": None,
                    "value": value,
                    "payload": {},
                    "idempotency_key": None,
                    "derived_from_id": None,
                    "created_at": start + timedelta(seconds=10 * n),
                }
            )
        with store.session() as session:
            session.execute(insert(Feedback), rows)
    with store.session() as session:
        task = session.get(Task, task_id)
        assert task is not None
        refresh_rewards(session, task)
        bandit.rebuild_state(session, task)
    return time.perf_counter() - started


def _close(a: Any, b: Any) -> bool:
    """Equal, numbers within 1e-9 (sums of many rewards in another order differ in the
    last bits)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float | int) and isinstance(b, float | int):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    if a != b:
        print(json.dumps({"differs": [repr(a)[:200], repr(b)[:200]]}), file=sys.stderr)
    return bool(a == b)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "p50_ms": round(1000 * statistics.median(samples), 2),
        "p95_ms": round(1000 * percentile(samples, 0.95), 2),
        "max_ms": round(1000 * max(samples), 2),
    }


def timed(call: Callable[[], Any], repeat: int) -> list[float]:
    spent = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        spent.append(time.perf_counter() - began)
    return spent


def bare_app() -> FastAPI:
    app = FastAPI()

    @app.post("/bare")
    def bare(body: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "echo": len(body)}

    return app


def run(kind: str, generations: int, events: int, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder, database(kind, Path(folder)) as url:
        store = Store.open(url)
        try:
            filled = fill(store, generations, events)
            with store.session() as session:
                key = create_api_key(session, name="lab", role="admin").key
            app = create_app(ServeSettings(database_url=url, key_cache_seconds=60), store=store)
            with TestClient(app) as client:
                page = client.get("/app/login").text
                token = re.search(r'name="csrf" value="([^"]+)"', page)
                assert token is not None
                client.post("/app/login", data={"csrf": token.group(1), "key": key})
                state = {"page": client.get("/app/label/bench/rate").text}

                def submit_next() -> None:
                    action = re.search(r'id="label-form"[^>]*action="([^"]+)"', state["page"])
                    csrf = re.search(r'name="csrf" value="([^"]+)"', state["page"])
                    assert action and csrf, "no item to label"
                    answer = client.post(
                        action.group(1), data={"csrf": csrf.group(1), "value": "0.5"}
                    )
                    assert answer.status_code == 200 and "Saved." in answer.text, answer.text[:300]
                    state["page"] = answer.text

                def dashboard() -> None:
                    assert client.get("/app/tasks/bench").status_code == 200
                    assert client.get("/app/tasks/bench/live").status_code == 200

                def dashboard_cold() -> None:
                    app.state.prefloop.web.stats.clear()
                    dashboard()

                submit_next()  # warm up
                submitted = timed(submit_next, repeat)
                boards = timed(dashboard, repeat)
                cold = timed(dashboard_cold, max(3, repeat // 10))
            with store.session(readonly=True) as session:
                loaded = session.scalar(select(Task).where(Task.name == "bench"))
                assert loaded is not None
                check = bandit.check_state(session, loaded)
                consistent = _close(check.stored, check.recomputed)
        finally:
            store.close()
    with TestClient(bare_app()) as bare_client:
        bare = timed(lambda: bare_client.post("/bare", json={"a": 1}), repeat)
    result = {
        "db": kind,
        "generations": generations,
        "feedback_events": events,
        "fill_seconds": round(filled, 1),
        "submit_next": summary(submitted),
        "dashboard": summary(boards),
        "dashboard_cold": summary(cold),
        "bare": summary(bare),
        "bandit_state_consistent": consistent,
    }
    result["meets_targets"] = (
        result["submit_next"]["p95_ms"] <= 150 and result["dashboard"]["p95_ms"] <= 300
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5,000 generations, 10,000 events")
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=None, help="timed requests per page")
    args = parser.parse_args()
    generations, events = (5_000, 10_000) if args.quick else (100_000, 200_000)
    repeat = args.repeat or (30 if args.quick else 200)
    kinds = ("sqlite", "postgres") if args.db == "both" else (args.db,)
    print(json.dumps({"runs": [run(kind, generations, events, repeat) for kind in kinds]}))


if __name__ == "__main__":
    main()
