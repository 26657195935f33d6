"""What the HH pairwise benchmarks (``bench_reward_finetune.py``, ``bench_reward_ensemble.py``)
share: the data file, the issue's target, and log-odds to probabilities to accuracy (the
library's :func:`prefloop.reward.evaluate.pair_accuracy`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prefloop.reward.evaluate import pair_accuracy as accuracy

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-harmless-train.jsonl"
TARGET_ACCURACY = 0.66

__all__ = ["DATA", "TARGET_ACCURACY", "accuracy", "sigmoid"]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """P(chosen ≻ rejected) from the log-odds r(chosen) − r(rejected)."""
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)
