"""MABWiser's policies as simulation baselines (MABWiser is a dev extra, imported lazily).

Each run starts with one pull of every arm in turn and ``fit`` on those rewards: a MABWiser model
must be fitted before it predicts, and its UCB1 gives unseen arms expectation 0, so it would
never try them. After that, one ``predict`` and one ``partial_fit`` per step, with MABWiser's
default parameters (UCB1 alpha=1, epsilon-greedy epsilon=0.05).

Rewards are mapped onto [0, 1] first (the range UCB1 assumes). MABWiser's Thompson sampling
takes binary rewards only, so it gets the Bernoulli trick (Agrawal & Goyal 2012): a reward r in
[0, 1] becomes 1 with probability r, else 0 — the same mean, a coin's variance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from prefloop.bandit._scale import FloatArray, RewardScale
from prefloop.errors import InvalidInputError

MABWISER_POLICIES = ("mabwiser-ucb1", "mabwiser-epsilon-greedy", "mabwiser-thompson")


def _learning_policy(name: str) -> Any:
    try:
        from mabwiser.mab import LearningPolicy
    except ImportError as exc:
        raise InvalidInputError(
            f"policy {name!r} needs MABWiser, a development extra: "
            "pip install 'prefloop[dev]' (or pip install mabwiser)"
        ) from exc
    if name == "mabwiser-ucb1":
        return LearningPolicy.UCB1()
    if name == "mabwiser-epsilon-greedy":
        return LearningPolicy.EpsilonGreedy()
    if name == "mabwiser-thompson":
        return LearningPolicy.ThompsonSampling()
    raise InvalidInputError(f"no MABWiser adapter {name!r}; known: {', '.join(MABWISER_POLICIES)}")


class MabwiserRuns:
    """R independent MABWiser bandits driven one step at a time, like a batched policy."""

    def __init__(
        self, name: str, n_arms: int, scale: RewardScale, runs: int, rng: np.random.Generator
    ) -> None:
        learning_policy = _learning_policy(name)  # first: a clear error without MABWiser
        from mabwiser.mab import MAB

        self._binary = name == "mabwiser-thompson"
        self._scale = scale
        self._rng = rng
        self._n_arms = n_arms
        self._t = 0
        self._models = [
            MAB(list(range(n_arms)), learning_policy, seed=int(s))
            for s in rng.integers(0, 2**31 - 1, size=runs)
        ]
        self._warmup: list[tuple[list[int], list[float]]] = [([], []) for _ in range(runs)]

    def select(self) -> npt.NDArray[np.intp]:
        self._t += 1
        if self._t <= self._n_arms:  # the round-robin warm-up
            return np.full(len(self._models), self._t - 1, dtype=np.intp)
        return np.array([int(model.predict()) for model in self._models], dtype=np.intp)

    def update(self, arms: npt.NDArray[np.intp], rewards: FloatArray) -> None:
        unit = self._scale.to_unit(rewards)
        if self._binary:
            unit = (self._rng.random(len(unit)) < unit).astype(np.float64)
        for r, model in enumerate(self._models):
            if self._t <= self._n_arms:
                decisions, values = self._warmup[r]
                decisions.append(int(arms[r]))
                values.append(float(unit[r]))
                if self._t == self._n_arms:
                    model.fit(decisions, values)
            else:
                model.partial_fit([int(arms[r])], [float(unit[r])])
