"""Rankings to pairs, and the preference pairs of a task in the store."""

from __future__ import annotations

from itertools import permutations

import pytest

from prefloop.feedback import (
    PairwiseEvent,
    RankingEvent,
    RatingEvent,
    expand_ranking,
    preference_pairs,
    rating_pairs,
    record_feedback,
)
from prefloop.io import RankingRecord
from prefloop.store import Store, Task
from prefloop.store.repo import add_generation, get_or_create_task


def test_a_ranking_of_k_gives_k_choose_2_pairs_that_agree_with_it() -> None:
    items = ["w", "x", "y", "z"]
    ranks = [3, 1, 4, 2]  # order: x > z > w > y
    pairs = expand_ranking(items, ranks)
    assert len(pairs) == 4 * 3 // 2
    assert {(p.better, p.worse) for p in pairs} == {
        ("x", "z"),
        ("x", "w"),
        ("x", "y"),
        ("z", "w"),
        ("z", "y"),
        ("w", "y"),
    }
    assert {(p.better, p.worse): p.rank_gap for p in pairs}[("x", "y")] == 3
    # every permutation of ranks: each pair's better item has the smaller rank
    for perm in permutations(range(1, 5)):
        for pair in expand_ranking(items, list(perm)):
            assert perm[items.index(pair.better)] < perm[items.index(pair.worse)]


def test_ties_give_no_pair_or_a_tie_pair() -> None:
    items, ranks = ["a", "b", "c"], [1, 2, 2]
    skipped = expand_ranking(items, ranks)
    assert [(p.better, p.worse, p.tie) for p in skipped] == [("a", "b", False), ("a", "c", False)]
    kept = expand_ranking(items, ranks, ties="tie")
    assert len(kept) == 3 and next(p for p in kept if p.tie).rank_gap == 0
    assert expand_ranking(items, [1, 1, 1]) == []
    with pytest.raises(ValueError, match="3 items but 2 ranks"):
        expand_ranking(items, [1, 2])


def test_ranking_records_use_the_same_expansion() -> None:
    record = RankingRecord(prompt="p", responses=("a", "b", "c"), ranking=(2, 1, 2), line=4)
    pairs = record.pairs()
    assert [(p.chosen, p.rejected, p.margin, p.line) for p in pairs] == [
        ("b", "a", 1.0, 4),
        ("b", "c", 1.0, 4),
    ]


def _generations(
    store: Store, name: str, outputs: list[str], **fields: object
) -> tuple[Task, list[str]]:
    with store.session() as s:
        task = get_or_create_task(s, name)
        ids = [add_generation(s, task, output=o, **fields).id for o in outputs]
    return task, ids


def test_preference_pairs_from_pairwise_events_and_rankings(store: Store) -> None:
    task, (a, b, c) = _generations(store, "t", ["A", "B", "C"], prompt="Q")
    with store.session() as s:
        record_feedback(s, task, PairwiseEvent(a=a, b=b, winner="a"))
        record_feedback(s, task, PairwiseEvent(a=a, b=c, winner="b"))
        record_feedback(s, task, PairwiseEvent(a=b, b=c, winner="tie"))  # no pair
        record_feedback(s, task, PairwiseEvent(a=b, b=c, winner="a", source="judge"))
        record_feedback(s, task, RankingEvent(generation_ids=[a, b, c], ranks=[2, 1, 2]))
    with store.session(readonly=True) as s:
        pairs = list(preference_pairs(s, task))
        with_judge = list(preference_pairs(s, task, sources=("end_user", "judge")))
    assert [(p.chosen, p.rejected, p.origin) for p in pairs] == [
        ("A", "B", "pairwise"),
        ("C", "A", "pairwise"),
        ("B", "A", "ranking"),
        ("B", "C", "ranking"),
    ]
    assert all(p.prompt == "Q" and p.margin is None for p in pairs)
    assert pairs[0].chosen_id == a and pairs[0].rejected_id == b
    assert ("B", "C", "pairwise") in [(p.chosen, p.rejected, p.origin) for p in with_judge]


def test_rating_pairs_need_the_same_prompt_and_input_and_carry_the_margin(store: Store) -> None:
    task, ids = _generations(store, "r", ["x1", "x2", "x3"], input={"place": "Busan"})
    with store.session() as s:
        y1, y2 = (add_generation(s, task, output=o, input={"place": "Seoul"}).id for o in "yz")
        bare = add_generation(s, task, output="no prompt, no input").id
        for gid, value in zip([*ids, y1, y2, bare], [1, -0.5, 1, 0, 0, -1], strict=True):
            record_feedback(s, task, RatingEvent(generation_id=gid, value=value))
    with store.session(readonly=True) as s:
        pairs = list(rating_pairs(s, task))
        assert list(preference_pairs(s, task)) == []
        assert len(list(preference_pairs(s, task, from_ratings=True))) == 2
    # Busan: x1 (1) > x2 (-0.5), x3 (1) > x2; x1 = x3 gives no pair; Seoul: equal ratings
    assert sorted((p.chosen, p.rejected, p.margin) for p in pairs) == [
        ("x1", "x2", 1.5),
        ("x3", "x2", 1.5),
    ]
    assert pairs[0].prompt == '{"place": "Busan"}'
