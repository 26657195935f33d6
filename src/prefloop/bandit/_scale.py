"""The reward scale a policy works on: validation, mapping to [0, 1], splitting onto levels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from prefloop.errors import InvalidInputError

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RewardScale:
    """The levels a task rates on, e.g. ``(-1, -0.5, 0, 0.5, 1)``; rewards lie between the ends."""

    levels: tuple[float, ...]

    @classmethod
    def of(cls, levels: Sequence[float] | RewardScale) -> RewardScale:
        if isinstance(levels, RewardScale):
            return levels
        try:
            values = tuple(float(v) for v in levels)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"a reward scale is a list of numbers such as [-1, -0.5, 0, 0.5, 1], got {levels!r}"
            ) from exc
        if len(values) < 2 or not all(math.isfinite(v) for v in values):
            raise InvalidInputError(
                f"a reward scale needs at least two finite levels, got {list(values)}"
            )
        if list(values) != sorted(set(values)):
            raise InvalidInputError(
                f"reward scale levels must be strictly increasing, got {list(values)}"
            )
        return cls(values)

    @property
    def low(self) -> float:
        return self.levels[0]

    @property
    def high(self) -> float:
        return self.levels[-1]

    @property
    def values(self) -> FloatArray:
        return np.asarray(self.levels, dtype=np.float64)

    def check(self, reward: float, *, what: str = "reward") -> float:
        """``reward`` as a float, or a clear error when it is not a number on this scale."""
        if isinstance(reward, bool):
            raise InvalidInputError(f"{what} must be a number, got {reward!r}")
        try:
            value = float(reward)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"{what} must be a number, got {reward!r}") from exc
        if not math.isfinite(value) or not self.low <= value <= self.high:
            raise InvalidInputError(
                f"{what} {reward!r} lies outside the scale [{self.low:g}, {self.high:g}]; "
                "rewards are on the task's rating scale"
            )
        return value

    def to_unit(self, rewards: FloatArray) -> FloatArray:
        """Rewards mapped linearly onto [0, 1] (what UCB1's bonus and softmax assume)."""
        return (rewards - self.low) / (self.high - self.low)

    def level_weights(self, rewards: FloatArray) -> FloatArray:
        """Each reward split onto its two neighbouring levels, keeping its mean: shape (B, L).

        A reward on a level puts all its weight there; 0.25 on the five-level scale puts half on
        0 and half on 0.5. Multinomial Thompson sampling then works for any bounded reward.
        """
        levels = self.values
        below = np.clip(np.searchsorted(levels, rewards, side="right") - 1, 0, len(levels) - 2)
        frac = (rewards - levels[below]) / (levels[below + 1] - levels[below])
        weights = np.zeros((*np.shape(rewards), len(levels)))
        rows = np.arange(len(rewards))
        weights[rows, below] = 1.0 - frac
        weights[rows, below + 1] += frac
        return weights
