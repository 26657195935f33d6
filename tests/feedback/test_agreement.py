"""Krippendorff's alpha against hand computation and the published example; pair agreement."""

from __future__ import annotations

import pytest

from prefloop.feedback import (
    PairwiseEvent,
    RankingEvent,
    RatingEvent,
    record_feedback,
    task_agreement,
)
from prefloop.feedback.agreement import krippendorff_alpha, pair_agreement
from prefloop.store import Store
from prefloop.store.repo import add_generation, get_or_create_task

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the example with four
# observers, twelve units and values 1…5 (None: no value). The paper reports
# alpha = 0.743 (nominal), 0.815 (ordinal), 0.849 (interval).
N = None
PUBLISHED = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
    [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N],
]


def published_units() -> list[list[float]]:
    return [[v for v in unit if v is not None] for unit in zip(*PUBLISHED, strict=True)]


def test_hand_computed_example() -> None:
    # units (values of different raters): [1,1] [1,2] [2,3,3] [3,3] [1] (not pairable)
    # coincidences, each ordered pair / (m_u - 1):
    #        1  2  3
    #   1 [  2  1  0 ]     n_1 = 3
    #   2 [  1  0  1 ]     n_2 = 2
    #   3 [  0  1  3 ]     n_3 = 4,  n = 9
    # ordinal δ(1,2) = (3+2)/2 = 2.5, δ(2,3) = (2+4)/2 = 3, δ(1,3) = 9 - (3+4)/2 = 5.5
    # Σ o δ² = 2·(1·6.25 + 1·9) = 30.5;  Σ n_c n_k δ² = 2·(6·6.25 + 12·30.25 + 8·9) = 945
    # alpha = 1 - 8·30.5/945 = 701/945
    units = [[1, 1], [1, 2], [2, 3, 3], [3, 3], [1]]
    assert krippendorff_alpha(units) == pytest.approx(701 / 945)
    # nominal: disagreeing coincidences 4, expected 2·(6 + 12 + 8) = 52 → 1 - 8·4/52
    assert krippendorff_alpha(units, level="nominal") == pytest.approx(1 - 32 / 52)


def test_published_example() -> None:
    units = published_units()
    assert krippendorff_alpha(units, level="nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, level="ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(units, level="interval") == pytest.approx(0.849, abs=5e-4)


def test_perfect_agreement_and_undefined_cases() -> None:
    assert krippendorff_alpha([[1, 1], [2, 2], [3, 3, 3]]) == pytest.approx(1.0)
    assert krippendorff_alpha([[1, 1], [1, 1]]) is None  # one value only: no variation
    assert krippendorff_alpha([[1], [2]]) is None  # nothing pairable
    assert krippendorff_alpha([]) is None
    # systematic disagreement is below zero
    assert krippendorff_alpha([[1, 3], [3, 1], [1, 3]]) < 0  # type: ignore[operator]


def test_pair_agreement_counts_agreeing_rater_pairs() -> None:
    # item 1: a, a, b → 1 agreeing pair of 3; item 2: tie, tie → 1 of 1; item 3 has one judge
    assert pair_agreement([["a", "a", "b"], ["tie", "tie"], ["a"]]) == pytest.approx(2 / 4)
    assert pair_agreement([["a"], []]) is None


def test_task_agreement_from_the_store(store: Store) -> None:
    with store.session() as s:
        task = get_or_create_task(s, "stars", scale=[1, 2, 3, 4, 5])
        ids = [add_generation(s, task, output=f"text {i}").id for i in range(12)]
    with store.session() as s:
        for rater, values in enumerate(PUBLISHED):
            for gid, value in zip(ids, values, strict=True):
                if value is not None:
                    event = RatingEvent(
                        generation_id=gid, value=value, source="labeler", author=f"r{rater}"
                    )
                    record_feedback(s, task, event)
        # a judge's rating and a rater's superseded rating do not count
        record_feedback(s, task, RatingEvent(generation_id=ids[10], value=5, source="judge"))
        record_feedback(
            s,
            task,
            RatingEvent(
                generation_id=ids[0],
                value=5,
                source="labeler",
                author="r0",
                created_at="2000-01-01T00:00:00Z",
            ),
        )
        a, b, c = ids[:3]
        record_feedback(s, task, PairwiseEvent(a=a, b=b, winner="a", author="x"))
        record_feedback(s, task, PairwiseEvent(a=b, b=a, winner="b", author="y"))  # agrees
        record_feedback(s, task, PairwiseEvent(a=a, b=b, winner="b", author="z"))  # disagrees
        # ranking by x: c > a = b → pairs (a,c): c wins, (b,c): c wins, (a,b): tie
        record_feedback(
            s, task, RankingEvent(generation_ids=[a, b, c], ranks=[2, 2, 1], author="x")
        )
        record_feedback(s, task, PairwiseEvent(a=c, b=a, winner="a", author="y"))  # agrees
    with store.session(readonly=True) as s:
        result = task_agreement(s, task)
    assert result.alpha == pytest.approx(0.815, abs=5e-4)
    assert result.rated_units == 11  # the twelfth unit has one value
    # pair (a,b): x's latest is the ranking's tie, y says a, z says b → 0 of 3 agree;
    # pair (a,c): x and y both say c → 1 of 1
    assert result.judged_pairs == 2
    assert result.pair_rate == pytest.approx(1 / 4)
