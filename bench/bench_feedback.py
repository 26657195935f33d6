"""Feedback store throughput: bulk import vs per-event recording, 8 writers vs 1.

1. Import of the 1,500 HH preference pairs (``import_pairs``: bulk inserts in one transaction)
   next to the baseline of recording the same pairs one event at a time through the ORM
   (``add_generation`` + ``record_feedback``), also in one transaction.
2. Idempotent feedback from 8 processes, each event its own transaction, next to the baseline
   of one process writing the same number of events; both on the same kind of store.

    .venv/bin/python bench/bench_feedback.py                # SQLite, 8 x 1000 events
    .venv/bin/python bench/bench_feedback.py --postgres     # also a throwaway PostgreSQL
    .venv/bin/python bench/bench_feedback.py --quick        # 8 x 100 events, 300 pairs

Prints one JSON object. Times are wall clock, next to the load average: the CPU may be shared.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

from prefloop.feedback import PairwiseEvent, RatingEvent, record_feedback
from prefloop.io import import_pairs, iter_pairs
from prefloop.store import Store
from prefloop.store.repo import add_generation, get_or_create_task, get_task

ROOT = Path(__file__).resolve().parents[1]
HH = ROOT.parent / "shared" / "data" / "hh-harmless-train.jsonl"
LEVELS = (-1.0, -0.5, 0.0, 0.5, 1.0)


def bench_import(url: str, pairs: int) -> dict[str, float]:
    subset = Path(tempfile.mkdtemp()) / "pairs.jsonl"
    subset.write_text("".join(islice(HH.open(encoding="utf-8"), pairs)), encoding="utf-8")
    with Store.open(url) as store:
        started = time.perf_counter()
        with store.session() as s:
            import_pairs(s, subset, "bulk")
        bulk = time.perf_counter() - started
        started = time.perf_counter()
        with store.session() as s:
            task = get_or_create_task(s, "per-event")
            for record in iter_pairs(subset):
                chosen = add_generation(s, task, output=record.chosen, prompt=record.prompt)
                rejected = add_generation(s, task, output=record.rejected, prompt=record.prompt)
                record_feedback(s, task, PairwiseEvent(a=chosen.id, b=rejected.id, winner="a"))
        per_event = time.perf_counter() - started
    return {
        "pairs": pairs,
        "bulk_import_s": round(bulk, 3),
        "baseline_per_event_s": round(per_event, 3),
        "speedup": round(per_event / bulk, 1),
    }


def _write(url: str, task_name: str, worker: int, events: int, generation_ids: list[str]) -> int:
    with Store.open(url, upgrade=False) as store:
        with store.session(readonly=True) as s:
            task = get_task(s, task_name)
        for j in range(events):
            gid = generation_ids[(worker * events + j) % len(generation_ids)]
            event = RatingEvent(
                generation_id=gid,
                value=LEVELS[j % 5],
                author=f"w{worker}-{j % 7}",
                idempotency_key=f"{task_name}-w{worker}-e{j}",
            )
            with store.session() as s:
                record_feedback(s, task, event)
    return events


def bench_writers(url: str, processes: int, events: int) -> dict[str, float]:
    """events per process; the baseline writes processes x events from one process."""
    timings = {}
    for label, workers, per_worker in (
        ("one_process", 1, processes * events),
        (f"{processes}_processes", processes, events),
    ):
        with Store.open(url) as store, store.session() as s:
            task = get_or_create_task(s, label)
            # 41 (prime): the writers rate different generations at a time, as users would
            ids = [add_generation(s, task, output=f"output {i}").id for i in range(41)]
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            pool.starmap(time.sleep, [(0.01,)] * workers)  # start-up is not measured
            started = time.perf_counter()
            written = sum(
                pool.starmap(_write, [(url, label, w, per_worker, ids) for w in range(workers)])
            )
            timings[label] = (written, time.perf_counter() - started)
    baseline_n, baseline_s = timings["one_process"]
    n, seconds = timings[f"{processes}_processes"]
    return {
        "events": n,
        f"{processes}_processes_s": round(seconds, 2),
        f"{processes}_processes_events_per_s": round(n / seconds, 1),
        "baseline_one_process_s": round(baseline_s, 2),
        "baseline_one_process_events_per_s": round(baseline_n / baseline_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--postgres", action="store_true", help="also on a throwaway PostgreSQL")
    parser.add_argument("--events", type=int, default=None, help="events per process")
    args = parser.parse_args()
    events = args.events or (100 if args.quick else 1000)
    pairs = 300 if args.quick else 1500
    if not HH.exists():
        sys.exit(f"{HH} is missing: the benchmark reads ../shared/data beside the repository")

    result: dict[str, object] = {"load_average_before": os.getloadavg()}
    folder = Path(tempfile.mkdtemp())
    result["sqlite"] = {
        "import": bench_import(f"sqlite:///{folder / 'import.db'}", pairs),
        "writers": bench_writers(f"sqlite:///{folder / 'writers.db'}", 8, events),
    }
    if args.postgres:
        sys.path.insert(0, str(ROOT))
        from tests.conftest import fresh_postgres_url
        from tests.support import postgres

        cluster = postgres.start_cluster()
        try:
            result["postgres"] = {
                "import": bench_import(fresh_postgres_url(cluster.admin_url), pairs),
                "writers": bench_writers(fresh_postgres_url(cluster.admin_url), 8, events),
            }
        finally:
            cluster.stop()
    result["load_average_after"] = os.getloadavg()
    result["cpus"] = os.cpu_count()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
