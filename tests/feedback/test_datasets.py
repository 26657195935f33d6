"""The training views of a task: rankings to pairs, preference pairs, rated, unpaired and SFT
examples, prompts; the reward model and the export read the same pairs."""

from __future__ import annotations

from itertools import permutations

import pytest

from prefloop.errors import InvalidInputError
from prefloop.feedback import (
    EditEvent,
    PairwiseEvent,
    RankingEvent,
    RatingEvent,
    ThumbsEvent,
    expand_ranking,
    preference_pairs,
    rated_examples,
    rating_pairs,
    record_feedback,
    sft_examples,
    task_prompts,
    unpaired_examples,
)
from prefloop.io import RankingRecord, preference_rows
from prefloop.reward import pair_data_from_store, rating_data_from_store
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
    assert all(p.prompt == "Q" for p in pairs)
    assert [p.margin for p in pairs] == [None, None, 1.0, 1.0]  # a ranking: the rank gap
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


def test_an_edit_is_an_edited_over_draft_pair_and_an_sft_example(store: Store) -> None:
    task, (draft, other) = _generations(store, "e", ["draft text", "other"], prompt="Q")
    with store.session() as s:
        record_feedback(s, task, EditEvent(generation_id=draft, final_text="final text"))
        record_feedback(s, task, PairwiseEvent(a=draft, b=other, winner="a"))
    with store.session(readonly=True) as s:
        pairs = [(p.chosen, p.rejected, p.origin) for p in preference_pairs(s, task)]
        sft = [(e.completion, e.origin) for e in sft_examples(s, task)]
    # the edit counts once (as the automatic final-over-draft event), not twice
    assert pairs == [("final text", "draft text", "edit"), ("draft text", "other", "pairwise")]
    assert ("final text", "edit") in sft


def test_pairs_between_identical_texts_are_left_out(store: Store) -> None:
    task, (a, b, c) = _generations(store, "same", ["same", "same", "other"], prompt="Q")
    with store.session() as s:
        record_feedback(s, task, PairwiseEvent(a=a, b=b, winner="a"))
        record_feedback(s, task, PairwiseEvent(a=a, b=c, winner="a"))
    with store.session(readonly=True) as s:
        assert [(p.chosen, p.rejected) for p in preference_pairs(s, task)] == [("same", "other")]


def test_unpaired_examples_follow_the_thresholds(store: Store) -> None:
    task, ids = _generations(store, "u", ["great", "good", "meh", "bad"], prompt="Q")
    with store.session() as s:
        for gid, value in zip(ids, [1, 0.5, 0, -1], strict=True):
            record_feedback(s, task, RatingEvent(generation_id=gid, value=value))
        thumbs = add_generation(s, task, output="liked", prompt="Q").id
        record_feedback(s, task, ThumbsEvent(generation_id=thumbs, up=True))
    with store.session(readonly=True) as s:
        default = [(e.completion, e.desirable) for e in unpaired_examples(s, task)]
        strict = [
            (e.completion, e.desirable)
            for e in unpaired_examples(s, task, desirable_above=0.5, undesirable_below=0.5)
        ]
        with pytest.raises(InvalidInputError, match="both"):
            list(unpaired_examples(s, task, desirable_above=0, undesirable_below=0.5))
        rated = [(e.text, e.reward) for e in rated_examples(s, task)]
    assert default == [("great", True), ("good", True), ("bad", False), ("liked", True)]
    assert strict == [("great", True), ("meh", False), ("bad", False), ("liked", True)]
    assert rated == [("great", 1.0), ("good", 0.5), ("meh", 0.0), ("bad", -1.0), ("liked", 1.0)]


def test_task_prompts_are_distinct_and_leave_out_edited_finals(store: Store) -> None:
    with store.session() as s:
        task = get_or_create_task(s, "p")
        first = add_generation(s, task, output="o1", input={"place": "Busan"}, prompt="P1").id
        add_generation(s, task, output="o2", input={"place": "Busan"}, prompt="P1")
        add_generation(s, task, output="o3", input={"place": "Seoul"})
        record_feedback(s, task, EditEvent(generation_id=first, final_text="edited"))
    with store.session(readonly=True) as s:
        prompts = [(p.prompt, p.input) for p in task_prompts(s, task)]
    assert prompts == [("P1", {"place": "Busan"}), ('{"place": "Seoul"}', {"place": "Seoul"})]


def test_the_reward_model_and_the_export_see_the_same_pairs(store: Store) -> None:
    """One seam: reward-model training data and the TRL preference export agree pair by pair,
    and neither takes the judge's pairs unless asked."""
    task, (a, b, c, d) = _generations(store, "seam", ["A", "B", "C", "D"], prompt="Q")
    with store.session() as s:
        record_feedback(s, task, PairwiseEvent(a=a, b=b, winner="b"))
        record_feedback(s, task, RankingEvent(generation_ids=[a, c, d], ranks=[3, 1, 2]))
        record_feedback(s, task, EditEvent(generation_id=d, final_text="D, edited"))
        record_feedback(s, task, PairwiseEvent(a=c, b=d, winner="b", source="judge"))
    with store.session(readonly=True) as s:
        exported = [
            (r["prompt"], r["chosen"], r["rejected"])
            for r in preference_rows(s, s.get(Task, task.id))  # type: ignore[arg-type]
        ]
    data = pair_data_from_store(store, "seam")
    trained = list(zip(data.prompts, data.chosen, data.rejected, strict=True))
    assert trained == exported
    assert ("Q", "B", "A") in trained and ("Q", "D, edited", "D") in trained
    assert ("Q", "D", "C") not in trained  # the judge's verdict
    with_judge = pair_data_from_store(store, "seam", sources=("end_user", "auto", "judge"))
    assert ("Q", "D", "C") in zip(
        with_judge.prompts, with_judge.chosen, with_judge.rejected, strict=True
    )
    ratings = rating_data_from_store(store, "seam")
    assert ratings.prompts == ["Q"]  # the edit's automatic rating of D; same renderer
