"""Reading and writing tasks, arms and generations. Functions take an open session.

Errors are prefloop's own (:class:`NotFoundError`, :class:`InvalidInputError`,
:class:`ConflictError`); the service turns them into HTTP statuses at its route layer.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import inspect, select
from sqlalchemy.orm import Mapper, Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from prefloop.errors import ConflictError, InvalidInputError, NotFoundError
from prefloop.store.models import DEFAULT_SCALE, Arm, Generation, Task
from prefloop.store.statements import insert_statement

T = TypeVar("T")

ARM_LABELS = ("production", "candidate", "retired")


def validate_scale(scale: Sequence[float]) -> list[float]:
    values = [float(v) for v in scale]
    if len(values) < 2:
        raise InvalidInputError(f"a rating scale needs at least two levels, got {values}")
    if values != sorted(set(values)):
        raise InvalidInputError(
            f"a rating scale must be strictly increasing without repeats, got {values}"
        )
    return values


def get_task(session: Session, name: str) -> Task:
    task = session.scalar(select(Task).where(Task.name == name))
    if task is None:
        known = session.scalars(select(Task.name).order_by(Task.name).limit(20)).all()
        hint = f"; known tasks: {', '.join(known)}" if known else "; the store has no tasks yet"
        raise NotFoundError(f"no task named {name!r}{hint}")
    return task


def get_or_create_task(
    session: Session,
    name: str,
    *,
    description: str = "",
    input_fields: Sequence[str] = (),
    scale: Sequence[float] = DEFAULT_SCALE,
    rubric: str = "",
) -> Task:
    """The task called ``name``, created with these settings if it does not exist yet."""
    if not name or not name.strip():
        raise InvalidInputError("a task needs a non-empty name, e.g. --task diary")
    task = session.scalar(select(Task).where(Task.name == name))
    if task is not None:
        return task
    task = Task(
        name=name,
        description=description,
        input_fields=list(input_fields),
        scale=validate_scale(scale),
        rubric=rubric,
    )
    session.add(task)
    session.flush()
    return task


def create_arm(
    session: Session,
    task: Task,
    name: str,
    *,
    template: str | None = None,
    model_ref: str | None = None,
    params: dict[str, Any] | None = None,
    labels: Sequence[str] = ("candidate",),
    parent: Arm | None = None,
    created_by: str = "human",
) -> Arm:
    """A new arm. Exactly one of ``template`` (a prompt arm) or ``model_ref`` (a model arm)."""
    if (template is None) == (model_ref is None):
        raise InvalidInputError(
            f"arm {name!r}: give either a prompt template or a model reference, not "
            f"{'both' if template is not None else 'neither'}"
        )
    check_labels(labels)
    if session.scalar(select(Arm.id).where(Arm.task_id == task.id, Arm.name == name)) is not None:
        raise ConflictError(
            f"task {task.name!r} already has an arm named {name!r}; arms are immutable, "
            "so create the new version under a new name with parent set to the old one"
        )
    arm = Arm(
        task_id=task.id,
        name=name,
        kind="prompt" if template is not None else "model",
        template=template,
        model_ref=model_ref,
        params=dict(params or {}),
        labels=list(dict.fromkeys(labels)),
        parent_id=parent.id if parent is not None else None,
        created_by=created_by,
    )
    session.add(arm)
    session.flush()
    return arm


def check_labels(labels: Sequence[str]) -> None:
    for label in labels:
        if not label or not str(label).strip():
            raise InvalidInputError("arm labels must be non-empty strings")


def _arm_id(name_or_id: str | int) -> int | None:
    """``name_or_id`` as an arm id when it can be one (ASCII digits, within an id's range)."""
    if isinstance(name_or_id, int):
        return name_or_id
    if name_or_id.isascii() and name_or_id.isdigit() and int(name_or_id) < 2**31:
        return int(name_or_id)
    return None


def get_arm(session: Session, task: Task, name_or_id: str | int) -> Arm:
    query = select(Arm).where(Arm.task_id == task.id)
    as_id = _arm_id(name_or_id)
    if as_id is not None:
        arm = session.scalar(query.where(Arm.id == as_id))
        if arm is None:
            arm = session.scalar(query.where(Arm.name == str(name_or_id)))
    else:
        arm = session.scalar(query.where(Arm.name == name_or_id))
    if arm is None:
        raise NotFoundError(f"task {task.name!r} has no arm {name_or_id!r}")
    return arm


def active_arms(session: Session, task: Task) -> list[Arm]:
    """The task's arms that are not retired, oldest first."""
    arms = session.scalars(select(Arm).where(Arm.task_id == task.id).order_by(Arm.id)).all()
    return [arm for arm in arms if not arm.retired]


def set_labels(arm: Arm, labels: Sequence[str]) -> Arm:
    check_labels(labels)
    arm.labels = list(dict.fromkeys(labels))
    return arm


def get_generation(session: Session, generation_id: str, *, task: Task | None = None) -> Generation:
    generation = session.get(Generation, generation_id)
    if generation is None or (task is not None and generation.task_id != task.id):
        where = f" in task {task.name!r}" if task is not None else ""
        raise NotFoundError(f"no generation {generation_id!r}{where}")
    return generation


def add_generation(session: Session, task: Task, **fields: Any) -> Generation:
    """Store a generation. ``status='failed'`` needs an ``error`` and has no output."""
    status = fields.get("status", "ok")
    if status not in ("ok", "failed"):
        raise InvalidInputError(f"generation status must be 'ok' or 'failed', not {status!r}")
    if status == "failed" and not fields.get("error"):
        raise InvalidInputError("a failed generation needs an error message")
    if status == "ok" and fields.get("output") is None:
        raise InvalidInputError("a successful generation needs an output text")
    generation = Generation(task_id=task.id, **fields)
    session.add(generation)
    session.flush()
    return generation


# -- single-statement writes for the service's hot path -----------------------------------------
def insert_row(
    session: Session, row: Any, *, unless_stored: str | Sequence[str] | None = None
) -> bool:
    """INSERT ``row`` (a new ORM object) with one statement and attach it as a loaded row.

    The unit of work (flush) is skipped: the columns set on ``row`` are inserted, the others get
    their column defaults, an integer primary key that was not set comes back by ``RETURNING``.
    With ``unless_stored`` (the column or columns of a unique index) a row whose values are
    already stored is not inserted (``ON CONFLICT DO NOTHING``, race-free across processes): then
    nothing is attached and the result is False.
    """
    session.flush()  # pending ORM rows first, so foreign keys see them (a no-op when clean)
    mapper = inspect(type(row))
    table = mapper.local_table
    given = row.__dict__
    values = {column: given[attr] for attr, column in _column_keys(mapper) if attr in given}
    missing = tuple(c.key for c in table.primary_key.columns if c.key not in values)
    unique = (unless_stored,) if isinstance(unless_stored, str) else tuple(unless_stored or ())
    connection = session.connection()
    statement = insert_statement(connection.dialect.name, table, unique, missing)
    result = connection.execute(statement, values)
    if missing:
        returned = result.first()
        if returned is None:  # the unique value was stored already
            return False
        for name, value in zip(missing, returned, strict=True):
            setattr(row, mapper.get_property_by_column(table.c[name]).key, value)
    elif unique and result.rowcount == 0:
        return False
    make_transient_to_detached(row)
    session.add(row)
    return True


def set_loaded(session: Session, model: type[Any], key: Any, **values: Any) -> None:
    """After a Core UPDATE of row ``key``: give a copy this session holds the new values."""
    loaded = session.identity_map.get(identity_key(model, key))
    if loaded is not None:
        for name, value in values.items():
            set_committed_value(loaded, name, value)


@functools.cache
def _column_keys(mapper: Mapper[Any]) -> tuple[tuple[str, str], ...]:
    """(attribute, column) names of a mapped class."""
    return tuple((attr.key, column.key) for attr in mapper.column_attrs for column in attr.columns)


def attach_loaded(session: Session, model: type[T], values: Mapping[Any, Any]) -> T:
    """The ORM object of the row a Core statement returned (every column in ``values``): the
    copy this session holds, brought up to date, or a new one attached as loaded."""
    mapper = inspect(model)
    key = mapper.identity_key_from_primary_key([values[c.key] for c in mapper.primary_key])
    loaded = session.identity_map.get(key)
    if loaded is not None:
        for name, value in values.items():
            set_committed_value(loaded, name, value)
        return cast(T, loaded)
    row = model(**values)
    make_transient_to_detached(row)
    session.add(row)
    return row
