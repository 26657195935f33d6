"""IMED's index on a bounded scale: how overdue an arm is for another try.

Honda & Takemura (2015), "Non-asymptotic analysis of a new bandit algorithm for semi-bounded
rewards", JMLR 16. For rewards bounded above by b, the information an arm's rewards F carry
against "its mean is really μ" is

    K_inf(F, μ) = max_{0 ≤ λ ≤ 1/(b − μ)}  E_F[ log(1 − λ (X − μ)) ]

(the smallest KL divergence from F to a distribution on (−∞, b] with mean ≥ μ), and IMED plays
the arm with the smallest index I_k = n_k · K_inf(F̂_k, μ̂*) + log n_k, where μ̂* is the best
empirical mean; the leader's own index is log n_leader. prefloop uses the index as a safety net
under Thompson sampling (see :mod:`prefloop.bandit._thompson`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from prefloop.bandit._scale import FloatArray

_ITERATIONS = 40  # bisection steps on λ: the interval shrinks 2⁴⁰-fold


def k_inf(weights: FloatArray, values: FloatArray, mu: FloatArray) -> FloatArray:
    """K_inf(F, μ) for distributions ``weights`` (..., L) on the sorted ``values`` (L,).

    ``mu`` (...) is the mean to test; the result is 0 where μ ≤ the mean of F and +∞ where μ
    reaches the top value b. The objective is concave in λ, so its derivative is bisected.
    """
    top = values[-1]
    gap = values - mu[..., None]  # (..., L): x_i − μ
    low = np.zeros_like(mu)
    high = 1.0 / np.maximum(top - mu, 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(_ITERATIONS):
            lam = (low + high) / 2
            slope = -(weights * gap / (1.0 - lam[..., None] * gap)).sum(-1)
            rising = slope > 0
            low, high = np.where(rising, lam, low), np.where(rising, high, lam)
        value = (weights * np.log(np.maximum(1.0 - low[..., None] * gap, 1e-300))).sum(-1)
    return np.where(mu >= top, np.inf, np.maximum(value, 0.0))


def overdue_arms(
    n: FloatArray, levels: FloatArray, values: FloatArray, margin: float
) -> tuple[npt.NDArray[np.bool_], FloatArray]:
    """Arms IMED would have played long ago, and their indices; both (B, K).

    ``n`` (B, K) counts rewards, ``levels`` (B, K, L) counts them on the scale's ``values``.
    An arm is overdue when it trails the best empirical mean and its index is below the
    leader's log n by more than ``margin``: I_k < log n_leader − margin. Untried arms are never
    overdue (the policy tries them first anyway).
    """
    tried = n > 0
    mean = np.where(tried, levels @ values / np.where(tried, n, 1.0), -np.inf)
    best = mean.max(-1, keepdims=True)
    trailing = tried & (mean < best)
    weights = levels / np.where(tried, n, 1.0)[..., None]
    information = np.where(trailing, k_inf(weights, values, np.broadcast_to(best, n.shape)), 0.0)
    index = n * information + np.log(np.maximum(n, 1.0))
    leader_n = np.where(tried & (mean == best), n, 0.0).max(-1, keepdims=True)
    overdue = trailing & (index < np.log(np.maximum(leader_n, 1.0)) - margin)
    return overdue, index
