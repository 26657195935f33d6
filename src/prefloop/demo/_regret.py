"""Regret of a sequence of choices, measured against estimated arm means.

The true mean reward of a prompt is unknown, so regret is computed with the estimates the run
itself produced: choosing arm a at step t costs ``gap(a) = max_k mean_k - mean_a``.

    regret_policy(T)  = sum_{t <= T} gap(a_t)                        (pseudo-regret,
    regret_uniform(T) = T * (max_k mean_k - (1/K) sum_k mean_k)       Lattimore & Szepesvári,
                                                                       Bandit Algorithms, ch. 4)

``regret_uniform`` is the expected regret of picking arms uniformly at random (the allocation
of an A/B/n test) under the same estimates, so the two curves compare like with like.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from prefloop.errors import InvalidInputError

__all__ = ["cumulative_regret", "uniform_regret"]

K = TypeVar("K")


def cumulative_regret(chosen: Sequence[K], means: Mapping[K, float]) -> NDArray[np.float64]:
    """Cumulative pseudo-regret after each choice in ``chosen`` (same length as ``chosen``)."""
    unknown = sorted({repr(a) for a in chosen if a not in means})
    if unknown:
        raise InvalidInputError(
            f"no estimated mean for arm(s) {', '.join(unknown)}; give a mean for every arm "
            "that was chosen (or leave its choices out)"
        )
    if not chosen:
        return np.zeros(0)
    best = max(means.values())
    gaps = np.array([best - means[a] for a in chosen], dtype=np.float64)
    return np.cumsum(gaps)


def uniform_regret(steps: int, means: Mapping[K, float]) -> NDArray[np.float64]:
    """Expected cumulative regret of uniform random allocation after each of ``steps`` steps."""
    if steps < 0:
        raise InvalidInputError(f"steps must be >= 0, got {steps}")
    if not means:
        raise InvalidInputError("uniform regret needs at least one arm mean")
    values = np.array(list(means.values()), dtype=np.float64)
    return np.arange(1, steps + 1, dtype=np.float64) * (values.max() - values.mean())
