"""The three hot transactions on a pooled connection's DBAPI connection: no Session, no
SQLAlchemy per-statement machinery; one request per transaction, or many (group commit,
:meth:`HotPath.run_batch`).

The statements are the ones the ORM path runs (the SQLAlchemy Core statements of
:mod:`prefloop.store.statements`, which :mod:`prefloop.serve.ops`, :mod:`prefloop.bandit.online`
and :mod:`prefloop.feedback.record` run through a session), compiled once per dialect to the
driver's SQL text and paramstyle (:class:`~prefloop.store.statements.FastStatements`). A
feedback job takes the steps of :func:`prefloop.loop.submit_feedback`. Values go
through the same column types' bind and result processors, so the rows written read back
through the ORM exactly as rows the ORM wrote (JSON, datetimes). Each request's work is a
:class:`Job` (:mod:`._jobs`). The transaction is the ORM path's: ``BEGIN IMMEDIATE``
on SQLite, the state row and the rated generation locked ``FOR UPDATE`` on PostgreSQL,
``INSERT … ON CONFLICT (idempotency_key) DO NOTHING`` deciding between duplicates; it commits
once and rolls back on any error, so a failed request writes nothing.

Only the common case runs here: a task with active arms (from the catalog cache, read afresh
in a read transaction of its own when older than its time to live), an existing policy state
row, no seed, a rating, thumbs or regenerate event about a completed generation. Anything else
(a refusal to explain, a duplicate key to replay, a first decision) raises :class:`Fallback`
before anything is committed, and the caller runs the ORM path (:mod:`prefloop.serve.ops`),
which answers with its errors and messages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from functools import partial
from typing import Any, TypeVar, cast

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from prefloop.bandit.online import PolicyCache
from prefloop.feedback.events import FeedbackEvent
from prefloop.feedback.record import RecordResult, feedback_fields, reward_rules_for
from prefloop.feedback.rewards import REWARD_KINDS
from prefloop.serve._jobs import (
    _HANDLED_EVENTS,
    Fallback,
    Job,
    Picked,
    _CompleteJob,
    _FeedbackJob,
    _Live,
    _SelectJob,
    _Tx,
)
from prefloop.serve.catalog import Catalog
from prefloop.store.models import Generation, Task
from prefloop.store.statements import COMPLETE_KEYS, FastStatements

T = TypeVar("T")

__all__ = [
    "AGAIN",
    "AnswerFailed",
    "ConflictGate",
    "Fallback",
    "HotPath",
    "Job",
    "Picked",
    "conflict_keys",
    "no_wait",
]


_NO_WAIT: ContextVar[bool] = ContextVar("prefloop_hot_path_no_wait", default=False)
LOCK_TIMEOUT_MS = 2
"""PostgreSQL's ``lock_timeout`` for :func:`no_wait` transactions."""


@contextlib.contextmanager
def no_wait() -> Iterator[None]:
    """Hot-path transactions started in this block do not wait for locks held by other
    connections (SQLite: busy timeout 0; PostgreSQL: ``lock_timeout`` of
    :data:`LOCK_TIMEOUT_MS`): they fail (``OperationalError``) instead. They run on one
    connection kept for them: call them from one thread only (the event loop)."""
    token = _NO_WAIT.set(True)
    try:
        yield
    finally:
        _NO_WAIT.reset(token)


def conflict_keys(generation_ids: Iterable[str | None], idempotency_key: str | None) -> set[str]:
    """What a request reads and changes, as :class:`ConflictGate` compares it: its
    generations and its idempotency key."""
    keys = {f"generation:{gid}" for gid in generation_ids if gid is not None}
    if idempotency_key is not None:
        keys.add(f"idempotency:{idempotency_key}")
    return keys


class ConflictGate:
    """Admits requests in the order they came, except one with a key (:func:`conflict_keys`)
    of a request before it, admitted or not: requests about the same generation or key never
    share a transaction and run in the order they came."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def admit(self, keys: Collection[str]) -> bool:
        admitted = self._seen.isdisjoint(keys)
        self._seen.update(keys)  # a held-back request's keys too: it goes first next time
        return admitted


class AnswerFailed(RuntimeError):
    """A job's transaction committed but its ``then`` (the answer) raised: a server error,
    never a request to run again elsewhere (it is stored)."""


class _Abort(Exception):
    """A job failed after it changed something: the transaction rolls back and runs again
    without it."""

    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(index, error)
        self.index, self.error = index, error


AGAIN = object()
"""The outcome of a job :meth:`HotPath.run_batch` left for the next batch (another job of the
batch reads or changes the same generation or idempotency key)."""


class HotPath:
    """The select, output and feedback transactions of one store, on raw DBAPI connections."""

    def __init__(self, engine: Engine, read: Callable[[], AbstractContextManager[Session]]) -> None:
        self.engine = engine
        self.read = read
        """Opens a read-only session (the catalog's look-ups when its entry is too old)."""
        self._impatient: Any = None  # the pooled connection of no_wait transactions
        self.dialect = engine.dialect
        self.sqlite = engine.dialect.name == "sqlite"
        self.statements = FastStatements(engine.dialect)
        self.committed = 0
        """Transactions this path committed (statistics: the others declined or failed)."""

    # -- the transaction ---------------------------------------------------------------------
    def transaction(self, work: Callable[[_Tx], T]) -> T:
        """Run ``work`` in one transaction on a pooled connection; commit, or roll back and
        raise (DBAPI errors as SQLAlchemy's, with ``connection_invalidated`` set for a dead
        connection, so the caller's retry rules apply unchanged). Inside :func:`no_wait` a
        lock another connection holds fails at once instead of waiting: that runs on a
        connection of its own (for the one thread that runs them, the event loop: no pool
        check-out and return per request)."""
        if _NO_WAIT.get():
            if self._impatient is None:
                held = self.engine.raw_connection()
                driver: Any = held.driver_connection
                if self.sqlite:
                    driver.execute("PRAGMA busy_timeout=0")
                else:  # a session setting, committed at once
                    driver.execute(f"SET lock_timeout = '{LOCK_TIMEOUT_MS}ms'")
                    driver.commit()
                self._impatient = held
            return self._run(self._impatient, work, keep=True)
        return self._run(self.engine.raw_connection(), work, keep=False)

    def close(self) -> None:
        """Give back the connection of :func:`no_wait` transactions (if one was taken)."""
        held, self._impatient = self._impatient, None
        if held is not None:
            held.close()

    def _run(self, pooled: Any, work: Callable[[_Tx], T], *, keep: bool) -> T:
        dbapi: Any = pooled.driver_connection
        cursor = None
        try:
            cursor = dbapi.cursor()
            tx = _Tx(dbapi, cursor, self.statements)
            try:
                if self.sqlite:
                    cursor.execute("BEGIN IMMEDIATE")
                    result = work(tx)
                    tx.close_cursors()
                    for sql, rows in tx.grouped_writes():
                        cursor.executemany(sql, rows)
                    cursor.execute("COMMIT")
                else:  # one pipeline: BEGIN goes with the first statement, writes with COMMIT
                    with dbapi.pipeline():
                        result = work(tx)
                        for sql, rows in tx.grouped_writes():
                            if len(rows) == 1:
                                cursor.execute(sql, rows[0])
                            else:
                                cursor.executemany(sql, rows)
                        dbapi.commit()
                self.committed += 1
                return result
            except BaseException:
                if self.sqlite:
                    with contextlib.suppress(self.dialect.loaded_dbapi.Error):
                        tx.close_cursors()
                self._rollback(dbapi, cursor)
                raise
        except self.dialect.loaded_dbapi.Error as exc:
            dead = self.dialect.is_disconnect(exc, dbapi, cursor)
            if dead:
                pooled.invalidate(exc)
                if keep:
                    self._impatient = None
            raise DBAPIError.instance(
                None,
                None,
                exc,
                self.dialect.loaded_dbapi.Error,
                connection_invalidated=dead,
                dialect=self.dialect,
            ) from exc
        finally:
            if cursor is not None:
                with contextlib.suppress(self.dialect.loaded_dbapi.Error):
                    cursor.close()
            if not keep:
                pooled.close()

    def _rollback(self, dbapi: Any, cursor: Any) -> None:
        try:
            if self.sqlite:
                if dbapi.in_transaction:
                    cursor.execute("ROLLBACK")
            else:
                dbapi.rollback()
        except self.dialect.loaded_dbapi.Error:
            pass  # a dead connection: the transaction is gone with it

    # -- jobs --------------------------------------------------------------------------------
    def run(self, job: Job) -> Any:
        """``job`` in a transaction of its own: its result (after ``then``), or its error."""
        outcome = self.run_batch([job])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def run_batch(self, jobs: Sequence[Job]) -> list[Any]:
        """``jobs`` in one transaction (see :class:`Job`): per job its result (after its
        ``then``), the exception it raised (nothing of it was committed), or :data:`AGAIN`
        for a job that names a generation or idempotency key an earlier job of the batch
        names (:class:`ConflictGate`). A database error fails the whole transaction and is
        raised (nothing was committed; the caller's retry rules apply)."""
        outcomes: list[Any] = [None] * len(jobs)
        todo: list[int] = []
        gate = ConflictGate()
        for i, job in enumerate(jobs):
            if gate.admit(conflict_keys([job.generation_id], job.idempotency_key)):
                todo.append(i)
            else:
                outcomes[i] = AGAIN
        while todo:
            batch = [jobs[i] for i in todo]
            try:
                results, lives = self.transaction(partial(self._steps, jobs=batch))
            except _Abort as abort:
                outcomes[todo.pop(abort.index)] = abort.error
                continue
            for cache, state, live in lives:  # committed: the live policies are the rows'
                cache.keep(state, live.policy, live.row)
            for i, result in zip(todo, results, strict=True):
                if isinstance(result, BaseException):
                    outcomes[i] = result
                    continue
                try:
                    outcomes[i] = jobs[i].finish(result)
                except Exception as exc:  # committed: not an error to hand to the ORM path
                    failed = AnswerFailed(f"stored, but its answer failed: {exc!r}")
                    outcomes[i] = failed.with_traceback(exc.__traceback__)
            break
        return outcomes

    def _steps(
        self, tx: _Tx, *, jobs: Sequence[Job]
    ) -> tuple[list[Any], list[tuple[PolicyCache, tuple[int, str], _Live]]]:
        database_error = self.dialect.loaded_dbapi.Error
        results: list[Any] = [None] * len(jobs)
        alive = list(range(len(jobs)))

        def step(call: Callable[[int], Any], order: Sequence[int] | None = None) -> None:
            nonlocal alive
            failed = set()
            for i in alive if order is None else order:
                try:
                    results[i] = call(i)
                except database_error:
                    raise  # the transaction's failure, not the job's
                except Exception as exc:
                    if jobs[i].touched:
                        raise _Abort(i, exc) from exc
                    results[i] = exc
                    failed.add(i)
            alive = [i for i in alive if i not in failed]  # in the batch's order

        for job in jobs:
            job.reset()
        tx.read_rated(sorted({cast(str, job.generation_id) for job in jobs if job.rates}))
        # outputs lock their generations in id order, like the rated read: two transactions
        # that change the same generations take their locks in the same order
        step(lambda i: jobs[i].first(tx), sorted(alive, key=lambda i: jobs[i].generation_id or ""))
        step(lambda i: jobs[i].second(tx))
        tx.read_events(
            sorted({cast(str, jobs[i].generation_id) for i in alive if jobs[i].wants_events})
        )
        wanted = sorted({key for i in alive if (key := jobs[i].key) is not None})
        locks = {
            key: tx.send(tx.s.lock_stamp, {"task_id": key[0], "policy": key[1]}) for key in wanted
        }
        caches: dict[tuple[int, str], PolicyCache] = {}
        for key in wanted:
            cache = next(jobs[i].cache for i in alive if jobs[i].key == key)
            assert cache is not None, "a job that names a policy state has the cache"
            try:
                tx.lives[key] = tx.live(cache, key, locks[key].one())
                caches[key] = cache
            except Fallback as exc:  # raised to the jobs that need it (Tx.state)
                tx.lost[key] = exc

        step(lambda i: jobs[i].last(tx))
        tx.flush()
        return results, [(caches[key], key, live) for key, live in tx.lives.items()]

    # -- POST /v1/select ---------------------------------------------------------------------
    def select_job(
        self,
        catalog: Catalog,
        cache: PolicyCache,
        task_name: str,
        *,
        inputs: Mapping[str, Any],
        end_user: str | None,
        context: Mapping[str, Any],
        policy: str,
        check: Callable[[Task], None],
        then: Callable[[Picked], Any] | None = None,
    ) -> Job:
        """:func:`prefloop.serve.ops.select_arm` without a seed, for a cached task."""
        entry = catalog.current(task_name, self.read)  # unknown task: NotFoundError
        if not entry.active_arms:
            raise Fallback("no active arm: the ORM path explains")
        check(entry.task)  # missing inputs: InvalidInputError, as the ORM path
        return _SelectJob(
            then,
            cache=cache,
            task=entry.task,
            arms=entry.active_arms,
            inputs=inputs,
            end_user=end_user,
            context=context,
            policy=policy,
        )

    def select(self, catalog: Catalog, cache: PolicyCache, task_name: str, **kwargs: Any) -> Picked:
        """:meth:`select_job` in a transaction of its own."""
        return cast(Picked, self.run(self.select_job(catalog, cache, task_name, **kwargs)))

    # -- POST /v1/generations/{id}/output ------------------------------------------------------
    def complete_job(
        self,
        generation_id: str,
        values: Mapping[str, Any],
        then: Callable[[Generation], Any] | None = None,
    ) -> Job:
        """:func:`prefloop.serve.ops.complete_generation` with exactly one of output or error;
        a refused update (unknown id, not pending) falls back for the ORM path's answer."""
        if (values.get("output") is None) == (values.get("error") is None):
            raise Fallback("output and error: the ORM path explains")
        params = {name: values.get(name) for name in COMPLETE_KEYS}
        params["status"] = "ok" if values.get("error") is None else "failed"
        params["generation_id"] = generation_id
        return _CompleteJob(then, generation_id, params)

    def complete(self, generation_id: str, values: Mapping[str, Any]) -> Generation:
        """:meth:`complete_job` in a transaction of its own."""
        return cast(Generation, self.run(self.complete_job(generation_id, values)))

    # -- POST /v1/feedback -------------------------------------------------------------------
    def feedback_job(
        self,
        catalog: Catalog,
        cache: PolicyCache,
        task_name: str,
        event: FeedbackEvent,
        then: Callable[[RecordResult], Any] | None = None,
    ) -> Job:
        """:func:`prefloop.serve.ops.submit_feedback` for a new rating, thumbs or regenerate
        event about a completed generation of a cached task."""
        if not isinstance(event, _HANDLED_EVENTS):
            raise Fallback("pairwise, ranking and edit events take the ORM path")
        task = catalog.current(task_name, self.read).task  # unknown task: NotFoundError
        return _FeedbackJob(
            then,
            cache=cache,
            task=task,
            fields=feedback_fields(task, event),  # bad values: InvalidInputError, as the ORM path
            rules=reward_rules_for(task),
            rewarded=event.kind in REWARD_KINDS,
            key=event.idempotency_key,
        )

    def feedback(
        self, catalog: Catalog, cache: PolicyCache, task_name: str, event: FeedbackEvent
    ) -> RecordResult:
        """:meth:`feedback_job` in a transaction of its own."""
        return cast(RecordResult, self.run(self.feedback_job(catalog, cache, task_name, event)))
