"""The policy base class: validation and bookkeeping in public ``select``/``update``.

Each algorithm implements one hook, :meth:`Policy._probabilities`, that maps the statistics of
the active arms to selection probabilities; the base class samples the arm from them, so the
logged propensity is the probability the arm really had.

State is a set of additive sufficient statistics per arm (counts, reward sums, counts per
scale level, and whatever a policy adds, e.g. LinUCB's design matrices). A reward adds its
contribution, a changed reward subtracts the old one and adds the new, a discount multiplies
everything by γ at each decision. So the state after any order of decisions and (late, missing
or changed) rewards equals the state replayed from the log (:func:`recompute`).

Internally every statistic carries a leading batch axis: 1 for a live policy, R for the
simulator, which runs R independent copies of a policy in one vectorised step.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
import numpy.typing as npt

from prefloop.bandit._identify import (
    JEFFREYS_PRIOR,
    Recommendation,
    check_draws,
    check_threshold,
    probability_best,
)
from prefloop.bandit._scale import FloatArray, RewardScale
from prefloop.errors import InvalidInputError, NotFoundError
from prefloop.store.models import DEFAULT_SCALE

IntArray = npt.NDArray[np.int64]
Seed = int | np.random.Generator | None
C = TypeVar("C", bound="PolicyConfig")

STATE_FORMAT = 1


@dataclass(frozen=True)
class PolicyConfig:
    """Options every policy has. Subclasses add their own fields, each with a docstring."""

    discount: float = 1.0
    """Weight an observation keeps per later decision (γ). 1 never forgets; 0.999 halves an
    old reward's weight after ~700 decisions, for preferences that drift (discounted bandits,
    Garivier & Moulines 2011)."""
    sticky: bool = False
    """Give an end user the arm they were given before, while it is active."""

    def __post_init__(self) -> None:
        if isinstance(self.discount, bool) or not isinstance(self.discount, int | float):
            raise InvalidInputError(f"discount must be a number in (0, 1], got {self.discount!r}")
        if not 0.0 < self.discount <= 1.0:
            raise InvalidInputError(
                f"discount must lie in (0, 1] (1 = no forgetting, e.g. 0.999), got {self.discount}"
            )
        if not isinstance(self.sticky, bool):
            raise InvalidInputError(f"sticky must be true or false, got {self.sticky!r}")
        for option in dataclasses.fields(self):  # the fields declared with positive()
            if "strict" in option.metadata:
                _check_positive(option.name, getattr(self, option.name), **option.metadata)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """The config with ``data``'s fields; unknown fields are an error that lists the known."""
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"a policy config is a JSON object, got {data!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInputError(
                f"unknown option(s) {', '.join(unknown)} for {cls.__name__}; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(**data)


def positive(default: float, *, strict: bool = True, probability: bool = False) -> Any:
    """A config field :class:`PolicyConfig` checks: a number > 0 (≥ 0 with ``strict=False``),
    at most 1 with ``probability=True``."""
    return dataclasses.field(
        default=default, metadata={"strict": strict, "probability": probability}
    )


def _check_positive(
    name: str, value: object, *, strict: bool = True, probability: bool = False
) -> None:
    """Raise unless ``value`` is a real number > 0 (or ≥ 0 with ``strict=False``), and at most
    1 if it is a ``probability``."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if strict else value < 0):  # type: ignore[operator]
        bound = "> 0" if strict else "≥ 0"
        raise InvalidInputError(f"{name} must be a finite number {bound}, got {value!r}")
    if probability and value > 1:  # type: ignore[operator]
        interval = "(0, 1]" if strict else "[0, 1]"
        raise InvalidInputError(f"{name} is a probability in {interval}, got {value}")


@dataclass(frozen=True)
class Decision:
    """One choice of an arm, with the probability it had and the probabilities of all arms."""

    arm: str
    propensity: float
    """P(this arm) under the policy at the time; for deterministic (argmax) policies 1, or
    1/k when k arms tie and the tie is broken uniformly at random."""
    probabilities: dict[str, float]
    index: int | None
    """The decision's position in the policy's log (0-based); needed to discount its reward."""
    end_user: str | None = None
    context: Mapping[str, Any] | None = None
    sticky: bool = False
    """True when the arm was kept for a returning end user (propensity 1)."""


@dataclass(frozen=True)
class DecisionEvent:
    """One decision of the log as :func:`recompute` replays it: its arm and the rewards it got.

    ``rewards`` holds the current reward of each generation made from the decision (empty when
    feedback never came).
    """

    arm: str
    rewards: Sequence[float] = ()
    end_user: str | None = None
    context: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class PolicyView:
    """What a policy's hook sees: statistics of the active arms, each shaped (B, K, …)."""

    n: FloatArray
    """(Discounted) number of rewards per arm."""
    reward_sum: FloatArray
    levels: FloatArray
    """(B, K, L): rewards counted on the scale's levels."""
    extra: dict[str, FloatArray]
    t: int
    """Decisions made so far, this one included."""
    scale: RewardScale
    features: FloatArray | None
    """(B, d) context features of this decision (policies that use context)."""
    propensities: bool
    """False in simulation: only the chosen arm matters, probabilities may be one-hot."""

    @property
    def untried(self) -> npt.NDArray[np.bool_]:
        return self.n <= 0

    @property
    def mean(self) -> FloatArray:
        """Mean reward on the task's scale (0 for untried arms)."""
        return np.divide(self.reward_sum, self.n, out=np.zeros_like(self.n), where=self.n > 0)

    @property
    def unit_mean(self) -> FloatArray:
        """Mean reward mapped onto [0, 1]."""
        return np.where(self.n > 0, self.scale.to_unit(self.mean), 0.0)


def argmax_probabilities(scores: FloatArray) -> FloatArray:
    """Uniform over the arms that tie for the largest score, per row: (B, K)."""
    best = scores == scores.max(-1, keepdims=True)
    return best / best.sum(-1, keepdims=True)


def one_hot(index: npt.NDArray[np.intp], k: int) -> FloatArray:
    return (index[..., None] == np.arange(k)).astype(np.float64)


class Policy(ABC):
    """A bandit policy over a task's arms. Build one with :func:`prefloop.bandit.make_policy`.

    ``select`` chooses an arm and returns a :class:`Decision`; ``update`` gives the reward of a
    decision (any time later, or never; again with ``previous=`` when the reward changes).
    Arms can be added and retired while the policy runs. ``to_state``/``from_state`` move the
    sufficient statistics through JSON.
    """

    config_class: ClassVar[type[PolicyConfig]] = PolicyConfig
    paper: ClassVar[str] = ""

    def __init__(
        self,
        config: PolicyConfig | None = None,
        *,
        arms: Sequence[str] = (),
        scale: Sequence[float] | RewardScale = DEFAULT_SCALE,
        seed: Seed = None,
        name: str | None = None,
    ) -> None:
        config = self.config_class() if config is None else config
        if not isinstance(config, self.config_class):
            raise InvalidInputError(
                f"{type(self).__name__} takes a {self.config_class.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config = config
        self.name = name or type(self).__name__.lower()
        self.scale = RewardScale.of(scale)
        self._rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self._t = 0
        self._arms: list[str] = []
        self._retired: list[bool] = []
        self._user_to_arm: dict[str, str] = {}
        self._batch = 1
        self._pulls: IntArray = np.zeros((1, 0), dtype=np.int64)
        self._stats: dict[str, FloatArray] = {
            key: np.zeros((1, 0, *shape)) for key, shape in self._stat_shapes().items()
        }
        for arm in arms:
            self.add_arm(arm)

    # -- the hooks ----------------------------------------------------------------------------
    @abstractmethod
    def _probabilities(self, view: PolicyView, rng: np.random.Generator) -> FloatArray:
        """Selection probabilities of the active arms, (B, K); rows sum to 1."""

    def _extra_stat_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-arm shapes of the statistics this policy adds to the shared ones."""
        return {}

    def _extra_contributions(
        self, rewards: FloatArray, features: FloatArray | None
    ) -> dict[str, FloatArray]:
        """What one reward per row adds to this policy's own statistics, (B, *shape)."""
        return {}

    def _features(
        self, context: Mapping[str, Any] | None, end_user: str | None
    ) -> FloatArray | None:
        """The context's feature vector for contextual policies; None for the others."""
        return None

    # -- arms ---------------------------------------------------------------------------------
    @property
    def arms(self) -> list[str]:
        """The active arms, in the order they were added."""
        return [arm for arm, retired in zip(self._arms, self._retired, strict=True) if not retired]

    @property
    def t(self) -> int:
        """Decisions made so far."""
        return self._t

    def add_arm(self, name: str) -> None:
        """Start offering ``name`` (a retired arm comes back with its statistics)."""
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError(f"an arm name is a non-empty string, got {name!r}")
        if name in self._arms:
            self._retired[self._arms.index(name)] = False
            return
        self._arms.append(name)
        self._retired.append(False)
        self._pulls = np.concatenate([self._pulls, np.zeros((self._batch, 1), np.int64)], axis=1)
        for key, shape in self._stat_shapes().items():
            self._stats[key] = np.concatenate(
                [self._stats[key], np.zeros((self._batch, 1, *shape))], axis=1
            )

    def retire_arm(self, name: str) -> None:
        """Stop offering ``name``. An arm that was never chosen is forgotten entirely."""
        k = self._arm_index(name)
        if self._pulls[:, k].any():
            self._retired[k] = True
            return
        del self._arms[k]
        del self._retired[k]
        self._pulls = np.delete(self._pulls, k, axis=1)
        for key in self._stats:
            self._stats[key] = np.delete(self._stats[key], k, axis=1)
        self._user_to_arm = {u: a for u, a in self._user_to_arm.items() if a != name}

    def sync_arms(self, active: Sequence[str]) -> None:
        """Make ``active`` exactly the offered arms: add the new ones, retire the others."""
        wanted = list(dict.fromkeys(active))
        for arm in wanted:
            if arm not in self._arms or self._retired[self._arms.index(arm)]:
                self.add_arm(arm)
        for arm in [a for a in self.arms if a not in wanted]:
            self.retire_arm(arm)

    def _arm_index(self, name: str) -> int:
        try:
            return self._arms.index(name)
        except ValueError:
            known = ", ".join(self._arms) or "none"
            raise NotFoundError(f"the policy has no arm {name!r}; its arms: {known}") from None

    # -- deciding -----------------------------------------------------------------------------
    def select(
        self, *, context: Mapping[str, Any] | None = None, end_user: str | None = None
    ) -> Decision:
        """Choose an arm for one request. ``end_user`` and ``context`` are logged with it."""
        context = _check_context(context)
        if end_user is not None and not isinstance(end_user, str):
            raise InvalidInputError(f"end_user is a string id, got {end_user!r}")
        active = self._active_indices()
        if not active.size:
            raise InvalidInputError(
                "the policy has no active arms to choose from; add one with add_arm()"
            )
        kept = self._user_to_arm.get(end_user) if end_user is not None else None
        features = self._features(context, end_user)  # may refuse the context: before any change
        self._advance()
        if self.config.sticky and kept is not None and kept in self.arms:
            probabilities = {arm: float(arm == kept) for arm in self.arms}
            return self._record(kept, 1.0, probabilities, end_user, context, sticky=True)
        view = self._view(active, None if features is None else features[None, :], True)
        probs = self._probabilities(view, self._rng)[0]
        chosen = active[_sample(probs[None, :], self._rng)[0]]
        probabilities = {self._arms[k]: float(p) for k, p in zip(active, probs, strict=True)}
        arm = self._arms[chosen]
        return self._record(arm, probabilities[arm], probabilities, end_user, context)

    def probabilities(
        self, *, context: Mapping[str, Any] | None = None, end_user: str | None = None
    ) -> dict[str, float]:
        """What the next decision's probabilities would be; records nothing."""
        context = _check_context(context)
        active = self._active_indices()
        if not active.size:
            return {}
        if self.config.sticky and end_user is not None:
            kept = self._user_to_arm.get(end_user)
            if kept is not None and kept in self.arms:
                return {arm: float(arm == kept) for arm in self.arms}
        features = self._features(context, end_user)
        view = self._view(
            active,
            None if features is None else features[None, :],
            True,
            t=self._t + 1,
            factor=self.config.discount,
        )
        probs = self._probabilities(view, self._rng)[0]
        return {self._arms[k]: float(p) for k, p in zip(active, probs, strict=True)}

    def update(
        self, decision: Decision, reward: float | None, *, previous: float | None = None
    ) -> None:
        """Learn ``decision``'s reward; when it replaces an earlier one, pass that as ``previous``.

        ``reward=None`` with ``previous`` withdraws a reward. Rewards lie on the policy's scale.
        """
        k = self._arm_index(decision.arm)
        new = None if reward is None else self.scale.check(reward)
        old = None if previous is None else self.scale.check(previous, what="previous reward")
        weight = self._weight(decision.index)
        features = self._features(decision.context, decision.end_user)
        feats = None if features is None else features[None, :]
        index = np.array([k])
        if old is not None:
            self._observe(index, np.array([old]), np.array([-weight]), feats)
        if new is not None:
            self._observe(index, np.array([new]), np.array([weight]), feats)

    def _weight(self, index: int | None) -> float:
        if self.config.discount == 1.0:
            return 1.0
        if index is None or isinstance(index, bool) or not 0 <= index < self._t:
            raise InvalidInputError(
                f"with discount {self.config.discount} a decision needs its index in "
                f"[0, {self._t}) to weigh its reward, got {index!r}"
            )
        return float(self.config.discount ** (self._t - 1 - index))

    def _advance(self) -> None:
        self._t += 1
        if self.config.discount != 1.0:
            for key in self._stats:
                self._stats[key] *= self.config.discount

    def _record(
        self,
        arm: str,
        propensity: float,
        probabilities: dict[str, float],
        end_user: str | None,
        context: Mapping[str, Any] | None,
        *,
        sticky: bool = False,
    ) -> Decision:
        self._pulls[0, self._arm_index(arm)] += 1
        if end_user is not None and self.config.sticky:  # only sticky policies keep users
            self._user_to_arm[end_user] = arm
        return Decision(
            arm=arm,
            propensity=propensity,
            probabilities=probabilities,
            index=self._t - 1,
            end_user=end_user,
            context=context,
            sticky=sticky,
        )

    # -- statistics ---------------------------------------------------------------------------
    def _stat_shapes(self) -> dict[str, tuple[int, ...]]:
        shared: dict[str, tuple[int, ...]] = {
            "n": (),
            "reward_sum": (),
            "reward_sq_sum": (),
            "levels": (len(self.scale.levels),),
        }
        return shared | self._extra_stat_shapes()

    def _observe(
        self,
        arm_index: npt.NDArray[np.intp],
        rewards: FloatArray,
        weights: FloatArray,
        features: FloatArray | None,
    ) -> None:
        """Add ``weights`` × each row's contribution to row b's arm ``arm_index[b]``."""
        contributions = {
            "n": np.ones_like(rewards),
            "reward_sum": rewards,
            "reward_sq_sum": rewards**2,
            "levels": self.scale.level_weights(rewards),
        } | self._extra_contributions(rewards, features)
        rows = np.arange(len(arm_index))
        for key, value in contributions.items():
            w = weights.reshape(-1, *([1] * (value.ndim - 1)))
            self._stats[key][rows, arm_index] += w * value

    def _active_indices(self) -> npt.NDArray[np.intp]:
        return np.array([k for k, r in enumerate(self._retired) if not r], dtype=np.intp)

    def _view(
        self,
        active: npt.NDArray[np.intp],
        features: FloatArray | None,
        propensities: bool,
        *,
        t: int | None = None,
        factor: float = 1.0,
    ) -> PolicyView:
        stats = {key: value[:, active] * factor for key, value in self._stats.items()}
        return PolicyView(
            n=stats.pop("n"),
            reward_sum=stats.pop("reward_sum"),
            levels=stats.pop("levels"),
            extra={k: v for k, v in stats.items() if k != "reward_sq_sum"},
            t=self._t if t is None else t,
            scale=self.scale,
            features=features,
            propensities=propensities,
        )

    def arm_summary(self) -> dict[str, dict[str, float | int | bool]]:
        """Per arm: decisions, (discounted) rewards, mean reward, retired."""
        n, total = self._stats["n"][0], self._stats["reward_sum"][0]
        return {
            arm: {
                "decisions": int(self._pulls[0, k]),
                "rewards": float(n[k]),
                "mean": float(total[k] / n[k]) if n[k] > 0 else float("nan"),
                "retired": self._retired[k],
            }
            for k, arm in enumerate(self._arms)
        }

    # -- best-arm identification --------------------------------------------------------------
    def recommend(self, *, threshold: float = 0.95, draws: int = 4000) -> Recommendation:
        """The active arm most likely best under a Dirichlet(½) posterior, and the stopping rule.

        ``Recommendation.confident`` says whether P(best) ≥ ``threshold``.
        """
        threshold = check_threshold(threshold)
        draws = check_draws(draws)
        active = self._active_indices()
        if not active.size:
            return Recommendation(None, 0.0, {}, 0.0, threshold)
        p_best = probability_best(
            self._stats["levels"][:, active],
            self.scale.values,
            prior=JEFFREYS_PRIOR,
            draws=draws,
            rng=self._rng,
        )[0]
        probabilities = {self._arms[k]: float(p) for k, p in zip(active, p_best, strict=True)}
        leader = self._arms[active[int(np.argmax(p_best))]]
        feedbacks = float(self._stats["n"][0, active].sum())
        return Recommendation(
            leader, probabilities[leader], probabilities, round(feedbacks, 9), threshold
        )

    # -- state --------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """The sufficient statistics as a JSON-serialisable dict (see :func:`recompute`)."""
        if self._batch != 1:
            raise InvalidInputError("only a single (non-simulated) policy has a state")
        arms: dict[str, dict[str, Any]] = {}
        for k, arm in enumerate(self._arms):
            entry: dict[str, Any] = {
                "retired": self._retired[k],
                "decisions": int(self._pulls[0, k]),
            }
            for key, value in self._stats.items():
                entry[key] = value[0, k].tolist()
            arms[arm] = entry
        return {
            "format": STATE_FORMAT,
            "policy": self.name,
            "config": self.config.to_dict(),
            "scale": list(self.scale.levels),
            "t": self._t,
            "arms": arms,
            "user_to_arm": dict(self._user_to_arm),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], *, seed: Seed = None) -> Policy:
        """The policy a :meth:`to_state` dict describes (its registered name picks the class)."""
        from prefloop.bandit._registry import policy_from_state

        return policy_from_state(state, seed=seed)

    def _load_state(self, state: Mapping[str, Any]) -> None:
        """Fill this (fresh) policy's bookkeeping and statistics from ``state``."""
        try:
            t = state["t"]
            arms = state["arms"]
            users = state.get("user_to_arm", {})
        except (KeyError, TypeError) as exc:
            raise InvalidInputError(f"a policy state needs 't' and 'arms', got {state!r}") from exc
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise InvalidInputError(f"state 't' must be a non-negative integer, got {t!r}")
        if not isinstance(arms, Mapping) or not isinstance(users, Mapping):
            raise InvalidInputError("state 'arms' and 'user_to_arm' must be JSON objects")
        self._t = t
        shapes = self._stat_shapes()
        for arm, entry in arms.items():
            self.add_arm(arm)
            k = self._arms.index(arm)
            try:
                self._retired[k] = bool(entry["retired"])
                self._pulls[0, k] = int(entry["decisions"])
                for key, shape in shapes.items():
                    value = np.asarray(entry[key], dtype=np.float64)
                    if value.shape != shape:
                        raise InvalidInputError(
                            f"state of arm {arm!r}: {key!r} has shape {value.shape}, "
                            f"expected {shape}"
                        )
                    self._stats[key][0, k] = value
            except (KeyError, TypeError, ValueError) as exc:
                raise InvalidInputError(
                    f"state of arm {arm!r} is malformed ({exc!r}); recompute it from the log"
                ) from exc
        self._user_to_arm = {str(u): str(a) for u, a in users.items()}

    # -- simulation (many independent copies at once) -----------------------------------------
    def _reset_batch(self, batch: int) -> None:
        """Start over as ``batch`` independent copies (used by the simulator)."""
        self._batch = batch
        self._t = 0
        self._pulls = np.zeros((batch, len(self._arms)), dtype=np.int64)
        self._stats = {
            key: np.zeros((batch, len(self._arms), *shape))
            for key, shape in self._stat_shapes().items()
        }

    def _select_many(self) -> npt.NDArray[np.intp]:
        """One decision in every copy; returns the chosen arm of each, (B,)."""
        active = self._active_indices()
        self._advance()
        features = self._features(None, None)
        feats = (
            None if features is None else np.broadcast_to(features, (self._batch, len(features)))
        )
        probs = self._probabilities(self._view(active, feats, False), self._rng)
        chosen = active[_sample(probs, self._rng)]
        self._pulls[np.arange(self._batch), chosen] += 1
        return chosen

    def _update_many(self, arm_index: npt.NDArray[np.intp], rewards: FloatArray) -> None:
        features = self._features(None, None)
        feats = (
            None if features is None else np.broadcast_to(features, (self._batch, len(features)))
        )
        self._observe(arm_index, rewards, np.ones_like(rewards), feats)


def _sample(probs: FloatArray, rng: np.random.Generator) -> npt.NDArray[np.intp]:
    """One index per row drawn from the row's probabilities (never one with probability 0)."""
    cumulative = probs.cumsum(-1)
    u = rng.random(len(probs)) * cumulative[:, -1]
    chosen: npt.NDArray[np.intp] = (cumulative > u[:, None]).argmax(-1)
    return chosen


def _check_context(context: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if context is None:
        return None
    if not isinstance(context, Mapping):
        raise InvalidInputError(f"context is a JSON object (a dict), got {context!r}")
    return dict(context)


def replay(policy: Policy, events: Sequence[DecisionEvent], active_arms: Sequence[str]) -> None:
    """Feed ``events`` in log order into a fresh ``policy``, then set the active arms.

    Each event takes the bookkeeping steps of ``select`` (count the decision, discount, remember
    the end user's arm) without choosing, then adds the rewards it received.
    """
    for event in events:
        if not isinstance(event, DecisionEvent):
            raise InvalidInputError(f"recompute takes DecisionEvent items, got {event!r}")
        if event.arm not in policy.arms:
            policy.add_arm(event.arm)
        policy._advance()
        decision = policy._record(event.arm, 1.0, {}, event.end_user, _check_context(event.context))
        for reward in event.rewards:
            policy.update(decision, reward)
    policy.sync_arms(active_arms)
