"""Recording one feedback event: validate it, store it once, derive what follows, re-reward.

:func:`record_feedback` runs inside the caller's transaction (``with store.session() as s``), so
the service can update its bandit state from :attr:`RecordResult.reward_changes` in the same
transaction and everything commits or rolls back together.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from prefloop.errors import ConflictError, InvalidInputError, NotFoundError
from prefloop.feedback.events import (
    EditEvent,
    FeedbackEvent,
    PairwiseEvent,
    RankingEvent,
    RatingEvent,
    ThumbsEvent,
)
from prefloop.feedback.rewards import (
    REWARD_KINDS,
    FeedbackLike,
    RewardRules,
    check_rating,
    derive_reward,
    text_similarity,
)
from prefloop.store import statements
from prefloop.store.models import Feedback, Generation, Task, utcnow
from prefloop.store.repo import add_generation, insert_row, set_loaded

EDIT_MODEL = "human-edit"
"""``Generation.model`` of the final text of an edit, stored as a generation of its own."""

_PAIRWISE_VALUE = {"a": 1.0, "b": -1.0, "tie": 0.0}
_COMPARED = ("task_id", "kind", "source", "author", "generation_id", "other_generation_id")
_CHUNK = 500
_CLOCK_SKEW = timedelta(minutes=5)
_REWARD_EVENTS = statements.reward_events(REWARD_KINDS)


@dataclass(frozen=True, slots=True)
class RewardChange:
    """The cached reward of a generation moved from ``old`` to ``new`` (either may be None)."""

    generation_id: str
    decision_id: str | None
    arm_id: int | None
    old: float | None
    new: float | None


@dataclass(frozen=True, slots=True)
class RecordResult:
    """What :func:`record_feedback` stored.

    ``duplicate`` is True when the idempotency key was seen before: then nothing was stored,
    ``feedback_id``, ``derived_ids`` and ``generation_ids`` are those of the first time, and
    ``reward_changes`` is empty (the first call reported them).
    """

    feedback_id: int
    duplicate: bool
    derived_ids: list[int] = field(default_factory=list)
    """Events prefloop derived from this one (an edit's auto-rating and final-over-draft pair)."""
    reward_changes: list[RewardChange] = field(default_factory=list)
    generation_ids: list[str] = field(default_factory=list)
    """Generations this event created (the final text of an edit)."""


def reward_rules_for(task: Task) -> RewardRules:
    """The task's reward rules: the defaults overridden by ``Task.reward_rules``."""
    return RewardRules.from_dict(task.reward_rules)


def record_feedback(session: Session, task: Task, event: FeedbackEvent) -> RecordResult:
    """Validate ``event`` against ``task``, store it once, derive its consequences.

    - A rating must be one of the task's scale levels; every generation named must exist,
      belong to the task and not be a failed LLM call (:class:`InvalidInputError`,
      :class:`NotFoundError`).
    - An event whose ``idempotency_key`` was seen before stores nothing and returns the first
      result with ``duplicate=True`` (the same key for a different event is a
      :class:`ConflictError`). Safe across processes: the insert runs in a SAVEPOINT and a
      unique-key violation falls back to the stored row.
    - An edit also stores an automatic rating of the draft (source ``auto``, from the
      similarity of draft and final text, :class:`~prefloop.feedback.rewards.EditRatingCurve`)
      and, when the text changed, the final text as a new generation (arm None, model
      ``human-edit``, ``context={"edited_from": draft_id}``) preferred to the draft.
    - The cached reward of each generation the event rates is recomputed
      (:func:`~prefloop.feedback.rewards.derive_reward`); the changes are returned.

    ``task`` may come from another session: only its columns are read.
    """
    fields = feedback_fields(task, event)
    rules = reward_rules_for(task)
    generations = _check_generations(session, task, fields)
    row = Feedback(**fields)
    key = event.idempotency_key
    # The unique key decides, not a look-up first: two processes may both look, find nothing
    # and insert. The loser's INSERT … ON CONFLICT DO NOTHING stores nothing (on PostgreSQL
    # after waiting for the winner's transaction) and the stored row is replayed.
    if not insert_row(session, row, unless_stored=None if key is None else "idempotency_key"):
        existing = session.scalar(select(Feedback).where(Feedback.idempotency_key == key))
        if existing is None:  # the winner rolled back between our insert and this read
            raise ConflictError(
                f"idempotency key {key!r} is being used by a concurrent request; send it again"
            )
        return _replay(session, existing, fields)
    derived: list[Feedback] = []
    created: list[str] = []
    if isinstance(event, EditEvent):
        derived, created = _derive_edit(session, task, row, generations[event.generation_id], rules)
    rated = [e.generation_id for e in (row, *derived) if e.kind in REWARD_KINDS]
    changes = refresh_rewards(
        session, task, [g for g in rated if g is not None], rules=rules, locked=generations
    )
    return RecordResult(
        feedback_id=row.id,
        duplicate=False,
        derived_ids=[d.id for d in derived],
        reward_changes=changes,
        generation_ids=created,
    )


def feedback_fields(task: Task, event: FeedbackEvent) -> dict[str, Any]:
    """The columns of the Feedback row for ``event`` (checks what needs no database; the
    service's fast lane inserts the same row)."""
    now = utcnow()
    created_at = event.created_at or now
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)
    if created_at > now + _CLOCK_SKEW:
        # the latest judgement wins: a time in the future would win for ever
        raise InvalidInputError(
            f"created_at {created_at.isoformat()} is in the future; leave it out to use the "
            "time of recording"
        )
    fields: dict[str, Any] = {
        "task_id": task.id,
        "kind": event.kind,
        "source": event.source,
        "author": event.author,
        "idempotency_key": event.idempotency_key,
        "created_at": created_at,
        "generation_id": None,
        "other_generation_id": None,
        "value": None,
        "payload": {},
    }
    if isinstance(event, RatingEvent):
        try:
            value = check_rating(event.value, task.scale)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{exc} (task {task.name!r})") from None
        fields.update(generation_id=event.generation_id, value=value)
    elif isinstance(event, ThumbsEvent):
        fields.update(generation_id=event.generation_id, value=1.0 if event.up else -1.0)
    elif isinstance(event, PairwiseEvent):
        fields.update(
            generation_id=event.a, other_generation_id=event.b, value=_PAIRWISE_VALUE[event.winner]
        )
    elif isinstance(event, RankingEvent):
        fields["payload"] = {"generation_ids": list(event.generation_ids), "ranks": event.ranks}
    elif isinstance(event, EditEvent):
        fields.update(generation_id=event.generation_id, payload={"final_text": event.final_text})
    else:  # regenerate
        fields["generation_id"] = event.generation_id
    return fields


def _replay(session: Session, existing: Feedback, fields: dict[str, Any]) -> RecordResult:
    """The result of the first call with this idempotency key; a different event conflicts."""
    same = all(getattr(existing, name) == fields[name] for name in _COMPARED) and (
        existing.value == fields["value"] and (existing.payload or {}) == fields["payload"]
    )
    if not same:
        raise ConflictError(
            f"idempotency key {existing.idempotency_key!r} was already used for a different "
            f"event (feedback #{existing.id}, a {existing.kind}); use a new key for a new event"
        )
    derived = session.scalars(
        select(Feedback).where(Feedback.derived_from_id == existing.id).order_by(Feedback.id)
    ).all()
    created = [
        d.generation_id
        for d in derived
        if d.kind == "pairwise" and existing.kind == "edit" and d.generation_id is not None
    ]
    return RecordResult(
        feedback_id=existing.id,
        duplicate=True,
        derived_ids=[d.id for d in derived],
        generation_ids=created,
    )


def _check_generations(session: Session, task: Task, fields: dict[str, Any]) -> dict[str, Any]:
    """The generations the event names (rows of their columns), checked; the one it rates is
    locked for re-rewarding (``SELECT … FOR UPDATE``), so its cached reward is current."""
    if fields["kind"] == "ranking":
        ids = list(fields["payload"]["generation_ids"])
    else:
        ids = [g for g in (fields["generation_id"], fields["other_generation_id"]) if g]
    rated = fields["generation_id"] if fields["kind"] in (*REWARD_KINDS, "edit") else None
    session.flush()
    connection = session.connection()
    found: dict[str, Any] = {}
    if rated is not None:
        locked = connection.execute(statements.LOCK_GENERATION, {"generation_id": rated})
        found.update((g.id, g) for g in locked)
    others = [g for g in ids if g not in found]
    if others:
        found.update(
            (g.id, g) for g in connection.execute(statements.GENERATIONS_BY_ID, {"ids": others})
        )
    for generation_id in ids:
        generation = found.get(generation_id)
        if generation is None or generation.task_id != task.id:
            raise NotFoundError(f"no generation {generation_id!r} in task {task.name!r}")
        if generation.status != "ok":
            raise InvalidInputError(
                f"generation {generation_id!r} is a failed LLM call ({generation.error}); "
                "feedback about it is refused: a failure has no reward. Rate an output that "
                "was produced"
            )
    return found


def _derive_edit(
    session: Session, task: Task, edit: Feedback, draft: Any, rules: RewardRules
) -> tuple[list[Feedback], list[str]]:
    """An edit's automatic rating of the draft and, if the text changed, final-over-draft."""
    final_text = edit.payload["final_text"]
    similarity = text_similarity(draft.output or "", final_text)
    rating = rules.edit_curve.rate(similarity)
    try:
        check_rating(rating, task.scale)
    except InvalidInputError:
        raise InvalidInputError(
            f"the edit curve gives rating {rating:g}, which is not on task {task.name!r}'s scale "
            f"{task.scale}; set reward_rules.edit_curve for this task to levels on its scale"
        ) from None
    common = {
        "task_id": task.id,
        "source": "auto",
        "author": edit.author,
        "derived_from_id": edit.id,
        "created_at": edit.created_at,
    }
    derived = [
        Feedback(
            kind="rating",
            generation_id=draft.id,
            value=rating,
            payload={"similarity": round(similarity, 6)},
            **common,
        )
    ]
    created: list[str] = []
    if final_text != draft.output:
        final = add_generation(
            session,
            task,
            output=final_text,
            input=dict(draft.input or {}),
            prompt=draft.prompt,
            model=EDIT_MODEL,
            end_user=draft.end_user,
            context={"edited_from": draft.id},
        )
        created.append(final.id)
        derived.append(
            Feedback(
                kind="pairwise",
                generation_id=final.id,
                other_generation_id=draft.id,
                value=1.0,
                **common,
            )
        )
    session.add_all(derived)
    session.flush()
    return derived, created


def refresh_rewards(
    session: Session,
    task: Task,
    generation_ids: Iterable[str] | None = None,
    *,
    rules: RewardRules | None = None,
    locked: Mapping[str, Any] | None = None,
) -> list[RewardChange]:
    """Recompute the cached reward of these generations (all of the task's when None).

    Returns one :class:`RewardChange` per generation whose reward changed. Run it for a whole
    task after changing ``Task.reward_rules``. ``locked`` are generations the caller already
    holds (read ``FOR UPDATE``: rows or ORM objects), so their stored reward is current.
    """
    rules = rules or reward_rules_for(task)
    locked = locked or {}
    session.flush()
    connection = session.connection()
    changes: list[RewardChange] = []
    for chunk in _chunks(session, task, generation_ids):
        current = {gid: locked[gid] for gid in chunk if gid in locked}
        missing = [gid for gid in chunk if gid not in current]
        if missing:
            current.update(
                (g.id, g) for g in connection.execute(statements.CACHED_REWARDS, {"ids": missing})
            )
        # only the columns derive_reward reads: a generation may have thousands of events
        events: dict[str, list[FeedbackLike]] = defaultdict(list)
        for event in connection.execute(_REWARD_EVENTS, {"ids": list(chunk)}):
            events[event.generation_id].append(event)
        moved: list[RewardChange] = []
        for gid in chunk:
            generation = current.get(gid)
            if generation is None:
                continue
            change = reward_change(
                gid,
                status=generation.status,
                old=generation.reward,
                decision_id=generation.decision_id,
                arm_id=generation.arm_id,
                events=events[gid],
                rules=rules,
            )
            if change is not None:
                moved.append(change)
        if moved:
            connection.execute(
                statements.SET_REWARD,
                [{"gid": c.generation_id, "new_reward": c.new} for c in moved],
            )
            for change in moved:  # an ORM copy this session holds sees the new reward
                set_loaded(session, Generation, change.generation_id, reward=change.new)
        changes.extend(moved)
    return changes


def reward_change(
    generation_id: str,
    *,
    status: str,
    old: float | None,
    decision_id: str | None,
    arm_id: int | None,
    events: Iterable[FeedbackLike],
    rules: RewardRules,
) -> RewardChange | None:
    """The change of a generation's cached reward (``old``) that its reward ``events`` make,
    or None when it stays: the reward is :func:`~prefloop.feedback.rewards.derive_reward`'s,
    and a generation that is not ``ok`` has none. :func:`refresh_rewards` and the service's
    fast lane both decide by it."""
    new = derive_reward(events, rules) if status == "ok" else None
    if new == old:
        return None
    return RewardChange(
        generation_id=generation_id, decision_id=decision_id, arm_id=arm_id, old=old, new=new
    )


def _chunks(
    session: Session, task: Task, generation_ids: Iterable[str] | None
) -> Iterable[Sequence[str]]:
    if generation_ids is None:
        ids: list[str] = list(
            session.scalars(
                select(Generation.id).where(Generation.task_id == task.id).order_by(Generation.id)
            )
        )
    else:
        ids = list(dict.fromkeys(generation_ids))
    return [ids[start : start + _CHUNK] for start in range(0, len(ids), _CHUNK)]
