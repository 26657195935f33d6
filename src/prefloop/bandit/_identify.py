"""Best-arm identification: the posterior probability that each arm is best, and when to stop.

Each arm's rewards are counted on the scale's levels; its mean has a Dirichlet posterior over
the level probabilities (the multinomial model of Riou & Honda 2020, "Bandit algorithms based on
Thompson sampling for bounded reward distributions", ALT). P(arm k is best) is estimated by Monte
Carlo: draw every arm's mean from its posterior and count how often k has the largest. The
stopping rule of a fixed-confidence experiment: recommend the leader once that probability
reaches the threshold (e.g. 0.95).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from prefloop.bandit._scale import FloatArray
from prefloop.errors import InvalidInputError

JEFFREYS_PRIOR = 0.5
"""Dirichlet(½, …, ½), the Jeffreys prior of a multinomial: prefloop's default."""

_CHUNK = 1 << 22  # gamma draws per chunk, bounds memory at ~32 MB


def posterior_mean_draws(
    levels: FloatArray,
    values: FloatArray,
    *,
    prior: float,
    draws: int,
    rng: np.random.Generator,
) -> FloatArray:
    """Draws of each arm's mean from its Dirichlet posterior.

    ``levels`` (..., K, L) counts rewards per level; returns (..., draws, K).
    mean = w · values with w ~ Dirichlet(prior + counts), drawn as normalised gammas.
    """
    alpha = levels + prior  # (..., K, L)
    batch_shape, (k, n_levels) = alpha.shape[:-2], alpha.shape[-2:]
    per_draw = int(np.prod(batch_shape, dtype=np.int64)) * k * n_levels
    step = max(1, _CHUNK // max(per_draw, 1))
    chunks = []
    for start in range(0, draws, step):
        size = min(step, draws - start)
        shape = (*batch_shape, size, k, n_levels)
        gammas = rng.standard_gamma(np.broadcast_to(alpha[..., None, :, :], shape))
        chunks.append((gammas / gammas.sum(-1, keepdims=True)) @ values)
    return np.concatenate(chunks, axis=-2)


def probability_best(
    levels: FloatArray,
    values: FloatArray,
    *,
    prior: float = JEFFREYS_PRIOR,
    draws: int = 4000,
    rng: np.random.Generator,
) -> FloatArray:
    """P(arm k has the largest mean) for (..., K, L) level counts; returns (..., K)."""
    means = posterior_mean_draws(levels, values, prior=prior, draws=draws, rng=rng)
    return win_frequencies(means)


def win_frequencies(means: FloatArray) -> FloatArray:
    """How often each arm holds the largest of the (..., draws, K) draws: (..., K)."""
    k = means.shape[-1]
    winners: npt.NDArray[np.intp] = means.argmax(-1)
    counts = np.stack([(winners == arm).sum(-1) for arm in range(k)], axis=-1)
    return counts / means.shape[-2]


@dataclass(frozen=True)
class Recommendation:
    """The arm most likely to be best, how likely, and whether the experiment may stop."""

    arm: str | None
    """The arm with the highest posterior probability of being best (None without arms)."""
    probability: float
    """P(``arm`` is best) under the Dirichlet posterior, estimated by Monte Carlo."""
    probabilities: dict[str, float]
    feedbacks: float
    """Rewards observed across the active arms (discounted weight when forgetting is on)."""
    threshold: float

    @property
    def confident(self) -> bool:
        """The stopping rule: the leader is best with probability ≥ threshold."""
        return self.arm is not None and self.probability >= self.threshold

    def __str__(self) -> str:
        n = f"{self.feedbacks:g}"
        if self.arm is None:
            return "no active arms to recommend"
        if self.confident:
            return (
                f"{self.arm} is best with probability {self.probability:.3f} "
                f"≥ {self.threshold:g} after {n} feedbacks"
            )
        return (
            f"no arm is best with probability ≥ {self.threshold:g} yet: {self.arm} leads "
            f"with {self.probability:.3f} after {n} feedbacks"
        )


def check_threshold(threshold: float) -> float:
    if not 0.0 < threshold < 1.0:
        raise InvalidInputError(
            f"a confidence threshold lies strictly between 0 and 1 (e.g. 0.95), got {threshold!r}"
        )
    return float(threshold)


def check_draws(draws: int) -> int:
    if isinstance(draws, bool) or not isinstance(draws, int | np.integer) or draws < 1:
        raise InvalidInputError(f"draws must be a positive integer (e.g. 4000), got {draws!r}")
    return int(draws)
