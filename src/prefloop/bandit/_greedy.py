"""Epsilon-greedy and softmax (Boltzmann) exploration over the mean rewards."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prefloop.bandit._base import (
    FloatArray,
    Policy,
    PolicyConfig,
    PolicyView,
    argmax_probabilities,
    positive,
)


@dataclass(frozen=True)
class EpsilonGreedyConfig(PolicyConfig):
    epsilon: float = positive(0.1, strict=False, probability=True)
    """Probability of a uniformly random arm; otherwise the arm with the best mean."""


class EpsilonGreedy(Policy):
    """Epsilon-greedy (Sutton & Barto 2018, §2.2): P(arm) = ε/K + (1 − ε)·[arm is greedy].

    Arms without a reward yet count as greedy, so each is tried early; tied greedy arms share.
    """

    config_class = EpsilonGreedyConfig
    config: EpsilonGreedyConfig
    paper = "Sutton & Barto (2018), Reinforcement Learning, §2.2"

    def _probabilities(self, view: PolicyView, rng: np.random.Generator) -> FloatArray:
        greedy = argmax_probabilities(np.where(view.untried, np.inf, view.mean))
        k = view.n.shape[-1]
        return self.config.epsilon / k + (1 - self.config.epsilon) * greedy


@dataclass(frozen=True)
class SoftmaxConfig(PolicyConfig):
    temperature: float = positive(0.1)
    """τ on rewards mapped to [0, 1]: small is greedy, large is uniform."""


class Softmax(Policy):
    """Boltzmann exploration (Sutton & Barto 2018, §2.8; Cesa-Bianchi et al. 2017):
    P(arm) ∝ exp(mean / τ) on [0, 1] rewards, after each arm has been tried once.
    """

    config_class = SoftmaxConfig
    config: SoftmaxConfig
    paper = "Cesa-Bianchi, Gentile, Lugosi & Neu (2017), Boltzmann exploration done right"

    def _probabilities(self, view: PolicyView, rng: np.random.Generator) -> FloatArray:
        logits = view.unit_mean / self.config.temperature
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        boltzmann = weights / weights.sum(-1, keepdims=True)
        untried = view.untried.astype(np.float64)
        first_tries = untried / np.maximum(untried.sum(-1, keepdims=True), 1)
        return np.where(view.untried.any(-1, keepdims=True), first_tries, boltzmann)
