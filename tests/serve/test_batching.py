"""Group commit (serve/batching.py, HotPath.run_batch): many requests in one transaction write
what they would write one by one, a request that fails leaves the others' answers and rows
intact, and a batch that fails writes nothing."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from prefloop import bandit
from prefloop.bandit.online import PolicyCache
from prefloop.feedback import RatingEvent, RecordResult, ThumbsEvent
from prefloop.serve._jobs import _Tx
from prefloop.serve.app import ServiceContext
from prefloop.serve.catalog import Catalog
from prefloop.serve.hotpath import AGAIN, Fallback, HotPath, Job, Picked
from prefloop.store import BanditDecision, Feedback, Generation, PolicyState, Store, repo
from prefloop.store.statements import CompiledStatement
from tests.serve.conftest import AppFactory, row_counts
from tests.serve.test_fastlane import _hold_write_lock
from tests.serve.test_hotpath import INPUTS, _setup

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


def _select(hot: HotPath, catalog: Catalog, cache: PolicyCache, user: str = "u") -> Job:
    return hot.select_job(
        catalog, cache, "diary", inputs=INPUTS, end_user=user, context={}, policy="default",
        check=lambda _task: None,
    )  # fmt: skip


def _rating(hot: HotPath, catalog: Catalog, cache: PolicyCache, gid: str, value: float,
            key: str | None) -> Job:  # fmt: skip
    event = RatingEvent(generation_id=gid, value=value, idempotency_key=key)
    return hot.feedback_job(catalog, cache, "diary", event)


def _completed(hot: HotPath, catalog: Catalog, cache: PolicyCache, n: int) -> list[str]:
    ids = []
    for k in range(n):
        picked = hot.select(
            catalog, cache, "diary", inputs=INPUTS, end_user=f"s{k}", context={},
            policy="default", check=lambda _task: None,
        )  # fmt: skip
        hot.complete(picked.generation_id, {"output": f"entry {k}"})
        ids.append(picked.generation_id)
    return ids


def _state_version(store: Store) -> int:
    with store.session(readonly=True) as s:
        return int(s.scalars(select(PolicyState.version)).one())


def _state_is_its_recomputation(store: Store) -> bool:
    with store.session(readonly=True) as s:
        task = repo.get_task(s, "diary")
        check = bandit.check_state(s, task)
        return check.stored == check.recomputed


def test_one_transaction_runs_a_mixed_batch_and_answers_each_request(store: Store) -> None:
    catalog, cache, hot = _setup(store)
    g1, g2, g3, g4 = _completed(hot, catalog, cache, 4)
    hot.run(_rating(hot, catalog, cache, g3, 0.5, "seen"))
    pending = hot.select(
        catalog, cache, "diary", inputs=INPUTS, end_user="p", context={}, policy="default",
        check=lambda _task: None,
    ).generation_id  # fmt: skip
    before, version, committed = row_counts(store), _state_version(store), hot.committed
    jobs = [
        _select(hot, catalog, cache, "a"),
        _rating(hot, catalog, cache, g1, 1, "k1"),
        hot.feedback_job(catalog, cache, "diary", ThumbsEvent(generation_id=g2, up=False)),
        _select(hot, catalog, cache, "b"),
        hot.complete_job(pending, {"output": "late"}),
        _rating(hot, catalog, cache, g1, -1, "k2"),  # the same generation: the next batch
        _rating(hot, catalog, cache, g2, 1, "k1"),  # the same key: the next batch
        _rating(hot, catalog, cache, g3, 1, "seen"),  # a stored key: the ORM path replays it
        _rating(hot, catalog, cache, "gen_unknown", 1, None),  # the ORM path explains
        _rating(hot, catalog, cache, g4, 1, "k2"),  # shares k2 with a deferred one: waits too
    ]
    out = hot.run_batch(jobs)
    assert hot.committed == committed + 1  # one transaction for all of them
    assert isinstance(out[0], Picked) and isinstance(out[3], Picked)
    assert out[0].generation_id != out[3].generation_id
    assert isinstance(out[1], RecordResult) and [c.new for c in out[1].reward_changes] == [1.0]
    assert isinstance(out[2], RecordResult) and [c.new for c in out[2].reward_changes] == [-1.0]
    assert isinstance(out[4], Generation) and out[4].status == "ok"
    assert out[5] is AGAIN and out[6] is AGAIN and out[9] is AGAIN
    assert isinstance(out[7], Fallback) and "repeated idempotency key" in str(out[7])
    assert isinstance(out[8], Fallback) and "unknown generation" in str(out[8])
    after = row_counts(store)
    assert after["feedback"] == before["feedback"] + 2
    assert after["bandit_decisions"] == before["bandit_decisions"] + 2
    assert after["generations"] == before["generations"] + 2
    assert _state_version(store) == version + 4  # two decisions, two rewards: one write
    assert _state_is_its_recomputation(store)
    with store.session(readonly=True) as s:  # decisions keep the batch's order
        times = dict(
            s.execute(
                select(BanditDecision.id, BanditDecision.created_at).where(
                    BanditDecision.id.in_([out[0].decision_id, out[3].decision_id])
                )
            ).all()
        )
        assert times[out[0].decision_id] < times[out[3].decision_id]
    again = hot.run_batch([jobs[5], jobs[6]])  # what waited runs in the next batch: k1 is
    assert [type(o) for o in again] == [RecordResult, Fallback]  # stored now, a replay
    assert _state_is_its_recomputation(store)
    loads = cache.loads
    hot.run(_select(hot, catalog, cache))  # the batch left its live policy in the cache
    assert cache.loads == loads


class _Breaks(Job):
    """A job that changes the policy and queues a write, then fails."""

    def __init__(self, cache: PolicyCache, key: tuple[int, str], gid: str) -> None:
        super().__init__(None)
        self.cache, self.gid, self.wanted = cache, gid, key

    def second(self, tx: _Tx) -> None:
        self.key = self.wanted

    def last(self, tx: _Tx) -> Any:
        live = tx.state(self.key)
        self.touched = True
        tx.later(tx.s.set_reward, {"gid": self.gid, "new_reward": 0.25})
        tx.changed(live)
        raise RuntimeError("broken after a change")


def test_a_request_failing_after_a_change_leaves_the_batch_which_runs_again(store: Store) -> None:
    catalog, cache, hot = _setup(store)
    (gid,) = _completed(hot, catalog, cache, 1)
    with store.session(readonly=True) as s:
        state = s.scalars(select(PolicyState)).one()
        key = (state.task_id, state.policy)
    before, version, committed = row_counts(store), _state_version(store), hot.committed
    out = hot.run_batch(
        [_select(hot, catalog, cache), _Breaks(cache, key, gid), _rating(hot, catalog, cache,
                                                                        gid, 1, "r")]
    )  # fmt: skip
    assert isinstance(out[0], Picked) and isinstance(out[2], RecordResult)
    assert isinstance(out[1], RuntimeError)
    assert hot.committed == committed + 1  # the first attempt rolled back
    with store.session(readonly=True) as s:
        assert s.get(Generation, gid).reward == 1.0  # type: ignore[union-attr]
    after = row_counts(store)
    assert after["feedback"] == before["feedback"] + 1
    assert after["bandit_decisions"] == before["bandit_decisions"] + 1
    assert _state_version(store) == version + 2
    assert _state_is_its_recomputation(store)


class _BadSql(Job):
    def first(self, tx: _Tx) -> None:
        bad = CompiledStatement("SELECT no_such_column FROM generations", (), {}, (), ())
        self.sent = tx.send(bad, {})

    def last(self, tx: _Tx) -> Any:
        return self.sent.one()


def test_a_database_error_fails_the_whole_batch_and_writes_nothing(store: Store) -> None:
    catalog, cache, hot = _setup(store)
    (gid,) = _completed(hot, catalog, cache, 1)
    before, version, committed = row_counts(store), _state_version(store), hot.committed
    with pytest.raises(DBAPIError, match="no_such_column"):
        hot.run_batch(
            [_select(hot, catalog, cache), _rating(hot, catalog, cache, gid, 1, "r"), _BadSql(None)]
        )
    assert (row_counts(store), _state_version(store), hot.committed) == (before, version, committed)
    hot.run(_select(hot, catalog, cache))  # the live policy was not kept: loaded from the row
    assert _state_is_its_recomputation(store)


def test_concurrent_requests_share_transactions_and_each_is_stored_once(
    make_api: AppFactory, store: Store
) -> None:
    """Through the service: while another connection holds what a decision needs, requests
    queue; once it lets go they run in shared transactions. Every answered rating is stored
    exactly once and the state equals its recomputation."""
    api = make_api(key_cache_seconds=60, batch_writes=True)
    api.seed()
    api.select()  # the first decision creates the policy's state (the app's path)
    context: ServiceContext = api.client.app.state.prefloop  # type: ignore[attr-defined]
    batcher = context.batcher
    assert batcher is not None
    ready = [api.select()["generation_id"] for _ in range(12)]
    for gid in ready:
        api.complete(gid)
    release = _hold_write_lock(store)
    threading.Timer(0.5, release).start()

    def one(k: int) -> tuple[int, int]:
        chosen = api.call(
            "POST", "/v1/select", "client",
            json={"task": "diary", "inputs": {"place": "Jeju", "company": "my sister"}},
        )  # fmt: skip
        rated = api.rate(ready[k], 1 if k % 2 else -0.5, **{"Idempotency-Key": f"c{k}"})
        return chosen.status_code, rated.status_code

    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(one, range(12)))
    assert statuses == [(200, 201)] * 12
    assert batcher.largest > 1 and batcher.batches < batcher.jobs
    metrics = api.client.get("/metrics").text
    assert f"prefloop_write_batches_total {batcher.batches}\n" in metrics
    assert f"prefloop_write_batch_requests_total {batcher.jobs}\n" in metrics
    with store.session(readonly=True) as s:
        keys = s.scalars(
            select(Feedback.idempotency_key).where(Feedback.idempotency_key.is_not(None))
        )
        assert sorted(keys) == sorted(f"c{k}" for k in range(12))
    assert api.rate(ready[0], -0.5, **{"Idempotency-Key": "c0"}).status_code == 200  # replayed
    assert _state_is_its_recomputation(store)


def test_the_batcher_keeps_conflicts_apart_and_fails_only_the_failing_request(
    store: Store,
) -> None:
    """Requests with a key in common run in separate transactions, in order, while requests
    behind them go ahead; a database error from one request makes its batch run again one
    request per transaction, so only that request fails; a transaction failing for another
    reason fails its requests, and the batcher goes on."""
    import asyncio

    from prefloop.serve.batching import WriteBatcher

    catalog, cache, hot = _setup(store)
    g1, g2 = _completed(hot, catalog, cache, 2)
    failing = {"on": False}

    def transact(run: Any) -> list[Any]:
        if failing["on"]:
            raise RuntimeError("the thread pool went away")
        result: list[Any] = run()
        return result

    batcher = WriteBatcher(hot, transact, max_jobs=8)

    def rate(gid: str, value: float, key: str) -> Any:
        keys = (f"generation:{gid}", f"idempotency:{key}")
        return batcher.submit(lambda: _rating(hot, catalog, cache, gid, value, key), keys)

    async def scenario() -> tuple[list[Any], list[Any], list[Any], Any]:
        first = await asyncio.gather(
            rate(g1, 1, "a"),
            rate(g1, -1, "b"),  # g1 again: the next transaction
            batcher.submit(lambda: _rating(hot, catalog, cache, "gen_nope", 1, None)),
            batcher.submit(lambda: _select(hot, catalog, cache)),  # goes ahead of "b"
            return_exceptions=True,
        )
        poisoned = await asyncio.gather(
            rate(g2, 1, "c"),
            batcher.submit(lambda: _BadSql(None)),
            batcher.submit(lambda: _select(hot, catalog, cache)),
            return_exceptions=True,
        )
        failing["on"] = True
        lost = await asyncio.gather(
            batcher.submit(lambda: _select(hot, catalog, cache)),
            rate(g2, 1, "d"),
            return_exceptions=True,
        )
        failing["on"] = False
        after = await rate(g2, 1, "d")
        return first, poisoned, lost, after

    try:
        first, poisoned, lost, after = asyncio.run(scenario())
    finally:
        batcher.close()
    assert [type(o) for o in first] == [RecordResult, RecordResult, Fallback, Picked]
    changes = [(c.old, c.new) for c in first[1].reward_changes]
    assert changes == [(1.0, -1.0)]  # it ran after the first (the rater's latest rating counts)
    assert isinstance(poisoned[0], RecordResult) and isinstance(poisoned[2], Picked)
    assert isinstance(poisoned[1], DBAPIError) and "no_such_column" in str(poisoned[1])
    assert all(isinstance(e, RuntimeError) and "went away" in str(e) for e in lost)
    assert isinstance(after, RecordResult) and not after.duplicate
    assert batcher.split == 2  # the poisoned batch and the lost one
    with store.session(readonly=True) as s:
        keys = s.scalars(
            select(Feedback.idempotency_key).where(Feedback.idempotency_key.is_not(None))
        )
        assert sorted(keys) == ["a", "b", "c", "d"]
    assert _state_is_its_recomputation(store)


def test_a_batch_fills_past_requests_that_conflict_and_keeps_their_order() -> None:
    import asyncio

    from prefloop.serve.batching import WriteBatcher, _Queued

    async def check() -> list[list[str]]:
        loop = asyncio.get_running_loop()
        batcher = WriteBatcher(cast(HotPath, None), lambda run: run(), max_jobs=3)
        names = {}
        for name, keys in [
            ("r1", ["g:1"]), ("r2", ["g:1"]), ("r3", ["g:1", "k:x"]), ("s1", []),
            ("r4", ["g:2", "k:x"]), ("s2", []), ("s3", []),
        ]:  # fmt: skip
            queued = _Queued(lambda: cast(Job, None), keys, loop.create_future())
            names[id(queued)] = name
            batcher._pending.append(queued)
        batches = []
        while batcher._pending:
            batches.append([names[id(q)] for q in batcher._take()])
        return batches

    # r4 shares a key with r3, which waits for r2: it waits too (a key's first request wins)
    assert asyncio.run(check()) == [["r1", "s1", "s2"], ["r2", "s3"], ["r3"], ["r4"]]


def test_an_answer_failing_after_the_commit_is_a_server_error_not_a_hand_over(
    store: Store,
) -> None:
    from prefloop.serve.hotpath import AnswerFailed

    catalog, cache, hot = _setup(store)
    before = row_counts(store)

    def broken(_picked: Picked) -> Any:
        raise ValueError("cannot build the response")  # what the lane would hand over

    job = hot.select_job(
        catalog, cache, "diary", inputs=INPUTS, end_user=None, context={}, policy="default",
        check=lambda _task: None, then=broken,
    )  # fmt: skip
    (outcome,) = hot.run_batch([job])
    assert isinstance(outcome, AnswerFailed) and not isinstance(outcome, ValueError)
    assert "cannot build the response" in str(outcome)
    assert row_counts(store)["bandit_decisions"] == before["bandit_decisions"] + 1  # stored


def test_the_server_freezes_its_start_up_objects_while_it_runs(make_api: AppFactory) -> None:
    """gc.freeze at start-up (PREFLOOP_GC_FREEZE), undone at shutdown."""
    import gc

    before = gc.get_freeze_count()
    api = make_api()
    assert gc.get_freeze_count() > max(before, 10_000)
    api.client.__exit__(None, None, None)
    assert gc.get_freeze_count() == 0
    off = make_api(gc_freeze=False)
    assert gc.get_freeze_count() == 0
    off.client.__exit__(None, None, None)
