"""Group commit: the hot routes' transactions, many requests to one.

Under load every decision and every reward of a task locks the same row, its policy's state,
so the requests' transactions queue on it anyway, and each pays a BEGIN, a COMMIT (a WAL flush
on PostgreSQL), a state write and, in a write thread, the fight for the GIL. :class:`WriteBatcher`
runs them in batches instead: while one batch's transaction runs in the batcher's thread, the
requests that arrive queue; the next transaction takes all of them (at most ``max_jobs``). A
batch of one costs what a request cost before; a batch of twenty shares one BEGIN, one lock
per state row, one state write and one COMMIT, and on PostgreSQL one pipelined round trip per
step (:class:`~prefloop.serve.hotpath.Job`). This is the group commit of database logs
(DeWitt et al. 1984, "Implementation techniques for main memory database systems").

Nothing is answered before its transaction commits, so an acknowledged request is stored,
and a batch that fails writes nothing: a job that fails alone is left out and the batch runs
again without it (:meth:`~prefloop.serve.hotpath.HotPath.run_batch`), a database error fails
the batch after the service's retries. Two requests about the same generation or idempotency
key never share a batch: the second waits for the next one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefloop.serve.hotpath import AGAIN, HotPath, Job

__all__ = ["WriteBatcher"]


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
        """Called with each committed transaction's number of requests (metrics)."""
        self._pending: deque[tuple[Callable[[], Job], asyncio.Future[Any]]] = deque()
        self._pump: asyncio.Task[None] | None = None
        self._thread: ThreadPoolExecutor | None = None
        self.batches = 0
        """Transactions run (statistics; ``jobs / batches`` is the mean batch size)."""
        self.jobs = 0
        """Requests they carried (a request left for the next one counts there)."""
        self.largest = 0
        """The most requests one transaction carried."""

    async def submit(self, make: Callable[[], Job]) -> Any:
        """The result of the job ``make`` builds (in the batcher's thread, so a look-up it
        makes does not hold up the loop), once its batch has committed; or its error."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((make, future))
        if self._pump is None or self._pump.done():
            self._pump = loop.create_task(self._drain())
        return await future

    def close(self) -> None:
        """End the thread after the batch it runs (the server has stopped taking requests)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.shutdown(wait=True)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="prefloop-batch")
        while self._pending:
            taken = [self._pending.popleft() for _ in range(min(self.max_jobs, len(self._pending)))]
            try:
                outcomes = await loop.run_in_executor(
                    self._thread, self._run, [make for make, _ in taken]
                )
            except BaseException as exc:  # the transaction failed after the retries
                for _, future in taken:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            again = []
            for (make, future), outcome in zip(taken, outcomes, strict=True):
                if future.done():  # the request was cancelled (what it did is stored)
                    continue
                if outcome is AGAIN:
                    again.append((make, future))
                elif isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
            self._pending.extendleft(reversed(again))

    def _run(self, makes: list[Callable[[], Job]]) -> list[Any]:
        """In the batcher's thread: build the jobs, run them in one transaction."""
        outcomes: list[Any] = [None] * len(makes)
        built: list[tuple[int, Job]] = []
        for i, make in enumerate(makes):
            try:
                built.append((i, make()))
            except Exception as exc:  # e.g. an unknown task: this request's answer
                outcomes[i] = exc
        if built:
            jobs = [job for _, job in built]
            ran = self.transact(lambda: self.hot.run_batch(jobs))
            for (i, _), outcome in zip(built, ran, strict=True):
                outcomes[i] = outcome
            carried = sum(outcome is not AGAIN for outcome in ran)
            self.batches += 1
            self.jobs += carried
            self.largest = max(self.largest, carried)
            if self.on_batch is not None:
                self.on_batch(carried)
        return outcomes
