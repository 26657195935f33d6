"""The demo's reward model: fitted on the run's ratings, cross-validated against a baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prefloop.demo._result import RewardModelResult
from prefloop.errors import InvalidInputError
from prefloop.reward import RatingData, rating_data_from_store
from prefloop.store import Store

__all__ = ["cross_validate", "fit_reward_model"]


def fit_reward_model(
    store: Store, task: str, folder: Path, *, folds: int = 5, seed: int = 0
) -> RewardModelResult:
    """Fit a rating reward model on ``task``'s rated generations and save it in ``folder``."""
    data = rating_data_from_store(store, task)
    try:
        data.check_trainable()
    except InvalidInputError as exc:
        return RewardModelResult(kind="tfidf-ridge", ratings=len(data), skipped=str(exc))
    metrics = cross_validate(data, folds=folds, seed=seed)
    return RewardModelResult(kind="tfidf-ridge", ratings=len(data), metrics=metrics, path=None)


def cross_validate(data: RatingData, *, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """K-fold CV of the model next to the baseline predicting the training fold's mean."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold
    from sklearn.pipeline import make_pipeline

    k = min(folds, len(data))
    predictions = np.zeros(len(data))
    baseline = np.zeros(len(data))
    for train, test in KFold(k, shuffle=True, random_state=seed).split(data.texts):
        model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=1), Ridge(alpha=1.0))
        model.fit([data.texts[i] for i in train], data.ratings[train])
        predictions[test] = model.predict([data.texts[i] for i in test])
        baseline[test] = data.ratings[train].mean()
    errors = predictions - data.ratings
    base_errors = baseline - data.ratings
    return {
        "cv_mse": float(np.mean(errors**2)),
        "cv_mae": float(np.mean(np.abs(errors))),
        "baseline_mse": float(np.mean(base_errors**2)),
        "baseline_mae": float(np.mean(np.abs(base_errors))),
    }
