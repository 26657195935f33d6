"""The reference project's experiment, redone: a simulated user over real generations.

The reference project (a photo-diary app choosing among four prompts) let a reward model play
the user: each iteration its UCB1 picked a prompt, GPT-4o wrote a diary, the reward model scored
it, for 200 iterations, and it plotted each prompt's running mean reward.

Here the generations are real outputs of each arm from a demo store (the local LLM's diaries);
the simulated user rates each of them once:

``reward-model``
    a rating reward model fitted on the store's ratings, cross-fitted (each text is scored by a
    model that did not see it), its prediction snapped to the nearest level of the scale — a
    user answers on the five-level scale, not with a regression output;
``rubric``
    the demo's rubric scorer.

Each arm's ratings form a pool; a policy's pull of an arm draws one rating from its pool at
random (with replacement: the empirical distribution is the arm's reward distribution). Policies
— prefloop's ``default`` against the reference's ``ucb1-reference`` — run for 200 iterations,
many times with different seeds, via :func:`prefloop.bandit.simulate`; regret is exact because
the pools' means are known. Uniform allocation's expected regret is the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from sqlalchemy import select

from prefloop._files import atomic_path
from prefloop.bandit import ArmSpec, SimulationResult, SimulationSpec, plot_regret, simulate
from prefloop.demo._report import _color, _figure
from prefloop.demo._reward import DEFAULT_MODEL, out_of_fold_scores
from prefloop.demo._rubric import RubricScorer
from prefloop.demo._task import DIARY, DemoTask
from prefloop.errors import InvalidInputError
from prefloop.reward import rating_data_from_store
from prefloop.store import Store
from prefloop.store.models import DEFAULT_SCALE, Arm, Generation
from prefloop.store.repo import get_task

__all__ = [
    "SIMULATED_USERS",
    "ArmPool",
    "ReferenceConfig",
    "ReferenceResult",
    "SimulatedUser",
    "plot_reward_distribution",
    "reference_pools",
    "run_reference_experiment",
    "simulate_reference",
]

SimulatedUser = Literal["reward-model", "rubric"]
SIMULATED_USERS: tuple[str, ...] = get_args(SimulatedUser)
Z95 = 1.959963984540054


@dataclass(frozen=True)
class ReferenceConfig:
    """Settings of the reference experiment."""

    iterations: int = 200
    """Decisions per run (the reference project's horizon)."""
    runs: int = 200
    """Independent runs (seeds) per policy."""
    policies: tuple[str, ...] = ("default", "ucb1-reference")
    user: SimulatedUser = "reward-model"
    """Who rates the real generations (module docstring)."""
    folds: int = 5
    """Cross-fitting folds of the reward-model user."""
    model: str = DEFAULT_MODEL
    """The reward model's ``REGRESSOR[:FEATURES]`` or ``auto``."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.runs < 1:
            raise InvalidInputError(
                f"iterations and runs must be >= 1, got {self.iterations} and {self.runs}"
            )
        if self.user not in SIMULATED_USERS:
            raise InvalidInputError(
                f"unknown simulated user {self.user!r}; choose one of {', '.join(SIMULATED_USERS)}"
            )
        if not self.policies:
            raise InvalidInputError("name at least one policy, e.g. default,ucb1-reference")


@dataclass(frozen=True)
class ArmPool:
    """One arm's real generations as the simulated user rated them."""

    name: str
    ratings: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.ratings))

    @property
    def interval(self) -> tuple[float, float]:
        """95% normal-approximation interval of the mean (the pool is the whole population
        the simulation draws from; the interval says how well it pins the arm's true mean)."""
        n = len(self.ratings)
        half = Z95 * float(np.std(self.ratings, ddof=1)) / math.sqrt(n) if n > 1 else math.inf
        return (self.mean - half, self.mean + half)

    def spec(self) -> ArmSpec:
        values, counts = np.unique(np.asarray(self.ratings), return_counts=True)
        return ArmSpec(
            values=tuple(float(v) for v in values),
            probs=tuple(float(c) for c in counts / counts.sum()),
        )


@dataclass
class ReferenceResult:
    """Pools, the simulation of each policy over them, and how good the simulated user is."""

    config: ReferenceConfig
    pools: list[ArmPool]
    simulation: SimulationResult
    user: dict[str, Any] = field(default_factory=dict)
    """The simulated user: its kind and, for a reward model, its cross-validated figures."""
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def uniform_regret(self) -> float:
        """Expected regret of uniform allocation over the iterations (the baseline)."""
        means = np.array([pool.mean for pool in self.pools])
        return float(self.config.iterations * (means.max() - means.mean()))

    def to_json(self) -> dict[str, Any]:
        summary = self.simulation.summary()
        return {
            "user": self.user,
            "iterations": self.config.iterations,
            "runs": self.config.runs,
            "seed": self.config.seed,
            "arms": {
                pool.name: {
                    "n": len(pool.ratings),
                    "mean": round(pool.mean, 4),
                    "ci": [round(v, 4) for v in pool.interval],
                    "levels": {
                        f"{v:g}": round(p, 4)
                        for v, p in zip(pool.spec().values, pool.spec().probs, strict=True)
                    },
                }
                for pool in self.pools
            },
            "best_arm": summary.best_arm,
            "policies": summary.to_json()["policies"],
            "uniform_regret": round(self.uniform_regret, 4),
            "files": {k: str(v) for k, v in self.files.items()},
        }


def reference_pools(
    store: Store,
    task: str,
    *,
    user: SimulatedUser = "reward-model",
    folds: int = 5,
    seed: int = 0,
    model: str = DEFAULT_MODEL,
    spec: DemoTask = DIARY,
) -> tuple[list[ArmPool], dict[str, Any]]:
    """Each arm's real generations in ``store``, rated by the simulated ``user``.

    Returns the pools (arms with at least one rated generation, in arm order) and a description
    of the user (for the reward model: its cross-validated report against the baseline).
    """
    data = rating_data_from_store(store, task)
    with store.session(readonly=True) as session:
        task_row = get_task(session, task)
        scale = tuple(float(v) for v in task_row.scale)
        # The same rows, in the same order, as rating_data_from_store reads.
        rows = session.execute(
            select(Generation.arm_id, Generation.input)
            .where(
                Generation.task_id == task_row.id,
                Generation.status == "ok",
                Generation.reward.is_not(None),
                Generation.output.is_not(None),
            )
            .order_by(Generation.created_at, Generation.id)
        ).all()
        arm_rows = session.execute(select(Arm.id, Arm.name).where(Arm.task_id == task_row.id))
        names = {int(arm_id): str(name) for arm_id, name in arm_rows.all()}
    if len(rows) != len(data):
        raise InvalidInputError(
            f"the store changed while it was read ({len(rows)} vs {len(data)} rated "
            "generations); run the experiment again"
        )
    about: dict[str, Any] = {"kind": user, "ratings": len(data), "scale": list(scale)}
    if user == "rubric":
        scorer = RubricScorer(scale=scale)
        ratings = np.array(
            [
                scorer.score(text, spec.facts(inputs)).value
                for text, (_arm, inputs) in zip(data.texts, rows, strict=True)
            ]
        )
    else:
        oof = out_of_fold_scores(data, folds=folds, seed=seed, model=model)
        levels = np.asarray(scale)
        ratings = levels[np.abs(oof.predictions[:, None] - levels[None, :]).argmin(axis=1)]
        report = oof.report
        about |= {
            "model": model,
            "cv_mse": report.mse,
            "baseline_mse": report.baseline.mse,
            "beats_baseline": report.vs_baseline.beats_baseline,
            "agreement_with_ratings": float(np.mean(ratings == data.ratings)),
        }
    by_arm: dict[int, list[float]] = {}
    for (arm_id, _inputs), rating in zip(rows, ratings, strict=True):
        if arm_id is not None:
            by_arm.setdefault(int(arm_id), []).append(float(rating))
    pools = [ArmPool(names[arm_id], tuple(by_arm[arm_id])) for arm_id in sorted(by_arm)]
    return pools, about


def simulate_reference(
    pools: Sequence[ArmPool], config: ReferenceConfig | None = None
) -> SimulationResult:
    """Run each policy ``config.runs`` times for ``config.iterations`` decisions, each pull
    drawing a rating from the chosen arm's pool."""
    config = config or ReferenceConfig()
    if len(pools) < 2:
        raise InvalidInputError(
            f"the experiment needs at least two arms with rated generations, got {len(pools)}"
        )
    spec = SimulationSpec({pool.name: pool.spec() for pool in pools})
    marks = sorted({c for c in (50, 100) if c < config.iterations})
    return simulate(
        spec,
        list(config.policies),
        horizon=config.iterations,
        runs=config.runs,
        seed=config.seed,
        checkpoints=marks,
    )


def run_reference_experiment(
    store: Store, task: str, out_dir: Path, config: ReferenceConfig | None = None
) -> ReferenceResult:
    """Pools from ``store``, the simulation, and two plots in ``out_dir``: the reward
    distribution per arm and each policy's regret."""
    config = config or ReferenceConfig()
    pools, about = reference_pools(
        store, task, user=config.user, folds=config.folds, seed=config.seed, model=config.model
    )
    result = ReferenceResult(config, pools, simulate_reference(pools, config), about)
    out_dir.mkdir(parents=True, exist_ok=True)
    result.files["distribution_png"] = plot_reward_distribution(
        pools, out_dir / "reference_distribution.png", user=config.user, scale=about["scale"]
    )
    result.files["regret_png"] = plot_regret(result.simulation, out_dir / "reference_regret.png")
    return result


def plot_reward_distribution(
    pools: Sequence[ArmPool],
    path: Path,
    *,
    user: str = "",
    scale: Sequence[float] = DEFAULT_SCALE,
) -> Path:
    """Each arm's ratings as shares of the scale's levels, with the mean and its interval."""
    from matplotlib import colormaps

    figure = _figure((8.0, 0.7 * max(len(pools), 2) + 1.8))
    bars, means = figure.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    levels = sorted({float(v) for v in scale} | {v for pool in pools for v in pool.ratings})
    lo, hi = levels[0], levels[-1]
    cmap = colormaps["RdYlGn"]
    y = np.arange(len(pools))[::-1]
    left = np.zeros(len(pools))
    for level in levels:
        shares = np.array([np.mean(np.asarray(p.ratings) == level) for p in pools])
        bars.barh(
            y,
            shares,
            left=left,
            color=cmap((level - lo) / (hi - lo) if hi > lo else 0.5),
            edgecolor="white",
            label=f"{level:+g}",
        )
        left += shares
    bars.set_yticks(y, [f"{p.name} (n={len(p.ratings)})" for p in pools])
    bars.set_xlim(0, 1)
    bars.set_xlabel("share of ratings")
    bars.legend(
        title="rating",
        ncols=len(levels),
        fontsize=8,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        frameon=False,
    )
    for k, (row, pool) in enumerate(zip(y, pools, strict=True)):
        low, high = pool.interval
        means.hlines(row, max(low, lo - 0.5), min(high, hi + 0.5), color=_color(k), linewidth=2)
        means.plot([pool.mean], [row], "o", color=_color(k), markersize=8)
    means.set_xlim(lo - 0.1, hi + 0.1)
    means.axvline(0.0, color="grey", linewidth=0.6)
    means.set_xlabel("mean rating, 95% interval")
    means.grid(True, axis="x", alpha=0.3)
    figure.suptitle(
        "Reward distribution per arm" + (f" (simulated user: {user})" if user else ""),
        fontsize=11,
    )
    figure.tight_layout()
    with atomic_path(path, suffix=path.suffix) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    return path
