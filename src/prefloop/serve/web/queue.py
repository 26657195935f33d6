"""Labeling queues: items, leases, the next item, and submissions through the feedback path.

An **item** is what one judgement is about: a generation (``rate``, ``edit``) or several outputs
of the same input (``compare``: two, ``rank``: K). Items are made from the task's generations
when a queue runs dry (:func:`fill_queue`). A **lease** hands an item to one labeler for
``lease_seconds``; an item is offered while its labels plus its live leases are fewer than the
task's overlap ``k``, and never to a labeler who had it before (one lease per labeler and item,
a unique constraint). When ``k`` labels are in, the item is closed.

Every submission is recorded by :func:`prefloop.serve.ops.submit_feedback`, the function behind
``POST /v1/feedback`` (the loop's :func:`prefloop.loop.submit_feedback` for a task named by the
request): the feedback, its rewards and the bandit's state change in the caller's
transaction together with the lease and the item, so a failure keeps none of them. The lease's
id is the events' idempotency key: a double submission stores one event.

The next item is chosen by a **strategy** (the task's setting):

``decisive`` (default)
    what the labels will decide. Rate and edit: items whose arm's 95% reward interval overlaps
    the leader's (the bandit's choice is still open; arms without rewards count as open).
    Compare: the pair whose current reward estimates (each generation's reward, else its arm's
    mean) are closest, the pair the estimates are least sure how to order. Rank: the most
    open arms, then the closest estimates.
``random``
    any available item, uniformly from a random starting point of the queue.
``oldest``
    the oldest available item first.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session

from prefloop.bandit.online import PolicyCache, TaskStats
from prefloop.errors import InvalidInputError, NotFoundError, PrefloopError
from prefloop.feedback import EDIT_MODEL, RecordResult
from prefloop.feedback.events import (
    EditEvent,
    FeedbackEvent,
    PairwiseEvent,
    RankingEvent,
    RatingEvent,
)
from prefloop.serve import ops
from prefloop.serve.catalog import Catalog
from prefloop.store import Generation, Task
from prefloop.store.models import LabelItem, LabelLease, TaskSettings, utcnow

__all__ = [
    "ITEM_KINDS",
    "STRATEGIES",
    "Disagreement",
    "ForbiddenItem",
    "ItemView",
    "LabelerSummary",
    "PositionBias",
    "Progress",
    "QueueSettings",
    "Scorer",
    "SubmitOutcome",
    "check_kind",
    "disagreements",
    "fill_queue",
    "labeler_summaries",
    "lease_view",
    "mark_gold",
    "next_item",
    "position_bias",
    "progress",
    "queue_settings",
    "release",
    "submit",
    "update_settings",
]

ITEM_KINDS: tuple[str, ...] = ("rate", "compare", "rank", "edit")
STRATEGIES: tuple[str, ...] = ("decisive", "random", "oldest")
COMPARE_CHOICES: tuple[str, ...] = ("left", "right", "tie", "both_bad")
_CANDIDATES = 200
_SCORED = 50
"""Candidates a reward model scores for one choice (new outputs cost a forward pass each)."""
_SCAN = 5000


Scorer = Callable[[Sequence[tuple[str, str, str | None]]], Mapping[str, float]]
"""Scores outputs, ``(generation id, text, prompt)`` → score by generation id: the task's
current reward model (the web app passes the newest one registered for the task)."""


class ForbiddenItem(PrefloopError):
    """The lease is someone else's, or belongs to another task (a 403 in the web app)."""


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """A task's labeling settings (defaults until an admin saves them)."""

    overlap: int = 1
    lease_seconds: int = 600
    strategy: str = "decisive"
    rank_size: int = 3
    level_texts: Mapping[str, str] = field(default_factory=dict)
    guidelines: str = ""

    def __post_init__(self) -> None:
        if not 1 <= self.overlap <= 20:
            raise InvalidInputError(f"overlap k must be 1 to 20 labelers, got {self.overlap}")
        if not 10 <= self.lease_seconds <= 86_400:
            raise InvalidInputError(
                f"lease time must be 10 to 86400 seconds, got {self.lease_seconds}"
            )
        if self.strategy not in STRATEGIES:
            raise InvalidInputError(
                f"unknown strategy {self.strategy!r}; use one of {', '.join(STRATEGIES)}"
            )
        if not 2 <= self.rank_size <= 9:
            raise InvalidInputError(f"rank size K must be 2 to 9, got {self.rank_size}")


def queue_settings(session: Session, task: Task) -> QueueSettings:
    row = session.get(TaskSettings, task.id)
    if row is None:
        return QueueSettings()
    return QueueSettings(
        overlap=row.overlap,
        lease_seconds=row.lease_seconds,
        strategy=row.strategy,
        rank_size=row.rank_size,
        level_texts=dict(row.level_texts or {}),
        guidelines=row.guidelines or "",
    )


def update_settings(session: Session, task: Task, settings: QueueSettings) -> QueueSettings:
    """Store ``settings`` as the task's (validated when ``settings`` was made)."""
    row = session.get(TaskSettings, task.id)
    if row is None:
        row = TaskSettings(task_id=task.id)
        session.add(row)
    row.overlap = settings.overlap
    row.lease_seconds = settings.lease_seconds
    row.strategy = settings.strategy
    row.rank_size = settings.rank_size
    row.level_texts = dict(settings.level_texts)
    row.guidelines = settings.guidelines
    row.updated_at = utcnow()
    session.flush()
    return settings


def check_kind(kind: str) -> str:
    if kind not in ITEM_KINDS:
        raise NotFoundError(f"no queue {kind!r}; the queues are {', '.join(ITEM_KINDS)}")
    return kind


# -- filling the queues ------------------------------------------------------------------------
def _input_key(values: Any) -> str:
    text = json.dumps(values, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def _labelable(task: Task) -> Any:
    return and_(
        Generation.task_id == task.id,
        Generation.status == "ok",
        Generation.output.is_not(None),
        func.coalesce(Generation.model, "") != EDIT_MODEL,
    )


def fill_queue(session: Session, task: Task, kind: str, *, rank_size: int = 3) -> int:
    """Make up to 200 new items of ``kind`` from the task's generations; how many were made.

    Rate and edit: one item per generation, oldest first. Compare and rank: one item per input
    seen among the newest 5,000 generations, with two (or ``rank_size``) of its outputs,
    preferring different arms.
    """
    check_kind(kind)
    now = utcnow()
    if kind in ("rate", "edit"):
        taken = exists().where(
            LabelItem.task_id == task.id,
            LabelItem.kind == kind,
            LabelItem.group_key == Generation.id,
        )
        rows = session.execute(
            select(Generation.id, Generation.arm_id)
            .where(_labelable(task), ~taken)
            .order_by(Generation.created_at, Generation.id)
            .limit(_CANDIDATES)
        ).all()
        items = [
            LabelItem(
                task_id=task.id,
                kind=kind,
                group_key=gid,
                generation_ids=[gid],
                arm_ids=[arm_id],
                arm_id=arm_id,
                created_at=now,
            )
            for gid, arm_id in rows
        ]
    else:
        size = 2 if kind == "compare" else rank_size
        scanned = session.execute(
            select(Generation.id, Generation.arm_id, Generation.input)
            .where(_labelable(task))
            .order_by(Generation.created_at.desc(), Generation.id.desc())
            .limit(_SCAN)
        ).all()
        groups: dict[str, list[tuple[str, int | None]]] = defaultdict(list)
        for gid, arm_id, values in reversed(scanned):  # oldest first within each input
            groups[_input_key(values)].append((gid, arm_id))
        full = {key: members for key, members in groups.items() if len(members) >= size}
        existing: set[str] = set()
        keys = list(full)
        for start in range(0, len(keys), 500):
            existing.update(
                session.scalars(
                    select(LabelItem.group_key).where(
                        LabelItem.task_id == task.id,
                        LabelItem.kind == kind,
                        LabelItem.group_key.in_(keys[start : start + 500]),
                    )
                )
            )
        items = []
        for key, members in full.items():
            if key in existing:
                continue
            chosen = _spread(members, size)
            items.append(
                LabelItem(
                    task_id=task.id,
                    kind=kind,
                    group_key=key,
                    generation_ids=[gid for gid, _ in chosen],
                    arm_ids=[arm for _, arm in chosen],
                    arm_id=chosen[0][1],
                    created_at=now,
                )
            )
            if len(items) >= _CANDIDATES:
                break
    session.add_all(items)
    session.flush()
    return len(items)


def _spread(members: Sequence[tuple[str, int | None]], size: int) -> list[tuple[str, int | None]]:
    """``size`` members, one per arm first (in order), then the rest in order."""
    seen: set[int | None] = set()
    first: list[tuple[str, int | None]] = []
    rest: list[tuple[str, int | None]] = []
    for member in members:
        (rest if member[1] in seen else first).append(member)
        seen.add(member[1])
    return (first + rest)[:size]


# -- handing items out -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ItemView:
    """A leased item as the labeler sees it: the outputs in the order shown (arms hidden)."""

    lease_id: int
    item_id: int
    kind: str
    inputs: dict[str, Any]
    prompt: str | None
    outputs: list[tuple[str, str]]
    """(generation id, output text) in the order shown."""
    expires_at: datetime
    gold: bool
    chosen_by: str = ""
    """Why this item came next (shown to the labeler), e.g. the strategy's rule."""


def _available(task: Task, kind: str, labeler: str, overlap: int, now: datetime) -> Any:
    mine = exists().where(LabelLease.item_id == LabelItem.id, LabelLease.labeler == labeler)
    live = (
        select(func.count())
        .where(
            LabelLease.item_id == LabelItem.id,
            LabelLease.status == "open",
            LabelLease.expires_at > now,
        )
        .scalar_subquery()
    )
    return and_(
        LabelItem.task_id == task.id,
        LabelItem.kind == kind,
        LabelItem.status == "open",
        ~mine,
        LabelItem.done + live < overlap,
    )


def _estimates(stats: TaskStats | None) -> tuple[set[int] | None, dict[int, float]]:
    """The arms whose interval overlaps the leader's (None: no leader yet) and arm means."""
    if stats is None:
        return None, {}
    means = {a.arm_id: a.mean_reward for a in stats.arms if a.mean_reward is not None}
    rated = [a for a in stats.arms if not a.retired and a.interval is not None]
    if not rated:
        return None, means
    leader = max(rated, key=lambda a: a.mean_reward or 0.0)
    assert leader.interval is not None
    low, high = leader.interval
    open_arms = {
        a.arm_id
        for a in stats.arms
        if not a.retired
        and (a.interval is None or (a.interval[1] >= low and a.interval[0] <= high))
    }
    return open_arms, means


def _pick(
    session: Session,
    task: Task,
    kind: str,
    available: Any,
    strategy: str,
    stats: TaskStats | None,
    rng: random.Random,
    scorer: Scorer | None = None,
) -> tuple[LabelItem | None, str]:
    """The next item and why it was chosen."""
    query = select(LabelItem).where(available)
    oldest = "the oldest item waiting"
    if strategy == "oldest":
        return session.scalars(query.order_by(LabelItem.id).limit(1)).first(), oldest
    if strategy == "random":
        low, high = session.execute(
            select(func.min(LabelItem.id), func.max(LabelItem.id)).where(available)
        ).one()
        if low is None:
            return None, ""
        start = rng.randint(low, high)
        found = session.scalars(
            query.where(LabelItem.id >= start).order_by(LabelItem.id).limit(1)
        ).first()
        first = found or session.scalars(query.order_by(LabelItem.id).limit(1)).first()
        return first, "an item at random"
    open_arms, means = _estimates(stats)
    if kind in ("rate", "edit"):
        if open_arms:
            found = session.scalars(
                query.where(LabelItem.arm_id.in_(sorted(open_arms))).order_by(LabelItem.id).limit(1)
            ).first()
            if found is not None:
                return found, "an output of an arm the bandit has not ruled out yet"
        return session.scalars(query.order_by(LabelItem.id).limit(1)).first(), oldest
    limit = _SCORED if scorer is not None else _CANDIDATES
    candidates = list(session.scalars(query.order_by(LabelItem.id).limit(limit)))
    if not candidates:
        return None, ""
    ids = {g for c in candidates for g in c.generation_ids}
    rows = session.execute(
        select(Generation.id, Generation.reward, Generation.output, Generation.prompt).where(
            Generation.id.in_(ids)
        )
    ).all()
    rewards = {gid: reward for gid, reward, _, _ in rows if reward is not None}
    scores: Mapping[str, float] = {}
    if scorer is not None:
        scores = scorer([(gid, output or "", prompt) for gid, _, output, prompt in rows])

    def estimate(gid: str, arm: int | None) -> float:
        value = scores.get(gid, rewards.get(gid))
        if value is None:
            value = means.get(arm, 0.0) if arm is not None else 0.0
        return float(value)

    def score(item: LabelItem) -> tuple[float, float, int]:
        values = [estimate(g, a) for g, a in zip(item.generation_ids, item.arm_ids, strict=False)]
        spread = max(values) - min(values)  # closest estimates: least sure of the order
        opened = len({a for a in item.arm_ids if open_arms is None or a in open_arms})
        return (-opened if kind == "rank" else 0.0, spread, item.id)

    if scores:
        why = "the outputs the reward model is least sure how to order"
    else:
        why = "the outputs whose reward estimates are closest (least sure how to order)"
    return min(candidates, key=score), why


def next_item(
    session: Session,
    task: Task,
    kind: str,
    labeler: str,
    *,
    settings: QueueSettings | None = None,
    stats: TaskStats | None = None,
    rng: random.Random | None = None,
    scorer: Scorer | None = None,
) -> ItemView | None:
    """The labeler's open lease of this queue, or a new lease on the next item (None: none is
    left for them). ``stats`` (the task's arm statistics) and ``scorer`` (its reward model)
    steer the ``decisive`` strategy."""
    check_kind(kind)
    settings = settings or queue_settings(session, task)
    now = utcnow()
    lease = session.scalars(
        select(LabelLease)
        .join(LabelItem, LabelItem.id == LabelLease.item_id)
        .where(
            LabelLease.task_id == task.id,
            LabelLease.labeler == labeler,
            LabelLease.status == "open",
            LabelLease.expires_at > now,
            LabelItem.kind == kind,
            LabelItem.status == "open",
        )
        .order_by(LabelLease.id)
        .limit(1)
    ).first()
    if lease is not None:
        item = session.get(LabelItem, lease.item_id)
        assert item is not None
        return _view(session, item, lease, "your item from before (you still hold it)")
    available = _available(task, kind, labeler, settings.overlap, now)
    rng = rng or random.Random()
    item, why = _pick(session, task, kind, available, settings.strategy, stats, rng, scorer)
    if item is None and fill_queue(session, task, kind, rank_size=settings.rank_size):
        item, why = _pick(session, task, kind, available, settings.strategy, stats, rng, scorer)
    if item is None:
        return None
    order = list(item.generation_ids)
    if kind in ("compare", "rank"):
        rng.shuffle(order)  # sides and positions at random: no arm keeps a side
    lease = LabelLease(
        item_id=item.id,
        task_id=task.id,
        labeler=labeler,
        status="open",
        order=order,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.lease_seconds),
    )
    session.add(lease)
    session.flush()
    return _view(session, item, lease, why)


def _view(session: Session, item: LabelItem, lease: LabelLease, why: str = "") -> ItemView:
    rows = {
        g.id: g
        for g in session.scalars(select(Generation).where(Generation.id.in_(lease.order))).all()
    }
    first = rows[lease.order[0]]
    return ItemView(
        lease_id=lease.id,
        item_id=item.id,
        kind=item.kind,
        inputs=dict(first.input or {}),
        prompt=first.prompt,
        outputs=[(gid, rows[gid].output or "") for gid in lease.order],
        expires_at=lease.expires_at,
        gold=item.gold is not None,
        chosen_by=why,
    )


def lease_view(session: Session, task: Task, lease_id: int, labeler: str) -> ItemView:
    """The item of one of the labeler's leases (to show it again with an error message)."""
    lease, item = _own_lease(session, task, lease_id, labeler, lock=False)
    return _view(session, item, lease)


# -- submissions -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    """What a submission did: ``stored`` (new events), ``duplicate`` (the lease was already
    answered: nothing new), or ``closed`` (the item had its k labels: nothing stored)."""

    status: str
    feedback_ids: tuple[int, ...] = ()


def _own_lease(
    session: Session, task: Task, lease_id: int, labeler: str, *, lock: bool
) -> tuple[LabelLease, LabelItem]:
    query = select(LabelLease).where(LabelLease.id == lease_id)
    lease = session.scalars(query.with_for_update() if lock else query).first()
    if lease is None:
        raise NotFoundError(f"no item lease {lease_id}; open the queue again for a new item")
    if lease.task_id != task.id:
        raise ForbiddenItem(
            f"item lease {lease_id} belongs to another task, not {task.name!r}; answers are "
            "accepted only in the task the item came from"
        )
    if lease.labeler != labeler:
        raise ForbiddenItem(f"item lease {lease_id} was given to another labeler, not to you")
    item_query = select(LabelItem).where(LabelItem.id == lease.item_id)
    item = session.scalars(item_query.with_for_update() if lock else item_query).one()
    return lease, item


def _events(
    task: Task, item: LabelItem, lease: LabelLease, answer: Mapping[str, Any], labeler: str
) -> tuple[list[FeedbackEvent], dict[str, Any]]:
    """The feedback events of an answer, and the answer as kept on the lease."""
    common: dict[str, Any] = {"source": "labeler", "author": labeler}
    key = f"app-lease-{lease.id}"
    if item.kind == "rate":
        value = _number(answer.get("value"), "level")
        return [
            RatingEvent(generation_id=lease.order[0], value=value, idempotency_key=key, **common)
        ], {"value": value}
    if item.kind == "edit":
        text = str(answer.get("text") or "")
        if not text.strip():
            raise InvalidInputError("the edited text is empty; correct the draft, or skip the item")
        return [
            EditEvent(generation_id=lease.order[0], final_text=text, idempotency_key=key, **common)
        ], {"text": text}
    if item.kind == "compare":
        choice = answer.get("choice")
        if choice not in COMPARE_CHOICES:
            raise InvalidInputError(
                f"choose left, right, tie or both bad (got {choice!r}); keys 1, 2, 3, 4"
            )
        left, right = lease.order
        if choice == "both_bad":
            lowest = float(min(task.scale))
            events: list[FeedbackEvent] = [
                RatingEvent(generation_id=gid, value=lowest, idempotency_key=f"{key}-{n}", **common)
                for n, gid in enumerate((left, right))
            ]
            return events, {"winner": "both_bad", "side": None}
        winner: Literal["a", "b", "tie"] = "a" if choice == "left" else "b"
        if choice == "tie":
            winner = "tie"
        event = PairwiseEvent(a=left, b=right, winner=winner, idempotency_key=key, **common)
        won = {"left": left, "right": right, "tie": "tie"}[choice]
        side = choice if choice in ("left", "right") else None
        return [event], {"winner": won, "side": side}
    order = [str(g) for g in answer.get("order") or []]
    if sorted(order) != sorted(lease.order):
        raise InvalidInputError(
            f"a ranking must list each of the {len(lease.order)} outputs once, best first"
        )
    ranking = RankingEvent(
        generation_ids=order, ranks=list(range(1, len(order) + 1)), idempotency_key=key, **common
    )
    return [ranking], {"order": order}


def _number(value: Any, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"choose a {what} (got {value!r}); keys 1 to 9 pick one") from None


def submit(
    session: Session,
    task: Task,
    lease_id: int,
    labeler: str,
    answer: Mapping[str, Any],
    *,
    settings: QueueSettings | None = None,
    catalog: Catalog | None = None,
    policies: PolicyCache | None = None,
) -> SubmitOutcome:
    """Record the answer to a lease through :func:`ops.submit_feedback` (``POST /v1/feedback``'s
    path), close the lease and count the label, all in the caller's transaction."""
    lease, item = _own_lease(session, task, lease_id, labeler, lock=True)
    if lease.status == "done":
        return SubmitOutcome("duplicate", tuple(lease.feedback_ids or ()))
    settings = settings or queue_settings(session, task)
    if item.status != "open" or item.done >= settings.overlap:
        lease.status = "late"
        lease.closed_at = utcnow()
        return SubmitOutcome("closed")
    events, kept = _events(task, item, lease, answer, labeler)
    results: list[RecordResult] = [
        ops.submit_feedback(session, task.name, event, catalog=catalog, policies=policies)
        for event in events
    ]
    lease.status = "done"
    lease.answer = kept
    lease.feedback_ids = [r.feedback_id for r in results]
    lease.closed_at = utcnow()
    item.done += 1
    if item.done >= settings.overlap:
        item.status = "closed"
    session.flush()
    return SubmitOutcome("stored", tuple(lease.feedback_ids))


def release(session: Session, task: Task, lease_id: int, labeler: str, *, discard: bool) -> str:
    """Skip (never shown to this labeler again) or discard (unusable: closed for everyone)."""
    lease, item = _own_lease(session, task, lease_id, labeler, lock=True)
    if lease.status != "open":
        return "duplicate"
    lease.status = "discarded" if discard else "skipped"
    lease.closed_at = utcnow()
    if discard:
        item.status = "discarded"
    session.flush()
    return lease.status


# -- progress, agreement on items, gold ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Progress:
    """One labeler's labels per queue, and the items still open in each."""

    done: dict[str, int]
    open_items: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.done.values())


def progress(session: Session, task: Task, labeler: str) -> Progress:
    done = dict(
        session.execute(
            select(LabelItem.kind, func.count())
            .join(LabelLease, LabelLease.item_id == LabelItem.id)
            .where(
                LabelLease.task_id == task.id,
                LabelLease.labeler == labeler,
                LabelLease.status == "done",
            )
            .group_by(LabelItem.kind)
        ).all()
    )
    open_items = dict(
        session.execute(
            select(LabelItem.kind, func.count())
            .where(LabelItem.task_id == task.id, LabelItem.status == "open")
            .group_by(LabelItem.kind)
        ).all()
    )
    return Progress(
        done={k: int(done.get(k, 0)) for k in ITEM_KINDS},
        open_items={k: int(open_items.get(k, 0)) for k in ITEM_KINDS},
    )


def _answer_key(kind: str, answer: Mapping[str, Any] | None) -> Any:
    """What two answers must share to agree (rate: the level; compare: the winner; rank: the
    top choice; edit: never compared)."""
    if not answer:
        return None
    if kind == "rate":
        return answer.get("value")
    if kind == "compare":
        return answer.get("winner")
    if kind == "rank":
        order = answer.get("order") or [None]
        return order[0]
    return None


def mark_gold(session: Session, task: Task, item_id: int, answer: Mapping[str, Any]) -> None:
    """Give an item a known answer (admins); each labeler's accuracy is measured on them."""
    item = session.get(LabelItem, item_id)
    if item is None or item.task_id != task.id:
        raise NotFoundError(f"no item {item_id} in task {task.name!r}")
    if item.kind == "edit":
        raise InvalidInputError("edit items have no single right answer; gold is for the others")
    if _answer_key(item.kind, answer) is None:
        raise InvalidInputError(f"a gold answer for a {item.kind} item needs its answer field")
    item.gold = dict(answer)
    session.flush()


@dataclass(frozen=True, slots=True)
class LabelerSummary:
    """One labeler on one task: labels, skips, median seconds per label, gold accuracy."""

    labeler: str
    labels: int
    skipped: int
    median_seconds: float | None
    gold_answered: int
    gold_correct: int

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_answered if self.gold_answered else None


def labeler_summaries(session: Session, task: Task) -> list[LabelerSummary]:
    rows = session.execute(
        select(
            LabelLease.labeler,
            LabelLease.status,
            LabelLease.created_at,
            LabelLease.closed_at,
            LabelLease.answer,
            LabelItem.kind,
            LabelItem.gold,
        )
        .join(LabelItem, LabelItem.id == LabelLease.item_id)
        .where(LabelLease.task_id == task.id, LabelLease.status.in_(("done", "skipped")))
    ).all()
    seconds: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for labeler, status, created, closed, answer, kind, gold in rows:
        counts[labeler][status] += 1
        if status != "done":
            continue
        if closed is not None and created is not None:
            seconds[labeler].append((_aware(closed) - _aware(created)).total_seconds())
        if gold is not None:
            counts[labeler]["gold"] += 1
            if _answer_key(kind, answer) == _answer_key(kind, gold):
                counts[labeler]["correct"] += 1
    summaries = []
    for labeler in sorted(counts):
        spent = sorted(seconds[labeler])
        summaries.append(
            LabelerSummary(
                labeler=labeler,
                labels=counts[labeler]["done"],
                skipped=counts[labeler]["skipped"],
                median_seconds=spent[len(spent) // 2] if spent else None,
                gold_answered=counts[labeler]["gold"],
                gold_correct=counts[labeler]["correct"],
            )
        )
    return summaries


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive times (stored as UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Disagreement:
    """An item whose labelers disagree: ``share`` of answers that differ from the majority."""

    item_id: int
    kind: str
    answers: list[tuple[str, Any]]
    share: float
    gold: dict[str, Any] | None


def disagreements(session: Session, task: Task, *, limit: int = 30) -> list[Disagreement]:
    """The review queue: items answered by at least two labelers, most disagreement first."""
    rows = session.execute(
        select(LabelItem.id, LabelItem.kind, LabelItem.gold, LabelLease.labeler, LabelLease.answer)
        .join(LabelLease, LabelLease.item_id == LabelItem.id)
        .where(
            LabelItem.task_id == task.id,
            LabelItem.done >= 2,
            LabelItem.kind != "edit",
            LabelLease.status == "done",
        )
        .order_by(LabelItem.id.desc())
        .limit(20_000)
    ).all()
    by_item: dict[int, list[tuple[str, Any]]] = defaultdict(list)
    meta: dict[int, tuple[str, Any]] = {}
    for item_id, kind, gold, labeler, answer in rows:
        by_item[item_id].append((labeler, _answer_key(kind, answer)))
        meta[item_id] = (kind, gold)
    found = []
    for item_id, answers in by_item.items():
        if len(answers) < 2:
            continue
        majority = Counter(a for _, a in answers).most_common(1)[0][1]
        share = 1.0 - majority / len(answers)
        if share > 0:
            kind, gold = meta[item_id]
            found.append(Disagreement(item_id, kind, answers, share, gold))
    found.sort(key=lambda d: (-d.share, -d.item_id))
    return found[:limit]


@dataclass(frozen=True, slots=True)
class PositionBias:
    """Compare answers that picked the left output vs the right one (ties left out)."""

    left: int
    right: int

    @property
    def left_share(self) -> float | None:
        total = self.left + self.right
        return self.left / total if total else None

    @property
    def interval(self) -> tuple[float, float] | None:
        """95% Wilson interval of the left share (0.5 inside it: no sign of position bias)."""
        n = self.left + self.right
        if not n:
            return None
        p, z = self.left / n, 1.959964
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
        return (centre - half, centre + half)


def position_bias(session: Session, task: Task, labeler: str | None = None) -> PositionBias:
    query = (
        select(LabelLease.answer)
        .join(LabelItem, LabelItem.id == LabelLease.item_id)
        .where(
            LabelLease.task_id == task.id,
            LabelLease.status == "done",
            LabelItem.kind == "compare",
        )
    )
    if labeler is not None:
        query = query.where(LabelLease.labeler == labeler)
    sides = Counter((answer or {}).get("side") for answer in session.scalars(query))
    return PositionBias(left=sides["left"], right=sides["right"])
