"""Thompson sampling for ratings on a bounded scale: a Dirichlet posterior over the levels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prefloop.bandit._base import FloatArray, Policy, PolicyConfig, PolicyView, _check_positive
from prefloop.bandit._identify import JEFFREYS_PRIOR, posterior_mean_draws, win_frequencies
from prefloop.errors import InvalidInputError


@dataclass(frozen=True)
class ThompsonConfig(PolicyConfig):
    prior: float = JEFFREYS_PRIOR
    """Dirichlet pseudo-count per scale level (½: the Jeffreys prior; 1: uniform)."""
    draws: int = 1000
    """Posterior draws per decision to estimate the logged selection probabilities."""
    epsilon: float = 1.0
    """Chance that an arm's value is a posterior draw rather than its mean reward. 1 is
    Thompson sampling; below 1 it is ε-exploring Thompson sampling (Jin et al. 2023)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive("prior", self.prior)
        _check_positive("epsilon", self.epsilon)
        if self.epsilon > 1:
            raise InvalidInputError(f"epsilon is a probability in (0, 1], got {self.epsilon}")
        if isinstance(self.draws, bool) or not isinstance(self.draws, int) or self.draws < 1:
            raise InvalidInputError(f"draws must be a positive integer, got {self.draws!r}")


class ThompsonSampling(Policy):
    """Multinomial Thompson sampling (Riou & Honda 2020, "Bandit algorithms based on Thompson
    sampling for bounded reward distributions", ALT; asymptotically optimal for rewards on a
    known finite support).

    Each arm's rewards are counts on the scale's levels (off-level rewards split between the two
    neighbours, keeping the mean); its level probabilities have the posterior
    w ~ Dirichlet(prior + counts), and its sampled mean is w · levels. Unlike Beta-Bernoulli
    sampling, this uses the ratings' real spread, which is far below a coin's with the same mean.

    With ``epsilon`` < 1 each arm's value is its posterior draw only with probability ε and its
    mean reward otherwise (ε-exploring Thompson sampling, Jin, Yang, Xiao & Xu 2023, ICML).

    The decision samples an arm from the win frequencies of ``draws`` posterior draws, so the
    logged propensity is exactly the probability used (an estimate of Thompson's own).
    """

    config_class = ThompsonConfig
    config: ThompsonConfig
    paper = "Riou & Honda (2020), ALT; with ε < 1: Jin, Yang, Xiao & Xu (2023), ICML"

    def _probabilities(self, view: PolicyView, rng: np.random.Generator) -> FloatArray:
        draws = self.config.draws if view.propensities else 1
        means = posterior_mean_draws(
            view.levels, self.scale.values, prior=self.config.prior, draws=draws, rng=rng
        )  # (B, draws, K)
        if self.config.epsilon < 1:
            untried_first = 1e9 + rng.random(means.shape)  # untried arms first, ties at random
            empirical = np.where(view.untried[:, None, :], untried_first, view.mean[:, None, :])
            drawn = rng.random(means.shape) < self.config.epsilon
            means = np.where(drawn, means, empirical)
        return win_frequencies(means)


DEFAULT_CONFIG = ThompsonConfig(prior=JEFFREYS_PRIOR, epsilon=0.5)
"""prefloop's ``default`` policy: ε-exploring multinomial Thompson sampling, Jeffreys prior,
each arm's value a posterior draw half the time and its mean reward otherwise. Chosen over
plain Thompson sampling (ε = 1) and ε = ¾ by regret over five specs (see bench_bandit.py)."""
