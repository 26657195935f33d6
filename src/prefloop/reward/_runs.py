"""Whole evaluation runs, as ``prefloop reward eval`` and ``cv`` do them: a fitted model on a
data set (scored in chunks, so progress moves and a judge's calls go out in batches), and a
model spec cross-validated next to the candidates ``auto`` chooses from, on the same folds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from prefloop.reward._classes import ModelSpec, make_reward_model
from prefloop.reward._data import Array, PairData, RatingData
from prefloop.reward._model import ProgressCallback, RewardModel
from prefloop.reward._reports import CandidateScore, GroupedBy, PairReport, RatingReport
from prefloop.reward.evaluate import (
    BOOTSTRAP_SAMPLES,
    Folds,
    cross_validate,
    evaluate_pairs,
    evaluate_ratings,
    make_folds,
)

__all__ = [
    "SCORE_CHUNK",
    "Evaluation",
    "SpecCrossValidation",
    "cross_validate_spec",
    "evaluate_model",
    "preferences_in_chunks",
    "score_in_chunks",
]

SCORE_CHUNK = 64
"""Texts (or pairs) scored per call: progress moves between calls, and an LLM judge gets that
many concurrent requests."""


def _no_progress(what: str, done: int, total: int) -> None:
    return None


def score_in_chunks(
    model: RewardModel,
    texts: Sequence[str],
    prompts: Sequence[str | None],
    progress: ProgressCallback | None = None,
) -> Array:
    """``model.score`` in chunks of :data:`SCORE_CHUNK`; NaN where the model gave no score."""
    report = progress or _no_progress
    texts, prompts = list(texts), list(prompts)
    out = np.full(len(texts), np.nan)
    for start in range(0, len(texts), SCORE_CHUNK):
        report("scoring", start, len(texts))
        stop = start + SCORE_CHUNK
        out[start:stop] = model.score(texts[start:stop], prompts[start:stop])
    report("scoring", len(texts), len(texts))
    return out


def preferences_in_chunks(
    model: RewardModel, pairs: PairData, progress: ProgressCallback | None = None
) -> Array:
    """``model.preference_probability`` in chunks, like :func:`score_in_chunks`."""
    report = progress or _no_progress
    out = np.full(len(pairs), np.nan)
    for start in range(0, len(pairs), SCORE_CHUNK):
        report("scoring pairs", start, len(pairs))
        chunk = np.arange(start, min(start + SCORE_CHUNK, len(pairs)))
        out[chunk] = model.preference_probability(pairs.subset(chunk))
    report("scoring pairs", len(pairs), len(pairs))
    return out


@dataclass(frozen=True)
class Evaluation:
    """A fitted model measured on a data set, and what it predicted there."""

    report: RatingReport | PairReport
    predictions: Array
    """Rating: each text's score; pairwise: P(chosen ≻ rejected); NaN where none."""


def evaluate_model(
    model: RewardModel,
    data: RatingData | PairData,
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> Evaluation:
    """:func:`~prefloop.reward.evaluate.evaluate_ratings` or
    :func:`~prefloop.reward.evaluate.evaluate_pairs`, as ``model``'s kind needs, scoring in
    chunks."""
    if isinstance(data, RatingData):
        pred = score_in_chunks(model, data.texts, data.prompts, progress)
        rating = evaluate_ratings(model, data, predictions=pred, samples=samples, seed=seed)
        return Evaluation(rating, pred)
    p_model = preferences_in_chunks(model, data, progress)
    pairs = evaluate_pairs(model, data, probabilities=p_model, samples=samples, seed=seed)
    return Evaluation(pairs, p_model)


@dataclass(frozen=True)
class SpecCrossValidation:
    """A model spec cross-validated (:func:`cross_validate_spec`): its out-of-fold report and,
    for ``auto`` on ratings, how each candidate it chooses from did on the same folds."""

    model: str
    report: RatingReport | PairReport
    group_by: GroupedBy
    seconds: float
    candidates: Mapping[str, CandidateScore]
    """Candidate spec → its figures (empty unless the spec was ``auto`` on ratings)."""
    predictions: Array
    """The spec's out-of-fold predictions (see :class:`prefloop.reward.CVResult`)."""
    folds: Folds

    def to_json(self) -> dict[str, Any]:
        out = self.report.to_json()
        if self.candidates:
            out["models"] = {spec: score.to_json() for spec, score in self.candidates.items()}
        out["model"] = self.model
        out["group_by"] = self.group_by
        out["seconds"] = round(self.seconds, 2)
        return out


def cross_validate_spec(
    spec: ModelSpec,
    data: RatingData | PairData,
    *,
    folds: int = 5,
    samples: int = BOOTSTRAP_SAMPLES,
    progress: ProgressCallback | None = None,
    compare_candidates: bool = True,
) -> SpecCrossValidation:
    """Cross-validate the model ``spec`` makes on ``folds`` folds (seeded by ``spec.seed``,
    grouped by ``spec.group_by``; pairs by prompt, see
    :func:`~prefloop.reward.evaluate.make_folds`) and, with ``compare_candidates`` for ``auto``
    on ratings, each of its candidates on the same folds."""
    from prefloop.reward.rating import RatingModelConfig

    make_reward_model(spec)  # a bad spec fails before the folds are built
    by = spec.group_by if isinstance(data, RatingData) else "text"
    split = make_folds(data, folds, seed=spec.seed, by=by)

    def run(candidate: ModelSpec) -> Any:
        return cross_validate(
            lambda: make_reward_model(candidate),
            data,
            split,
            samples=samples,
            seed=spec.seed,
            progress=progress,
            label=f"cross-validating {candidate.model}",
        )

    result = run(spec)
    scores: dict[str, CandidateScore] = {}
    if isinstance(data, RatingData) and spec.model == "auto" and compare_candidates:
        for candidate in spec.candidates or RatingModelConfig().candidates:
            candidate_report = run(replace(spec, model=candidate, candidates=None)).report
            scores[candidate] = CandidateScore.of(candidate_report)
    return SpecCrossValidation(
        model=spec.model,
        report=result.report,
        group_by=by if isinstance(data, RatingData) else "prompt",
        seconds=result.seconds,
        candidates=scores,
        predictions=result.predictions,
        folds=split,
    )
