"""What an evaluation of a reward model reports, as typed objects.

Each has ``to_json()``: the plain JSON object that ``prefloop reward eval|cv|fit --json`` prints
and writes (keys in a fixed order; an undefined figure, NaN, as null; intervals as two-item
lists). A figure's 95% interval sits in ``ci`` under the figure's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from prefloop.reward._data import FoldGrouping
from prefloop.reward._manifest import to_jsonable

__all__ = [
    "BaselineGain",
    "CandidateScore",
    "CrossValidation",
    "GroupedBy",
    "Interval",
    "PairBaselines",
    "PairReport",
    "RatingBaselines",
    "RatingReport",
    "Resampled",
    "WithinInput",
]

Interval = tuple[float, float]
"""A percentile-bootstrap 95% interval ``(low, high)``; ``(nan, nan)`` when undefined."""


def _intervals(ci: Mapping[str, Interval]) -> dict[str, list[float]]:
    return {key: list(value) for key, value in ci.items()}


@dataclass(frozen=True)
class Resampled:
    """What the bootstrap drew: single items, or whole groups (inputs, prompts)."""

    unit: Literal["item", "group"]
    count: int

    def to_json(self) -> dict[str, Any]:
        return {"unit": self.unit, "count": self.count}


@dataclass(frozen=True)
class BaselineGain:
    """The model's paired advantage over its baseline (``figure``: what it is called, e.g.
    ``mse_reduction``), its interval, and whether the interval excludes 0."""

    figure: str
    value: float
    ci: Interval
    beats_baseline: bool

    def to_json(self) -> dict[str, Any]:
        return {self.figure: self.value, "ci": list(self.ci), "beats_baseline": self.beats_baseline}


@dataclass(frozen=True)
class WithinInput:
    """How often the model orders two differently rated texts of one input as the rater did,
    next to "the longer text wins" (see :func:`prefloop.reward.evaluate.within_input_report`)."""

    pairs: int
    inputs: int
    ordered_right: float
    longer_wins: float
    ci: Mapping[str, Interval]
    vs_baseline: BaselineGain

    def to_json(self) -> dict[str, Any]:
        return {
            "pairs": self.pairs,
            "inputs": self.inputs,
            "ordered_right": self.ordered_right,
            "longer_wins": self.longer_wins,
            "ci": _intervals(self.ci),
            "vs_baseline": self.vs_baseline.to_json(),
        }


@dataclass(frozen=True)
class RatingBaselines:
    """The baseline that predicts the training mean for every item; ``mean`` is that mean when
    one model's training mean was used (out of fold, each fold has its own)."""

    mse: float
    mae: float
    mean: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mse": self.mse, "mae": self.mae}
        if self.mean is not None:
            out["mean"] = self.mean
        return out


@dataclass(frozen=True)
class PairBaselines:
    """Accuracy of "the shorter reply wins" and of a Bradley–Terry model on length alone."""

    shorter_wins: float
    length_model: float

    def to_json(self) -> dict[str, Any]:
        return {"shorter_wins": self.shorter_wins, "length_model": self.length_model}


@dataclass(frozen=True)
class CrossValidation:
    """What cross-validation adds to a report: the in-sample figures of the same fits
    (averaged over folds; ``unscored`` summed), the train-minus-CV gap of the main figure, and
    the number of folds."""

    train: Mapping[str, float]
    gap: Mapping[str, float]
    folds: int

    def to_json(self) -> dict[str, Any]:
        return {"gap": dict(self.gap), "train": dict(self.train), "folds": self.folds}


@dataclass(frozen=True)
class RatingReport:
    """A rating model measured on rated texts: errors and correlations next to the
    training-mean baseline, with intervals; items without a score counted in ``unscored``."""

    n: int
    unscored: int
    mse: float
    mae: float
    spearman: float
    pearson: float
    baseline: RatingBaselines
    ci: Mapping[str, Interval]
    vs_baseline: BaselineGain
    resampled: Resampled
    within_input: WithinInput | None = None
    cross_validation: CrossValidation | None = None
    """Set when the figures are out of fold (:func:`prefloop.reward.cross_validate`)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n": self.n,
            "unscored": self.unscored,
            "mse": self.mse,
            "mae": self.mae,
            "spearman": self.spearman,
            "pearson": self.pearson,
            "baseline": self.baseline.to_json(),
            "ci": _intervals(self.ci),
            "vs_baseline": self.vs_baseline.to_json(),
            "resampled": self.resampled.to_json(),
        }
        if self.within_input is not None:
            out["within_input"] = self.within_input.to_json()
        if self.cross_validation is not None:
            out.update(self.cross_validation.to_json())
        return dict(to_jsonable(out))


@dataclass(frozen=True)
class PairReport:
    """A pairwise model measured on preference pairs: accuracy next to the length baselines,
    with intervals; pairs without a probability counted in ``unscored``."""

    n: int
    unscored: int
    accuracy: float
    log_loss: float
    baseline: PairBaselines
    ci: Mapping[str, Interval]
    vs_baseline: BaselineGain
    resampled: Resampled
    cross_validation: CrossValidation | None = None
    """Set when the figures are out of fold (:func:`prefloop.reward.cross_validate`)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n": self.n,
            "unscored": self.unscored,
            "accuracy": self.accuracy,
            "log_loss": self.log_loss,
            "baseline": self.baseline.to_json(),
            "ci": _intervals(self.ci),
            "vs_baseline": self.vs_baseline.to_json(),
            "resampled": self.resampled.to_json(),
        }
        if self.cross_validation is not None:
            out.update(self.cross_validation.to_json())
        return dict(to_jsonable(out))


@dataclass(frozen=True)
class CandidateScore:
    """One candidate of ``auto`` cross-validated on the shared folds."""

    mse: float
    mae: float
    spearman: float
    pearson: float
    ci: Mapping[str, Interval]
    unscored: int
    train_mse: float

    @classmethod
    def of(cls, report: RatingReport) -> CandidateScore:
        train = report.cross_validation.train if report.cross_validation else {}
        return cls(
            mse=report.mse,
            mae=report.mae,
            spearman=report.spearman,
            pearson=report.pearson,
            ci=report.ci,
            unscored=report.unscored,
            train_mse=float(train.get("mse", float("nan"))),
        )

    def to_json(self) -> dict[str, Any]:
        return dict(
            to_jsonable(
                {
                    "mse": self.mse,
                    "mae": self.mae,
                    "spearman": self.spearman,
                    "pearson": self.pearson,
                    "ci": _intervals(self.ci),
                    "unscored": self.unscored,
                    "train_mse": self.train_mse,
                }
            )
        )


GroupedBy = FoldGrouping | Literal["prompt"]
"""What the folds kept together: copies of a text, drafts of one input, or (pairs) a prompt."""
