"""Each policy on tiny exact cases, against hand computations and reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from prefloop.bandit import Decision, make_policy
from prefloop.bandit._linucb import hashed_features
from prefloop.bandit._scale import RewardScale
from prefloop.errors import InvalidInputError


def _feed(policy, arm: str, *rewards: float, context=None, end_user=None) -> None:
    """Give ``arm`` these rewards directly (as if decisions for it had been logged)."""
    for reward in rewards:
        decision = Decision(arm, 1.0, {}, index=None, end_user=end_user, context=context)
        policy.update(decision, reward)


def test_level_weights_split_off_level_rewards_keeping_the_mean() -> None:
    scale = RewardScale.of([-1, -0.5, 0, 0.5, 1])
    weights = scale.level_weights(np.array([-1.0, 0.25, 1.0, 0.8]))
    assert weights[0].tolist() == [1, 0, 0, 0, 0]
    assert weights[1].tolist() == [0, 0, 0.5, 0.5, 0]
    assert weights[2].tolist() == [0, 0, 0, 0, 1]
    assert weights[3] @ scale.values == pytest.approx(0.8)
    assert weights.sum(1).tolist() == pytest.approx([1, 1, 1, 1])


def test_ucb1_against_a_hand_computation() -> None:
    policy = make_policy("ucb1", arms=["A", "B"], seed=0)
    _feed(policy, "A", 0.5, 0.5, 0.5, 0.5, 0.5)  # unit mean 0.75, n = 5
    _feed(policy, "B", -0.5)  # unit mean 0.25, n = 1
    ucb_a = 0.75 + math.sqrt(2 * math.log(6) / 5)  # 1.597
    ucb_b = 0.25 + math.sqrt(2 * math.log(6) / 1)  # 2.143
    assert ucb_b > ucb_a
    decision = policy.select()
    assert decision.arm == "B" and decision.probabilities == {"A": 0.0, "B": 1.0}
    _feed(policy, "B", -1.0, -1.0, -1.0)  # B: unit mean 1/16 over 4
    ucb_b = 0.0625 + math.sqrt(2 * math.log(9) / 4)  # 1.110 < A's 0.75 + sqrt(2 ln 9 / 5)
    assert ucb_b < 0.75 + math.sqrt(2 * math.log(9) / 5)
    assert policy.select().arm == "A"


def test_ucb1_tries_untried_arms_first_with_uniform_ties() -> None:
    policy = make_policy("ucb1", arms=["A", "B", "C"], seed=0)
    _feed(policy, "A", 1.0)
    assert policy.probabilities() == {"A": 0.0, "B": 0.5, "C": 0.5}


class MemozyUCB:
    """The reference project's UCBSelector, transcribed as the test's independent oracle."""

    def __init__(self, arms: list[str]) -> None:
        self.arms = arms
        self.counts = dict.fromkeys(arms, 0)
        self.values = dict.fromkeys(arms, 0.0)
        self.total = 0

    def select(self) -> str:
        self.total += 1
        for arm in self.arms:
            if self.counts[arm] == 0:
                return arm
        scores = {
            a: self.values[a] + math.sqrt(2 * math.log(self.total) / self.counts[a])
            for a in self.arms
        }
        return max(scores, key=lambda a: scores[a])

    def update(self, arm: str, reward: float) -> None:
        self.counts[arm] += 1
        n = self.counts[arm]
        self.values[arm] = (n - 1) / n * self.values[arm] + reward / n


def test_ucb1_reference_reproduces_the_reference_project_step_by_step() -> None:
    arms = ["A", "B", "C", "D"]
    ours, theirs = make_policy("ucb1-reference", arms=arms, seed=0), MemozyUCB(arms)
    rng = np.random.default_rng(0)
    means = {"A": 0.1, "B": 0.4, "C": 0.6, "D": 0.3}
    for step in range(300):
        decision, expected = ours.select(), theirs.select()
        assert decision.arm == expected, f"step {step}"
        assert decision.propensity == 1.0
        if step % 7 == 3:
            continue  # missing feedback: the reference's t still counts the decision
        reward = float(np.clip(means[expected] + rng.normal(0, 0.5), -1, 1))
        ours.update(decision, reward)
        theirs.update(expected, reward)


def test_epsilon_greedy_probabilities() -> None:
    policy = make_policy("epsilon-greedy", arms=["A", "B", "C"], seed=0)
    _feed(policy, "A", 0.5)
    _feed(policy, "B", 1.0)
    # C untried counts as greedy
    assert policy.probabilities() == pytest.approx({"A": 0.1 / 3, "B": 0.1 / 3, "C": 0.9 + 0.1 / 3})
    _feed(policy, "C", 0.0)
    assert policy.probabilities() == pytest.approx({"A": 0.1 / 3, "B": 0.9 + 0.1 / 3, "C": 0.1 / 3})


def test_softmax_probabilities() -> None:
    policy = make_policy("softmax", arms=["A", "B"], seed=0, config={"temperature": 0.2})
    _feed(policy, "A", 0.5)  # unit 0.75
    assert policy.probabilities() == {"A": 0.0, "B": 1.0}  # B untried first
    _feed(policy, "B", 0.0)  # unit 0.5
    p_a = 1 / (1 + math.exp(-(0.75 - 0.5) / 0.2))
    assert policy.probabilities() == pytest.approx({"A": p_a, "B": 1 - p_a})


def test_thompson_on_two_levels_matches_the_beta_integral() -> None:
    """On a two-level scale the Dirichlet posterior is a Beta: P(A > B) by quadrature."""
    options = {"draws": 40_000, "prior": 1.0}  # uniform Dirichlet: Beta(1, 1) before data
    policy = make_policy("thompson", arms=["A", "B"], scale=[0, 1], seed=1, config=options)
    _feed(policy, "A", 1, 1, 1, 0, 1)  # Beta(1 + 4, 1 + 1)
    _feed(policy, "B", 1, 0, 0, 1)  # Beta(1 + 2, 1 + 2)
    a, b = stats.beta(5, 2), stats.beta(3, 3)
    exact, _ = integrate.quad(lambda x: a.pdf(x) * b.cdf(x), 0, 1)
    assert exact == pytest.approx(53 / 66, abs=1e-6)  # the closed form for integer Betas
    assert policy.probabilities()["A"] == pytest.approx(exact, abs=0.015)


def test_thompson_counts_fractional_rewards_on_neighbouring_levels() -> None:
    policy = make_policy("default", arms=["A"], seed=0)
    _feed(policy, "A", 0.25, 1.0)
    state = policy.to_state()["arms"]["A"]
    assert state["levels"] == [0, 0, 0.5, 0.5, 1.0]
    assert state["n"] == 2 and state["reward_sum"] == 1.25


def test_thompson_prefers_the_clear_winner_and_explores_the_unknown() -> None:
    policy = make_policy("thompson", arms=["A", "B", "C"], seed=2)
    _feed(policy, "A", *([1.0] * 60))
    _feed(policy, "B", *([-1.0] * 60))
    probs = policy.probabilities()
    assert probs["B"] == 0.0
    assert 0.0 < probs["C"] < 0.2  # untried: only the prior says it could be best
    assert probs["A"] > 0.8


def test_epsilon_thompson_explores_less_than_thompson_and_tries_new_arms_first() -> None:
    ts = make_policy("thompson", arms=["A", "B"], seed=3, config={"draws": 20_000})
    options = {"draws": 20_000, "epsilon": 0.5}
    eps = make_policy("thompson", arms=["A", "B"], seed=3, config=options)
    for policy in (ts, eps):
        _feed(policy, "A", 1, 0.5, 1, 0.5, 0)  # mean 0.6
        _feed(policy, "B", 0.5, 0, 1, 0)  # mean 0.375
    p_ts, p_eps = ts.probabilities()["B"], eps.probabilities()["B"]
    assert 0 < p_eps < p_ts - 0.03
    # B wins only if B is drawn (prob ½) and beats A's value: A's own draw or A's mean
    ratio = p_eps / p_ts
    assert 0.25 < ratio < 0.75
    eps.add_arm("C")  # untried: its mean counts as +∞ unless it is drawn
    assert eps.probabilities()["C"] >= 0.5


def test_linucb_against_a_hand_computation() -> None:
    # one bias feature and one hash bucket with nothing in it: A = diag(1 + n, 1)
    options = {"n_features": 1, "user_feature": False, "alpha": 0.5}
    policy = make_policy("linucb", arms=["A", "B"], seed=0, config=options)
    _feed(policy, "A", 1.0, 1.0, -1.0)  # unit rewards 1, 1, 0
    _feed(policy, "B", 0.0)  # unit 0.5
    score_a = 2 / 4 + 0.5 * math.sqrt(1 / 4)  # θᵀx + α sqrt(xᵀA⁻¹x) = 0.75
    score_b = 0.5 / 2 + 0.5 * math.sqrt(1 / 2)  # 0.604
    assert score_a > score_b
    assert policy.probabilities() == {"A": 1.0, "B": 0.0}


def test_linucb_learns_a_different_best_arm_per_user_group() -> None:
    policy = make_policy("linucb", arms=["A", "B", "C"], seed=4, config={"alpha": 0.5})
    rng = np.random.default_rng(5)
    best = {"north": "A", "south": "B"}
    for _ in range(300):
        group = str(rng.choice(["north", "south"]))
        decision = policy.select(context={"region": group})
        reward = 1.0 if decision.arm == best[group] else -0.5
        policy.update(decision, reward if rng.random() < 0.9 else -1.0)
    for group, arm in best.items():
        assert policy.probabilities(context={"region": group})[arm] == 1.0


def test_hashed_features_are_stable_and_typed() -> None:
    one = hashed_features({"place": "Busan", "age": 30}, "u1", n_features=8, user_feature=True)
    two = hashed_features({"age": 30, "place": "Busan"}, "u1", n_features=8, user_feature=True)
    assert one.tolist() == two.tolist() and one[0] == 1.0 and one.shape == (9,)
    assert np.abs(one).sum() == pytest.approx(1 + 30 + 1 + 1)
    other = hashed_features({"place": "Seoul", "age": 30}, "u1", n_features=8, user_feature=True)
    assert other.tolist() != one.tolist()
    with pytest.raises(InvalidInputError, match="place=<object"):
        hashed_features({"place": object()}, None, n_features=8, user_feature=True)


def test_discount_weighs_a_late_reward_as_if_it_had_come_on_time() -> None:
    policy = make_policy("ucb1", arms=["A", "B"], seed=0, config={"discount": 0.5})
    first = policy.select()
    for _ in range(3):
        policy.select()
    policy.update(first, 1.0)  # three decisions later: weight 0.5³
    summary = policy.arm_summary()[first.arm]
    assert summary["rewards"] == pytest.approx(0.125) and summary["mean"] == pytest.approx(1.0)
    policy.select()
    assert policy.arm_summary()[first.arm]["rewards"] == pytest.approx(0.0625)


def test_recommendation_and_stopping_rule() -> None:
    policy = make_policy("default", arms=["A", "B", "C"], seed=6)
    early = policy.recommend(threshold=0.95)
    assert not early.confident and "no arm is best" in str(early)
    _feed(policy, "A", *([0.5] * 40))
    _feed(policy, "B", *([0.0] * 40))
    _feed(policy, "C", *([1.0, 0.5] * 20))
    late = policy.recommend(threshold=0.95)
    assert late.arm == "C" and late.confident and late.feedbacks == 120
    assert str(late).startswith("C is best with probability") and "after 120 feedbacks" in str(late)
    assert sum(late.probabilities.values()) == pytest.approx(1.0)
