"""UCB1 on rewards mapped to [0, 1], and the reference project's UCB1 exactly as it ran."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prefloop.bandit._base import (
    FloatArray,
    Policy,
    PolicyConfig,
    PolicyView,
    argmax_probabilities,
    one_hot,
    positive,
)
from prefloop.errors import InvalidInputError


@dataclass(frozen=True)
class UCB1Config(PolicyConfig):
    exploration: float = positive(1.0, strict=False)
    """Multiplier c of the bonus c·sqrt(2 ln N / n); 1 is Auer et al.'s UCB1."""


class UCB1(Policy):
    """UCB1 (Auer, Cesa-Bianchi & Fischer 2002, "Finite-time analysis of the multiarmed bandit
    problem"): play each arm once, then the arm maximising mean + sqrt(2 ln N / n).

    Rewards are mapped onto [0, 1], the range the bonus is derived for; N is the number of
    rewards observed (not of decisions, so that late feedback does not inflate the bonus).
    Deterministic: the propensity is 1, or 1/k when k arms tie (ties are broken at random).
    """

    config_class = UCB1Config
    config: UCB1Config
    paper = "Auer, Cesa-Bianchi & Fischer (2002), Machine Learning 47"

    def _probabilities(self, view: PolicyView, rng: np.random.Generator) -> FloatArray:
        total = np.maximum(view.n.sum(-1, keepdims=True), 1.0)
        bonus = self.config.exploration * np.sqrt(
            2 * np.log(total) / np.where(view.untried, 1, view.n)
        )
        return argmax_probabilities(np.where(view.untried, np.inf, view.unit_mean + bonus))


@dataclass(frozen=True)
class ReferenceUCB1Config(PolicyConfig):
    def __post_init__(self) -> None:
        super().__post_init__()
        if self.discount != 1.0:
            raise InvalidInputError(
                "ucb1-reference reproduces the reference project exactly and has no discount; "
                "use ucb1 or thompson with discount instead"
            )


class ReferenceUCB1(Policy):
    """The UCB1 of the reference project (MEMOZY/Memozy_AI_RL, ``MAB_exe.py``), as a baseline.

    Its exact form: rewards stay raw on [-1, 1]; t counts decisions including the current one;
    the first arm (in arm order) without a reward is played; otherwise the first arm maximising
    mean + sqrt(2 ln t / n). Fully deterministic, so every propensity is 1.
    """

    config_class = ReferenceUCB1Config
    paper = "MEMOZY/Memozy_AI_RL MAB_exe.py (UCB1 of Auer et al. 2002 on raw rewards)"

    def _probabilities(self, view: PolicyView, rng: np.random.Generator) -> FloatArray:
        bonus = np.sqrt(2 * np.log(view.t) / np.where(view.untried, 1, view.n))
        scores = np.where(view.untried, np.inf, view.mean + bonus)
        return one_hot(scores.argmax(-1), scores.shape[-1])  # argmax: the first maximum wins
