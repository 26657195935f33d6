"""The demo's reward model: fitted on the run's ratings, cross-validated against a baseline.

It is prefloop's rating model (:class:`prefloop.reward.rating.SklearnRatingModel`): text
statistics (and, when they help, sentence embeddings) with a scikit-learn regressor chosen by
inner cross-validation. Its figures come from an outer cross-validation on the same ratings,
next to the baseline that predicts each training fold's mean rating — the number a reward model
has to beat before it is worth anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from prefloop.demo._result import RewardModelResult
from prefloop.errors import InvalidInputError
from prefloop.reward import RatingData, RatingReport, rating_data_from_store
from prefloop.store import Store

__all__ = ["DEFAULT_MODEL", "OutOfFold", "fit_reward_model", "out_of_fold_scores"]

DEFAULT_MODEL = "auto"
"""``auto`` (inner CV picks among prefloop's candidates) or ``REGRESSOR[:FEATURES]``."""
BOOTSTRAP_SAMPLES = 300


@dataclass(frozen=True)
class OutOfFold:
    """Each rated text's prediction by a model that did not see it (K-fold cross-fitting)."""

    data: RatingData
    predictions: NDArray[np.float64]
    report: RatingReport


def out_of_fold_scores(
    data: RatingData, *, folds: int = 5, seed: int = 0, model: str = DEFAULT_MODEL
) -> OutOfFold:
    """Cross-validate a rating model on ``data``; the held-out predictions and the report."""
    from prefloop.reward.evaluate import cross_validate, make_folds
    from prefloop.reward.rating import RatingModelConfig, SklearnRatingModel

    data.check_trainable()
    k = max(2, min(folds, len(set(data.texts))))
    split = make_folds(data, k, seed=seed)
    result = cross_validate(
        lambda: SklearnRatingModel(RatingModelConfig(model=model, seed=seed)),
        data,
        split,
        samples=BOOTSTRAP_SAMPLES,
        seed=seed,
    )
    assert isinstance(result.report, RatingReport)
    return OutOfFold(data=data, predictions=result.predictions, report=result.report)


def fit_reward_model(
    store: Store,
    task: str,
    folder: Path,
    *,
    folds: int = 5,
    seed: int = 0,
    model: str = DEFAULT_MODEL,
) -> RewardModelResult:
    """Fit a rating reward model on ``task``'s rated generations, cross-validate it, save it in
    ``folder`` and record it in the store's registry. Data a model cannot learn from (too few
    ratings, all on one level) gives a result that says why, not an error."""
    from prefloop.reward.rating import RatingModelConfig, SklearnRatingModel
    from prefloop.reward.registry import register_folder

    data = rating_data_from_store(store, task)
    try:
        oof = out_of_fold_scores(data, folds=folds, seed=seed, model=model)
    except InvalidInputError as exc:
        return RewardModelResult(kind=f"rating:{model}", ratings=len(data), skipped=str(exc))
    report = oof.report
    fitted = SklearnRatingModel(RatingModelConfig(model=model, seed=seed)).fit(data)
    fitted.metrics = {"cross_validation": report.to_json()}
    path = fitted.save(folder)
    register_folder(store, path, name=f"{task}-demo-reward", task=task)
    gain = report.vs_baseline
    metrics = {
        "cv_mse": report.mse,
        "cv_mae": report.mae,
        "cv_spearman": report.spearman,
        "baseline_mse": report.baseline.mse,
        "baseline_mae": report.baseline.mae,
        "mse_reduction": gain.value,
        "mse_reduction_ci_low": gain.ci[0],
        "mse_reduction_ci_high": gain.ci[1],
    }
    return RewardModelResult(
        kind=f"rating:{fitted.chosen}",
        ratings=len(data),
        metrics=metrics,
        path=path,
        beats_baseline=gain.beats_baseline,
    )
