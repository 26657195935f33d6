"""Idempotent feedback under concurrent writers: separate processes, one transaction per event.

Acceptance: 8 processes each write 1,000 events with unique keys plus 10% repeats of their own
keys → exactly 8,000 rows, none lost, none duplicated, on SQLite and on PostgreSQL. A second
test has processes send the same keys at the same moment, so inserts race for one key.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from multiprocessing.pool import Pool

import pytest
from sqlalchemy import func, select

from prefloop.feedback import (
    PairwiseEvent,
    RatingEvent,
    ThumbsEvent,
    derive_reward,
    record_feedback,
)
from prefloop.store import Feedback, Generation, Store
from prefloop.store.repo import add_generation, get_or_create_task, get_task

WORKERS = 8
EVENTS = 1000
GENERATIONS = 41  # prime: the 8 writers work on different generations at a time
LEVELS = (-1.0, -0.5, 0.0, 0.5, 1.0)

pytestmark = pytest.mark.slow


def _event(
    key: str, n: int, generation_ids: list[str]
) -> RatingEvent | ThumbsEvent | PairwiseEvent:
    """The event for a key: always the same content, so any process may repeat it."""
    gid = generation_ids[n % len(generation_ids)]
    author = f"author-{n % 7}"
    if n % 3 == 0:
        return RatingEvent(
            generation_id=gid, value=LEVELS[n % 5], author=author, idempotency_key=key
        )
    if n % 3 == 1:
        return ThumbsEvent(generation_id=gid, up=n % 2 == 0, author=author, idempotency_key=key)
    other = generation_ids[(n + 1) % len(generation_ids)]
    return PairwiseEvent(a=gid, b=other, winner="a", author=author, idempotency_key=key)


def _send(
    url: str,
    task_name: str,
    keys: list[tuple[str, int]],
    generation_ids: list[str],
    start_at: float,
) -> list[tuple[str, int, bool]]:
    """Runs in a child process: record each event in its own transaction."""
    store = Store.open(url, upgrade=False)
    try:
        with store.session(readonly=True) as s:
            task = get_task(s, task_name)
        time.sleep(max(0.0, start_at - time.time()))
        results = []
        for key, n in keys:
            with store.session() as s:
                result = record_feedback(s, task, _event(key, n, generation_ids))
            results.append((key, result.feedback_id, result.duplicate))
        return results
    finally:
        store.close()


@pytest.fixture(scope="module")
def pool() -> Iterator[Pool]:
    """One pool of spawned processes for every test here (start-up is the slow part)."""
    with multiprocessing.get_context("spawn").Pool(WORKERS) as workers:
        yield workers


def _setup(store: Store) -> list[str]:
    with store.session() as s:
        task = get_or_create_task(s, "busy")
        return [add_generation(s, task, output=f"output {i}").id for i in range(GENERATIONS)]


def _assert_rewards_match_events(store: Store) -> None:
    with store.session(readonly=True) as s:
        events: dict[str, list[Feedback]] = {}
        for event in s.scalars(select(Feedback)):
            events.setdefault(event.generation_id or "", []).append(event)
        for generation in s.scalars(select(Generation)):
            assert generation.reward == derive_reward(events.get(generation.id, [])), generation.id


def test_eight_writers_with_repeats_store_each_event_once(store: Store, pool: Pool) -> None:
    generation_ids = _setup(store)
    plans = []
    for worker in range(WORKERS):
        keys = [(f"w{worker}-e{j}", worker * EVENTS + j) for j in range(EVENTS)]
        # 10% repeats of the worker's own keys, interleaved with new ones
        plan = []
        for j, item in enumerate(keys):
            plan.append(item)
            if j % 10 == 9:
                plan.append(keys[j - 5])
        plans.append(plan)
    start_at = time.time() + 0.5
    outcomes = pool.starmap(
        _send, [(store.url, "busy", plan, generation_ids, start_at) for plan in plans]
    )

    first_id: dict[str, int] = {}
    for results in outcomes:
        for key, feedback_id, duplicate in results:
            if duplicate:
                assert first_id[key] == feedback_id, key
            else:
                assert key not in first_id, f"{key} stored twice"
                first_id[key] = feedback_id
    assert sum(duplicate for results in outcomes for *_, duplicate in results) == WORKERS * 100
    expected = {key for plan in plans for key, _ in plan}
    with store.session(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(Feedback)) == WORKERS * EVENTS
        stored = {key: i for key, i in s.execute(select(Feedback.idempotency_key, Feedback.id))}
    assert set(stored) == expected
    assert stored == first_id
    _assert_rewards_match_events(store)


def test_processes_racing_for_the_same_keys_store_each_once(store: Store, pool: Pool) -> None:
    generation_ids = _setup(store)
    keys = [(f"shared-{n}", n) for n in range(150)]
    start_at = time.time() + 0.5
    outcomes = pool.starmap(
        _send, [(store.url, "busy", keys, generation_ids, start_at) for _ in range(4)]
    )
    for position, (key, _) in enumerate(keys):
        seen = [results[position] for results in outcomes]
        assert len({feedback_id for _, feedback_id, _ in seen}) == 1, key
        assert sorted(duplicate for *_, duplicate in seen) == [False, True, True, True], key
    with store.session(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(Feedback)) == len(keys)
    _assert_rewards_match_events(store)
