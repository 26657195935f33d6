"""Off-policy evaluation against simulations whose true values are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from prefloop.bandit import LoggedDecision, evaluate_offline, make_policy
from prefloop.errors import InvalidInputError

LEVELS = np.array([-1, -0.5, 0, 0.5, 1])
ARMS = {
    "A": [0.05, 0.05, 0.20, 0.35, 0.35],  # mean 0.45
    "B": [0.03, 0.05, 0.15, 0.35, 0.42],  # mean 0.54
    "C": [0.01, 0.02, 0.08, 0.28, 0.61],  # mean 0.73
}
MEANS = {arm: float(np.dot(p, LEVELS)) for arm, p in ARMS.items()}


def _log_fixed(n: int, logging: dict[str, float], seed: int) -> list[LoggedDecision]:
    rng = np.random.default_rng(seed)
    names = list(logging)
    arms = rng.choice(names, size=n, p=[logging[a] for a in names])
    return [
        LoggedDecision(str(a), logging[str(a)], float(rng.choice(LEVELS, p=ARMS[str(a)])))
        for a in arms
    ]


@pytest.mark.parametrize(
    "target",
    [{"C": 1.0}, {"A": 0.2, "B": 0.2, "C": 0.6}, {"A": 1 / 3, "B": 1 / 3, "C": 1 / 3}],
)
def test_estimates_recover_the_true_value(target: dict[str, float]) -> None:
    truth = sum(p * MEANS[a] for a, p in target.items())
    logs = _log_fixed(4000, {"A": 0.5, "B": 0.3, "C": 0.2}, seed=1)
    estimate = evaluate_offline(logs, target)
    assert estimate.ips == pytest.approx(truth, abs=4 * estimate.ips_se)
    assert estimate.doubly_robust == pytest.approx(truth, abs=4 * estimate.doubly_robust_se)
    assert estimate.snips == pytest.approx(truth, abs=0.1)
    assert estimate.ips_se < 0.05 and estimate.doubly_robust_se <= estimate.ips_se + 1e-12
    assert 0 < estimate.effective_sample_size <= estimate.n == 4000


def test_estimates_from_an_adaptive_policy_log() -> None:
    """Logged by a learning epsilon-greedy policy: propensities change from one decision on."""
    policy = make_policy("epsilon-greedy", arms=list(ARMS), seed=2, config={"epsilon": 0.3})
    rng = np.random.default_rng(3)
    logs = []
    for _ in range(5000):
        decision = policy.select()
        reward = float(rng.choice(LEVELS, p=ARMS[decision.arm]))
        policy.update(decision, reward)
        logs.append(LoggedDecision(decision.arm, decision.propensity, reward))
    assert len({round(log.propensity, 6) for log in logs}) > 1
    uniform = {a: 1 / 3 for a in ARMS}
    truth = sum(MEANS.values()) / 3
    estimate = evaluate_offline(logs, uniform)
    assert estimate.doubly_robust == pytest.approx(truth, abs=0.03)
    assert estimate.ips == pytest.approx(truth, abs=4 * estimate.ips_se)
    # the naive average of the logged rewards is biased towards the greedy arm's mean
    naive = float(np.mean([log.reward for log in logs]))
    assert abs(naive - truth) > 0.05


def test_a_policy_as_the_target() -> None:
    logs = _log_fixed(500, {"A": 0.5, "B": 0.3, "C": 0.2}, seed=4)
    target = make_policy("ucb1", arms=list(ARMS), seed=0)
    for arm, reward in (("A", 0.0), ("B", 0.5), ("C", 1.0)):
        for _ in range(30):
            target.update(_decision(arm), reward)
    probabilities = target.probabilities()
    assert evaluate_offline(logs, target) == evaluate_offline(logs, probabilities)


def _decision(arm: str):  # a logged decision for ``arm``
    from prefloop.bandit import Decision

    return Decision(arm, 1.0, {}, index=None)


def test_contextual_target_function() -> None:
    logs = [
        LoggedDecision("A", 0.5, 1.0, context={"g": 1}),
        LoggedDecision("B", 0.5, 0.0, context={"g": 2}),
    ]
    estimate = evaluate_offline(
        logs, lambda log: {"A": 1.0} if log.context["g"] == 1 else {"B": 1.0}
    )
    assert estimate.ips == pytest.approx((1.0 / 0.5 + 0.0) / 2)
    assert estimate.snips == pytest.approx(0.5)


def test_snips_is_undefined_when_the_target_never_matches() -> None:
    estimate = evaluate_offline([LoggedDecision("A", 0.5, 1.0)], {"B": 1.0})
    assert estimate.snips is None and estimate.ips == 0 and estimate.effective_sample_size == 0
    assert math.isnan(estimate.ips_se)


@pytest.mark.parametrize(
    ("logs", "target", "message"),
    [
        ([], {"A": 1.0}, "at least one logged decision"),
        ([LoggedDecision("A", 0.0, 1.0)], {"A": 1.0}, "propensity 0.0; propensities lie in"),
        ([LoggedDecision("A", 1.5, 1.0)], {"A": 1.0}, "propensity 1.5"),
        ([LoggedDecision("A", 0.5, float("nan"))], {"A": 1.0}, "reward nan, not a number"),
        ([("A", 0.5, 1.0)], {"A": 1.0}, "not a LoggedDecision"),
        ([LoggedDecision("A", 0.5, 1.0)], {"A": 0.5}, "sum to 0.5, not 1"),
        ([LoggedDecision("A", 0.5, 1.0)], {"A": 1.5, "B": -0.5}, "not a number ≥ 0"),
        ([LoggedDecision("A", 0.5, 1.0)], {}, "non-empty dict"),
        ([LoggedDecision("A", 0.5, 1.0)], 3, "a dict of arm probabilities, a function or a Policy"),
    ],
)
def test_bad_inputs(logs: list, target: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        evaluate_offline(logs, target)  # type: ignore[arg-type]
