"""The three hot transactions on a pooled connection's DBAPI connection: no Session, no
SQLAlchemy per-statement machinery.

The statements are the ones the ORM path runs (the SQLAlchemy Core statements of
:mod:`prefloop.serve.ops`, :mod:`prefloop.bandit.online` and :mod:`prefloop.feedback.record`),
compiled once per dialect to the driver's SQL text and paramstyle. Values go through the same
column types' bind and result processors, so the rows written read back through the ORM exactly
as rows the ORM wrote (JSON, datetimes). The transaction is the ORM path's: ``BEGIN IMMEDIATE``
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, TypeVar, cast

from sqlalchemy import Engine, Table, bindparam, select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from prefloop.bandit._base import Policy
from prefloop.bandit._thompson import ThompsonSampling
from prefloop.bandit.online import (
    _DECISION_OF,
    _WRITE_STATE,
    PolicyCache,
    _logged_decision,
    _StateRow,
    _tick,
)
from prefloop.feedback.events import FeedbackEvent, RatingEvent, RegenerateEvent, ThumbsEvent
from prefloop.feedback.record import (
    _FEEDBACK,
    _REWARD_COLUMNS,
    _SET_REWARD,
    RecordResult,
    RewardChange,
    _fields,
    reward_rules_for,
)
from prefloop.feedback.rewards import REWARD_KINDS, derive_reward
from prefloop.llm.generate import render_template
from prefloop.serve.catalog import Catalog
from prefloop.store.models import (
    Arm,
    BanditDecision,
    Generation,
    PolicyState,
    Task,
    new_id,
    utcnow,
)
from prefloop.store.repo import _insert_statement

T = TypeVar("T")

__all__ = ["AGAIN", "Fallback", "HotPath", "Job", "Picked", "no_wait"]


class Fallback(Exception):
    """The raw path does not handle this request; run the ORM path (nothing was committed)."""


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


@dataclass(frozen=True, slots=True)
class _Statement:
    """A Core statement compiled for one dialect: SQL text, parameter order, processors."""

    sql: str
    positions: tuple[str, ...] | None  # positional (qmark, format); None: named
    defaults: dict[str, Any]
    binds: tuple[tuple[str, Callable[[Any], Any]], ...]
    results: tuple[Callable[[Any], Any] | None, ...]

    @classmethod
    def of(
        cls,
        statement: Any,
        dialect: Dialect,
        keys: Sequence[str] | None = None,
        *,
        expand: int | None = None,
    ) -> _Statement:
        """``statement`` compiled; with ``expand``, its expanding ``ids`` parameter rendered
        as that many parameters ``ids_1`` … ``ids_<expand>``."""
        if expand is not None:
            statement = statement.params(ids=[""] * expand)
        compiled = statement.compile(
            dialect=dialect,
            column_keys=list(keys) if keys is not None else None,
            compile_kwargs={"render_postcompile": True} if expand is not None else {},
        )
        binds = []
        for name, bind in compiled.binds.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                binds.append((name, process))
        defaults = {  # parameters with a value in the statement (e.g. status = 'pending')
            name: bind.value
            for bind, name in compiled.bind_names.items()
            if not bind.required and bind.value is not None
        }
        returned = getattr(statement, "_returning", ()) or ()
        columns = (
            list(statement.selected_columns) if hasattr(statement, "selected_columns") else []
        ) or list(returned)
        results = tuple(_result_processor(c.type, dialect) for c in columns)
        positions = compiled.positiontup
        return cls(
            sql=compiled.string,
            positions=tuple(positions) if positions is not None else None,
            defaults=defaults,
            binds=tuple(binds),
            results=results,
        )

    def params(self, values: Mapping[str, Any]) -> Any:
        merged = {**self.defaults, **values}
        for name, process in self.binds:
            if name in merged:
                merged[name] = process(merged[name])
        if self.positions is None:
            return merged
        return tuple(merged[name] for name in self.positions)

    def row(self, raw: Sequence[Any] | None) -> tuple[Any, ...] | None:
        if raw is None:
            return None
        return tuple(v if p is None else p(v) for p, v in zip(self.results, raw, strict=True))


def _result_processor(type_: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    try:
        return cast(
            "Callable[[Any], Any] | None",
            type_.dialect_impl(dialect).result_processor(dialect, None),
        )
    except TypeError:  # psycopg's Float asks for the column's type code: float8 needs nothing
        return None


_GENERATION_COLUMNS = tuple(c.key for c in cast(Table, Generation.__table__).columns)
_DECISION_COLUMNS = tuple(c.key for c in cast(Table, BanditDecision.__table__).columns)
_FEEDBACK_KEYS = (
    "task_id",
    "kind",
    "source",
    "author",
    "idempotency_key",
    "created_at",
    "generation_id",
    "other_generation_id",
    "value",
    "payload",
)
_COMPLETE_KEYS = (
    "status",
    "output",
    "error",
    "model",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "cost",
)
_HANDLED_EVENTS = (RatingEvent, ThumbsEvent, RegenerateEvent)


def _rated_statement() -> Any:
    """What feedback reads about the generations it rates, for a batch at once: each one's
    id, task, reward and arm, then the columns of :data:`_DECISION_OF` (its status, its
    decision, the decision's arm name); the generations locked, in id order."""
    g, d, a = (cast(Table, m.__table__) for m in (Generation, BanditDecision, Arm))
    joined = g.outerjoin(d, d.c.id == g.c.decision_id).outerjoin(a, a.c.id == d.c.arm_id)
    columns = [g.c.id, g.c.task_id, g.c.reward, g.c.arm_id, *_DECISION_OF.selected_columns]
    return (
        select(*columns)
        .select_from(joined)
        .where(g.c.id.in_(bindparam("ids", expanding=True)))
        .order_by(g.c.id)
        .with_for_update(of=g)
    )


_RATED = _rated_statement()
_REWARD_EVENTS = select(*_REWARD_COLUMNS).where(
    _FEEDBACK.c.generation_id.in_(bindparam("ids", expanding=True)),
    _FEEDBACK.c.kind.in_([bindparam(f"kind{k}", kind) for k, kind in enumerate(REWARD_KINDS)]),
)
"""The reward events of a batch's rated generations."""


def positional(dialect: Dialect) -> Dialect:
    """``dialect``, or for psycopg's named ``%(name)s`` placeholders a copy that renders ``%s``:
    positional parameters skip psycopg's per-call reordering of a dict (a few percent of a hot
    request's CPU). The SQL is otherwise the same (tested)."""
    if dialect.paramstyle != "pyformat":
        return dialect
    return cast(Dialect, type(dialect)(paramstyle="format"))  # type: ignore[call-arg]


class _Statements:
    """Every statement of the hot path, compiled for one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        from prefloop.serve.ops import _COMPLETE

        name = dialect.name
        dialect = positional(dialect)
        generations = cast(Table, Generation.__table__)
        decisions = cast(Table, BanditDecision.__table__)
        states = cast(Table, PolicyState.__table__)
        self.lock_stamp = _Statement.of(
            select(states.c.id, states.c.config, states.c.version, states.c.updated_at)
            .where(states.c.task_id == bindparam("task_id"), states.c.policy == bindparam("policy"))
            .with_for_update(),
            dialect,
        )
        self.state_of = _Statement.of(
            select(states.c.state).where(states.c.id == bindparam("row_id")), dialect
        )
        self.write_state = _Statement.of(_WRITE_STATE, dialect, ("state", "version", "updated_at"))
        self.insert_decision = _Statement.of(
            _insert_statement(name, decisions, (), ()), dialect, _DECISION_COLUMNS
        )
        self.insert_generation = _Statement.of(
            _insert_statement(name, generations, (), ()), dialect, _GENERATION_COLUMNS
        )
        self.complete = _Statement.of(_COMPLETE, dialect, _COMPLETE_KEYS)
        self.insert_feedback = _Statement.of(
            _insert_statement(name, _FEEDBACK, (), ("id",)), dialect, _FEEDBACK_KEYS
        )
        self.insert_feedback_once = _Statement.of(
            _insert_statement(name, _FEEDBACK, ("idempotency_key",), ("id",)),
            dialect,
            _FEEDBACK_KEYS,
        )
        self.set_reward = _Statement.of(_SET_REWARD, dialect)
        self.dialect = dialect
        self._expanded: dict[tuple[str, int], _Statement] = {}

    def expanded(self, name: str, statement: Any, count: int) -> _Statement:
        """``statement`` with ``count`` values for its ``ids`` (compiled once per count)."""
        found = self._expanded.get((name, count))
        if found is None:
            found = _Statement.of(statement, self.dialect, expand=count)
            self._expanded[(name, count)] = found
        return found


@dataclass(frozen=True, slots=True)
class _Sent:
    """A statement sent on a cursor of its own, its rows not read yet."""

    cursor: Any
    statement: _Statement

    def one(self) -> tuple[Any, ...] | None:
        try:
            return self.statement.row(self.cursor.fetchone())
        finally:
            self.cursor.close()

    def all(self) -> list[tuple[Any, ...]]:
        try:
            return [cast(tuple[Any, ...], self.statement.row(r)) for r in self.cursor.fetchall()]
        finally:
            self.cursor.close()


@dataclass(slots=True)
class _Live:
    """A policy state row locked in the transaction, with its live policy."""

    policy: Policy
    row: _StateRow
    changed: bool = False


class _Tx:
    """One transaction's cursor with the compiled statements, and what its jobs share: the
    locked policy states and the writes to run at the commit."""

    def __init__(self, connection: Any, cursor: Any, statements: _Statements) -> None:
        self.connection = connection
        self.cursor = cursor
        self.s = statements
        self.writes: list[tuple[str, Any]] = []
        self.lives: dict[tuple[int, str], _Live] = {}
        self._rated: _Sent | dict[str, tuple[Any, ...]] = {}
        self._events: _Sent | dict[str, list[tuple[Any, ...]]] = {}

    def send_many(self, name: str, statement: Any, ids: Sequence[str]) -> _Sent:
        """:meth:`send` ``statement`` for the values ``ids`` of its expanding parameter."""
        compiled = self.s.expanded(name, statement, len(ids))
        return self.send(compiled, {f"ids_{k}": v for k, v in enumerate(ids, 1)})

    def read_rated(self, ids: Sequence[str]) -> None:
        """Lock and read the generations ``ids`` (see :meth:`rated`)."""
        if ids:
            self._rated = self.send_many("rated", _RATED, ids)

    def rated(self, generation_id: str) -> tuple[Any, ...] | None:
        """A :data:`_RATED` row read by :meth:`read_rated` (None: no such generation)."""
        if isinstance(self._rated, _Sent):
            self._rated = {row[0]: row for row in self._rated.all()}
        return self._rated.get(generation_id)

    def read_events(self, ids: Sequence[str]) -> None:
        """Read the reward events of the generations ``ids`` (see :meth:`events`)."""
        if ids:
            self._events = self.send_many("events", _REWARD_EVENTS, ids)

    def events(self, generation_id: str) -> list[tuple[Any, ...]]:
        """The reward events of a generation read by :meth:`read_events`."""
        if isinstance(self._events, _Sent):
            grouped: dict[str, list[tuple[Any, ...]]] = {}
            for row in self._events.all():
                grouped.setdefault(row[0], []).append(row)
            self._events = grouped
        return self._events.get(generation_id, [])

    def send(self, statement: _Statement, values: Mapping[str, Any]) -> _Sent:
        """Run ``statement`` on a cursor of its own and read its rows later: on PostgreSQL the
        statements sent before a read go to the server in one round trip (the pipeline)."""
        cursor = self.connection.cursor()
        cursor.execute(statement.sql, statement.params(values))
        return _Sent(cursor, statement)

    def one(self, statement: _Statement, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        self.cursor.execute(statement.sql, statement.params(values))
        return statement.row(self.cursor.fetchone())

    def later(self, statement: _Statement, values: Mapping[str, Any]) -> None:
        """Run a write whose answer nothing waits for at commit (on PostgreSQL pipelined with
        the COMMIT: one round trip, not one each). The writes run grouped by statement, in the
        order each statement was first queued, so a row queued before the rows that refer to
        it is inserted first."""
        self.writes.append((statement.sql, statement.params(values)))

    def live(
        self, cache: PolicyCache, key: tuple[int, str], found: tuple[Any, ...] | None
    ) -> _Live:
        """The live policy of the locked state row ``found`` (its id, config, version and
        time): the cache's when it was kept with that row, else loaded from the row's state,
        which is read only then (decoding it is a good part of a request's CPU)."""
        if found is None:  # the first decision creates the row: the ORM path does that
            raise Fallback("no policy state row yet")
        row_id, config, version, updated_at = found
        policy = cache.current(key, (row_id, version, updated_at), config)
        if policy is not None:
            return _Live(policy, _StateRow(row_id, config, {}, version, updated_at))
        state = self.one(self.s.state_of, {"row_id": row_id})
        assert state is not None, "the row is locked in this transaction"
        row = _StateRow(row_id, config, state[0], version, updated_at)
        return _Live(cache.load(row), row)

    def changed(self, live: _Live) -> datetime:
        """Note that ``live``'s policy changed: the row's version and time move on (the time
        is returned: a decision's), its state is written once, at the commit."""
        row = live.row
        row.version, row.updated_at = row.version + 1, _tick(row.updated_at)
        live.changed = True
        return row.updated_at

    def flush(self) -> None:
        """Queue the state of each changed policy."""
        for live in self.lives.values():
            if live.changed:
                row = live.row
                row.state = live.policy.to_state()
                values = {"state": row.state, "version": row.version, "updated_at": row.updated_at}
                self.later(self.s.write_state, {"row_id": row.id, **values})

    def grouped_writes(self) -> list[tuple[str, list[Any]]]:
        """The queued writes, grouped by statement (in first-queued order)."""
        groups: dict[str, list[Any]] = {}
        for sql, params in self.writes:
            groups.setdefault(sql, []).append(params)
        return list(groups.items())


@dataclass(frozen=True, slots=True)
class Picked:
    """What :meth:`HotPath.select` chose and logged."""

    decision_id: str
    generation_id: str
    policy: str
    propensity: float
    arm: Arm
    prompt: str | None


class Job:
    """One request's work in a hot-path transaction, alone or next to others (a batch).

    A transaction runs every job's :meth:`first` (send reads), then every job's :meth:`second`
    (read those, send more, name the policy state needed in :attr:`key`), locks the policy
    states named (in key order), then runs every job's :meth:`last` (compute, queue writes),
    writes each changed state once and commits. On PostgreSQL that is one pipelined round trip
    per step for the whole batch. A job that raises before it changed anything
    (:attr:`touched` unset) fails alone; one that raises after makes the transaction roll back,
    and it runs again without that job. :attr:`generation_id` and :attr:`idempotency_key` name
    what the job reads and changes: one job per generation and per key in a batch.
    """

    generation_id: str | None = None
    idempotency_key: str | None = None
    rates = False
    """Whether the job reads its generation (locked) and decision with :meth:`_Tx.rated`:
    the batch reads all of them in one statement before :meth:`second`."""

    def __init__(self, then: Callable[[Any], Any] | None) -> None:
        self.then = then
        """Applied to the result after the commit (e.g. the HTTP response)."""
        self.key: tuple[int, str] | None = None
        self.cache: PolicyCache | None = None
        self.touched = False
        self.wants_events = False
        """Set by :meth:`second` to read the generation's reward events with
        :meth:`_Tx.events` in :meth:`last` (one statement for the batch)."""

    def reset(self) -> None:
        """Before each attempt: a rolled-back transaction leaves nothing in the job."""
        self.key, self.touched, self.wants_events = None, False, False

    def first(self, tx: _Tx) -> None:
        """Send the reads that do not depend on anything (round trip one)."""

    def second(self, tx: _Tx) -> None:
        """Read the first step's answers, send the next statements, set :attr:`key`."""

    def last(self, tx: _Tx, live: _Live | None) -> Any:
        """Compute and queue the writes with the policy state of :attr:`key` (locked)."""
        raise NotImplementedError

    def finish(self, result: Any) -> Any:
        return result if self.then is None else self.then(result)


class _SelectJob(Job):
    def __init__(
        self,
        then: Callable[[Picked], Any] | None,
        *,
        cache: PolicyCache,
        task: Task,
        arms: Sequence[Arm],
        inputs: Mapping[str, Any],
        end_user: str | None,
        context: Mapping[str, Any],
        policy: str,
    ) -> None:
        super().__init__(then)
        self.cache = cache
        self.task, self.arms, self.policy = task, arms, policy
        self.inputs, self.end_user, self.context = inputs, end_user, context

    def second(self, tx: _Tx) -> None:
        self.key = (self.task.id, self.policy)

    def last(self, tx: _Tx, live: _Live | None) -> Picked:
        assert live is not None and self.cache is not None and self.key is not None
        self.touched = True
        policy, arms, task = live.policy, self.arms, self.task
        policy.sync_arms([arm.name for arm in arms])
        if isinstance(policy, ThompsonSampling):
            probabilities = self.cache.probabilities(self.key, policy)
            choice = policy.select_from(probabilities, context=self.context, end_user=self.end_user)
        else:
            choice = policy.select(context=self.context, end_user=self.end_user)
        arm = next(a for a in arms if a.name == choice.arm)
        prompt = _render(arm, self.inputs)
        created = tx.changed(live)
        decision_id, generation_id = new_id("dec"), new_id("gen")
        tx.later(
            tx.s.insert_decision,
            {
                "id": decision_id,
                "task_id": task.id,
                "policy": self.policy,
                "arm_id": arm.id,
                "propensity": choice.propensity,
                "probabilities": choice.probabilities,
                "end_user": self.end_user,
                "context": dict(self.context),
                "created_at": created,
            },
        )
        tx.later(
            tx.s.insert_generation,
            {
                "id": generation_id,
                "task_id": task.id,
                "arm_id": arm.id,
                "input": dict(self.inputs),
                "prompt": prompt,
                "output": None,
                "status": "pending",
                "error": None,
                "model": None,
                "latency_ms": None,
                "prompt_tokens": None,
                "completion_tokens": None,
                "cost": None,
                "policy": self.policy,
                "propensity": choice.propensity,
                "decision_id": decision_id,
                "end_user": self.end_user,
                "context": dict(self.context),
                "reward": None,
                "created_at": utcnow(),
            },
        )
        return Picked(decision_id, generation_id, self.policy, choice.propensity, arm, prompt)


class _CompleteJob(Job):
    def __init__(
        self, then: Callable[[Generation], Any] | None, generation_id: str, params: dict[str, Any]
    ) -> None:
        super().__init__(then)
        self.generation_id = generation_id
        self.params = params

    def first(self, tx: _Tx) -> None:
        self.sent = tx.send(tx.s.complete, self.params)  # changes the row only when pending

    def last(self, tx: _Tx, live: _Live | None) -> Generation:
        found = self.sent.one()
        if found is None:  # nothing changed
            raise Fallback("not a pending generation: the ORM path explains")
        return Generation(**dict(zip(_GENERATION_COLUMNS, found, strict=True)))


class _FeedbackJob(Job):
    """Three round trips on PostgreSQL (shared by a batch): the generation (locked) with its
    decision; the new event, the generation's reward events and the policy's state (locked);
    the writes with the COMMIT."""

    def __init__(
        self,
        then: Callable[[RecordResult], Any] | None,
        *,
        cache: PolicyCache,
        task: Task,
        fields: dict[str, Any],
        rules: Any,
        rewarded: bool,
        key: str | None,
    ) -> None:
        super().__init__(then)
        self.cache = cache
        self.task, self.fields, self.rules, self.rewarded = task, fields, rules, rewarded
        self.generation_id = fields["generation_id"]
        self.idempotency_key = key

    rates = True

    def second(self, tx: _Tx) -> None:
        found = tx.rated(self.fields["generation_id"])
        if found is None or found[1] != self.task.id:
            raise Fallback("an unknown generation: the ORM path explains")
        self.reward, self.arm_id, behind = found[2], found[3], found[4:]
        status, _, decision_id, found_decision, task_id, policy = behind[:6]
        if status != "ok":
            raise Fallback("a pending or failed generation: the ORM path explains")
        if decision_id is not None and (found_decision is None or behind[-1] is None):
            raise Fallback("a missing decision: the ORM path explains")
        self.decision_id, self.behind = decision_id, behind
        insert = tx.s.insert_feedback if self.idempotency_key is None else tx.s.insert_feedback_once
        self.inserted = tx.send(insert, self.fields)
        if self.rewarded:
            self.wants_events = True
            if decision_id is not None:
                self.key = (task_id, policy)

    def last(self, tx: _Tx, live: _Live | None) -> RecordResult:
        new_row = self.inserted.one()
        if new_row is None:  # nothing inserted
            raise Fallback("a repeated idempotency key: the ORM path replays it")
        self.touched = True
        feedback_id = int(new_row[0])
        changes: list[RewardChange] = []
        if self.wants_events:
            gid: str = self.fields["generation_id"]
            new = derive_reward(cast(Any, [_Event(*e) for e in tx.events(gid)]), self.rules)
            old = self.reward
            if new != old:
                if live is not None:
                    if live.policy.config.discount != 1.0:  # needs the decision's index: the
                        raise Fallback("a discounted policy")  # ORM path counts it
                    live.policy.update(_logged_decision(self.behind, None), new, previous=old)
                    tx.changed(live)
                tx.later(tx.s.set_reward, {"gid": gid, "new_reward": new})
                change = RewardChange(
                    generation_id=gid,
                    decision_id=self.decision_id,
                    arm_id=self.arm_id,
                    old=old,
                    new=new,
                )
                changes.append(change)
        return RecordResult(feedback_id=feedback_id, duplicate=False, reward_changes=changes)


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
        self.statements = _Statements(engine.dialect)
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
            try:
                tx = _Tx(dbapi, cursor, self.statements)
                if self.sqlite:
                    cursor.execute("BEGIN IMMEDIATE")
                    result = work(tx)
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
        names. A database error fails the whole transaction and is raised (nothing was
        committed; the caller's retry rules apply)."""
        outcomes: list[Any] = [None] * len(jobs)
        todo: list[int] = []
        generations: set[str] = set()
        keys: set[str] = set()
        for i, job in enumerate(jobs):
            gid, key = job.generation_id, job.idempotency_key
            if (gid is not None and gid in generations) or (key is not None and key in keys):
                outcomes[i] = AGAIN
                continue
            if gid is not None:
                generations.add(gid)
            if key is not None:
                keys.add(key)
            todo.append(i)
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
                except Exception as exc:  # e.g. a response that cannot be built: this job's
                    outcomes[i] = exc
            break
        return outcomes

    def _steps(
        self, tx: _Tx, *, jobs: Sequence[Job]
    ) -> tuple[list[Any], list[tuple[PolicyCache, tuple[int, str], _Live]]]:
        database_error = self.dialect.loaded_dbapi.Error
        results: list[Any] = [None] * len(jobs)
        alive = list(range(len(jobs)))

        def step(call: Callable[[int], Any]) -> None:
            nonlocal alive
            kept = []
            for i in alive:
                try:
                    results[i] = call(i)
                except database_error:
                    raise  # the transaction's failure, not the job's
                except Exception as exc:
                    if jobs[i].touched:
                        raise _Abort(i, exc) from exc
                    results[i] = exc
                    continue
                kept.append(i)
            alive = kept

        for job in jobs:
            job.reset()
        tx.read_rated(sorted({cast(str, job.generation_id) for job in jobs if job.rates}))
        step(lambda i: jobs[i].first(tx))
        step(lambda i: jobs[i].second(tx))
        tx.read_events(
            sorted({cast(str, jobs[i].generation_id) for i in alive if jobs[i].wants_events})
        )
        wanted = sorted({key for i in alive if (key := jobs[i].key) is not None})
        locks = {
            key: tx.send(tx.s.lock_stamp, {"task_id": key[0], "policy": key[1]}) for key in wanted
        }
        lost: dict[tuple[int, str], Exception] = {}
        caches: dict[tuple[int, str], PolicyCache] = {}
        for key in wanted:
            cache = next(jobs[i].cache for i in alive if jobs[i].key == key)
            assert cache is not None, "a job that names a policy state has the cache"
            try:
                tx.lives[key] = tx.live(cache, key, locks[key].one())
                caches[key] = cache
            except Fallback as exc:
                lost[key] = exc

        def last(i: int) -> Any:
            key = jobs[i].key
            if key is not None and key in lost:
                raise lost[key]
            return jobs[i].last(tx, None if key is None else tx.lives[key])

        step(last)
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
        params = {name: values.get(name) for name in _COMPLETE_KEYS}
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
            fields=_fields(task, event),  # bad values: InvalidInputError, as the ORM path
            rules=reward_rules_for(task),
            rewarded=event.kind in REWARD_KINDS,
            key=event.idempotency_key,
        )

    def feedback(
        self, catalog: Catalog, cache: PolicyCache, task_name: str, event: FeedbackEvent
    ) -> RecordResult:
        """:meth:`feedback_job` in a transaction of its own."""
        return cast(RecordResult, self.run(self.feedback_job(catalog, cache, task_name, event)))


@dataclass(frozen=True, slots=True)
class _Event:
    """A reward event's columns, as :func:`derive_reward` reads them."""

    generation_id: str
    id: int
    kind: str
    source: str
    author: str
    value: float | None
    created_at: Any


def _render(arm: Arm, inputs: Mapping[str, Any]) -> str | None:
    template = arm.template if arm.template is not None else (arm.params or {}).get("template")
    if not isinstance(template, str):
        return None
    return render_template(template, inputs, arm_name=arm.name)
