"""The feedback loop in one place: record feedback, derive rewards, update the bandit.

Every writer of feedback goes through :func:`submit_feedback`: the service's API and web app
(:func:`prefloop.serve.ops.submit_feedback`, which finds the task by name), the demo's rubric
ratings, and trainers that write feedback. One call, inside the caller's transaction:

1. :func:`prefloop.feedback.record_feedback` validates the event, stores it once (a repeated
   idempotency key replays the first result) and derives what follows (an edit's
   auto-rating and preference pair);
2. the cached reward of each generation it rates is derived again from its reward events
   by the task's :class:`~prefloop.feedback.RewardRules`
   (:func:`prefloop.feedback.record.reward_change`);
3. each reward that moved moves the state of the bandit policy that chose the generation's arm
   (:func:`prefloop.bandit.apply_reward`).

Everything commits or rolls back together. After changing a task's reward rules, derive every
cached reward again and move the bandit the same way:
``apply_reward_changes(session, refresh_rewards(session, task))``
(:func:`prefloop.feedback.refresh_rewards`).

The service's fast lane (:mod:`prefloop.serve.hotpath`) runs the same steps for the common
events (a rating, thumbs or regenerate about a completed generation) on a raw connection:
the same statements (:mod:`prefloop.store.statements`), the same reward rule
(:func:`~prefloop.feedback.record.reward_change`) and the same policy update
(:meth:`~prefloop.bandit.Policy.update` of :func:`~prefloop.bandit.online.decision_of_row`);
its tests check it leaves the store exactly as this path does.

    with store.session() as session:
        task = repo.get_task(session, "diary")  # prefloop.store.repo
        result = submit_feedback(session, task, RatingEvent(generation_id=gid, value=1))
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session

from prefloop.bandit.online import PolicyCache, apply_reward
from prefloop.feedback import record
from prefloop.feedback.events import FeedbackEvent
from prefloop.feedback.record import RecordResult, RewardChange
from prefloop.store.models import Task

__all__ = ["apply_reward_changes", "submit_feedback"]


def submit_feedback(
    session: Session, task: Task, event: FeedbackEvent, *, policies: PolicyCache | None = None
) -> RecordResult:
    """Record ``event`` about ``task``'s generations and move the bandit by each reward it
    changed, in the caller's transaction.

    A repeated idempotency key returns the first result (``duplicate=True``) and changes
    nothing. ``policies`` (a service's :class:`~prefloop.bandit.online.PolicyCache`) keeps the
    live policies between calls. Raises what :func:`prefloop.feedback.record_feedback` raises
    (:class:`~prefloop.errors.InvalidInputError`, :class:`~prefloop.errors.NotFoundError`,
    :class:`~prefloop.errors.ConflictError`).
    """
    result = record.record_feedback(session, task, event)
    if not result.duplicate:
        apply_reward_changes(session, result.reward_changes, policies=policies)
    return result


def apply_reward_changes(
    session: Session, changes: Iterable[RewardChange], *, policies: PolicyCache | None = None
) -> int:
    """Move the policy state behind each changed generation from its old reward to the new;
    returns how many states moved (a generation no bandit chose moves none). ``changes`` come
    from :func:`prefloop.feedback.record_feedback` or
    :func:`prefloop.feedback.refresh_rewards`."""
    moved = 0
    for change in changes:  # by id: the rows may have left the session
        moved += apply_reward(session, change.generation_id, change.old, change.new, cache=policies)
    return moved
