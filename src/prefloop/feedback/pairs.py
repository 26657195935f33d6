"""Preference pairs from the store: explicit pairwise events, expanded rankings, rating gaps.

One place turns feedback into ``(chosen, rejected)`` pairs, for the preference export and for
reward-model training alike:

- a pairwise event gives its pair (a tie gives none);
- a ranking of K generations gives K(K-1)/2 pairs (:func:`expand_ranking`); tied generations
  give no pair here (``ties="tie"`` keeps them as tie pairs, for agreement and tie-aware models);
- optionally, two generations of the same prompt and input with different rewards give a pair
  whose ``margin`` is the reward difference (:func:`rating_pairs`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Generic, Literal, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from prefloop.store.models import Feedback, Generation, Task

T = TypeVar("T")
PairOrigin = Literal["pairwise", "ranking", "ratings"]
HUMAN_SOURCES: tuple[str, ...] = ("end_user", "labeler", "auto")
"""Feedback made by people (``auto`` is derived from their edits); the default for exports."""

_CHUNK = 500


@dataclass(frozen=True, slots=True)
class RankedPair(Generic[T]):
    """Two items of a ranking: ``better`` ranked above ``worse`` (or level with it: ``tie``)."""

    better: T
    worse: T
    rank_gap: int
    tie: bool = False


def expand_ranking(
    items: Sequence[T], ranks: Sequence[int], *, ties: Literal["skip", "tie"] = "skip"
) -> list[RankedPair[T]]:
    """The K(K-1)/2 pairs of a ranking of K items (``ranks[i]`` of ``items[i]``, 1 = best).

    Tied items give no pair with ``ties="skip"`` and a pair with ``tie=True`` (in list order)
    with ``ties="tie"``, so the latter always returns exactly K(K-1)/2 pairs.
    """
    if len(items) != len(ranks):
        raise ValueError(f"{len(items)} items but {len(ranks)} ranks")
    pairs: list[RankedPair[T]] = []
    for i, j in combinations(range(len(items)), 2):
        if ranks[i] == ranks[j]:
            if ties == "tie":
                pairs.append(RankedPair(items[i], items[j], 0, tie=True))
            continue
        better, worse = (i, j) if ranks[i] < ranks[j] else (j, i)
        pairs.append(RankedPair(items[better], items[worse], abs(ranks[i] - ranks[j])))
    return pairs


def prompt_text(generation: Generation) -> str:
    """The prompt of a generation for training data: its rendered prompt, else its input.

    A generation imported without a prompt (e.g. a rated text with only ``{"image_id": …}``)
    gets its input as compact, key-sorted JSON, so outputs of the same input share a prompt.
    """
    if generation.prompt is not None:
        return generation.prompt
    if generation.input:
        return json.dumps(generation.input, ensure_ascii=False, sort_keys=True)
    return ""


@dataclass(frozen=True, slots=True)
class PreferencePair:
    """``chosen`` preferred to ``rejected`` (generation ids, with their prompt and texts)."""

    prompt: str
    chosen: str
    rejected: str
    chosen_id: str
    rejected_id: str
    origin: PairOrigin
    margin: float | None = None
    feedback_id: int | None = None


def _pair(
    chosen: Generation,
    rejected: Generation,
    origin: PairOrigin,
    *,
    margin: float | None = None,
    feedback_id: int | None = None,
) -> PreferencePair:
    return PreferencePair(
        prompt=prompt_text(chosen),
        chosen=chosen.output or "",
        rejected=rejected.output or "",
        chosen_id=chosen.id,
        rejected_id=rejected.id,
        origin=origin,
        margin=margin,
        feedback_id=feedback_id,
    )


def pairwise_pairs(
    session: Session, task: Task, *, sources: Sequence[str] = HUMAN_SOURCES
) -> Iterator[PreferencePair]:
    """The pairs of the task's pairwise events from ``sources``, oldest first; ties left out.

    A ``margin`` stored with the event (``payload["margin"]``, e.g. from an imported file) is
    carried over.
    """
    first, second = aliased(Generation), aliased(Generation)
    rows = session.execute(
        select(Feedback, first, second)
        .join(first, Feedback.generation_id == first.id)
        .join(second, Feedback.other_generation_id == second.id)
        .where(
            Feedback.task_id == task.id,
            Feedback.kind == "pairwise",
            Feedback.source.in_(sources),
            Feedback.value != 0,
        )
        .order_by(Feedback.id)
        .execution_options(yield_per=_CHUNK)
    )
    for event, a, b in rows:
        chosen, rejected = (a, b) if (event.value or 0) > 0 else (b, a)
        margin = (event.payload or {}).get("margin")
        yield _pair(
            chosen,
            rejected,
            "pairwise",
            margin=None if margin is None else float(margin),
            feedback_id=event.id,
        )


def _generations(session: Session, ids: Iterable[str]) -> dict[str, Generation]:
    wanted = list(dict.fromkeys(ids))
    found: dict[str, Generation] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        found.update(
            (g.id, g) for g in session.scalars(select(Generation).where(Generation.id.in_(chunk)))
        )
    return found


def ranking_pairs(
    session: Session, task: Task, *, sources: Sequence[str] = HUMAN_SOURCES
) -> Iterator[PreferencePair]:
    """The K(K-1)/2 pairs of each of the task's rankings from ``sources``; ties give none."""
    query = (
        select(Feedback)
        .where(
            Feedback.task_id == task.id,
            Feedback.kind == "ranking",
            Feedback.source.in_(sources),
        )
        .order_by(Feedback.id)
    )
    batch: list[Feedback] = []
    for event in session.scalars(query.execution_options(yield_per=_CHUNK)):
        batch.append(event)
        if len(batch) == _CHUNK:
            yield from _expand_rankings(session, batch)
            batch = []
    yield from _expand_rankings(session, batch)


def _expand_rankings(session: Session, events: list[Feedback]) -> Iterator[PreferencePair]:
    by_id = _generations(session, (g for e in events for g in e.payload["generation_ids"]))
    for event in events:
        ids, ranks = event.payload["generation_ids"], event.payload["ranks"]
        for pair in expand_ranking(ids, ranks):
            if pair.better in by_id and pair.worse in by_id:  # payload ids are not foreign keys
                yield _pair(by_id[pair.better], by_id[pair.worse], "ranking", feedback_id=event.id)


def rating_pairs(session: Session, task: Task) -> Iterator[PreferencePair]:
    """Pairs of generations with the same prompt and input and different rewards.

    The pair's ``margin`` is the reward difference (chosen minus rejected), so it is on the
    task's rating scale. Generations with neither a prompt nor an input are left out (nothing
    says they answer the same request). Uses the cached rewards (:mod:`.rewards`).
    """
    query = (
        select(Generation)
        .where(
            Generation.task_id == task.id,
            Generation.status == "ok",
            Generation.reward.is_not(None),
        )
        .order_by(Generation.created_at, Generation.id)
    )
    groups: dict[str, list[Generation]] = {}
    for generation in session.scalars(query):
        if generation.prompt is None and not generation.input:
            continue
        key = json.dumps([generation.prompt, generation.input], sort_keys=True)
        groups.setdefault(key, []).append(generation)
    for members in groups.values():
        for first, second in combinations(members, 2):
            assert first.reward is not None and second.reward is not None
            if first.reward == second.reward:
                continue
            chosen, rejected = (first, second) if first.reward > second.reward else (second, first)
            yield _pair(chosen, rejected, "ratings", margin=abs(first.reward - second.reward))


def preference_pairs(
    session: Session,
    task: Task,
    *,
    sources: Sequence[str] = HUMAN_SOURCES,
    from_ratings: bool = False,
) -> Iterator[PreferencePair]:
    """All of a task's preference pairs: pairwise events, then rankings, then (if asked) the
    pairs implied by different rewards for the same prompt and input."""
    yield from pairwise_pairs(session, task, sources=sources)
    yield from ranking_pairs(session, task, sources=sources)
    if from_ratings:
        yield from rating_pairs(session, task)
