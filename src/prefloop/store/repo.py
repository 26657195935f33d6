"""Reading and writing tasks, arms and generations. Functions take an open session.

Errors are prefloop's own (:class:`NotFoundError`, :class:`InvalidInputError`,
:class:`ConflictError`); the service turns them into HTTP statuses at its route layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from prefloop.errors import ConflictError, InvalidInputError, NotFoundError
from prefloop.store.models import DEFAULT_SCALE, Arm, Generation, Task

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


def get_arm(session: Session, task: Task, name_or_id: str | int) -> Arm:
    query = select(Arm).where(Arm.task_id == task.id)
    if isinstance(name_or_id, int) or str(name_or_id).isdigit():
        arm = session.scalar(query.where(Arm.id == int(name_or_id)))
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
