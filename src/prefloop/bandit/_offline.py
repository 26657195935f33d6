"""Off-policy evaluation: how a new policy would have done, from decisions logged with propensities.

For logged decisions i (arm a_i chosen with probability p_i, reward r_i) and a target policy π,
with importance weights w_i = π(a_i | x_i) / p_i:

- IPS (Horvitz & Thompson 1952): V = mean(w_i r_i), unbiased when p_i > 0 wherever π > 0.
- self-normalised IPS (Swaminathan & Joachims 2015): V = Σ w_i r_i / Σ w_i, biased, less variance.
- doubly robust (Dudík, Langford & Li 2011): V = mean(Σ_a π(a|x_i) q(a) + w_i (r_i − q(a_i))),
  with q the direct method's reward model — here simply each arm's mean logged reward.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from prefloop.bandit._base import Policy
from prefloop.errors import InvalidInputError

Target = Mapping[str, float] | Callable[["LoggedDecision"], Mapping[str, float]] | Policy


@dataclass(frozen=True)
class LoggedDecision:
    """One logged decision: the arm, the probability it was chosen with, and its reward."""

    arm: str
    propensity: float
    reward: float
    context: Mapping[str, Any] | None = None
    end_user: str | None = None


@dataclass(frozen=True)
class OffPolicyEstimate:
    """Estimates of the target policy's mean reward per decision."""

    ips: float
    ips_se: float
    snips: float | None
    """None when the target gives no logged decision any weight."""
    doubly_robust: float
    doubly_robust_se: float
    direct: float
    """The direct method alone: Σ_a π(a) q(a) with q the per-arm mean logged reward."""
    n: int
    effective_sample_size: float
    """(Σ w)² / Σ w²: how many logged decisions the estimate is worth."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_offline(logs: Sequence[LoggedDecision], target: Target) -> OffPolicyEstimate:
    """Estimate ``target``'s mean reward from ``logs``.

    ``target`` is a fixed distribution over arms (``{"A": 0.2, "C": 0.8}``), a function from a
    logged decision to such a distribution (for contextual targets), or a :class:`Policy`, whose
    current :meth:`Policy.probabilities` for each decision's context are used.
    """
    records = list(logs)
    if not records:
        raise InvalidInputError("off-policy evaluation needs at least one logged decision")
    for i, record in enumerate(records):
        _check_record(i, record)
    probabilities = _target_probabilities(records, target)
    arms = sorted({r.arm for r in records} | {a for p in probabilities for a in p})
    rewards = np.array([r.reward for r in records])
    logged = np.array([r.arm for r in records])
    q = {
        arm: float(rewards[logged == arm].mean()) if (logged == arm).any() else math.nan
        for arm in arms
    }
    fallback = float(rewards.mean())  # arms never logged: the overall mean is all the data says
    q = {arm: fallback if math.isnan(v) else v for arm, v in q.items()}

    weights = np.array(
        [p.get(r.arm, 0.0) / r.propensity for p, r in zip(probabilities, records, strict=True)]
    )
    direct_terms = np.array([sum(pi * q[a] for a, pi in p.items()) for p in probabilities])
    ips_terms = weights * rewards
    dr_terms = direct_terms + weights * (rewards - np.array([q[r.arm] for r in records]))
    n = len(records)
    total_weight = float(weights.sum())
    return OffPolicyEstimate(
        ips=float(ips_terms.mean()),
        ips_se=_se(ips_terms),
        snips=float(ips_terms.sum() / total_weight) if total_weight > 0 else None,
        doubly_robust=float(dr_terms.mean()),
        doubly_robust_se=_se(dr_terms),
        direct=float(direct_terms.mean()),
        n=n,
        effective_sample_size=total_weight**2 / float((weights**2).sum())
        if total_weight > 0
        else 0.0,
    )


def _se(terms: np.ndarray) -> float:
    return float(terms.std(ddof=1) / math.sqrt(len(terms))) if len(terms) > 1 else math.nan


def _check_record(i: int, record: LoggedDecision) -> None:
    if not isinstance(record, LoggedDecision):
        raise InvalidInputError(f"log item {i} is not a LoggedDecision: {record!r}")
    p = record.propensity
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p <= 1:
        raise InvalidInputError(
            f"log item {i} (arm {record.arm!r}) has propensity {p!r}; propensities lie in (0, 1] "
            "— a decision logged without its probability cannot be reweighted"
        )
    r = record.reward
    if isinstance(r, bool) or not isinstance(r, int | float) or not math.isfinite(r):
        raise InvalidInputError(f"log item {i} (arm {record.arm!r}) has reward {r!r}, not a number")


def _target_probabilities(
    records: list[LoggedDecision], target: Target
) -> list[Mapping[str, float]]:
    if isinstance(target, Policy):
        cache: dict[str, Mapping[str, float]] = {}

        def from_policy(record: LoggedDecision) -> Mapping[str, float]:
            key = json.dumps([record.context, record.end_user], sort_keys=True, default=str)
            if key not in cache:
                cache[key] = target.probabilities(context=record.context, end_user=record.end_user)
            return cache[key]

        return [_check_distribution(from_policy(r), i) for i, r in enumerate(records)]
    if isinstance(target, Mapping):
        fixed = _check_distribution(target, None)
        return [fixed] * len(records)
    if callable(target):
        return [_check_distribution(target(r), i) for i, r in enumerate(records)]
    raise InvalidInputError(
        f"target must be a dict of arm probabilities, a function or a Policy, got {target!r}"
    )


def _check_distribution(probs: Any, i: int | None) -> Mapping[str, float]:
    where = "target" if i is None else f"target for log item {i}"
    if not isinstance(probs, Mapping) or not probs:
        raise InvalidInputError(
            f"{where} must be a non-empty dict arm → probability, got {probs!r}"
        )
    values = list(probs.values())
    if any(isinstance(v, bool) or not isinstance(v, int | float) or v < 0 for v in values):
        raise InvalidInputError(f"{where} has a probability that is not a number ≥ 0: {probs!r}")
    if not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise InvalidInputError(f"{where} probabilities sum to {sum(values):.6g}, not 1: {probs!r}")
    return {str(a): float(v) for a, v in probs.items()}
