"""Policies by name: build one from its typed config, from a saved state, or from the log."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from prefloop.bandit._base import DecisionEvent, Policy, PolicyConfig, Seed, replay
from prefloop.bandit._greedy import EpsilonGreedy, EpsilonGreedyConfig, Softmax, SoftmaxConfig
from prefloop.bandit._linucb import LinUCB, LinUCBConfig
from prefloop.bandit._scale import RewardScale
from prefloop.bandit._thompson import (
    DEFAULT_CONFIG,
    ThompsonConfig,
    ThompsonSampling,
)
from prefloop.bandit._ucb import UCB1, ReferenceUCB1, ReferenceUCB1Config, UCB1Config
from prefloop.errors import InvalidInputError, NotFoundError
from prefloop.store.models import DEFAULT_SCALE

POLICIES: Mapping[str, tuple[type[Policy], PolicyConfig]] = MappingProxyType(
    {
        "ucb1-reference": (ReferenceUCB1, ReferenceUCB1Config()),
        "ucb1": (UCB1, UCB1Config()),
        "epsilon-greedy": (EpsilonGreedy, EpsilonGreedyConfig()),
        "thompson": (ThompsonSampling, ThompsonConfig()),
        "softmax": (Softmax, SoftmaxConfig()),
        "linucb": (LinUCB, LinUCBConfig()),
        "default": (ThompsonSampling, DEFAULT_CONFIG),
    }
)
"""Registered policies: name → (class, default config). ``default`` is prefloop's best."""


def available_policies() -> list[str]:
    return list(POLICIES)


def _entry(name: str) -> tuple[type[Policy], PolicyConfig]:
    try:
        return POLICIES[name]
    except (KeyError, TypeError):
        raise NotFoundError(
            f"no bandit policy named {name!r}; choose one of {', '.join(POLICIES)}"
        ) from None


def policy_config(name: str, options: Mapping[str, Any] | None = None) -> PolicyConfig:
    """The registered default config of ``name`` with ``options`` overriding its fields."""
    policy_class, default = _entry(name)
    return policy_class.config_class.from_dict(default.to_dict() | dict(options or {}))


def make_policy(
    name: str,
    *,
    arms: Sequence[str] = (),
    scale: Sequence[float] | RewardScale = DEFAULT_SCALE,
    config: PolicyConfig | Mapping[str, Any] | None = None,
    seed: Seed = None,
) -> Policy:
    """A fresh policy called ``name`` over ``arms`` (config: the registered one by default)."""
    policy_class, default = _entry(name)
    if config is None:
        config = default
    elif isinstance(config, Mapping):
        config = policy_config(name, config)
    return policy_class(config, arms=arms, scale=scale, seed=seed, name=name)


def policy_from_state(state: Mapping[str, Any], *, seed: Seed = None) -> Policy:
    """The policy a ``Policy.to_state()`` dict describes."""
    if not isinstance(state, Mapping) or "policy" not in state:
        raise InvalidInputError(
            f"a policy state is the dict Policy.to_state() returns, got {state!r}"
        )
    name = state["policy"]
    policy = make_policy(
        name,
        scale=state.get("scale", DEFAULT_SCALE),
        config=state.get("config") or {},
        seed=seed,
    )
    policy._load_state(state)
    return policy


def recompute(
    name: str,
    events: Sequence[DecisionEvent],
    *,
    active_arms: Sequence[str],
    scale: Sequence[float] | RewardScale = DEFAULT_SCALE,
    config: PolicyConfig | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The state of policy ``name`` recomputed from the log alone.

    ``events`` are its decisions in the order they were made, each with its current rewards;
    ``active_arms`` are the arms offered now. Equals ``to_state()`` of the policy that made the
    decisions and received the rewards, in whatever order they arrived.
    """
    policy = make_policy(name, scale=scale, config=config, seed=0)
    replay(policy, events, active_arms)
    return policy.to_state()


def state_differences(
    a: Mapping[str, Any], b: Mapping[str, Any], *, tolerance: float = 1e-9
) -> list[str]:
    """Where two states disagree, as readable lines (empty when they match)."""
    differences = [
        f"{key}: {a.get(key)!r} != {b.get(key)!r}"
        for key in ("policy", "config", "scale", "t", "user_to_arm")
        if a.get(key) != b.get(key)
    ]
    arms_a, arms_b = a.get("arms", {}), b.get("arms", {})
    for arm in sorted(set(arms_a) | set(arms_b)):
        if arm not in arms_a or arm not in arms_b:
            differences.append(f"arm {arm!r} is in only one state")
            continue
        for key in sorted(set(arms_a[arm]) | set(arms_b[arm])):
            x, y = arms_a[arm].get(key), arms_b[arm].get(key)
            if isinstance(x, bool | str) or isinstance(y, bool | str) or x is None or y is None:
                same = x == y
            else:
                same = np.shape(x) == np.shape(y) and bool(
                    np.allclose(x, y, rtol=tolerance, atol=tolerance)
                )
            if not same:
                differences.append(f"arm {arm!r} {key}: {x!r} != {y!r}")
    return differences
