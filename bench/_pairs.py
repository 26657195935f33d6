"""What the HH pairwise benchmarks (``bench_reward_finetune.py``, ``bench_reward_ensemble.py``)
share: the data file, the issue's target, and log-odds to probabilities to accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-harmless-train.jsonl"
TARGET_ACCURACY = 0.66


def sigmoid(x: np.ndarray) -> np.ndarray:
    """P(chosen ≻ rejected) from the log-odds r(chosen) − r(rejected)."""
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


def accuracy(p: np.ndarray) -> float:
    """Share of pairs with P(chosen ≻ rejected) above 0.5; exactly 0.5 counts half."""
    return float(np.mean((p > 0.5) + 0.5 * (p == 0.5)))
