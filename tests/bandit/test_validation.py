"""Every invalid argument raises a clear error that names the bad value."""

from __future__ import annotations

import pytest

from prefloop.bandit import Decision, DecisionEvent, make_policy, policy_from_state, recompute
from prefloop.bandit._scale import RewardScale
from prefloop.errors import InvalidInputError, NotFoundError


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("ucb1", {"bogus": 1}, "unknown option\\(s\\) bogus"),
        ("ucb1", {"discount": 0}, "discount must lie in \\(0, 1\\]"),
        ("ucb1", {"discount": 1.5}, "discount must lie in \\(0, 1\\]"),
        ("ucb1", {"discount": "0.9"}, "discount must be a number"),
        ("ucb1", {"discount": True}, "discount must be a number"),
        ("ucb1", {"sticky": "yes"}, "sticky must be true or false"),
        ("ucb1", {"exploration": -1}, "exploration must be a finite number ≥ 0"),
        ("ucb1-reference", {"discount": 0.9}, "ucb1-reference .* has no discount"),
        ("epsilon-greedy", {"epsilon": -0.1}, "epsilon must be a finite number ≥ 0"),
        ("epsilon-greedy", {"epsilon": 1.5}, "epsilon is a probability in \\[0, 1\\]"),
        ("softmax", {"temperature": 0}, "temperature must be a finite number > 0"),
        ("softmax", {"temperature": float("inf")}, "temperature must be a finite number"),
        ("thompson", {"prior": 0}, "prior must be a finite number > 0"),
        ("thompson", {"draws": 0}, "draws must be a positive integer"),
        ("thompson", {"draws": 2.5}, "draws must be a positive integer"),
        ("thompson", {"epsilon": 0}, "epsilon must be a finite number > 0"),
        ("thompson", {"epsilon": 2}, "epsilon is a probability in \\(0, 1\\]"),
        ("linucb", {"alpha": -1}, "alpha must be a finite number ≥ 0"),
        ("linucb", {"ridge": 0}, "ridge must be a finite number > 0"),
        ("linucb", {"n_features": 0}, "n_features must be an integer in \\[1, 1024\\]"),
        ("linucb", {"n_features": 4096}, "n_features must be an integer in \\[1, 1024\\]"),
    ],
)
def test_bad_config(name: str, options: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        make_policy(name, arms=["A"], config=options)


def test_unknown_policy_lists_the_known_ones() -> None:
    with pytest.raises(NotFoundError, match=r"no bandit policy named 'ucb2'; choose one of .*ucb1"):
        make_policy("ucb2")


def test_config_of_another_policy_is_refused() -> None:
    from prefloop.bandit import SoftmaxConfig

    with pytest.raises(InvalidInputError, match="UCB1 takes a UCB1Config, got SoftmaxConfig"):
        make_policy("ucb1", config=SoftmaxConfig())


@pytest.mark.parametrize(
    ("scale", "message"),
    [
        ([1], "at least two finite levels"),
        ([0, 0, 1], "strictly increasing"),
        ([1, 0], "strictly increasing"),
        ([0, float("inf")], "at least two finite levels"),
        (["low", "high"], "a list of numbers"),
    ],
)
def test_bad_scale(scale: list, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        RewardScale.of(scale)


def test_bad_select_arguments() -> None:
    empty = make_policy("default")
    with pytest.raises(InvalidInputError, match="no active arms"):
        empty.select()
    policy = make_policy("default", arms=["A", "B"])
    with pytest.raises(InvalidInputError, match="context is a JSON object"):
        policy.select(context=["place", "Busan"])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="end_user is a string id"):
        policy.select(end_user=42)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="an arm name is a non-empty string"):
        policy.add_arm(" ")
    with pytest.raises(NotFoundError, match="no arm 'Z'; its arms: A, B"):
        policy.retire_arm("Z")


@pytest.mark.parametrize(
    ("reward", "previous", "message"),
    [
        (1.5, None, "reward 1.5 lies outside the scale \\[-1, 1\\]"),
        (float("nan"), None, "reward nan lies outside"),
        (True, None, "reward must be a number, got True"),
        ("good", None, "reward must be a number, got 'good'"),
        (0.5, -2, "previous reward -2 lies outside"),
    ],
)
def test_bad_rewards(reward: object, previous: object, message: str) -> None:
    policy = make_policy("ucb1", arms=["A"])
    decision = policy.select()
    with pytest.raises(InvalidInputError, match=message):
        policy.update(decision, reward, previous=previous)  # type: ignore[arg-type]
    assert policy.arm_summary()["A"]["rewards"] == 0  # nothing half-applied


def test_update_of_an_unknown_arm_or_index() -> None:
    policy = make_policy("ucb1", arms=["A"], config={"discount": 0.9})
    policy.select()
    with pytest.raises(NotFoundError, match="no arm 'B'"):
        policy.update(Decision("B", 1.0, {}, index=0), 1.0)
    with pytest.raises(InvalidInputError, match="needs its index in \\[0, 1\\)"):
        policy.update(Decision("A", 1.0, {}, index=None), 1.0)
    with pytest.raises(InvalidInputError, match="got 5"):
        policy.update(Decision("A", 1.0, {}, index=5), 1.0)


@pytest.mark.parametrize(
    ("state", "error", "message"),
    [
        ({}, InvalidInputError, "a policy state is the dict"),
        ({"policy": "nope"}, NotFoundError, "no bandit policy named 'nope'"),
        ({"policy": "ucb1"}, InvalidInputError, "needs 't' and 'arms'"),
        ({"policy": "ucb1", "t": -1, "arms": {}}, InvalidInputError, "non-negative integer"),
        (
            {"policy": "ucb1", "t": 1, "arms": {"A": {"retired": False, "decisions": 1}}},
            InvalidInputError,
            "state of arm 'A' is malformed",
        ),
    ],
)
def test_bad_state(state: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        policy_from_state(state)


def test_bad_state_shapes() -> None:
    state = make_policy("default", arms=["A"]).to_state()
    state["arms"]["A"]["levels"] = [0, 1]
    with pytest.raises(InvalidInputError, match="'levels' has shape \\(2,\\), expected \\(5,\\)"):
        policy_from_state(state)


def test_bad_recompute_events_and_recommend_arguments() -> None:
    with pytest.raises(InvalidInputError, match="recompute takes DecisionEvent items"):
        recompute("ucb1", [("A", 1.0)], active_arms=["A"])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match=r"reward 3\.0 lies outside"):
        recompute("ucb1", [DecisionEvent("A", (3.0,))], active_arms=["A"])
    policy = make_policy("default", arms=["A"])
    with pytest.raises(InvalidInputError, match="strictly between 0 and 1"):
        policy.recommend(threshold=1.0)
    with pytest.raises(InvalidInputError, match="draws must be a positive integer"):
        policy.recommend(draws=0)


def test_a_refused_context_changes_nothing() -> None:
    policy = make_policy("linucb", arms=["A", "B"], seed=0)
    before = policy.to_state()
    with pytest.raises(InvalidInputError, match="neither a number, a string nor a list"):
        policy.select(context={"when": object()})
    assert policy.to_state() == before
