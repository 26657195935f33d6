"""What the dashboard shows, read from the store: arm statistics, the stopping rule, plots."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from prefloop import bandit
from prefloop.bandit import Recommendation
from prefloop.bandit.online import TaskStats
from prefloop.demo import (
    allocation_figure,
    arm_means_figure,
    cumulative_regret,
    png_bytes,
    regret_figure,
    uniform_regret,
)
from prefloop.store import (
    Arm,
    BanditDecision,
    Feedback,
    Generation,
    RewardModelRecord,
    Task,
    TrainingRun,
)

T = TypeVar("T")
log = logging.getLogger("prefloop.serve.web")
PLOTS = ("arm_means", "allocation", "regret")
_POINTS = 2000


@dataclass(frozen=True, slots=True)
class PlotArm:
    """An arm as the plots draw it (see :class:`prefloop.demo._report.PlottedArm`)."""

    name: str
    rated: int
    mean: float | None
    interval: tuple[float, float] | None


class TtlCache:
    """Values by key, recomputed at most every ``ttl`` seconds: the arm statistics, verdicts
    and plots the next-item choice and the dashboard share (a recount reads every reward of
    the task: seconds on a large store).

    Only the first request for a key waits for ``make``. Later, an expired value is still
    returned while one background thread computes the next, so no labeler or dashboard waits
    for a recount; ``make`` must open its own transaction.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._values: dict[Any, tuple[float, Any]] = {}
        self._refreshing: set[Any] = set()
        self._lock = threading.Lock()

    def get(self, key: Any, make: Callable[[], T]) -> T:
        with self._lock:
            kept = self._values.get(key)
            if kept is not None:
                stale = time.monotonic() - kept[0] >= self.ttl
                if stale and key not in self._refreshing:
                    self._refreshing.add(key)
                    threading.Thread(target=self._refresh, args=(key, make), daemon=True).start()
                return kept[1]
        value = make()
        with self._lock:
            self._values[key] = (time.monotonic(), value)
        return value

    def _refresh(self, key: Any, make: Callable[[], Any]) -> None:
        try:
            value = make()
        except Exception:  # the old value stays; the next request tries again
            log.exception("refreshing the web app's cached %r failed", key)
        else:
            with self._lock:
                self._values[key] = (time.monotonic(), value)
        finally:
            with self._lock:
                self._refreshing.discard(key)

    def forget(self, key: Any) -> None:
        """Drop one value (the next request recomputes it, e.g. after an admin's change)."""
        with self._lock:
            self._values.pop(key, None)

    def clear(self) -> None:
        """Forget every value (the next request recomputes)."""
        with self._lock:
            self._values.clear()


DRAWS = 2000
"""Posterior draws of P(best) and the intervals (the API's 4000 cost twice the time)."""


@dataclass(frozen=True, slots=True)
class Summary:
    """A task's arm statistics and the stopping rule's verdict, counted together."""

    stats: TaskStats
    recommendation: Recommendation


def summarise(session: Session, task: Task) -> Summary:
    stats = bandit.arm_stats(session, task, draws=DRAWS)
    verdict = bandit.recommend_arm(session, task, draws=DRAWS, stats=stats)
    return Summary(stats, verdict)


@dataclass(frozen=True, slots=True)
class RewardModelRow:
    name: str
    version: int
    kind: str
    metrics: list[tuple[str, str]]
    created: str


def reward_models(session: Session, task: Task) -> list[RewardModelRow]:
    rows = session.scalars(
        select(RewardModelRecord)
        .where(RewardModelRecord.task_id == task.id)
        .order_by(RewardModelRecord.created_at.desc())
        .limit(10)
    ).all()
    return [
        RewardModelRow(
            name=row.name,
            version=row.version,
            kind=row.kind,
            metrics=_flat_metrics(row.metrics or {}),
            created=row.created_at.strftime("%Y-%m-%d %H:%M"),
        )
        for row in rows
    ]


@dataclass(frozen=True, slots=True)
class TrainingRunRow:
    id: int
    method: str
    status: str
    examples: int
    metrics: list[tuple[str, str]]
    created: str


def training_runs(session: Session, task: Task) -> list[TrainingRunRow]:
    """The task's newest training runs (``prefloop train``), with their figures."""
    rows = session.scalars(
        select(TrainingRun)
        .where(TrainingRun.task_id == task.id)
        .order_by(TrainingRun.id.desc())
        .limit(10)
    ).all()
    return [
        TrainingRunRow(
            id=row.id,
            method=row.method,
            status=row.status,
            examples=row.examples,
            metrics=_flat_metrics(
                {k: v for k, v in (row.metrics or {}).items() if k in _RUN_FIGURES}
            ),
            created=row.created_at.strftime("%Y-%m-%d %H:%M"),
        )
        for row in rows
    ]


_RUN_FIGURES = ("steps", "loss_first", "loss_last", "rewards/accuracies", "accuracy", "error")


def _flat_metrics(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Numbers of a metrics document as ``(dotted name, value)``, the first dozen."""
    found: list[tuple[str, str]] = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | float):
            found.append((name, f"{value:.3g}"))
        elif isinstance(value, dict):
            found.extend(_flat_metrics(value, name + "."))
        if len(found) >= 12:
            break
    return found[:12]


@dataclass(frozen=True, slots=True)
class GenerationRow:
    id: str
    arm: str
    output: str
    reward: float | None
    feedback: list[str]
    """The generation's feedback, newest first, e.g. ``rating +0.5 (ana)`` (at most 5)."""
    created: str


def recent_generations(
    session: Session, task: Task, query: str = "", limit: int = 20
) -> list[GenerationRow]:
    """The newest completed generations, those whose output contains ``query`` when given."""
    statement = (
        select(Generation.id, Arm.name, Generation.output, Generation.reward, Generation.created_at)
        .join(Arm, Arm.id == Generation.arm_id, isouter=True)
        .where(Generation.task_id == task.id, Generation.status == "ok")
        .order_by(Generation.created_at.desc(), Generation.id.desc())
        .limit(limit)
    )
    if query:
        escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        statement = statement.where(Generation.output.ilike(f"%{escaped}%", escape="\\"))
    rows = session.execute(statement).all()
    events: dict[str, list[str]] = {}
    ids = [r[0] for r in rows]
    found = session.execute(
        select(
            Feedback.generation_id,
            Feedback.other_generation_id,
            Feedback.kind,
            Feedback.value,
            Feedback.author,
        )
        .where(or_(Feedback.generation_id.in_(ids), Feedback.other_generation_id.in_(ids)))
        .order_by(Feedback.created_at.desc(), Feedback.id.desc())
        .limit(20 * limit)
    ).all()
    for first, other, kind, value, author in found:
        for gid in (first, other):
            if gid in ids:
                events.setdefault(gid, []).append(_describe(kind, value, author, gid == other))
    return [
        GenerationRow(
            id=gid,
            arm=arm or "–",
            output=(output or "")[:400],
            reward=reward,
            feedback=events.get(gid, [])[:5],
            created=created.strftime("%Y-%m-%d %H:%M"),
        )
        for gid, arm, output, reward, created in rows
    ]


def _describe(kind: str, value: float | None, author: str, second: bool) -> str:
    """One feedback event as a few words, seen from the generation's side."""
    if kind == "pairwise" and value is not None:
        won = value > 0 if not second else value < 0
        words = "tie" if value == 0 else ("preferred" if won else "not preferred")
        return f"pairwise {words} ({author})"
    if kind in ("rating", "thumbs") and value is not None:
        return f"{kind} {value:+g} ({author})"
    return f"{kind} ({author})"


def plot(session: Session, task: Task, name: str, stats: TaskStats) -> bytes:
    """One of the dashboard's plots as PNG, from live data (the demo report's drawings)."""
    arms = [PlotArm(a.arm, a.count, a.mean_reward, a.interval) for a in stats.arms if not a.retired]
    if name == "arm_means":
        figure = arm_means_figure(
            arms, recommended=stats.best_arm, confidence=stats.best_probability
        )
        return png_bytes(figure)
    names = dict(session.execute(select(Arm.id, Arm.name).where(Arm.task_id == task.id)).all())
    chosen = [
        names[arm_id]
        for arm_id in session.scalars(
            select(BanditDecision.arm_id)
            .where(BanditDecision.task_id == task.id)
            .order_by(BanditDecision.created_at, BanditDecision.id)
        )
    ]
    if name == "allocation":
        return png_bytes(allocation_figure([a.name for a in arms], chosen))
    means = {a.arm: a.mean_reward for a in stats.arms if a.mean_reward is not None}
    counted = [arm for arm in chosen if arm in means]
    curve = cumulative_regret(counted, means) if means else np.zeros(0)
    uniform = uniform_regret(len(counted), means) if means else np.zeros(0)
    every = max(1, len(counted) // _POINTS)
    steps = list(range(1, len(counted) + 1))[::every]
    figure = regret_figure(
        list(curve[::every]),
        list(uniform[::every]),
        policy="live",
        regret_policy=float(curve[-1]) if len(curve) else 0.0,
        regret_uniform=float(uniform[-1]) if len(uniform) else 0.0,
        steps=steps,
    )
    return png_bytes(figure)
