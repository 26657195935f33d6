"""Group commit: the hot routes' transactions, many requests to one.

Under load every decision and every reward of a task locks the same row, its policy's state,
so the requests' transactions queue on it anyway, and each pays a BEGIN, a COMMIT (a WAL flush
on PostgreSQL), a state write and, in a write thread, the fight for the GIL. :class:`WriteBatcher`
runs them in batches instead: while one batch's transaction runs in the batcher's thread, the
requests that arrive queue; the next transaction takes them (at most ``max_jobs``). A batch of
one costs what a request cost before; a batch of twenty shares one BEGIN, one lock per state
row, one state write and one COMMIT, and on PostgreSQL one pipelined round trip per step
(:class:`~prefloop.serve.hotpath.Job`). This is the group commit of database logs (DeWitt et
al. 1984, "Implementation techniques for main memory database systems").

Nothing is answered before its transaction commits, so an acknowledged request is stored, and
a batch that fails writes nothing: a job that fails alone is left out and the batch runs again
without it (:meth:`~prefloop.serve.hotpath.HotPath.run_batch`); a batch that fails after the
service's retries runs again one request per transaction, so that one request's bad value
fails only that request. Requests that name the same generation or idempotency key (their
``keys``) never share a batch: a later one waits for the next batch while requests behind it
go ahead.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from prefloop.serve.hotpath import AGAIN, ConflictGate, HotPath, Job

__all__ = ["WriteBatcher"]

log = logging.getLogger("prefloop.serve")

_SCAN = 8
"""How many queued requests per place in a batch are looked at to fill it past conflicts."""


@dataclass(frozen=True, slots=True)
class _Queued:
    make: Callable[[], Job]
    keys: Collection[str]
    future: asyncio.Future[Any]


class WriteBatcher:
    """Runs :class:`~prefloop.serve.hotpath.Job` s in batched transactions on one thread.

    ``transact`` runs a function that runs one transaction with the service's retry rules
    (:meth:`~prefloop.serve.app.ServiceContext.hot_transaction`)."""

    def __init__(
        self,
        hot: HotPath,
        transact: Callable[[Callable[[], list[Any]]], list[Any]],
        *,
        max_jobs: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_jobs < 1:
            raise ValueError(f"max_jobs must be ≥ 1, got {max_jobs}")
        self.hot = hot
        self.transact = transact
        self.max_jobs = max_jobs
        self.on_batch = on_batch
        """Called with each transaction's number of requests (metrics)."""
        self._pending: deque[_Queued] = deque()
        self._pump: asyncio.Task[None] | None = None
        self._thread: ThreadPoolExecutor | None = None
        self.batches = 0
        """Transactions run (statistics; ``jobs / batches`` is the mean batch size)."""
        self.jobs = 0
        """Requests they carried (a request left for the next one counts there)."""
        self.largest = 0
        """The most requests one transaction carried."""
        self.split = 0
        """Batches that failed and ran again one request per transaction."""

    async def submit(self, make: Callable[[], Job], keys: Collection[str] = ()) -> Any:
        """The result of the job ``make`` builds (in the batcher's thread, so a look-up it
        makes does not hold up the loop), once its batch has committed; or its error.
        ``keys`` name what the job reads and changes
        (:func:`~prefloop.serve.hotpath.conflict_keys`): jobs with a key in common never share
        a batch."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(_Queued(make, keys, future))
        if self._pump is None or self._pump.done():
            self._pump = loop.create_task(self._drain())
        return await future

    def close(self) -> None:
        """End the thread after the batch it runs (the server has stopped taking requests)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.shutdown(wait=True)

    def _take(self) -> list[_Queued]:
        """The next batch: queued requests in order, skipping those with a key an earlier
        request has (they stay first in the queue, in order, for the next batch)."""
        taken: list[_Queued] = []
        skipped: list[_Queued] = []
        gate = ConflictGate()
        scan = _SCAN * self.max_jobs
        while self._pending and len(taken) < self.max_jobs and scan > 0:
            scan -= 1
            queued = self._pending.popleft()
            if queued.future.done():  # cancelled while it waited: nothing of it ran
                continue
            (taken if gate.admit(queued.keys) else skipped).append(queued)
        self._pending.extendleft(reversed(skipped))
        return taken

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            taken = self._take()
            if not taken:
                continue
            if self._thread is None:
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="prefloop-batch")
            try:
                outcomes = await loop.run_in_executor(
                    self._thread, self._run, [queued.make for queued in taken]
                )
            except BaseException as exc:  # not a transaction's failure: the thread's
                for queued in taken:
                    if not queued.future.done():
                        queued.future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            again = []
            for queued, outcome in zip(taken, outcomes, strict=True):
                if queued.future.done():  # the request was cancelled (what it did is stored)
                    continue
                if outcome is AGAIN:
                    again.append(queued)
                elif isinstance(outcome, BaseException):
                    queued.future.set_exception(outcome)
                else:
                    queued.future.set_result(outcome)
            self._pending.extendleft(reversed(again))

    def _run(self, makes: list[Callable[[], Job]]) -> list[Any]:
        """In the batcher's thread: build the jobs, run them in one transaction (one each
        when that fails). Per job its result, its error or :data:`AGAIN`."""
        outcomes: list[Any] = [None] * len(makes)
        built: list[tuple[int, Job]] = []
        for i, make in enumerate(makes):
            try:
                built.append((i, make()))
            except Exception as exc:  # e.g. an unknown task: this request's answer
                outcomes[i] = exc
        if not built:
            return outcomes
        jobs = [job for _, job in built]
        try:
            ran = self.transact(lambda: self.hot.run_batch(jobs))
        except Exception as exc:
            if len(jobs) == 1:
                ran = [exc]
            else:  # nothing was committed: find the request that fails
                log.warning("a batch of %d failed (%s); one by one now", len(jobs), exc)
                self.split += 1
                ran = [self._alone(job) for job in jobs]
        for (i, _), outcome in zip(built, ran, strict=True):
            outcomes[i] = outcome
        carried = sum(outcome is not AGAIN for outcome in ran)
        self.batches += 1
        self.jobs += carried
        self.largest = max(self.largest, carried)
        if self.on_batch is not None:
            try:
                self.on_batch(carried)
            except Exception:  # the requests are stored: their answers stand
                log.exception("counting a batch failed")
        return outcomes

    def _alone(self, job: Job) -> Any:
        try:
            return self.transact(lambda: self.hot.run_batch([job]))[0]
        except Exception as exc:
            return exc
