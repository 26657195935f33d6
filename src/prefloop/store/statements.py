"""The loop's statements, built once, shared by the ORM path and the service's fast lane.

Building a SQLAlchemy statement costs far more than running a cached one, so the statements of
the feedback loop's hot transactions live here, built at import: the bandit's policy state row
(:data:`READ_STATE`, :data:`LOCK_STATE`, :data:`WRITE_STATE`, :data:`DECISION_OF`), the cached
rewards of generations (:data:`LOCK_GENERATION`, :data:`CACHED_REWARDS`, :data:`SET_REWARD`,
:func:`reward_events`), completing a selected generation (:data:`COMPLETE_GENERATION`) and
the one-statement INSERT (:func:`insert_statement`).

:mod:`prefloop.bandit.online`, :mod:`prefloop.feedback.record` and :mod:`prefloop.serve.ops`
run them through a session; the service's fast lane (:mod:`prefloop.serve.hotpath`) runs the
same statements on a raw DBAPI connection, compiled once per dialect by
:class:`FastStatements` (:class:`CompiledStatement`: SQL text, parameter order and the column
types' bind and result processors, so rows written read back through the ORM exactly as rows
the ORM wrote).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect

from prefloop.store.models import Arm, BanditDecision, Feedback, Generation, PolicyState, utcnow

__all__ = [
    "CACHED_REWARDS",
    "COMPLETE_GENERATION",
    "COMPLETE_KEYS",
    "DECISION_OF",
    "GENERATIONS_BY_ID",
    "LOCK_GENERATION",
    "LOCK_STATE",
    "PENDING",
    "RATED",
    "READ_STATE",
    "REWARD_COLUMNS",
    "SET_REWARD",
    "WRITE_STATE",
    "CompiledStatement",
    "FastStatements",
    "StateRow",
    "insert_statement",
    "later_than",
    "positional",
    "reward_events",
]

PENDING = "pending"
"""Status of a generation handed out by a selection whose output has not arrived yet."""

FEEDBACK = cast(Table, Feedback.__table__)
GENERATIONS = cast(Table, Generation.__table__)
DECISIONS = cast(Table, BanditDecision.__table__)
ARMS = cast(Table, Arm.__table__)
POLICY_STATES = cast(Table, PolicyState.__table__)

GENERATION_COLUMNS = tuple(c.key for c in GENERATIONS.columns)
DECISION_COLUMNS = tuple(c.key for c in DECISIONS.columns)
FEEDBACK_KEYS = (
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
"""The columns of a new feedback row (the INSERT's parameters)."""
COMPLETE_KEYS = (
    "status",
    "output",
    "error",
    "model",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "cost",
)
"""The columns :data:`COMPLETE_GENERATION` sets (with ``generation_id``)."""

_TICK = timedelta(microseconds=1)


# -- the policy state row ----------------------------------------------------------------------
@dataclass(slots=True)
class StateRow:
    """A policy state row as read (plain values: Core statements, no unit of work)."""

    id: int
    config: dict[str, Any]
    state: dict[str, Any]
    version: int
    updated_at: datetime | None


def later_than(previous: datetime | None) -> datetime:
    """Now, or one microsecond after ``previous`` when that is not earlier: the time of a
    state row's next write (it strictly increases, so decisions are logged in order)."""
    now = utcnow()
    if previous is None:
        return now
    if previous.tzinfo is None:  # SQLite hands datetimes back without their zone
        previous = previous.replace(tzinfo=UTC)
    return max(now, previous + _TICK)


READ_STATE = select(
    POLICY_STATES.c.id,
    POLICY_STATES.c.config,
    POLICY_STATES.c.state,
    POLICY_STATES.c.version,
    POLICY_STATES.c.updated_at,
).where(
    POLICY_STATES.c.task_id == bindparam("task_id"), POLICY_STATES.c.policy == bindparam("policy")
)
"""The (task, policy) state row: the columns of :class:`StateRow`."""
LOCK_STATE = READ_STATE.with_for_update()
""":data:`READ_STATE`, locked for the rest of the transaction."""
WRITE_STATE = update(POLICY_STATES).where(POLICY_STATES.c.id == bindparam("row_id"))
"""Set a state row's ``state``, ``version`` and ``updated_at`` (by ``row_id``)."""


def _decision_of() -> Any:
    g, d, a = GENERATIONS, DECISIONS, ARMS
    columns = [g.c.status, g.c.error, g.c.decision_id, d.c.id, d.c.task_id, d.c.policy]
    columns += [d.c.created_at, d.c.propensity, d.c.probabilities, d.c.end_user, d.c.context]
    joined = g.outerjoin(d, d.c.id == g.c.decision_id).outerjoin(a, a.c.id == d.c.arm_id)
    query = select(*columns, a.c.name).select_from(joined)
    return query.where(g.c.id == bindparam("generation_id"))


DECISION_OF = _decision_of()
"""A generation's status and error, its decision id, then the decision's id, task, policy,
time, propensity, probabilities, end user, context and arm name (outer joins: None when
missing), by ``generation_id``."""


# -- feedback and cached rewards ---------------------------------------------------------------
REWARD_COLUMNS = tuple(
    FEEDBACK.c[name]
    for name in ("generation_id", "id", "kind", "source", "author", "value", "created_at")
)
"""The columns of a feedback event that a generation's reward is derived from."""
LOCK_GENERATION = (
    select(GENERATIONS).where(GENERATIONS.c.id == bindparam("generation_id")).with_for_update()
)
GENERATIONS_BY_ID = select(GENERATIONS).where(
    GENERATIONS.c.id.in_(bindparam("ids", expanding=True))
)
CACHED_REWARDS = select(
    *(GENERATIONS.c[name] for name in ("id", "status", "reward", "decision_id", "arm_id"))
).where(GENERATIONS.c.id.in_(bindparam("ids", expanding=True)))
SET_REWARD = (
    update(GENERATIONS)
    .where(GENERATIONS.c.id == bindparam("gid"))
    .values(reward=bindparam("new_reward"))
)
"""Set the cached reward of generation ``gid`` to ``new_reward``."""


def reward_events(kinds: Sequence[str], *, bound: bool = False) -> Any:
    """The :data:`REWARD_COLUMNS` of the events of ``kinds`` about the generations ``ids``
    (an expanding parameter). ``bound``: the kinds as parameters ``kind0`` … with their
    values as defaults, for a statement compiled with its ``ids`` rendered (the fast lane)."""
    listed: Sequence[Any] = (
        [bindparam(f"kind{k}", kind) for k, kind in enumerate(kinds)] if bound else list(kinds)
    )
    return select(*REWARD_COLUMNS).where(
        FEEDBACK.c.generation_id.in_(bindparam("ids", expanding=True)), FEEDBACK.c.kind.in_(listed)
    )


def _rated() -> Any:
    g, d, a = GENERATIONS, DECISIONS, ARMS
    joined = g.outerjoin(d, d.c.id == g.c.decision_id).outerjoin(a, a.c.id == d.c.arm_id)
    columns = [g.c.id, g.c.task_id, g.c.reward, g.c.arm_id, *DECISION_OF.selected_columns]
    return (
        select(*columns)
        .select_from(joined)
        .where(g.c.id.in_(bindparam("ids", expanding=True)))
        .order_by(g.c.id)
        .with_for_update(of=g)
    )


RATED = _rated()
"""What feedback reads about the generations it rates, for a batch at once: each one's id,
task, reward and arm, then the columns of :data:`DECISION_OF`; locked, in id order."""

COMPLETE_GENERATION = (
    update(GENERATIONS)
    .where(GENERATIONS.c.id == bindparam("generation_id"), GENERATIONS.c.status == PENDING)
    .returning(*GENERATIONS.columns)
)
"""Record the output (or error) of a pending generation, once: the row when it changed."""


@functools.cache
def insert_statement(
    dialect: str, table: Table, unless_stored: tuple[str, ...], returning: tuple[str, ...]
) -> Any:
    """One INSERT into ``table``, built once per shape; with ``unless_stored`` (the columns of
    a unique index) ``ON CONFLICT DO NOTHING`` (SQLite and PostgreSQL both spell it), with
    ``returning`` those columns of the inserted row."""
    statement: Any = (postgresql_insert if dialect == "postgresql" else sqlite_insert)(table)
    if unless_stored:
        statement = statement.on_conflict_do_nothing(
            index_elements=[table.c[name] for name in unless_stored]
        )
    if returning:
        statement = statement.returning(*(table.c[name] for name in returning))
    return statement


# -- compiled once per dialect (the fast lane) -------------------------------------------------
@dataclass(frozen=True, slots=True)
class CompiledStatement:
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
    ) -> CompiledStatement:
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
        """``values`` (by column key) as the driver takes them, processed."""
        merged = {**self.defaults, **values}
        for name, process in self.binds:
            if name in merged:
                merged[name] = process(merged[name])
        if self.positions is None:
            return merged
        return tuple(merged[name] for name in self.positions)

    def row(self, raw: Sequence[Any] | None) -> tuple[Any, ...] | None:
        """A driver's row as the ORM would read it (None stays None)."""
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


def positional(dialect: Dialect) -> Dialect:
    """``dialect``, or for psycopg's named ``%(name)s`` placeholders a copy that renders ``%s``:
    positional parameters skip psycopg's per-call reordering of a dict (a few percent of a hot
    request's CPU). The SQL is otherwise the same (tested)."""
    if dialect.paramstyle != "pyformat":
        return dialect
    return cast(Dialect, type(dialect)(paramstyle="format"))  # type: ignore[call-arg]


class FastStatements:
    """The loop's statements compiled for one dialect (the fast lane runs these)."""

    def __init__(self, dialect: Dialect) -> None:
        name = dialect.name
        dialect = positional(dialect)
        states = POLICY_STATES
        self.lock_stamp = CompiledStatement.of(
            select(states.c.id, states.c.config, states.c.version, states.c.updated_at)
            .where(states.c.task_id == bindparam("task_id"), states.c.policy == bindparam("policy"))
            .with_for_update(),
            dialect,
        )
        self.state_of = CompiledStatement.of(
            select(states.c.state).where(states.c.id == bindparam("row_id")), dialect
        )
        self.write_state = CompiledStatement.of(
            WRITE_STATE, dialect, ("state", "version", "updated_at")
        )
        self.insert_decision = CompiledStatement.of(
            insert_statement(name, DECISIONS, (), ()), dialect, DECISION_COLUMNS
        )
        self.insert_generation = CompiledStatement.of(
            insert_statement(name, GENERATIONS, (), ()), dialect, GENERATION_COLUMNS
        )
        self.complete = CompiledStatement.of(COMPLETE_GENERATION, dialect, COMPLETE_KEYS)
        self.insert_feedback = CompiledStatement.of(
            insert_statement(name, FEEDBACK, (), ("id",)), dialect, FEEDBACK_KEYS
        )
        self.insert_feedback_once = CompiledStatement.of(
            insert_statement(name, FEEDBACK, ("idempotency_key",), ("id",)),
            dialect,
            FEEDBACK_KEYS,
        )
        self.set_reward = CompiledStatement.of(SET_REWARD, dialect)
        self.dialect = dialect
        self._expanded: dict[tuple[str, int], CompiledStatement] = {}

    def expanded(self, name: str, statement: Any, count: int) -> CompiledStatement:
        """``statement`` with ``count`` values for its ``ids`` (compiled once per count)."""
        found = self._expanded.get((name, count))
        if found is None:
            found = CompiledStatement.of(statement, self.dialect, expand=count)
            self._expanded[(name, count)] = found
        return found
