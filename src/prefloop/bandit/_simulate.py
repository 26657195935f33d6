"""Simulation: policies against arms with known reward distributions, many seeded runs at once.

A spec gives each arm a distribution on rating levels::

    {"arms": {"A": {"values": [-1, -0.5, 0, 0.5, 1], "probs": [0.05, 0.05, 0.2, 0.35, 0.35]}}}

All policies face the same rewards (common random numbers): run r's n-th pull of arm k has the
same reward under every policy, so differences between policies are not luck of the draw.
Regret is the pseudo-regret Σ (μ* − μ_chosen). A run's recommendation is prefloop's rule — the
arm with the highest posterior probability of being best given the rewards the policy collected
— so ``p_best`` measures how well each policy's choices identify the best arm.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from prefloop._files import atomic_path
from prefloop.bandit._identify import JEFFREYS_PRIOR, check_threshold, probability_best
from prefloop.bandit._mabwiser import MABWISER_POLICIES, MabwiserRuns
from prefloop.bandit._registry import POLICIES, make_policy
from prefloop.bandit._scale import FloatArray, RewardScale
from prefloop.errors import InvalidInputError

MAX_TABLE = 400_000_000  # rewards held in memory: runs × arms × horizon
Z95 = 1.959963984540054


@dataclass(frozen=True)
class ArmSpec:
    """An arm's reward distribution: ``probs[i]`` is the chance of reward ``values[i]``."""

    values: tuple[float, ...]
    probs: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.dot(self.values, self.probs))


@dataclass(frozen=True)
class SimulationSpec:
    arms: Mapping[str, ArmSpec]

    @property
    def names(self) -> list[str]:
        return list(self.arms)

    @property
    def means(self) -> FloatArray:
        return np.array([arm.mean for arm in self.arms.values()])

    @property
    def best_arm(self) -> str:
        return self.names[int(np.argmax(self.means))]

    @property
    def scale(self) -> RewardScale:
        """The sorted union of every arm's values: the levels policies see."""
        return RewardScale.of(sorted({v for arm in self.arms.values() for v in arm.values}))


def parse_spec(data: Any, *, source: str = "spec") -> SimulationSpec:
    """Check a spec (the parsed JSON) and build it; errors name the arm and what to fix."""
    if not isinstance(data, Mapping) or not isinstance(data.get("arms"), Mapping):
        raise InvalidInputError(
            f'{source}: expected {{"arms": {{"A": {{"values": [...], "probs": [...]}}, ...}}}}'
        )
    if len(data["arms"]) < 2:
        raise InvalidInputError(f"{source}: a bandit needs at least two arms")
    arms: dict[str, ArmSpec] = {}
    for name, arm in data["arms"].items():
        where = f"{source}: arm {name!r}"
        if not isinstance(arm, Mapping) or set(arm) != {"values", "probs"}:
            raise InvalidInputError(f"{where} needs exactly the keys 'values' and 'probs'")
        values, probs = (
            _numbers(arm["values"], f"{where} values"),
            _numbers(arm["probs"], f"{where} probs"),
        )
        if len(values) != len(probs):
            raise InvalidInputError(
                f"{where}: {len(values)} values but {len(probs)} probs; give one probability "
                "per value"
            )
        if len(set(values)) != len(values):
            raise InvalidInputError(f"{where}: values repeat {list(values)}; list each once")
        if any(p < 0 for p in probs):
            raise InvalidInputError(f"{where}: probabilities must be ≥ 0, got {list(probs)}")
        if not math.isclose(sum(probs), 1.0, abs_tol=1e-6):
            raise InvalidInputError(
                f"{where}: probs sum to {sum(probs):.6g}, not 1; fix them so they add up to 1"
            )
        arms[str(name)] = ArmSpec(values, probs)
    return SimulationSpec(arms)


def _numbers(value: Any, what: str) -> tuple[float, ...]:
    ok = (
        isinstance(value, list)
        and value
        and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
    )
    if not ok:
        raise InvalidInputError(f"{what} must be a non-empty list of finite numbers, got {value!r}")
    return tuple(float(v) for v in value)


def load_spec(path: str | os.PathLike[str]) -> SimulationSpec:
    """Read and check a spec file (JSON)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(f"spec file {str(file)!r} does not exist") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read spec file {str(file)!r}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{file}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})"
        ) from exc
    return parse_spec(data, source=str(file))


def simulation_policies() -> list[str]:
    """Names :func:`simulate` accepts: prefloop's policies and the MABWiser baselines."""
    return [*POLICIES, *MABWISER_POLICIES]


@dataclass(frozen=True)
class Checkpoint:
    regret: float
    """Mean cumulative regret over the runs."""
    regret_ci: tuple[float, float]
    """95% confidence interval of that mean (normal approximation)."""
    p_best: float
    """Share of runs whose recommendation is a best arm."""


@dataclass(frozen=True)
class Stopping:
    """The fixed-confidence stopping rule applied to each run: stop at the first check where
    some arm is best with posterior probability ≥ ``threshold``, and recommend it."""

    threshold: float
    stopped: float
    """Share of runs that stopped within the horizon."""
    median_feedbacks: float | None
    """Median number of rewards at the stop (None if no run stopped)."""
    correct: float | None
    """Share of stopped runs whose recommendation is a best arm (should be ≳ threshold)."""


@dataclass(frozen=True)
class PolicyResult:
    name: str
    regret_curve: FloatArray
    """(T,) mean cumulative regret after each decision."""
    regret_se: FloatArray
    """(T,) its standard error."""
    checkpoints: dict[int, Checkpoint]
    seconds: float
    stopping: Stopping | None = None


@dataclass(frozen=True)
class SimulationResult:
    spec: SimulationSpec
    horizon: int
    runs: int
    seed: int
    policies: dict[str, PolicyResult] = field(default_factory=dict)

    def summary(self, at: int | None = None) -> SimulationSummary:
        """The figures at decision ``at`` (the horizon), rounded as ``prefloop bandit simulate
        --json`` prints them (:meth:`SimulationSummary.to_json`)."""
        at = self.horizon if at is None else at
        policies: dict[str, PolicySummary] = {}
        for name, result in self.policies.items():
            if at not in result.checkpoints:
                raise InvalidInputError(f"no checkpoint at {at}; simulate with checkpoints=[{at}]")
            point = result.checkpoints[at]
            policies[name] = PolicySummary(
                regret=round(point.regret, 4),
                regret_ci=(round(point.regret_ci[0], 4), round(point.regret_ci[1], 4)),
                p_best=round(point.p_best, 4),
            )
        return SimulationSummary(
            policies=policies,
            best_arm=self.spec.best_arm,
            arm_means={
                k: round(float(v), 6) for k, v in zip(self.spec.names, self.spec.means, strict=True)
            },
            horizon=at,
            runs=self.runs,
            seed=self.seed,
            stopping={n: r.stopping for n, r in self.policies.items() if r.stopping is not None},
        )


@dataclass(frozen=True)
class PolicySummary:
    """One policy's figures at a decision count, rounded to 4 digits."""

    regret: float
    """Mean cumulative regret over the runs."""
    regret_ci: tuple[float, float]
    """Its 95% confidence interval."""
    p_best: float
    """Share of runs whose recommendation is a best arm."""

    def to_json(self) -> dict[str, Any]:
        return {"regret": self.regret, "regret_ci": list(self.regret_ci), "p_best": self.p_best}


@dataclass(frozen=True)
class SimulationSummary:
    """What :meth:`SimulationResult.summary` reports: each policy's figures at ``horizon``."""

    policies: dict[str, PolicySummary]
    best_arm: str
    arm_means: dict[str, float]
    horizon: int
    """The decision count the figures are at."""
    runs: int
    seed: int
    stopping: dict[str, Stopping] = field(default_factory=dict)
    """The stopping rule's outcome per policy (simulated with ``stop_threshold``)."""

    def to_json(self) -> dict[str, Any]:
        """The JSON ``prefloop bandit simulate --json`` prints (``stopping`` only when set)."""
        out: dict[str, Any] = {
            "policies": {name: p.to_json() for name, p in self.policies.items()},
            "best_arm": self.best_arm,
            "arm_means": self.arm_means,
            "horizon": self.horizon,
            "runs": self.runs,
            "seed": self.seed,
        }
        if self.stopping:
            out["stopping"] = {name: asdict(rule) for name, rule in self.stopping.items()}
        return out


class _Runs(Protocol):
    def select(self) -> npt.NDArray[np.intp]: ...

    def update(self, arms: npt.NDArray[np.intp], rewards: FloatArray) -> None: ...


class _PolicyRuns:
    """R copies of a prefloop policy, stepped together."""

    def __init__(self, name: str, spec: SimulationSpec, runs: int, rng: np.random.Generator):
        self.policy = make_policy(name, arms=spec.names, scale=spec.scale, seed=rng)
        self.policy._reset_batch(runs)

    def select(self) -> npt.NDArray[np.intp]:
        return self.policy._select_many()

    def update(self, arms: npt.NDArray[np.intp], rewards: FloatArray) -> None:
        self.policy._update_many(arms, rewards)


def simulate(
    spec: SimulationSpec,
    policies: Sequence[str],
    *,
    horizon: int,
    runs: int,
    seed: int = 0,
    checkpoints: Sequence[int] = (),
    on_step: Callable[[str, int], None] | None = None,
    recommendation_draws: int = 1000,
    stop_threshold: float | None = None,
    stop_every: int = 50,
) -> SimulationResult:
    """Run each policy ``runs`` times for ``horizon`` decisions on ``spec``'s arms.

    ``checkpoints`` are extra decision counts (besides the horizon) at which regret and the
    recommendation are recorded. ``on_step(policy, step)`` is called after every step (progress).
    With ``stop_threshold`` the stopping rule is checked every ``stop_every`` decisions.
    """
    names = _check_policies(policies)
    horizon, runs, seed = _positive(horizon, "horizon"), _positive(runs, "runs"), _seed(seed)
    marks = sorted({horizon, *(_positive(c, "checkpoint") for c in checkpoints)})
    if stop_threshold is not None:
        check_threshold(stop_threshold)
        _positive(stop_every, "stop_every")
    if marks[-1] > horizon:
        raise InvalidInputError(f"checkpoints must be ≤ the horizon {horizon}, got {marks[-1]}")
    if runs * len(spec.arms) * horizon > MAX_TABLE:
        raise InvalidInputError(
            f"runs × arms × horizon = {runs * len(spec.arms) * horizon:,} rewards is too many "
            f"to hold (max {MAX_TABLE:,}); lower --runs or --horizon"
        )
    table = _reward_table(spec, runs, horizon, np.random.default_rng([seed, 0]))
    result = SimulationResult(spec, horizon, runs, seed)
    for name in names:
        tag = zlib.crc32(name.encode())
        rng = np.random.default_rng([seed, 1, tag])  # the policy's own randomness
        # recommendations and stopping checks draw apart: measuring never changes a choice
        judge = np.random.default_rng([seed, 2, tag])
        start = time.perf_counter()
        runner: _Runs
        if name in MABWISER_POLICIES:
            runner = MabwiserRuns(name, len(spec.arms), spec.scale, runs, rng)
        else:
            runner = _PolicyRuns(name, spec, runs, rng)
        stopping = None if stop_threshold is None else _StopRule(stop_threshold, stop_every, runs)
        curve, se, points = _run(
            runner,
            spec,
            table,
            marks,
            judge,
            recommendation_draws,
            None if on_step is None else functools.partial(on_step, name),
            stopping,
        )
        result.policies[name] = PolicyResult(
            name,
            curve,
            se,
            points,
            time.perf_counter() - start,
            None if stopping is None else stopping.summary(),
        )
    return result


def _run(
    runner: _Runs,
    spec: SimulationSpec,
    table: npt.NDArray[np.int16],
    marks: list[int],
    rng: np.random.Generator,
    draws: int,
    on_step: Callable[[int], None] | None,
    stopping: _StopRule | None = None,
) -> tuple[FloatArray, FloatArray, dict[int, Checkpoint]]:
    runs, n_arms, horizon = table.shape
    scale = spec.scale
    width = max(len(arm.values) for arm in spec.arms.values())
    values = np.zeros((n_arms, width))
    for k, arm in enumerate(spec.arms.values()):
        values[k, : len(arm.values)] = arm.values
    means = spec.means
    gaps = means.max() - means
    rows = np.arange(runs)
    pulls = np.zeros((runs, n_arms), dtype=np.int64)
    levels = np.zeros((runs, n_arms, len(scale.levels)))
    regret = np.zeros(runs)
    curve, se = np.zeros(horizon), np.zeros(horizon)
    points: dict[int, Checkpoint] = {}
    for step in range(horizon):
        arms = runner.select()
        rewards = values[arms, table[rows, arms, pulls[rows, arms]]]
        pulls[rows, arms] += 1
        runner.update(arms, rewards)
        levels[rows, arms] += scale.level_weights(rewards)
        regret += gaps[arms]
        curve[step] = regret.mean()
        se[step] = regret.std(ddof=1) / math.sqrt(runs) if runs > 1 else 0.0
        if step + 1 in marks:
            p_best = probability_best(
                levels, scale.values, prior=JEFFREYS_PRIOR, draws=draws, rng=rng
            )
            recommended = p_best.argmax(-1)
            points[step + 1] = Checkpoint(
                regret=float(curve[step]),
                regret_ci=(
                    float(curve[step] - Z95 * se[step]),
                    float(curve[step] + Z95 * se[step]),
                ),
                p_best=float(np.mean(gaps[recommended] == 0)),
            )
        if stopping is not None and (step + 1) % stopping.every == 0:
            stopping.check(levels, scale, gaps, rng, draws)
        if on_step is not None:
            on_step(step + 1)
    return curve, se, points


class _StopRule:
    """Per run: the feedbacks at the first confident check and whether its arm was best."""

    def __init__(self, threshold: float, every: int, runs: int) -> None:
        self.threshold, self.every = threshold, every
        self.at = np.full(runs, np.nan)
        self.correct = np.zeros(runs, dtype=bool)

    def check(
        self,
        levels: FloatArray,
        scale: RewardScale,
        gaps: FloatArray,
        rng: np.random.Generator,
        draws: int,
    ) -> None:
        open_runs = np.flatnonzero(np.isnan(self.at))
        if not open_runs.size:
            return
        p_best = probability_best(
            levels[open_runs], scale.values, prior=JEFFREYS_PRIOR, draws=draws, rng=rng
        )
        confident = p_best.max(-1) >= self.threshold
        done = open_runs[confident]
        self.at[done] = levels[done].sum(axis=(1, 2))
        self.correct[done] = gaps[p_best[confident].argmax(-1)] == 0

    def summary(self) -> Stopping:
        stopped = ~np.isnan(self.at)
        return Stopping(
            threshold=self.threshold,
            stopped=float(stopped.mean()),
            median_feedbacks=float(np.median(self.at[stopped])) if stopped.any() else None,
            correct=float(self.correct[stopped].mean()) if stopped.any() else None,
        )


def _reward_table(
    spec: SimulationSpec, runs: int, horizon: int, rng: np.random.Generator
) -> npt.NDArray[np.int16]:
    """(R, K, T): the level index of run r's n-th reward from arm k."""
    table = np.empty((runs, len(spec.arms), horizon), dtype=np.int16)
    for k, arm in enumerate(spec.arms.values()):
        cumulative = np.cumsum(arm.probs)
        cumulative[-1] = np.inf  # rounding must not push a draw past the last value
        table[:, k] = np.searchsorted(cumulative, rng.random((runs, horizon)), side="right")
    return table


def plot_regret(result: SimulationResult, path: str | os.PathLike[str]) -> Path:
    """Save the mean cumulative regret curves (with 95% bands) as a PNG at ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    target = Path(path)
    if not target.parent.is_dir():
        raise InvalidInputError(
            f"cannot write {str(target)!r}: folder {str(target.parent)!r} does not exist"
        )
    figure = Figure(figsize=(8, 5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    steps = np.arange(1, result.horizon + 1)
    for name, policy in result.policies.items():
        (line,) = axes.plot(steps, policy.regret_curve, label=name, linewidth=1.5)
        low = policy.regret_curve - Z95 * policy.regret_se
        high = policy.regret_curve + Z95 * policy.regret_se
        axes.fill_between(steps, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    axes.set_xlabel("decisions")
    axes.set_ylabel("mean cumulative regret")
    axes.set_title(f"{result.runs} runs, best arm {result.spec.best_arm}")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    with atomic_path(target, suffix=".png") as temporary:
        figure.savefig(temporary, format="png", dpi=120)
    return target


def _check_policies(policies: Sequence[str]) -> list[str]:
    if isinstance(policies, str):
        policies = [p.strip() for p in policies.split(",") if p.strip()]
    names = list(policies)
    if not names:
        raise InvalidInputError("name at least one policy, e.g. default,ucb1-reference")
    known = simulation_policies()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidInputError(
            f"unknown policy {', '.join(map(repr, unknown))}; choose from {', '.join(known)}"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidInputError(f"policy {', '.join(map(repr, repeated))} is named twice")
    return names


def _positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidInputError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise InvalidInputError(f"seed must be a non-negative integer, got {value!r}")
    return int(value)
