"""Agreement between raters: Krippendorff's alpha for ratings, agreement rate for pairs.

Krippendorff's alpha (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability") is
computed from the coincidence matrix ``o[c, k]``: every ordered pair of values (c, k) given to
the same unit by two different raters adds ``1 / (m_u - 1)``, where ``m_u`` is the number of
values of that unit (units with fewer than two values are not pairable and are left out).
With ``n_c = Σ_k o[c, k]`` and ``n = Σ_c n_c``::

    alpha = 1 - (n - 1) · Σ_ck o[c, k] δ²(c, k) / Σ_ck n_c n_k δ²(c, k)

The ordinal distance counts how many values lie between c and k:
``δ²(c, k) = (Σ_{g=c..k} n_g - (n_c + n_k) / 2)²``. 1 is perfect agreement, 0 is what chance
gives, below 0 is systematic disagreement.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from prefloop.feedback.datasets import expand_ranking
from prefloop.store.models import Feedback, Task

Level = Literal["nominal", "ordinal", "interval"]
RATER_SOURCES: tuple[str, ...] = ("end_user", "labeler")
"""Whose judgements count as raters by default (an edit's auto-rating is not a second rater)."""


def krippendorff_alpha(
    units: Iterable[Sequence[float]], *, level: Level = "ordinal"
) -> float | None:
    """Krippendorff's alpha of ``units``, each the values that different raters gave one unit.

    ``None`` when it is undefined: no unit has two values, or all values are the same.
    """
    pairable = [list(unit) for unit in units if len(unit) >= 2]
    if not pairable:
        return None
    values = sorted({v for unit in pairable for v in unit})
    index = {v: i for i, v in enumerate(values)}
    coincidence = np.zeros((len(values), len(values)))
    for unit in pairable:
        counts = np.bincount([index[v] for v in unit], minlength=len(values)).astype(float)
        # ordered pairs of different raters: counts_c·counts_k, minus each rater paired with itself
        coincidence += (np.outer(counts, counts) - np.diag(counts)) / (len(unit) - 1)
    n_c = coincidence.sum(axis=1)
    n = n_c.sum()
    delta2 = _distance(np.array(values, dtype=float), n_c, level)
    expected = (np.outer(n_c, n_c) * delta2).sum()
    if expected == 0:
        return None
    return float(1.0 - (n - 1) * (coincidence * delta2).sum() / expected)


def _distance(values: np.ndarray, n_c: np.ndarray, level: Level) -> np.ndarray:
    """δ²(c, k) for every pair of values (Krippendorff 2011, section "difference functions")."""
    if level == "nominal":
        return 1.0 - np.eye(len(values))
    if level == "interval":
        return np.subtract.outer(values, values) ** 2
    # ordinal: n_c + … + n_k (inclusive, c ≤ k) minus half the two end counts
    cumulative = np.cumsum(n_c)
    rank = np.arange(len(values))
    low, high = np.minimum.outer(rank, rank), np.maximum.outer(rank, rank)
    between = cumulative[high] - cumulative[low] + n_c[low]
    return (between - (n_c[low] + n_c[high]) / 2) ** 2


def pair_agreement(judgements: Iterable[Sequence[Hashable]]) -> float | None:
    """The share of rater pairs that agree, over items judged by at least two raters.

    Each element holds the outcomes different raters gave one item (e.g. which generation of a
    pair won, or a tie). ``None`` when no item has two judgements.
    """
    agreeing = total = 0
    for outcomes in judgements:
        m = len(outcomes)
        if m < 2:
            continue
        counts: dict[Hashable, int] = defaultdict(int)
        for outcome in outcomes:
            counts[outcome] += 1
        agreeing += sum(c * (c - 1) // 2 for c in counts.values())
        total += m * (m - 1) // 2
    return agreeing / total if total else None


@dataclass(frozen=True, slots=True)
class RaterAgreement:
    """How much a task's raters agree (each rater's latest judgement of each item counts)."""

    alpha: float | None
    """Krippendorff's ordinal alpha of the ratings (None: undefined)."""
    rated_units: int
    """Generations rated by at least two raters."""
    pair_rate: float | None
    """Share of rater pairs that agree on a pair of generations (None: no pair judged twice)."""
    judged_pairs: int
    """Pairs of generations judged by at least two raters (pairwise events and rankings)."""


Rater = tuple[str, str]
"""A rater is a source and an author."""


@dataclass(frozen=True, slots=True)
class _Judgements:
    """Each rater's latest rating of each generation, and latest outcome of each pair."""

    ratings: dict[str | None, dict[Rater, float | None]]
    pairs: dict[tuple[str, str], dict[Rater, int]]


def _judgements(
    session: Session, task: Task, sources: Sequence[str], around: Sequence[str] | None = None
) -> _Judgements:
    """The judgements of the task, or only those that name a generation in ``around`` (and
    every ranking, whose generations are not columns)."""
    latest: dict[str | None, dict[Rater, float | None]] = defaultdict(dict)
    rating_query = (
        select(Feedback.generation_id, Feedback.source, Feedback.author, Feedback.value)
        .where(Feedback.task_id == task.id, Feedback.kind == "rating")
        .where(Feedback.source.in_(sources), Feedback.value.is_not(None))
        .order_by(Feedback.created_at, Feedback.id)
    )
    if around is not None:
        rating_query = rating_query.where(Feedback.generation_id.in_(around))
    ratings = session.execute(rating_query)
    for generation_id, source, author, value in ratings:
        latest[generation_id][(source, author)] = value

    outcomes: dict[tuple[str, str], dict[Rater, int]] = defaultdict(dict)
    pair_query = (
        select(
            Feedback.kind,
            Feedback.source,
            Feedback.author,
            Feedback.generation_id,
            Feedback.other_generation_id,
            Feedback.value,
            Feedback.payload,
        )
        .where(Feedback.task_id == task.id, Feedback.kind.in_(("pairwise", "ranking")))
        .where(Feedback.source.in_(sources))
        .order_by(Feedback.created_at, Feedback.id)
    )
    if around is not None:
        pair_query = pair_query.where(
            or_(
                Feedback.kind == "ranking",
                Feedback.generation_id.in_(around),
                Feedback.other_generation_id.in_(around),
            )
        )
    events = session.execute(pair_query)
    for kind, source, author, a, b, value, payload in events:
        if kind == "pairwise":
            judged = [(a, b, int(np.sign(value or 0)))]
        else:
            judged = [
                (p.better, p.worse, 0 if p.tie else 1)
                for p in expand_ranking(payload["generation_ids"], payload["ranks"], ties="tie")
            ]
        for first, second, first_wins in judged:
            # one orientation per pair: +1 the smaller id won, -1 the larger one, 0 a tie
            key, sign = ((first, second), 1) if first < second else ((second, first), -1)
            outcomes[key][(source, author)] = sign * first_wins
    return _Judgements(ratings=latest, pairs=outcomes)


def task_agreement(
    session: Session, task: Task, *, sources: Sequence[str] = RATER_SOURCES
) -> RaterAgreement:
    """Agreement among the task's raters from ``sources`` (a rater is a source and author)."""
    judgements = _judgements(session, task, sources)
    units = [
        [v for v in by_rater.values() if v is not None]
        for by_rater in judgements.ratings.values()
        if len(by_rater) >= 2
    ]
    judged_twice = [
        list(by_rater.values()) for by_rater in judgements.pairs.values() if len(by_rater) >= 2
    ]
    return RaterAgreement(
        alpha=krippendorff_alpha(units),
        rated_units=len(units),
        pair_rate=pair_agreement(judged_twice),
        judged_pairs=len(judged_twice),
    )


def rater_agreement(
    session: Session,
    task: Task,
    author: str,
    *,
    source: str = "labeler",
    sources: Sequence[str] = RATER_SOURCES,
) -> RaterAgreement:
    """How one rater agrees with the others: alpha over the generations this rater rated and
    someone else did too; the pair rate over (this rater, another rater) pairs of judgements.
    Only the judgements that name the rater's generations are read."""
    named: set[str] = set()
    for gid, other, payload in session.execute(
        select(Feedback.generation_id, Feedback.other_generation_id, Feedback.payload).where(
            Feedback.task_id == task.id,
            Feedback.source == source,
            Feedback.author == author,
            Feedback.kind.in_(("rating", "pairwise", "ranking")),
        )
    ):
        named.update(g for g in (gid, other) if g)
        named.update((payload or {}).get("generation_ids") or ())
    judgements = _judgements(session, task, sources, sorted(named))
    me = (source, author)
    units = [
        [v for v in by_rater.values() if v is not None]
        for by_rater in judgements.ratings.values()
        if me in by_rater and len(by_rater) >= 2
    ]
    agreeing = total = pairs = 0
    for by_rater in judgements.pairs.values():
        if me not in by_rater or len(by_rater) < 2:
            continue
        pairs += 1
        my_outcome = by_rater[me]
        others = [outcome for rater, outcome in by_rater.items() if rater != me]
        agreeing += sum(outcome == my_outcome for outcome in others)
        total += len(others)
    return RaterAgreement(
        alpha=krippendorff_alpha(units),
        rated_units=len(units),
        pair_rate=agreeing / total if total else None,
        judged_pairs=pairs,
    )
