"""record_feedback on real databases: validation, storage, idempotency, edits, rewards."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from prefloop.errors import ConflictError, InvalidInputError, NotFoundError
from prefloop.feedback import (
    EDIT_MODEL,
    EditEvent,
    PairwiseEvent,
    RankingEvent,
    RatingEvent,
    RegenerateEvent,
    RewardRules,
    ThumbsEvent,
    derive_reward,
    record_feedback,
    refresh_rewards,
)
from prefloop.feedback.events import MAX_EDIT_CHARS
from prefloop.store import BanditDecision, Feedback, Generation, Store, Task
from prefloop.store.repo import add_generation, create_arm, get_or_create_task

DRAFT = "오늘 부산에 가서 바다를 봤다. 친구랑 같이 회도 먹고 정말 즐거운 하루였다."


def make_task(store: Store, name: str = "diary", n: int = 3) -> tuple[Task, list[str]]:
    with store.session() as s:
        task = get_or_create_task(s, name)
        arm = create_arm(s, task, "v1", template="{place}")
        decision = BanditDecision(task_id=task.id, policy="ucb1", arm_id=arm.id, propensity=0.5)
        s.add(decision)
        s.flush()
        ids = [
            add_generation(
                s,
                task,
                arm_id=arm.id,
                decision_id=decision.id,
                input={"place": "Busan"},
                prompt="write a diary",
                output=f"{DRAFT} #{i}",
            ).id
            for i in range(n)
        ]
    return task, ids


def failed_generation(store: Store, task: Task) -> str:
    with store.session() as s:
        return add_generation(s, task, status="failed", error="timeout after 30 s").id


def record(store: Store, task: Task, event: object):  # type: ignore[no-untyped-def]
    with store.session() as s:
        return record_feedback(s, task, event)  # type: ignore[arg-type]


def rows(store: Store) -> list[Feedback]:
    with store.session(readonly=True) as s:
        return list(s.scalars(select(Feedback).order_by(Feedback.id)))


def reward_of(store: Store, generation_id: str) -> float | None:
    with store.session(readonly=True) as s:
        generation = s.get(Generation, generation_id)
        assert generation is not None
        return generation.reward


def test_each_kind_is_stored_as_documented(store: Store) -> None:
    task, (g1, g2, g3) = make_task(store)
    record(store, task, RatingEvent(generation_id=g1, value=0.5, author="ann"))
    record(store, task, ThumbsEvent(generation_id=g1, up=False))
    record(store, task, RegenerateEvent(generation_id=g2))
    record(store, task, PairwiseEvent(a=g1, b=g2, winner="b"))
    record(store, task, PairwiseEvent(a=g1, b=g3, winner="tie"))
    record(store, task, RankingEvent(generation_ids=[g3, g1, g2], ranks=[1, 2, 2]))
    stored = [(f.kind, f.generation_id, f.other_generation_id, f.value) for f in rows(store)]
    assert stored == [
        ("rating", g1, None, 0.5),
        ("thumbs", g1, None, -1.0),
        ("regenerate", g2, None, None),
        ("pairwise", g1, g2, -1.0),
        ("pairwise", g1, g3, 0.0),
        ("ranking", None, None, None),
    ]
    assert rows(store)[-1].payload == {"generation_ids": [g3, g1, g2], "ranks": [1, 2, 2]}
    assert rows(store)[0].author == "ann" and rows(store)[0].source == "end_user"


def test_a_rating_off_the_scale_names_the_value_and_the_levels(store: Store) -> None:
    task, (g1, *_) = make_task(store)
    with pytest.raises(InvalidInputError) as info:
        record(store, task, RatingEvent(generation_id=g1, value=0.7))
    message = str(info.value)
    assert "0.7" in message and "-1, -0.5, 0, 0.5, 1" in message and "diary" in message
    assert rows(store) == []


def test_a_task_with_its_own_scale(store: Store) -> None:
    with store.session() as s:
        task = get_or_create_task(s, "stars", scale=[1, 2, 3, 4, 5])
        gid = add_generation(s, task, output="ok").id
    assert record(store, task, RatingEvent(generation_id=gid, value=4)).reward_changes[0].new == 4
    with pytest.raises(InvalidInputError, match="1, 2, 3, 4, 5"):
        record(store, task, RatingEvent(generation_id=gid, value=0.5))


def test_unknown_generations_and_other_tasks_generations_are_not_found(store: Store) -> None:
    task, (g1, g2, _) = make_task(store)
    _, (foreign, *_) = make_task(store, "other")
    with pytest.raises(NotFoundError, match="gen_missing"):
        record(store, task, RatingEvent(generation_id="gen_missing", value=1))
    with pytest.raises(NotFoundError, match=foreign):
        record(store, task, PairwiseEvent(a=g1, b=foreign, winner="a"))
    with pytest.raises(NotFoundError, match=foreign):
        record(store, task, RankingEvent(generation_ids=[g1, g2, foreign], ranks=[1, 2, 3]))
    assert rows(store) == []


@pytest.mark.parametrize(
    "make_event",
    [
        lambda bad, good: RatingEvent(generation_id=bad, value=1),
        lambda bad, good: ThumbsEvent(generation_id=bad, up=True),
        lambda bad, good: RegenerateEvent(generation_id=bad),
        lambda bad, good: EditEvent(generation_id=bad, final_text="mine"),
        lambda bad, good: PairwiseEvent(a=good, b=bad, winner="a"),
        lambda bad, good: RankingEvent(generation_ids=[good, bad], ranks=[1, 2]),
    ],
)
def test_feedback_about_a_failed_generation_is_refused(store: Store, make_event) -> None:  # type: ignore[no-untyped-def]
    task, (good, *_) = make_task(store)
    bad = failed_generation(store, task)
    with pytest.raises(InvalidInputError, match="failed LLM call"):
        record(store, task, make_event(bad, good))
    assert rows(store) == []
    assert reward_of(store, bad) is None


def test_a_repeated_key_stores_nothing_and_returns_the_first_result(store: Store) -> None:
    task, (g1, *_) = make_task(store)
    event = RatingEvent(generation_id=g1, value=1, idempotency_key="k-1")
    first = record(store, task, event)
    again = record(store, task, event)
    assert not first.duplicate and again.duplicate
    assert again.feedback_id == first.feedback_id
    assert first.reward_changes and again.reward_changes == []
    assert len(rows(store)) == 1


def test_a_repeated_edit_returns_its_derived_events(store: Store) -> None:
    task, (g1, *_) = make_task(store)
    event = EditEvent(generation_id=g1, final_text="completely different", idempotency_key="e")
    first = record(store, task, event)
    again = record(store, task, event)
    assert again.duplicate
    assert (again.feedback_id, again.derived_ids, again.generation_ids) == (
        first.feedback_id,
        first.derived_ids,
        first.generation_ids,
    )
    assert len(rows(store)) == 3


def test_a_key_reused_for_another_event_conflicts(store: Store) -> None:
    task, (g1, g2, _) = make_task(store)
    record(store, task, RatingEvent(generation_id=g1, value=1, idempotency_key="k"))
    for other in (
        RatingEvent(generation_id=g1, value=0, idempotency_key="k"),
        RatingEvent(generation_id=g2, value=1, idempotency_key="k"),
        ThumbsEvent(generation_id=g1, up=True, idempotency_key="k"),
    ):
        with pytest.raises(ConflictError, match="'k' was already used"):
            record(store, task, other)
    assert len(rows(store)) == 1


def test_a_rating_updates_the_cached_reward_and_reports_the_change(store: Store) -> None:
    task, (g1, *_) = make_task(store)
    first = record(store, task, RatingEvent(generation_id=g1, value=1, author="ann"))
    [change] = first.reward_changes
    assert (change.generation_id, change.old, change.new) == (g1, None, 1.0)
    with store.session(readonly=True) as s:
        generation = s.get(Generation, g1)
        assert generation is not None
        assert (change.arm_id, change.decision_id) == (generation.arm_id, generation.decision_id)
        assert change.decision_id is not None
    second = record(store, task, RatingEvent(generation_id=g1, value=0, author="bob"))
    assert [(c.old, c.new) for c in second.reward_changes] == [(1.0, 0.5)]
    assert reward_of(store, g1) == 0.5
    # the same mean again: nothing to report
    third = record(store, task, RatingEvent(generation_id=g1, value=0.5, author="cid"))
    assert third.reward_changes == []
    # relative feedback does not move rewards
    assert record(store, task, ThumbsEvent(generation_id=g1, up=True, author="dan")).reward_changes
    assert reward_of(store, g1) == pytest.approx((1 + 0 + 0.5 + 1) / 4)


def test_pairwise_and_rankings_report_no_reward_change(store: Store) -> None:
    task, (g1, g2, g3) = make_task(store)
    assert record(store, task, PairwiseEvent(a=g1, b=g2, winner="a")).reward_changes == []
    result = record(store, task, RankingEvent(generation_ids=[g1, g2, g3], ranks=[3, 2, 1]))
    assert result.reward_changes == [] and result.derived_ids == []


def test_an_edit_rates_the_draft_and_prefers_the_final_text(store: Store) -> None:
    task, (g1, *_) = make_task(store)
    with store.session(readonly=True) as s:
        draft = s.get(Generation, g1)
        assert draft is not None
    final = draft.output.replace("정말", "너무")  # type: ignore[union-attr]
    result = record(store, task, EditEvent(generation_id=g1, final_text=final, author="ann"))
    edit, auto, pair = rows(store)
    assert (edit.kind, edit.payload) == ("edit", {"final_text": final})
    assert (auto.kind, auto.source, auto.author, auto.value) == ("rating", "auto", "ann", 1.0)
    assert auto.generation_id == g1 and auto.derived_from_id == edit.id
    assert auto.payload["similarity"] > 0.9
    [new_id] = result.generation_ids
    assert (pair.kind, pair.source, pair.value) == ("pairwise", "auto", 1.0)
    assert (pair.generation_id, pair.other_generation_id) == (new_id, g1)
    assert result.derived_ids == [auto.id, pair.id]
    with store.session(readonly=True) as s:
        created = s.get(Generation, new_id)
        assert created is not None
        assert (created.output, created.model, created.arm_id) == (final, EDIT_MODEL, None)
        assert created.context == {"edited_from": g1}
        assert (created.input, created.prompt) == (draft.input, draft.prompt)
    assert [(c.generation_id, c.new) for c in result.reward_changes] == [(g1, 1.0)]


def test_a_rewritten_draft_gets_the_lowest_edit_rating(store: Store) -> None:
    task, (g1, *_) = make_task(store)
    result = record(store, task, EditEvent(generation_id=g1, final_text="Went to Busan."))
    assert [c.new for c in result.reward_changes] == [-0.5]


def test_an_unchanged_draft_is_rated_but_not_paired_with_itself(store: Store) -> None:
    task, (g1, *_) = make_task(store)
    with store.session(readonly=True) as s:
        text = s.get(Generation, g1).output  # type: ignore[union-attr]
    result = record(store, task, EditEvent(generation_id=g1, final_text=text))
    assert result.generation_ids == [] and len(result.derived_ids) == 1
    assert reward_of(store, g1) == 1.0


def test_the_task_edit_curve_applies_and_must_fit_the_scale(store: Store) -> None:
    task, (g1, g2, _) = make_task(store)
    with store.session() as s:
        stored = s.get(Task, task.id)
        assert stored is not None
        stored.reward_rules = {"edit_curve": {"levels": [[0.99, 1]], "otherwise": 0}}
        task = stored
    result = record(store, task, EditEvent(generation_id=g1, final_text=DRAFT))
    assert [c.new for c in result.reward_changes] == [0.0]  # 0.98 similar: below 0.99
    with store.session() as s:
        stored = s.get(Task, task.id)
        assert stored is not None
        stored.reward_rules = {"edit_curve": {"levels": [[0.5, 3]], "otherwise": 0}}
        task = stored
    with pytest.raises(InvalidInputError, match="edit curve gives rating 3"):
        record(store, task, EditEvent(generation_id=g2, final_text=DRAFT))


def test_task_reward_rules_weigh_sources_and_refresh_recomputes(store: Store) -> None:
    task, (g1, g2, _) = make_task(store)
    judge = RatingEvent(generation_id=g1, value=-1, source="judge", author="gpt")
    assert record(store, task, judge).reward_changes == []  # judges weigh 0 by default
    record(store, task, RatingEvent(generation_id=g2, value=1))
    with store.session() as s:
        stored = s.get(Task, task.id)
        assert stored is not None
        stored.reward_rules = RewardRules(source_weights={"judge": 1.0}).to_dict()
        changes = refresh_rewards(s, stored)
    assert [(c.generation_id, c.old, c.new) for c in changes] == [(g1, None, -1.0)]
    assert reward_of(store, g1) == -1.0 and reward_of(store, g2) == 1.0


def test_cached_rewards_equal_derive_reward_of_the_events(store: Store) -> None:
    task, ids = make_task(store, n=4)
    authors = ["ann", "bob", "cid"]
    for i in range(24):
        gid = ids[i % 4]
        author = authors[i % 3]
        if i % 4 == 0:
            event: object = ThumbsEvent(generation_id=gid, up=i % 8 == 0, author=author)
        elif i % 5 == 0:
            event = RegenerateEvent(generation_id=gid, author=author)
        else:
            event = RatingEvent(
                generation_id=gid, value=[-1, -0.5, 0, 0.5, 1][i % 5], author=author
            )
        record(store, task, event)
    with store.session(readonly=True) as s:
        for gid in ids:
            events = s.scalars(select(Feedback).where(Feedback.generation_id == gid)).all()
            generation = s.get(Generation, gid)
            assert generation is not None
            assert generation.reward == derive_reward(events)
        assert s.scalar(select(func.count()).select_from(Feedback)) == 24


def test_given_created_at_is_kept_and_decides_the_latest(store: Store) -> None:
    task, (g1, *_) = make_task(store)
    record(store, task, RatingEvent(generation_id=g1, value=1, created_at="2021-01-01T00:00:00Z"))
    # recorded later, but judged earlier: the 2021 rating stays the latest
    record(store, task, RatingEvent(generation_id=g1, value=-1, created_at="2020-01-01T00:00:00"))
    assert reward_of(store, g1) == 1.0
    with pytest.raises(InvalidInputError, match="in the future"):
        record(store, task, RatingEvent(generation_id=g1, value=0, created_at="2999-01-01T00:00Z"))


def test_an_edit_has_a_length_limit() -> None:
    with pytest.raises(ValidationError, match="100000"):
        EditEvent(generation_id="gen_x", final_text="가" * (MAX_EDIT_CHARS + 1))
