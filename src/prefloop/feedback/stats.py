"""A task's feedback at a glance: counts by kind and source, ratings, rewards, agreement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from prefloop.feedback.agreement import RaterAgreement, task_agreement
from prefloop.store.models import Feedback, Generation, Task


def level_key(value: float) -> str:
    """The text form of a rating level in ``distribution``: shortest form, ``-1``, ``0.5``."""
    return f"{float(value):g}"


@dataclass(frozen=True, slots=True)
class FeedbackStats:
    task: str
    generations: int
    failed_generations: int
    rewarded_generations: int
    mean_reward: float | None
    feedback: int
    by_kind: dict[str, int]
    by_source: dict[str, int]
    ratings: int
    """Rating events of every source (``by_source`` says who gave feedback)."""
    distribution: dict[str, int]
    """Rating events per level, keys as :func:`level_key` (every level of the task's scale
    appears, with 0 where none was given), in scale order."""
    mean_rating: float | None
    agreement: RaterAgreement

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "generations": self.generations,
            "failed_generations": self.failed_generations,
            "rewarded_generations": self.rewarded_generations,
            "mean_reward": self.mean_reward,
            "feedback": self.feedback,
            "by_kind": self.by_kind,
            "by_source": self.by_source,
            "ratings": self.ratings,
            "distribution": self.distribution,
            "mean_rating": self.mean_rating,
            "agreement": {
                "alpha": self.agreement.alpha,
                "rated_units": self.agreement.rated_units,
                "pair_rate": self.agreement.pair_rate,
                "judged_pairs": self.agreement.judged_pairs,
            },
        }


def _counts(session: Session, task: Task, column: InstrumentedAttribute[str]) -> dict[str, int]:
    query = (
        select(column, func.count())
        .where(Feedback.task_id == task.id)
        .group_by(column)
        .order_by(column)
    )
    return {name: n for name, n in session.execute(query)}


def feedback_stats(session: Session, task: Task) -> FeedbackStats:
    """Counts and summaries of ``task``'s generations and feedback, in a few queries."""
    generations, failed, rewarded, mean_reward = session.execute(
        select(
            func.count(Generation.id),
            func.count(Generation.id).filter(Generation.status == "failed"),
            func.count(Generation.reward),
            func.avg(Generation.reward),
        ).where(Generation.task_id == task.id)
    ).one()
    by_kind = _counts(session, task, Feedback.kind)
    by_source = _counts(session, task, Feedback.source)
    counts = session.execute(
        select(Feedback.value, func.count())
        .where(Feedback.task_id == task.id, Feedback.kind == "rating")
        .group_by(Feedback.value)
    )
    by_value = {float(value): n for value, n in counts if value is not None}
    levels = sorted({float(level) for level in task.scale} | set(by_value))
    distribution = {level_key(level): by_value.get(level, 0) for level in levels}
    ratings = sum(by_value.values())
    mean_rating = sum(v * n for v, n in by_value.items()) / ratings if ratings else None
    return FeedbackStats(
        task=task.name,
        generations=generations,
        failed_generations=failed,
        rewarded_generations=rewarded,
        mean_reward=None if mean_reward is None else float(mean_reward),
        feedback=sum(by_kind.values()),
        by_kind=by_kind,
        by_source=by_source,
        ratings=ratings,
        distribution=distribution,
        mean_rating=mean_rating,
        agreement=task_agreement(session, task),
    )
