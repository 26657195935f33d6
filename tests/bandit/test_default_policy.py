"""The parts of prefloop's ``default`` policy: K_inf and IMED's overdue test, optimistic draws,
the guard, and (slow) the guard keeping the best arm from being starved in simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from prefloop.bandit import Decision, make_policy
from prefloop.bandit._imed import k_inf, overdue_arms
from prefloop.bandit._thompson import DEFAULT_CONFIG
from prefloop.errors import InvalidInputError

LEVELS = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])


def _feed(policy, arm: str, *rewards: float) -> None:
    for reward in rewards:
        policy.update(Decision(arm, 1.0, {}, index=None), reward)


def test_k_inf_on_two_levels_is_the_binary_kl() -> None:
    """For a coin F = Bernoulli(p) and μ > p, K_inf(F, μ) = kl(p, μ)."""
    p, mu = 0.3, 0.6
    expected = p * math.log(p / mu) + (1 - p) * math.log((1 - p) / (1 - mu))  # 0.1838
    got = k_inf(np.array([1 - p, p]), np.array([0.0, 1.0]), np.array(mu))
    assert got == pytest.approx(expected, rel=1e-9)


def test_k_inf_equals_the_smallest_kl_to_a_distribution_with_mean_mu() -> None:
    """Against a direct minimisation: min KL(F || G) over G on the levels with mean ≥ μ."""
    f = np.array([0.05, 0.10, 0.25, 0.40, 0.20])  # mean 0.3

    def smallest_kl(mu: float) -> float:
        result = optimize.minimize(
            lambda g: float(np.sum(f * np.log(f / g))),
            x0=np.full(5, 0.2),
            bounds=[(1e-9, 1.0)] * 5,
            constraints=[
                {"type": "eq", "fun": lambda g: g.sum() - 1},
                {"type": "ineq", "fun": lambda g: g @ LEVELS - mu},
            ],
            method="SLSQP",
            options={"ftol": 1e-12, "maxiter": 500},
        )
        assert result.success, result.message
        return float(result.fun)

    for mu in (0.35, 0.5, 0.8):
        assert k_inf(f, LEVELS, np.array(mu)) == pytest.approx(smallest_kl(mu), abs=1e-6)
    assert k_inf(f, LEVELS, np.array(0.2)) == 0.0  # μ below the mean: nothing to overcome
    assert k_inf(f, LEVELS, np.array(1.0)) == math.inf  # no distribution on the scale gets there


def test_overdue_arms_against_a_hand_computation() -> None:
    """Leader A: n rewards of 0.5; B: three 0s. K_inf(δ₀, ½) = ln 2 (all mass moves to the top),
    so I_B = 3 ln 2 + ln 3 = 3.178, and B is overdue once ln n − 2 > 3.178, i.e. n > 177.3."""

    def levels(n_leader: int) -> np.ndarray:
        counts = np.zeros((1, 3, 5))
        counts[0, 0, 3] = n_leader  # A: all 0.5
        counts[0, 1, 2] = 3  # B: three 0s
        return counts  # C: untried

    for n_leader, expected in ((170, False), (185, True)):
        counts = levels(n_leader)
        overdue, index = overdue_arms(counts.sum(-1), counts, LEVELS, margin=2.0)
        assert index[0, 1] == pytest.approx(3 * math.log(2) + math.log(3), rel=1e-9)
        assert index[0, 0] == pytest.approx(math.log(n_leader))  # the leader's own index
        assert overdue[0].tolist() == [False, expected, False]  # untried C is never overdue


def test_the_guard_plays_the_most_overdue_arm() -> None:
    def policies(guard: float | None) -> list:
        made = [
            make_policy("default", arms=["A", "B", "C"], seed=0, config={"guard": guard})
            for _ in range(2)
        ]
        for policy in made:
            _feed(policy, "B", 0.0, 0.0, 0.0)
            _feed(policy, "C", 0.0, 0.0, 0.0, 0.0, 0.0)
        return made

    guarded, unguarded = policies(2.0), policies(None)
    for policy in (guarded[0], unguarded[0]):
        _feed(policy, "A", *([0.5] * 170))
    # no arm overdue: the guard changes nothing (it draws no random numbers either)
    assert guarded[0].probabilities() == unguarded[0].probabilities()
    for policy in (guarded[1], unguarded[1]):
        _feed(policy, "A", *([0.5] * 185))
    # 185 rewards: B is overdue (see above); C's 5 ln 2 + ln 5 = 5.075 is not below 3.22
    assert guarded[1].probabilities() == {"A": 0.0, "B": 1.0, "C": 0.0}
    assert unguarded[1].probabilities()["B"] < 0.05  # sampling alone would starve B
    decision = guarded[1].select()
    assert decision.arm == "B" and decision.propensity == 1.0
    guarded[1].update(decision, 0.0)  # B: 4 ln 2 + ln 4 = 4.159 > ln 185 − 2: not overdue now
    assert guarded[1].probabilities()["B"] < 0.05


def test_optimistic_draws_match_the_beta_integral() -> None:
    """On a two-level scale, optimistic sampling picks B when max(Y, m_B) > max(X, m_A) with
    X ~ Beta(5, 2), Y ~ Beta(3, 3) and posterior means m_A = 5/7 > m_B = ½: the event is
    Y > max(X, m_A), of probability ∫ from m_A to 1 of f_Y(y) F_X(y) dy."""
    options = {"draws": 40_000, "prior": 1.0}
    plain = make_policy("thompson", arms=["A", "B"], scale=[0, 1], seed=1, config=options)
    optimistic = make_policy(
        "thompson", arms=["A", "B"], scale=[0, 1], seed=1, config=options | {"optimistic": True}
    )
    for policy in (plain, optimistic):
        _feed(policy, "A", 1, 1, 1, 0, 1)
        _feed(policy, "B", 1, 0, 0, 1)
    x, y = stats.beta(5, 2), stats.beta(3, 3)
    exact, _ = integrate.quad(lambda v: y.pdf(v) * x.cdf(v), 5 / 7, 1)
    plain_exact, _ = integrate.quad(lambda v: y.pdf(v) * x.cdf(v), 0, 1)
    assert plain_exact == pytest.approx(13 / 66) and exact < plain_exact - 0.05  # 0.092 vs 0.197
    assert optimistic.probabilities()["B"] == pytest.approx(exact, abs=0.006)
    assert plain.probabilities()["B"] == pytest.approx(plain_exact, abs=0.015)


def test_the_default_config_and_its_options() -> None:
    policy = make_policy("default", arms=["A"])
    assert policy.config == DEFAULT_CONFIG
    assert (DEFAULT_CONFIG.epsilon, DEFAULT_CONFIG.optimistic, DEFAULT_CONFIG.guard) == (
        0.25,
        True,
        2.0,
    )
    for options, message in (
        ({"guard": -1}, "guard must be a finite number ≥ 0, got -1"),
        ({"guard": math.inf}, "guard must be a finite number ≥ 0"),
        ({"guard": "2"}, "guard must be a finite number ≥ 0, got '2'"),
        ({"optimistic": "yes"}, "optimistic must be true or false, got 'yes'"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            make_policy("default", config=options)


def _best_arm_pulls(name: str, runs: int, horizon: int, seed: int, **options) -> np.ndarray:
    """Pulls of the best arm per run on the issue's four-arm spec (C, mean 0.73)."""
    probs = np.array(
        [
            [0.05, 0.05, 0.20, 0.35, 0.35],
            [0.03, 0.05, 0.15, 0.35, 0.42],
            [0.01, 0.02, 0.08, 0.28, 0.61],
            [0.02, 0.04, 0.12, 0.30, 0.52],
        ]
    )
    rng = np.random.default_rng(seed)
    policy = make_policy(name, arms=list("ABCD"), seed=rng, config=options or None)
    policy._reset_batch(runs)
    cumulative = probs.cumsum(-1)
    for _ in range(horizon):
        arms = policy._select_many()
        level = (cumulative[arms] < rng.random(runs)[:, None]).sum(-1)
        policy._update_many(arms, LEVELS[np.minimum(level, 4)])
    return policy._pulls[:, 2]


@pytest.mark.slow
def test_the_guard_keeps_the_best_arm_from_being_starved() -> None:
    """Without the guard, the default's greedy three quarters leave C (the best arm) behind in
    about one run in nine after a few unlucky early ratings; the guard brings most back.
    Fixed seed; measured 17 vs 6 runs of 150 (seed 4: 16 vs 3)."""
    unguarded = _best_arm_pulls("default", runs=150, horizon=1500, seed=3, guard=None)
    guarded = _best_arm_pulls("default", runs=150, horizon=1500, seed=3)
    assert (unguarded < 300).sum() >= 11
    assert (guarded < 300).sum() <= 9
    assert np.median(guarded) > 1200
