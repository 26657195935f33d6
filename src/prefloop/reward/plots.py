"""PNG figures that go next to each JSON report (matplotlib, Agg backend, no display needed).

* ratings: predicted against true rating (jittered), and a calibration plot — the mean true
  rating of each bucket of predictions against the bucket's mean prediction;
* pairs: accuracy by how much longer the chosen reply is than the rejected one, for the model
  and both length baselines (a model that only learned "shorter wins" shows up at once).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from prefloop.reward._data import Array, PairData, RatingData

__all__ = ["plot_evaluation", "plot_pairs", "plot_ratings"]


def plot_evaluation(
    data: RatingData | PairData,
    predictions: Array,
    path: str | Path,
    *,
    title: str,
    baseline_mean: float | None = None,
    folds: int = 5,
    seed: int = 0,
) -> Path:
    """The figure beside an evaluation or cross-validation report: :func:`plot_ratings` (with
    ``baseline_mean``) or :func:`plot_pairs` (the length model cross-fitted on ``folds`` folds
    seeded by ``seed``). Items without a prediction are left out, as in the report."""
    predictions = np.asarray(predictions, dtype=np.float64)
    if isinstance(data, RatingData):
        keep = np.isfinite(predictions)
        return plot_ratings(
            data.ratings[keep], predictions[keep], path, baseline=baseline_mean, title=title
        )
    from prefloop.reward.evaluate import (
        cross_fitted_length_probabilities,
        shorter_wins_probabilities,
    )

    p_shorter = shorter_wins_probabilities(data)
    p_length = cross_fitted_length_probabilities(data, folds, seed)
    kept = np.flatnonzero(np.isfinite(predictions))
    return plot_pairs(
        data.subset(kept),
        predictions[kept],
        p_shorter[kept],
        p_length[kept],
        path,
        title=title,
    )


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_ratings(
    y: Array,
    pred: Array,
    path: str | Path,
    *,
    baseline: float | None = None,
    title: str = "rating model",
    buckets: int = 8,
) -> Path:
    """Scatter of prediction vs label and calibration by prediction bucket; returns the path."""
    plt = _pyplot()
    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    scored = np.isfinite(pred)  # a judge's failed items have no score: left out, and said so
    if not scored.any():
        raise ValueError("no item has a score: nothing to plot")
    if not scored.all():
        title = f"{title} ({int((~scored).sum())} unscored left out)"
        y, pred = y[scored], pred[scored]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    rng = np.random.default_rng(0)
    levels = np.unique(y)
    step = float(np.min(np.diff(levels))) if levels.size > 1 else 1.0
    left.scatter(y + rng.uniform(-0.15, 0.15, y.size) * step, pred, s=9, alpha=0.5)
    lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    left.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--", label="perfect")
    if baseline is not None:
        left.axhline(baseline, color="tab:red", lw=1, label=f"baseline (mean {baseline:.2f})")
    means = [pred[y == level].mean() for level in levels]
    left.plot(levels, means, "o-", color="black", label="mean prediction per level")
    left.set_xlabel("true rating (jittered)")
    left.set_ylabel("predicted rating")
    left.legend(fontsize=8)
    left.set_title("predicted vs true")

    edges = np.unique(np.quantile(pred, np.linspace(0, 1, buckets + 1)))
    which = np.clip(np.searchsorted(edges, pred, side="right") - 1, 0, max(0, edges.size - 2))
    xs, ys, errs, counts = [], [], [], []
    for b in np.unique(which):
        m = which == b
        xs.append(pred[m].mean())
        ys.append(y[m].mean())
        errs.append(1.96 * y[m].std(ddof=1) / np.sqrt(m.sum()) if m.sum() > 1 else 0.0)
        counts.append(int(m.sum()))
    right.errorbar(xs, ys, yerr=errs, fmt="o-", capsize=3, label="mean true rating ± 95%")
    right.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--", label="calibrated")
    for x, yy, c in zip(xs, ys, counts, strict=True):
        right.annotate(str(c), (x, yy), textcoords="offset points", xytext=(4, -10), fontsize=7)
    right.set_xlabel("mean prediction in bucket")
    right.set_ylabel("mean true rating")
    right.set_title("calibration by bucket (n per bucket)")
    right.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_pairs(
    data: PairData,
    p_model: Array,
    p_shorter: Array,
    p_length: Array,
    path: str | Path,
    *,
    title: str = "pairwise model",
    buckets: int = 6,
) -> Path:
    """Accuracy by length difference (log of chosen/rejected length), model vs baselines."""
    plt = _pyplot()
    ratio = np.array(
        [
            np.log((len(c) + 1) / (len(r) + 1))
            for c, r in zip(data.chosen, data.rejected, strict=True)
        ]
    )
    p_model = np.asarray(p_model, dtype=float)
    scored = np.isfinite(p_model)  # pairs a judge could not compare: left out, and said so
    if not scored.any():
        raise ValueError("no pair has a score: nothing to plot")
    if not scored.all():
        title = f"{title} ({int((~scored).sum())} unscored left out)"
        ratio, p_model = ratio[scored], p_model[scored]
        p_shorter = np.asarray(p_shorter, dtype=float)[scored]
        p_length = np.asarray(p_length, dtype=float)[scored]
    edges = np.unique(np.quantile(ratio, np.linspace(0, 1, buckets + 1)))
    which = np.clip(np.searchsorted(edges, ratio, side="right") - 1, 0, max(0, edges.size - 2))
    fig, ax = plt.subplots(figsize=(7, 4.2))

    def correct(p: Array) -> Array:
        return np.where(p > 0.5, 1.0, np.where(p < 0.5, 0.0, 0.5))

    for label, probs, style in (
        ("model", p_model, "o-"),
        ("shorter wins", p_shorter, "s--"),
        ("length model", p_length, "^:"),
    ):
        hits = correct(np.asarray(probs, dtype=float))
        xs = [ratio[which == b].mean() for b in np.unique(which)]
        ys = [hits[which == b].mean() for b in np.unique(which)]
        ax.plot(xs, ys, style, label=f"{label} ({hits.mean():.3f} overall)")
    ax.axhline(0.5, color="grey", lw=1)
    ax.set_xlabel("log(length of chosen / length of rejected), bucket mean")
    ax.set_ylabel("accuracy in bucket")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
