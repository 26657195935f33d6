"""derive_reward, RewardRules and the edit curve: one test per rule, exact values."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from prefloop.errors import InvalidInputError
from prefloop.feedback import EditRatingCurve, RewardRules, check_rating, derive_reward
from prefloop.feedback.rewards import CHARACTER_DIFF_LIMIT, text_similarity

T0 = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass
class Event:
    kind: str
    value: float | None = None
    source: str = "end_user"
    author: str = "ann"
    created_at: datetime | None = None
    id: int | None = None


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_no_events_no_reward() -> None:
    assert derive_reward([]) is None


def test_a_rating_is_its_value() -> None:
    assert derive_reward([Event("rating", 0.5)]) == 0.5


def test_thumbs_up_and_down_use_the_rule_values() -> None:
    assert derive_reward([Event("thumbs", 1.0)]) == 1.0
    assert derive_reward([Event("thumbs", -1.0)]) == -1.0
    rules = RewardRules(thumbs_up=0.5, thumbs_down=-0.25)
    assert derive_reward([Event("thumbs", 1.0)], rules) == 0.5
    assert derive_reward([Event("thumbs", -1.0)], rules) == -0.25


def test_regenerate_gives_minus_half_or_nothing_when_ignored() -> None:
    assert derive_reward([Event("regenerate")]) == -0.5
    assert derive_reward([Event("regenerate")], RewardRules(regenerate=-0.2)) == -0.2
    assert derive_reward([Event("regenerate")], RewardRules(regenerate=None)) is None


def test_latest_judgement_per_author_wins() -> None:
    events = [
        Event("rating", -1.0, created_at=at(5), id=2),
        Event("rating", 1.0, created_at=at(1), id=1),
    ]
    assert derive_reward(events) == -1.0
    # the same instant: the later id wins; no timestamps: the later position
    tie = [
        Event("rating", 0.5, created_at=at(1), id=7),
        Event("rating", 0.0, created_at=at(1), id=3),
    ]
    assert derive_reward(tie) == 0.5
    assert derive_reward([Event("thumbs", 1.0), Event("thumbs", -1.0)]) == -1.0


def test_naive_and_aware_times_compare_as_utc() -> None:
    # SQLite hands back naive UTC times, events made in this process carry a zone
    naive_later = Event("rating", 0.0, created_at=datetime(2025, 1, 1, 0, 10), id=1)
    aware_earlier = Event("rating", 1.0, created_at=at(5), id=2)
    assert derive_reward([naive_later, aware_earlier]) == 0.0


def test_authors_are_averaged() -> None:
    events = [
        Event("rating", 1.0, author="ann"),
        Event("rating", 0.0, author="bob"),
        Event("rating", -0.5, author="cid"),
        Event("rating", 0.5, author="ann", created_at=at(9)),  # ann's latest
    ]
    assert derive_reward(events) == pytest.approx((0.5 + 0.0 - 0.5) / 3)


def test_same_author_name_from_two_sources_is_two_raters() -> None:
    events = [Event("rating", 1.0, source="end_user"), Event("rating", 0.0, source="labeler")]
    assert derive_reward(events) == 0.5


def test_an_explicit_judgement_outweighs_a_later_regenerate() -> None:
    events = [Event("thumbs", 1.0, created_at=at(1)), Event("regenerate", created_at=at(2))]
    assert derive_reward(events) == 1.0
    # another rater's regenerate still counts
    events.append(Event("regenerate", author="bob", created_at=at(3)))
    assert derive_reward(events) == pytest.approx((1.0 - 0.5) / 2)


def test_model_sources_are_left_out_by_default() -> None:
    judge = Event("rating", -1.0, source="judge", author="gpt")
    model = Event("rating", -1.0, source="reward_model", author="rm-1")
    assert derive_reward([judge, model]) is None
    assert derive_reward([judge, Event("rating", 1.0)]) == 1.0


def test_source_weights_weigh_the_mean() -> None:
    rules = RewardRules(source_weights={"judge": 1.0, "end_user": 3.0})
    events = [Event("rating", -1.0, source="judge", author="gpt"), Event("rating", 1.0)]
    assert derive_reward(events, rules) == pytest.approx((3 * 1.0 + 1 * -1.0) / 4)
    # sources not named keep their defaults
    assert rules.source_weights["labeler"] == 1.0
    assert rules.source_weights["reward_model"] == 0.0


def test_auto_rating_from_an_edit_counts_as_its_own_rater() -> None:
    events = [Event("rating", 1.0, source="auto"), Event("rating", 0.0, source="end_user")]
    assert derive_reward(events) == 0.5
    assert derive_reward(events, RewardRules(source_weights={"auto": 0.0})) == 0.0


def test_relative_kinds_do_not_give_a_reward() -> None:
    assert derive_reward([Event("pairwise", 1.0), Event("ranking"), Event("edit")]) is None


def test_edit_curve_reference_plan() -> None:
    curve = EditRatingCurve()
    assert [curve.rate(s) for s in (1.0, 0.9, 0.89, 0.7, 0.69, 0.5, 0.49, 0.0)] == [
        1.0,
        1.0,
        0.5,
        0.5,
        0.0,
        0.0,
        -0.5,
        -0.5,
    ]
    custom = EditRatingCurve(levels=((0.8, 2.0),), otherwise=1.0)
    assert (custom.rate(0.85), custom.rate(0.2)) == (2.0, 1.0)
    assert custom.ratings == (2.0, 1.0)


@pytest.mark.parametrize(
    "levels",
    [((0.5, 0.0), (0.9, 1.0)), ((0.9, 1.0), (0.9, 0.5)), ((1.5, 1.0),), ((0.0, 1.0),)],
)
def test_edit_curve_rejects_thresholds_out_of_order_or_range(
    levels: tuple[tuple[float, float], ...],
) -> None:
    with pytest.raises(InvalidInputError, match="strictly decreasing"):
        EditRatingCurve(levels=levels)


def test_similarity_is_difflib_ratio_and_works_for_korean() -> None:
    assert text_similarity("abcd", "abcd") == 1.0
    assert text_similarity("abcd", "wxyz") == 0.0
    assert text_similarity("abcd", "abxy") == 0.5  # 2·2 matches / 8 characters
    draft = "오늘 부산에 가서 바다를 봤다. 정말 좋았다."
    assert text_similarity(draft, draft.replace("정말", "너무")) == pytest.approx(
        2 * (len(draft) - 2) / (2 * len(draft))
    )
    # autojunk would ignore frequent characters of texts over 200 characters
    long_draft = "가나다라마바사 " * 60
    assert text_similarity(long_draft, long_draft + "끝") == pytest.approx(960 / 961)


def test_long_texts_are_compared_word_by_word() -> None:
    words = [f"단어{i}" for i in range(1000)]
    draft = " ".join(words)
    final = " ".join(words[:900] + ["바뀜"] * 100)
    assert len(draft) + len(final) > CHARACTER_DIFF_LIMIT
    assert text_similarity(draft, final) == pytest.approx(2 * 900 / 2000)
    started = time.perf_counter()
    text_similarity(draft * 10, final * 10)  # 100,000 characters
    assert time.perf_counter() - started < 30  # characters: minutes


def test_rules_round_trip_through_json_and_partial_overrides() -> None:
    rules = RewardRules(
        thumbs_up=0.8,
        regenerate=None,
        source_weights={"judge": 0.5},
        edit_curve=EditRatingCurve(levels=((0.95, 1.0),), otherwise=0.0),
    )
    assert RewardRules.from_dict(rules.to_dict()) == rules
    partial = RewardRules.from_dict({"thumbs_down": -0.5, "edit_curve": {"otherwise": -1}})
    assert partial.thumbs_down == -0.5 and partial.thumbs_up == 1.0
    assert partial.edit_curve.otherwise == -1.0
    assert partial.edit_curve.levels == EditRatingCurve().levels
    assert RewardRules.from_dict(None) == RewardRules()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"thumb_up": 1}, "unknown reward rule"),
        ({"source_weights": {"robot": 1}}, "unknown feedback source"),
        ({"source_weights": {"judge": -1}}, "finite and ≥ 0"),
        ({"thumbs_up": "lots"}, "malformed reward rules"),
        ({"edit_curve": {"levels": [[0.3, 1], [0.6, 0]]}}, "strictly decreasing"),
    ],
)
def test_bad_rules_name_the_problem(data: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        RewardRules.from_dict(data)


def test_check_rating_accepts_levels_and_names_the_allowed_ones() -> None:
    scale = [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert check_rating(0.5, scale) == 0.5
    assert check_rating(1, scale) == 1.0
    with pytest.raises(InvalidInputError) as info:
        check_rating(0.7, scale)
    assert "0.7" in str(info.value) and "-1, -0.5, 0, 0.5, 1" in str(info.value)
    with pytest.raises(InvalidInputError, match="finite number"):
        check_rating(float("nan"), scale)
