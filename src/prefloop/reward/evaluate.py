"""Evaluation a user can trust: metrics with bootstrap intervals, next to baselines, on folds
that keep duplicates and prompts on one side.

Rating models report MSE, MAE, Spearman and Pearson against the *training mean* baseline;
pairwise models report accuracy against "the shorter reply wins" and a length-only
Bradley–Terry model. Every figure has a percentile-bootstrap 95% interval (Efron & Tibshirani,
1993), and the model-minus-baseline difference has a *paired* one (the same resampled items for
both), which is what "beats the baseline" means.

Cross-validation uses one fold assignment (:func:`make_folds`) for every model compared:
ratings are grouped by text (copies of a text stay together) or, with ``by="input"``, by the
input they were drafted from (drafts of inputs never seen), pairs by prompt (a prompt never sits
on both sides).

When rated texts share an input (several drafts of one photo), the rating report also says how
often the model orders two drafts of one input the way the rater did (``"within_input"``), next
to "the longer draft wins", with intervals from resampling inputs: what choosing the best of n
drafts, or comparing prompts on the same inputs, depends on.

A model may give no score for an item (an LLM judge whose calls all failed returns NaN): such
items are left out of every figure — the baselines too, so the comparison stays paired — and
counted as ``"unscored"`` next to ``"n"``, never turned into a 0.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.stats import kendalltau, pearsonr, spearmanr

from prefloop.errors import InvalidInputError
from prefloop.reward._data import FOLD_GROUPINGS, Array, FoldGrouping, PairData, RatingData
from prefloop.reward._model import ProgressCallback, RewardModel
from prefloop.reward._reports import (
    BaselineGain,
    CandidateScore,
    CrossValidation,
    Interval,
    PairBaselines,
    PairReport,
    RatingBaselines,
    RatingReport,
    Resampled,
    WithinInput,
)

__all__ = [
    "BaselineGain",
    "CVResult",
    "CandidateScore",
    "CrossValidation",
    "Folds",
    "PairBaselines",
    "PairReport",
    "RatingBaselines",
    "RatingReport",
    "Resampled",
    "WithinInput",
    "bootstrap_interval",
    "bootstrap_intervals",
    "cross_fitted_length_probabilities",
    "cross_validate",
    "evaluate_pairs",
    "evaluate_ratings",
    "length_model_probabilities",
    "make_folds",
    "pair_accuracy",
    "pair_report",
    "rating_report",
    "resampling_clusters",
    "shorter_wins_probabilities",
    "within_input_report",
]

Folds = list[tuple[NDArray[np.int_], NDArray[np.int_]]]
"""``[(train_index, test_index), …]``, one entry per fold."""

BOOTSTRAP_SAMPLES = 1000
CONFIDENCE = 0.95
MIN_CLUSTERS = 10
"""Fewest groups a cluster bootstrap resamples; with fewer, the groups' spread is too poorly
known to resample (Cameron, Gelbach & Miller 2008), so items are resampled one by one (rating
and pair reports) or no interval is given (the same-input ordering figure)."""


# ---------------------------------------------------------------------------------------------
# Metrics and bootstrap intervals
# ---------------------------------------------------------------------------------------------


def _safe_corr(kind: str, a: Array, b: Array) -> float:
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    value = spearmanr(a, b)[0] if kind == "spearman" else pearsonr(a, b)[0]
    return float(value)


def pair_accuracy(p: Array) -> float:
    """Share of pairs the model gets right, from each pair's P(chosen ≻ rejected); a
    probability of exactly 0.5 counts half."""
    return float(np.mean(np.where(p > 0.5, 1.0, np.where(p < 0.5, 0.0, 0.5))))


def _rating_metrics(y: Array, pred: Array) -> dict[str, float]:
    err = pred - y
    return {
        "mse": float(np.mean(err**2)),
        "mae": float(np.mean(np.abs(err))),
        "spearman": _safe_corr("spearman", pred, y),
        "pearson": _safe_corr("pearson", pred, y),
    }


def _scored(predictions: Array, what: str = "items") -> NDArray[np.bool_]:
    """The mask of items with a prediction (not NaN); an error when there is none at all."""
    mask = np.isfinite(predictions)
    if predictions.size and not mask.any():
        raise InvalidInputError(
            f"the model gave no score for any of the {predictions.size} {what}; nothing to "
            "measure (for an LLM judge: check its backend, judge.failures_ says why)"
        )
    return mask


def bootstrap_intervals(
    statistics: Callable[[NDArray[np.int_]], dict[str, float]],
    n: int,
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    clusters: NDArray[np.int_] | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of each entry of ``statistics(index)`` over ``samples``
    resamples of the ``n`` items with replacement (NaN resamples, e.g. a constant column, are
    dropped). All statistics share the resamples, so differences between them are paired.

    ``clusters`` (a group id per item, 0 … m−1) resamples whole groups instead (the cluster
    bootstrap, Davison & Hinkley 1997, §3.8): items that are not independent — the drafts of
    one photo, the pairs of one ranking — would otherwise make the interval too narrow. With
    one item per group, numbered in order, the draws are those of the plain bootstrap."""
    rng = np.random.default_rng(seed)
    if clusters is None:
        members = None
    else:
        clusters = np.asarray(clusters, dtype=np.int_).reshape(-1)
        if clusters.size != n:
            raise InvalidInputError(f"{clusters.size} cluster ids for {n} items; give one each")
        order = np.argsort(clusters, kind="stable")
        starts = np.flatnonzero(np.diff(clusters[order])) + 1
        members = np.split(order, starts)  # the items of each cluster, clusters in sorted order
    draws: dict[str, list[float]] = {}
    for _ in range(samples if n else 0):
        if members is None:
            index = rng.integers(0, n, n)
        else:
            picked = rng.integers(0, len(members), len(members))
            index = np.concatenate([members[c] for c in picked])
        for key, value in statistics(index).items():
            draws.setdefault(key, []).append(value)
    tail = (1.0 - confidence) / 2.0
    out: dict[str, tuple[float, float]] = {}
    for key in statistics(np.arange(n)) if n else {}:
        values = np.array(draws.get(key, []), dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            out[key] = (float("nan"), float("nan"))
            continue
        lo, hi = np.quantile(values, [tail, 1.0 - tail])
        out[key] = (float(lo), float(hi))
    return out


def bootstrap_interval(
    statistic: Callable[[NDArray[np.int_]], float],
    n: int,
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> tuple[float, float]:
    """Percentile bootstrap interval of one ``statistic(index)`` (:func:`bootstrap_intervals`)."""
    if n == 0:
        return (float("nan"), float("nan"))
    out = bootstrap_intervals(
        lambda i: {"value": statistic(i)}, n, samples=samples, seed=seed, confidence=confidence
    )
    return out["value"]


def _kept_clusters(
    clusters: NDArray[np.int_] | None, scored: NDArray[np.bool_]
) -> NDArray[np.int_] | None:
    """The cluster ids of the measured items, renumbered 0 … m−1 in order of appearance; None
    (resample items) without clusters, or with fewer than :data:`MIN_CLUSTERS` of them."""
    if clusters is None:
        return None
    clusters = np.asarray(clusters).reshape(-1)
    if clusters.size != scored.size:
        raise InvalidInputError(f"{clusters.size} cluster ids for {scored.size} items")
    kept = _group_ids([str(c) for c in clusters[scored]])
    return kept if kept.size and int(kept.max()) + 1 >= MIN_CLUSTERS else None


def _resampled(kept: NDArray[np.int_] | None, n: int) -> Resampled:
    """What the bootstrap drew: single items, or groups."""
    if kept is None:
        return Resampled(unit="item", count=n)
    return Resampled(unit="group", count=int(kept.max()) + 1)


def _with_intervals(
    statistics: Callable[[NDArray[np.int_]], dict[str, float]],
    n: int,
    gain: str,
    *,
    samples: int,
    seed: int,
    clusters: NDArray[np.int_] | None = None,
) -> tuple[dict[str, float], dict[str, Interval], BaselineGain]:
    """``(point, ci, vs_baseline)``: the figures on all ``n`` items, their bootstrap intervals
    (:func:`bootstrap_intervals`), and the paired model-minus-baseline entry ``gain`` of
    ``statistics`` with its interval (it beats the baseline when the interval excludes 0)."""
    point = statistics(np.arange(n))
    ci = bootstrap_intervals(statistics, n, samples=samples, seed=seed, clusters=clusters)
    gain_ci = ci.pop(gain)
    vs_baseline = BaselineGain(
        figure=gain, value=point[gain], ci=gain_ci, beats_baseline=bool(gain_ci[0] > 0)
    )
    return point, ci, vs_baseline


def rating_report(
    y: Array,
    pred: Array,
    baseline: Array,
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
    clusters: NDArray[np.int_] | None = None,
) -> RatingReport:
    """MSE, MAE, Spearman and Pearson of predictions ``pred`` of labels ``y``, next to the
    baseline's, with intervals and the paired MSE reduction (``vs_baseline``); ``baseline``
    holds the baseline's predictions (the training mean). ``clusters`` makes the intervals
    resample groups of items (:func:`bootstrap_intervals`).

    Items whose prediction is NaN (no score) are left out of every figure, the baseline's
    included, and counted in ``unscored``; ``n`` counts the items measured."""
    y, pred, baseline = (np.asarray(a, dtype=np.float64) for a in (y, pred, baseline))
    scored = _scored(pred)
    unscored = int(np.sum(~scored))
    y, pred, baseline = y[scored], pred[scored], baseline[scored]
    n = y.size
    kept = _kept_clusters(clusters, scored)

    def statistics(i: NDArray[np.int_]) -> dict[str, float]:
        out = _rating_metrics(y[i], pred[i])
        out["baseline_mse"] = float(np.mean((baseline[i] - y[i]) ** 2))
        out["baseline_mae"] = float(np.mean(np.abs(baseline[i] - y[i])))
        out["mse_reduction"] = out["baseline_mse"] - out["mse"]
        return out

    point, ci, vs_baseline = _with_intervals(
        statistics, n, "mse_reduction", samples=samples, seed=seed, clusters=kept
    )
    return RatingReport(
        n=int(n),
        unscored=unscored,
        mse=point["mse"],
        mae=point["mae"],
        spearman=point["spearman"],
        pearson=point["pearson"],
        baseline=RatingBaselines(mse=point["baseline_mse"], mae=point["baseline_mae"]),
        ci=ci,
        vs_baseline=vs_baseline,
        resampled=_resampled(kept, n),
    )


def _tied_pairs(values: Array) -> float:
    counts = np.unique(values, return_counts=True)[1].astype(np.float64)
    return float(np.sum(counts * (counts - 1) / 2))


def _ordered_right(values: Array, ratings: Array) -> tuple[float, float]:
    """Over the pairs of items rated differently: ``(pairs, ordered right)``, where ordered
    right counts the pairs ``values`` puts in the ratings' order and a tie in ``values`` half.

    Right = (pairs + S) / 2 with S = concordant − discordant pairs, the numerator of Kendall's
    tau, recovered from tau-b (Kendall 1945) so that an input with many texts costs
    O(m log m), not m² pairs."""
    m = values.size
    total = m * (m - 1) / 2
    rating_ties = _tied_pairs(ratings)
    pairs = total - rating_ties
    if pairs == 0:
        return 0.0, 0.0
    value_ties = _tied_pairs(values)
    tau = kendalltau(values, ratings).statistic if value_ties < total else float("nan")
    both = (total - value_ties) * (total - rating_ties)
    s = float(np.rint(tau * np.sqrt(both))) if np.isfinite(tau) else 0.0
    return pairs, (pairs + s) / 2


def within_input_report(
    data: RatingData,
    pred: Array,
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> WithinInput | None:
    """How often ``pred`` orders two texts of one input (``data.inputs``) that were rated
    differently the way the rater did; a tie in ``pred`` counts half. Next to it the baseline
    "the longer text wins" (characters), and their paired difference. Intervals resample the
    *inputs* (a cluster bootstrap), since the pairs of one input are not independent; with
    fewer than :data:`MIN_CLUSTERS` inputs that hold such a pair there is no interval (NaN).

    None when no input has two differently rated texts with a prediction (no input known, one
    text per input, …).
    """
    pred = np.asarray(pred, dtype=np.float64)
    members: dict[str, list[int]] = {}
    for i, key in enumerate(data.inputs):
        if key is not None and np.isfinite(pred[i]):
            members.setdefault(key, []).append(i)
    lengths = np.array([len(t) for t in data.texts], dtype=np.float64)
    rows = []  # per input: pairs rated apart, ordered right by the model, by length
    for items in members.values():
        ratings = data.ratings[items]
        pairs, model = _ordered_right(pred[items], ratings)
        if pairs:
            rows.append((pairs, model, _ordered_right(lengths[items], ratings)[1]))
    if not rows:
        return None
    table = np.array(rows)

    def statistics(i: NDArray[np.int_]) -> dict[str, float]:
        n, model, longer = (float(v) for v in table[i].sum(axis=0))
        return {"ordered_right": model / n, "longer_wins": longer / n, "gain": (model - longer) / n}

    enough = len(table) >= MIN_CLUSTERS
    point, ci, vs_baseline = _with_intervals(
        statistics, len(table), "gain", samples=samples if enough else 0, seed=seed
    )
    return WithinInput(
        pairs=int(table[:, 0].sum()),
        inputs=len(table),
        ordered_right=point["ordered_right"],
        longer_wins=point["longer_wins"],
        ci=ci,
        vs_baseline=vs_baseline,
    )


def pair_report(
    p_model: Array,
    p_shorter: Array,
    p_length: Array,
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
    clusters: NDArray[np.int_] | None = None,
) -> PairReport:
    """Accuracy (and log loss) from each model's P(chosen ≻ rejected) per pair, next to the
    baselines', with intervals and the paired accuracy gain (``vs_baseline``); the gain is over
    the better of the two baselines. Pairs the model gave no probability (NaN) are left out
    and counted in ``unscored``.
    ``clusters`` makes the intervals resample groups of pairs (:func:`bootstrap_intervals`)."""
    p_model, p_shorter, p_length = (
        np.asarray(a, dtype=np.float64) for a in (p_model, p_shorter, p_length)
    )
    scored = _scored(p_model, "pairs")
    unscored = int(np.sum(~scored))
    p_model, p_shorter, p_length = p_model[scored], p_shorter[scored], p_length[scored]
    n = p_model.size
    kept = _kept_clusters(clusters, scored)
    best_baseline = p_length if pair_accuracy(p_length) >= pair_accuracy(p_shorter) else p_shorter

    def statistics(i: NDArray[np.int_]) -> dict[str, float]:
        out = {
            "accuracy": pair_accuracy(p_model[i]),
            "shorter_wins": pair_accuracy(p_shorter[i]),
            "length_model": pair_accuracy(p_length[i]),
        }
        out["accuracy_gain"] = out["accuracy"] - pair_accuracy(best_baseline[i])
        return out

    point, ci, vs_baseline = _with_intervals(
        statistics, n, "accuracy_gain", samples=samples, seed=seed, clusters=kept
    )
    clipped = np.clip(p_model, 1e-6, 1 - 1e-6)
    return PairReport(
        n=int(n),
        unscored=unscored,
        accuracy=point["accuracy"],
        log_loss=float(-np.mean(np.log(clipped))),
        baseline=PairBaselines(
            shorter_wins=point["shorter_wins"], length_model=point["length_model"]
        ),
        ci=ci,
        vs_baseline=vs_baseline,
        resampled=_resampled(kept, n),
    )


# ---------------------------------------------------------------------------------------------
# Length baselines for pairs
# ---------------------------------------------------------------------------------------------


def shorter_wins_probabilities(data: PairData) -> Array:
    """1 where the chosen reply is shorter, 0 where it is longer, 0.5 for equal lengths."""
    diff = np.array([len(r) - len(c) for c, r in zip(data.chosen, data.rejected, strict=True)])
    return np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))


def _length_features(texts: Sequence[str]) -> Array:
    chars = np.array([len(t) for t in texts], dtype=np.float64)
    words = np.array([len(t.split()) for t in texts], dtype=np.float64)
    return np.column_stack([np.log1p(chars), np.log1p(words), chars / 1000.0])


def length_model_probabilities(train: PairData, test: PairData) -> Array:
    """A Bradley–Terry model on length alone, P = σ(w·(ℓ(c) − ℓ(r))) with ℓ = log characters,
    log words and characters, fitted on ``train`` and applied to ``test``."""
    from sklearn.linear_model import LogisticRegression

    diff = _length_features(train.chosen) - _length_features(train.rejected)
    x = np.vstack([diff, -diff])
    y = np.r_[np.ones(len(diff)), np.zeros(len(diff))]
    model = LogisticRegression(fit_intercept=False, C=1.0, max_iter=1000).fit(x, y)
    test_diff = _length_features(test.chosen) - _length_features(test.rejected)
    return np.asarray(model.predict_proba(test_diff)[:, 1], dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Folds
# ---------------------------------------------------------------------------------------------


def _normalize(text: str | None) -> str:
    return re.sub(r"\s+", " ", (text or "").strip())


def fold_groups(data: RatingData | PairData, by: FoldGrouping = "text") -> NDArray[np.int_]:
    """Group labels for CV: pairs by prompt; ratings by (whitespace-normalized) text, or with
    ``by="input"`` by ``data.inputs`` — and then copies of a text still stay together, and a
    text with no input known is its own group."""
    if by not in FOLD_GROUPINGS:
        raise InvalidInputError(
            f"unknown fold grouping {by!r}: use one of {', '.join(FOLD_GROUPINGS)}"
        )
    if isinstance(data, PairData):
        return _group_ids([_normalize(p) for p in data.prompts])
    texts = _group_ids([_normalize(t) for t in data.texts])
    if by == "text":
        return texts
    if all(key is None for key in data.inputs):
        raise InvalidInputError(
            f"folds by input need to know what each text was drafted from, but no item"
            f"{' in ' + data.source if data.source else ''} names its input: give each line an "
            '"input" object (e.g. {"image_id": …}) or a "prompt", or group folds by text'
        )
    # Union of the two relations (same text, same input): a connected-components pass.
    parent = list(range(len(data)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, Any], int] = {}
    for i, (text_id, key) in enumerate(zip(texts, data.inputs, strict=True)):
        for link in (("text", int(text_id)), ("input", key)):
            if link[1] is None:
                continue
            j = first.setdefault(link, i)
            parent[root(i)] = root(j)
    return _group_ids([str(root(i)) for i in range(len(data))])


def _group_ids(keys: Sequence[str]) -> NDArray[np.int_]:
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(k, len(ids)) for k in keys], dtype=np.int_)


def resampling_clusters(data: RatingData | PairData) -> NDArray[np.int_]:
    """Which items a bootstrap resamples together: pairs of one prompt; rated texts of one
    input (with copies of a text), or copies of a text when no input is known."""
    by_input = isinstance(data, RatingData) and any(key is not None for key in data.inputs)
    return fold_groups(data, "input" if by_input else "text")


def make_folds(
    data: RatingData | PairData, k: int = 5, *, seed: int = 0, by: FoldGrouping = "text"
) -> Folds:
    """``k`` seeded folds that never split a group (see :func:`fold_groups`; ``by`` applies to
    ratings); the same data and seed always give the same folds, so every model compared sees
    identical splits."""
    from sklearn.model_selection import GroupKFold

    groups = fold_groups(data, by)
    n_groups = int(groups.max()) + 1 if groups.size else 0
    if k < 2:
        raise InvalidInputError(f"--folds must be at least 2, got {k}")
    if n_groups < k:
        what = (
            "distinct prompts"
            if isinstance(data, PairData)
            else ("inputs" if by == "input" else "distinct texts")
        )
        raise InvalidInputError(
            f"{k}-fold cross-validation needs at least {k} {what}, but the data has {n_groups}; "
            "use fewer folds or more data"
        )
    splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
    index = np.arange(len(groups))
    return [(train, test) for train, test in splitter.split(index, groups=groups)]


# ---------------------------------------------------------------------------------------------
# Evaluation of one fitted model, and cross-validation
# ---------------------------------------------------------------------------------------------


def evaluate_ratings(
    model: RewardModel,
    data: RatingData,
    *,
    baseline_mean: float | None = None,
    predictions: Array | None = None,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> RatingReport:
    """Report for a fitted rating model on ``data``; the baseline predicts ``baseline_mean``
    (default: the model's own training mean) for every item.

    ``predictions`` are ``model.score(data.texts, data.prompts)`` when already computed (a
    judge's calls are not repeated). Items without a score (NaN) are counted in
    ``"unscored"`` and left out of the figures."""
    if len(data) == 0:
        raise InvalidInputError(f"no ratings to evaluate in {data.source or 'the data'}")
    if baseline_mean is None:
        if model.train_ is None or model.train_.mean is None:
            raise InvalidInputError("the model has no training mean; pass baseline_mean")
        baseline_mean = model.train_.mean
    pred = _checked(
        model.score(data.texts, data.prompts) if predictions is None else predictions, len(data)
    )
    report = _rating_data_report(
        data, pred, np.full(len(data), baseline_mean), samples=samples, seed=seed
    )
    return replace(report, baseline=replace(report.baseline, mean=float(baseline_mean)))


def _rating_data_report(
    data: RatingData, pred: Array, baseline: Array, *, samples: int, seed: int
) -> RatingReport:
    """:func:`rating_report` with the intervals resampling ``data``'s groups, plus
    ``within_input`` when texts share an input."""
    report = rating_report(
        data.ratings, pred, baseline, samples=samples, seed=seed, clusters=resampling_clusters(data)
    )
    within = within_input_report(data, pred, samples=samples, seed=seed)
    return report if within is None else replace(report, within_input=within)


def evaluate_pairs(
    model: RewardModel,
    data: PairData,
    *,
    folds: int = 5,
    probabilities: Array | None = None,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> PairReport:
    """Report for a fitted pairwise model on ``data``. The length-only baseline is
    cross-fitted on ``data`` itself (``folds`` folds grouped by prompt), so it is measured in
    the same run on the same pairs.

    ``probabilities`` are ``model.preference_probability(data)`` when already computed. Pairs
    without one (NaN) are counted in ``unscored`` and left out of the figures."""
    if len(data) == 0:
        raise InvalidInputError(f"no pairs to evaluate in {data.source or 'the data'}")
    p_model = _checked(
        model.preference_probability(data) if probabilities is None else probabilities,
        len(data),
    )
    p_length = cross_fitted_length_probabilities(data, folds, seed)
    return _pair_data_report(data, p_model, p_length, samples=samples, seed=seed)


def _pair_data_report(
    data: PairData, p_model: Array, p_length: Array, *, samples: int, seed: int
) -> PairReport:
    """:func:`pair_report` next to "the shorter reply wins", with the intervals resampling
    ``data``'s prompts."""
    return pair_report(
        p_model,
        shorter_wins_probabilities(data),
        p_length,
        samples=samples,
        seed=seed,
        clusters=resampling_clusters(data),
    )


def _checked(values: Array, n: int) -> Array:
    out = np.asarray(values, dtype=np.float64).reshape(-1)
    if out.size != n:
        raise InvalidInputError(f"{out.size} predictions for {n} items; give one per item")
    return out


def cross_fitted_length_probabilities(data: PairData, folds: int, seed: int) -> Array:
    groups = fold_groups(data)
    k = min(folds, int(groups.max()) + 1)
    if k < 2:
        return shorter_wins_probabilities(data)
    out = np.empty(len(data))
    for train, test in make_folds(data, k, seed=seed):
        out[test] = length_model_probabilities(data.subset(train), data.subset(test))
    return out


@dataclass
class CVResult:
    """Out-of-fold predictions and the report built from them."""

    report: RatingReport | PairReport
    """Out of fold, with its ``cross_validation`` part set."""
    predictions: Array
    """rating: out-of-fold prediction; pairwise: P(chosen ≻ rejected); NaN where the model
    gave no score (counted in ``report.unscored``)."""
    folds: Folds
    seconds: float


def cross_validate(
    make_model: Callable[[], RewardModel],
    data: RatingData | PairData,
    folds: Folds,
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    label: str = "cross-validation",
) -> CVResult:
    """Fit a fresh model on each training part and predict its held-out part.

    The report has the figures of :func:`evaluate_ratings` / :func:`evaluate_pairs`
    (computed out of fold; the rating baseline is each training part's mean, the length model
    is fitted on each training part) plus ``cross_validation``: the in-sample figures of the
    same fits, averaged over folds (``train``), and the train-minus-CV difference of the main
    figure (``gap``). Items the model gave no score (NaN) are counted in ``unscored``, in and
    out of fold.
    """
    start = time.perf_counter()
    n = len(data)
    oof = np.full(n, np.nan)
    covered = np.zeros(n, dtype=np.int_)  # how many test parts hold each item: must be 1
    baseline = np.full(n, np.nan)
    p_length = np.full(n, np.nan)
    train_figures: list[dict[str, float]] = []
    for number, (train, test) in enumerate(folds, start=1):
        if progress is not None:
            progress(label, number - 1, len(folds))
        covered[test] += 1
        train_data, test_data = data.subset(train), data.subset(test)
        model = make_model().fit(train_data)
        if isinstance(data, RatingData):
            assert isinstance(train_data, RatingData) and isinstance(test_data, RatingData)
            oof[test] = model.score(test_data.texts, test_data.prompts)
            baseline[test] = float(np.mean(train_data.ratings))
            fitted = model.score(train_data.texts, train_data.prompts)
            ok = np.isfinite(fitted)
            figures = _rating_metrics(train_data.ratings[ok], fitted[ok]) if ok.any() else {}
        else:
            assert isinstance(train_data, PairData) and isinstance(test_data, PairData)
            oof[test] = model.preference_probability(test_data)
            p_length[test] = length_model_probabilities(train_data, test_data)
            p_train = model.preference_probability(train_data)
            ok = np.isfinite(p_train)
            figures = {"accuracy": pair_accuracy(p_train[ok])} if ok.any() else {}
        figures["unscored"] = int(np.sum(~ok))
        train_figures.append(figures)
    if progress is not None:
        progress(label, len(folds), len(folds))
    if np.any(covered != 1):
        missing, repeated = int(np.sum(covered == 0)), int(np.sum(covered > 1))
        raise InvalidInputError(
            f"the folds do not cover every item once ({missing} in no test part, {repeated} "
            "in several); build them with make_folds"
        )
    report: RatingReport | PairReport
    if isinstance(data, RatingData):
        rating = _rating_data_report(data, oof, baseline, samples=samples, seed=seed)
        in_sample = _mean_figures(train_figures, ("mse", "mae", "spearman", "pearson"))
        gap = {"mse": rating.mse - in_sample["mse"]}
        report = replace(rating, cross_validation=CrossValidation(in_sample, gap, len(folds)))
    else:
        pairs = _pair_data_report(data, oof, p_length, samples=samples, seed=seed)
        in_sample = _mean_figures(train_figures, ("accuracy",))
        gap = {"accuracy": in_sample["accuracy"] - pairs.accuracy}
        report = replace(pairs, cross_validation=CrossValidation(in_sample, gap, len(folds)))
    return CVResult(
        report=report, predictions=oof, folds=folds, seconds=time.perf_counter() - start
    )


def _mean_figures(per_fold: list[dict[str, float]], keys: Sequence[str]) -> dict[str, float]:
    """Each figure averaged over the folds where it is defined (NaN when none is);
    ``unscored`` is summed: in-sample items without a score, over all fits."""
    out: dict[str, float] = {}
    for key in keys:
        values = np.array([f.get(key, np.nan) for f in per_fold], dtype=np.float64)
        values = values[np.isfinite(values)]
        out[key] = float(values.mean()) if values.size else float("nan")
    out["unscored"] = int(sum(f["unscored"] for f in per_fold))
    return out
