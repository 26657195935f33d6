"""What a demo run produced, as plain data: what the report draws and ``--json`` prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefloop.demo._train import TrainedArmResult

__all__ = ["ArmResult", "DemoResult", "Example", "ProposalOutcome", "RewardModelResult"]


@dataclass(frozen=True)
class Example:
    """One output shown in the report, with the rubric's verdict on it."""

    arm: str
    inputs: dict[str, str]
    output: str
    rating: float
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class ArmResult:
    """One prompt's record in the run."""

    name: str
    arm_id: int
    template: str
    created_by: str
    """``human`` (the hand-written prompt), ``proposer`` (written by the LLM) or ``fallback``
    (a documented hand-written variant used because the proposer's templates were rejected)."""
    rated: int
    """Generations of this arm with a reward."""
    failed: int
    """Generations of this arm whose LLM call failed (no reward)."""
    mean: float | None
    """Posterior mean reward: the estimator :attr:`interval` is for (it lies inside it)."""
    interval: tuple[float, float] | None
    """95% credible interval of the mean reward (from :func:`prefloop.bandit.arm_stats`)."""
    share: float
    """Fraction of the bandit's decisions that chose this arm."""
    p_best: float | None
    """Posterior probability that this arm is the best."""
    raw_mean: float | None = None
    """The plain average of the arm's rewards (not the interval's estimator)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arm_id": self.arm_id,
            "template": self.template,
            "created_by": self.created_by,
            "rated": self.rated,
            "failed": self.failed,
            "mean": _round(self.mean),
            "ci": None if self.interval is None else [_round(v) for v in self.interval],
            "raw_mean": _round(self.raw_mean),
            "share": _round(self.share),
            "p_best": _round(self.p_best),
        }


@dataclass(frozen=True)
class ProposalOutcome:
    """How the candidates came to be: the LLM's accepted templates, rejections, fallbacks."""

    accepted: tuple[str, ...] = ()
    """Names of arms written by the LLM."""
    rejected: tuple[tuple[str, str], ...] = ()
    """(template, reason) of every proposal that was refused."""
    errors: tuple[str, ...] = ()
    fallbacks: tuple[str, ...] = ()
    """Names of hand-written variants added because too few proposals were usable."""
    reused: bool = False
    """True when the store already held the task's arms (a second run into the same folder)."""
    llm_calls: int = 0

    @property
    def message(self) -> str:
        if self.reused:
            return "the store already holds the demo's arms; they were reused"
        text = f"the LLM wrote {len(self.accepted)} usable candidate prompt(s)"
        if self.fallbacks:
            text += (
                f"; {len(self.rejected)} proposal(s) were rejected"
                + (f" and {len(self.errors)} call(s) failed" if self.errors else "")
                + f", so {len(self.fallbacks)} documented hand-written variant(s) were used "
                f"instead: {', '.join(self.fallbacks)}"
            )
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": list(self.accepted),
            "rejected": [{"template": t, "reason": r} for t, r in self.rejected],
            "errors": list(self.errors),
            "fallbacks": list(self.fallbacks),
            "reused": self.reused,
            "llm_calls": self.llm_calls,
            "message": self.message,
        }


@dataclass(frozen=True)
class RewardModelResult:
    """A reward model fitted on the run's ratings, with cross-validated error next to the
    baseline that predicts the training mean."""

    kind: str
    ratings: int
    metrics: dict[str, float] = field(default_factory=dict)
    """Cross-validated figures (``cv_mse``, ``cv_mae``, …) and the baseline's."""
    path: Path | None = None
    beats_baseline: bool | None = None
    """Whether the bootstrap interval of the MSE reduction over the baseline lies above 0."""
    skipped: str | None = None
    """Why no model was fitted (e.g. every rating is the same)."""

    @property
    def summary(self) -> str:
        if self.skipped:
            return f"not fitted: {self.skipped}"
        m = self.metrics
        return (
            f"{self.kind} on {self.ratings} ratings: cross-validated MSE {m['cv_mse']:.3f} "
            f"(MAE {m['cv_mae']:.3f}) vs {m['baseline_mse']:.3f} ({m['baseline_mae']:.3f}) for "
            f"the training mean; {self.verdict}"
        )

    @property
    def verdict(self) -> str:
        """Whether it beats the baseline, as the bootstrap interval says."""
        low = self.metrics.get("mse_reduction_ci_low")
        interval = "" if low is None else f" (from {low:+.3f})"
        if self.beats_baseline:
            return (
                f"it beats the baseline: the 95% interval of its MSE reduction is above 0{interval}"
            )
        return (
            "not clearly better than the baseline: the 95% interval of its MSE reduction "
            f"includes 0{interval}; more ratings would tell"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "ratings": self.ratings,
            "metrics": {k: _round(v) for k, v in self.metrics.items()},
            "path": None if self.path is None else str(self.path),
            "beats_baseline": self.beats_baseline,
            "skipped": self.skipped,
        }


@dataclass
class DemoResult:
    """Everything one ``prefloop demo`` run measured."""

    task: str
    database_url: str
    out_dir: Path
    policy: str
    model: str
    arms: list[ArmResult]
    chosen: list[str]
    """The arm of each bandit decision, in order (for regret and allocation plots)."""
    recommended: str | None
    confidence: float
    """Posterior probability that ``recommended`` is the best arm."""
    confident: bool
    """Whether ``confidence`` reached the stopping threshold."""
    threshold: float
    regret_policy: float
    """Cumulative regret of the bandit's choices against the best arm's estimated mean."""
    regret_uniform: float
    """Expected regret of uniform allocation over the same number of decisions."""
    regret_curve: list[float] = field(default_factory=list)
    uniform_curve: list[float] = field(default_factory=list)
    requests: int = 0
    generated: int = 0
    failed: int = 0
    rated: int = 0
    llm_errors: dict[str, int] = field(default_factory=dict)
    """The distinct errors of this run's failed LLM calls, with how often each occurred."""
    proposal: ProposalOutcome = field(default_factory=ProposalOutcome)
    reward_model: RewardModelResult | None = None
    examples: list[Example] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    trained: TrainedArmResult | None = None
    """With ``--train``: the model arm trained on the ratings, against the best prompt."""

    def arm(self, name: str) -> ArmResult:
        return next(a for a in self.arms if a.name == name)

    @property
    def collected_rewards(self) -> bool:
        """Whether any output was rated: without that the run could not do its job (every
        LLM call failed) and recommends nothing."""
        return any(arm.rated for arm in self.arms)

    def failure_summary(self) -> str | None:
        """One line on the failed LLM calls and their distinct errors (None when none failed)."""
        if not self.failed:
            return None
        errors = "; ".join(f"{error} (×{n})" for error, n in self.llm_errors.items())
        return f"{self.failed} of {self.requests} LLM calls failed: {errors}"

    def to_json(self) -> dict[str, Any]:
        """The summary object ``prefloop demo --json`` prints."""
        return {
            "task": self.task,
            "database_url": self.database_url,
            "out_dir": str(self.out_dir),
            "policy": self.policy,
            "model": self.model,
            "requests": self.requests,
            "generated": self.generated,
            "failed": self.failed,
            "rated": self.rated,
            "llm_errors": [{"error": e, "count": n} for e, n in self.llm_errors.items()],
            "collected_rewards": self.collected_rewards,
            "arms": [arm.to_json() for arm in self.arms],
            "recommended": self.recommended,
            "confidence": _round(self.confidence),
            "confident": self.confident,
            "threshold": self.threshold,
            "regret_policy": _round(self.regret_policy),
            "regret_uniform": _round(self.regret_uniform),
            "proposal": self.proposal.to_json(),
            "reward_model": None if self.reward_model is None else self.reward_model.to_json(),
            "report_files": {k: str(v) for k, v in self.files.items()},
            "timings": {k: round(v, 2) for k, v in self.timings.items()},
            "notes": list(self.notes),
            "trained": None if self.trained is None else self.trained.to_json(),
        }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)
