"""The loop's routes run their transactions on a limited number of worker threads
(ServiceContext.write): 4 by default on PostgreSQL, 40 (FastAPI's pool size) on SQLite."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import anyio
import pytest
from sqlalchemy.orm import Session

from prefloop.serve import ServeSettings, create_app
from prefloop.serve.app import POSTGRES_WRITE_THREADS, ServiceContext
from prefloop.store import Store
from tests.serve.conftest import AppFactory


def _most_at_once(context: ServiceContext, requests: int) -> tuple[int, set[str]]:
    """Send ``requests`` writes at once; how many ran together, and on which threads."""
    lock = threading.Lock()
    running = [0, 0]  # now, most at once
    threads: set[str] = set()

    def transaction(work: Callable[[Session], None]) -> None:  # counts, then sleeps
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
            threads.add(threading.current_thread().name)
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    context.transaction = transaction  # type: ignore[method-assign]

    async def main() -> None:
        context.start_writing()
        async with anyio.create_task_group() as group:
            for _ in range(requests):
                group.start_soon(context.write, lambda _session: None)

    anyio.run(main)
    return running[1], threads


@pytest.mark.parametrize("limit", [1, 3])
def test_at_most_write_threads_transactions_run_at_once(store: Store, limit: int) -> None:
    settings = ServeSettings(database_url=store.url, insecure_no_auth=True, write_threads=limit)
    context: ServiceContext = create_app(settings, store=store).state.prefloop
    most, threads = _most_at_once(context, 4 * limit)
    assert most == limit
    assert threading.current_thread().name not in threads  # off the caller's thread


def test_the_default_limit_depends_on_the_database(store: Store) -> None:
    settings = ServeSettings(database_url=store.url, insecure_no_auth=True)
    context: ServiceContext = create_app(settings, store=store).state.prefloop
    most, _ = _most_at_once(context, 12)
    expected = POSTGRES_WRITE_THREADS if store.dialect == "postgresql" else 12
    assert most == expected


def test_the_loop_works_with_one_write_thread(make_api: AppFactory) -> None:
    api = make_api(write_threads=1)
    api.seed()
    chosen = api.select()
    api.complete(chosen["generation_id"])
    assert api.rate(chosen["generation_id"], 1, **{"Idempotency-Key": "k1"}).status_code == 201
    assert api.rate(chosen["generation_id"], 1, **{"Idempotency-Key": "k1"}).status_code == 200
