"""LinUCB with disjoint linear models, on hashed features of the request's context."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from prefloop.bandit._base import (
    FloatArray,
    Policy,
    PolicyConfig,
    PolicyView,
    argmax_probabilities,
    positive,
)
from prefloop.errors import InvalidInputError


@dataclass(frozen=True)
class LinUCBConfig(PolicyConfig):
    alpha: float = positive(1.0, strict=False)
    """Width of the confidence bonus alpha·sqrt(xᵀA⁻¹x)."""
    ridge: float = positive(1.0)
    """Ridge penalty λ: A = λI + Σ x xᵀ."""
    n_features: int = 16
    """Buckets the context is hashed into (plus one bias feature)."""
    user_feature: bool = True
    """Hash the end user's id as a feature too, so each user can get their own best arm."""

    def __post_init__(self) -> None:
        super().__post_init__()
        n = self.n_features
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1024:
            raise InvalidInputError(f"n_features must be an integer in [1, 1024], got {n!r}")


def hashed_features(
    context: Mapping[str, Any] | None, end_user: str | None, *, n_features: int, user_feature: bool
) -> FloatArray:
    """A bias 1 followed by ``n_features`` signed hash buckets (Weinberger et al. 2009).

    Numbers add their value to the bucket of their key; strings and booleans add ±1 to the
    bucket of ``key=value``; lists add each item; nested objects use ``key.subkey``.
    """
    x = np.zeros(n_features + 1)
    x[0] = 1.0
    items: list[tuple[str, Any]] = sorted((context or {}).items())
    if user_feature and end_user is not None:
        items.append(("end_user", str(end_user)))
    while items:
        key, value = items.pop()
        if isinstance(value, Mapping):
            items.extend((f"{key}.{sub}", v) for sub, v in value.items())
        elif isinstance(value, list | tuple):
            items.extend((key, v) for v in value)
        elif isinstance(value, bool | str):
            bucket, sign = _bucket(f"{key}={value}", n_features)
            x[bucket] += sign
        elif isinstance(value, int | float) and np.isfinite(value):
            bucket, sign = _bucket(key, n_features)
            x[bucket] += sign * float(value)
        elif value is not None:
            raise InvalidInputError(
                f"context value {key}={value!r} is neither a number, a string nor a list; "
                "give LinUCB JSON values"
            )
    return x


def _bucket(token: str, n_features: int) -> tuple[int, float]:
    digest = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
    return 1 + digest % n_features, 1.0 if (digest >> 40) & 1 else -1.0


class LinUCB(Policy):
    """LinUCB with disjoint models (Li, Chu, Langford & Schapire 2010, "A contextual-bandit
    approach to personalized news article recommendation", WWW, Algorithm 1).

    Per arm a ridge regression of the [0, 1]-mapped reward on the context features x:
    θ = A⁻¹b with A = λI + Σ x xᵀ, b = Σ r x; the arm maximising θᵀx + α·sqrt(xᵀA⁻¹x) is played
    (ties broken at random, so the propensity is 1/k for k tied arms). The context is the
    request's JSON object, hashed into features, plus the end user's id (``user_feature``).
    """

    config_class = LinUCBConfig
    config: LinUCBConfig
    paper = "Li, Chu, Langford & Schapire (2010), WWW"

    @property
    def dimension(self) -> int:
        return self.config.n_features + 1

    def _features(self, context: Mapping[str, Any] | None, end_user: str | None) -> FloatArray:
        return hashed_features(
            context,
            end_user,
            n_features=self.config.n_features,
            user_feature=self.config.user_feature,
        )

    def _extra_stat_shapes(self) -> dict[str, tuple[int, ...]]:
        d = self.dimension
        return {"design": (d, d), "response": (d,)}

    def _extra_contributions(
        self, rewards: FloatArray, features: FloatArray | None
    ) -> dict[str, FloatArray]:
        assert features is not None, "LinUCB always has features"
        unit = self.scale.to_unit(rewards)
        return {
            "design": features[:, :, None] * features[:, None, :],  # (B, d, d)
            "response": unit[:, None] * features,  # (B, d)
        }

    def _probabilities(self, view: PolicyView, rng: np.random.Generator) -> FloatArray:
        assert view.features is not None, "LinUCB always has features"
        x = view.features[:, None, :]  # (B, 1, d)
        a = view.extra["design"] + self.config.ridge * np.eye(self.dimension)  # (B, K, d, d)
        rhs = np.stack(
            [view.extra["response"], np.broadcast_to(x, view.extra["response"].shape)], -1
        )
        solved = np.linalg.solve(a, rhs)  # (B, K, d, 2): A⁻¹b and A⁻¹x
        estimate = (solved[..., 0] * x).sum(-1)
        width = np.sqrt(np.maximum((solved[..., 1] * x).sum(-1), 0.0))
        return argmax_probabilities(estimate + self.config.alpha * width)
