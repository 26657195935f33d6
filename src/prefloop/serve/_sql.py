"""The hot path's SQL: the ORM path's SQLAlchemy Core statements compiled once per dialect to
the driver's SQL text and paramstyle, with the column types' bind and result processors, so
rows written read back through the ORM exactly as rows the ORM wrote (JSON, datetimes)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.engine import Dialect

from prefloop.bandit.online import _DECISION_OF, _WRITE_STATE
from prefloop.feedback.record import _FEEDBACK, _REWARD_COLUMNS, _SET_REWARD
from prefloop.feedback.rewards import REWARD_KINDS
from prefloop.store.models import Arm, BanditDecision, Generation, PolicyState
from prefloop.store.repo import _insert_statement


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
