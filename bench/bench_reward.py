"""Benchmark of prefloop's fast reward models on the real data in ../shared/data.

* memozy-train.jsonl (450 Korean diary drafts rated on -1 … 1): 5-fold CV of the default rating
  model (``auto``: the candidate is chosen inside each training fold, i.e. nested CV) and of every
  candidate on the same folds, against the training-mean baseline; the time to fit and
  evaluate; scoring throughput of the saved default model once loaded.
* hh-harmless-train.jsonl (1,500 English preference pairs): 5-fold CV (folds grouped by prompt)
  of the Bradley–Terry model on several feature sets, against "the shorter reply wins" and a
  length-only Bradley–Terry model fitted on the same folds.

Prints one JSON object. ``--quick`` runs a small smoke version (subsets, few resamples).

    .venv/bin/python bench/bench_reward.py            # the full run (several minutes)
    .venv/bin/python bench/bench_reward.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from prefloop.reward import (
    PairData,
    load_pair_data,
    load_rating_data,
    load_reward_model,
)
from prefloop.reward.evaluate import cross_validate, make_folds
from prefloop.reward.pairwise import BradleyTerryConfig, BradleyTerryModel
from prefloop.reward.rating import AUTO_CANDIDATES, RatingModelConfig, SklearnRatingModel

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TARGETS = {
    "memozy_mse_max": 0.17,
    "memozy_spearman_min": 0.55,
    "hh_accuracy_min": 0.66,
    "fit_and_eval_seconds_max": 180.0,
    "texts_per_second_min": 500.0,
}


def _need(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        sys.exit(f"{path} is missing: the benchmark reads ../shared/data (see its README)")
    return path


def _round(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, 4)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round(v) for v in obj]
    return obj


def _pick(report: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: report[k] for k in keys if k in report}


def _fresh_texts(texts: list[str], n: int, seed: int) -> list[str]:
    """New texts (never embedded before in this process) made of sentences of the real ones."""
    rng = random.Random(seed)
    sentences = [s for t in texts for s in re.split(r"(?<=[.!?])\s+", t) if s.strip()]
    return [" ".join(rng.sample(sentences, 3)) for _ in range(n)]


def bench_memozy(quick: bool, samples: int) -> dict[str, Any]:
    data = load_rating_data(_need("memozy-train.jsonl"))
    if quick:
        data = data.subset(range(0, len(data), 3))
    folds = make_folds(data, 5, seed=0)
    candidates = ("ridge:stats", "gradient-boosting:stats") if quick else AUTO_CANDIDATES
    config = RatingModelConfig(model="auto", candidates=candidates)

    # The default model: fit once on everything, then evaluate it by nested 5-fold CV.
    wall, cpu = time.perf_counter(), time.process_time()
    default = SklearnRatingModel(config).fit(data)
    nested = cross_validate(lambda: SklearnRatingModel(config), data, folds, samples=samples)
    fit_eval = {
        "wall_seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
    }
    report = nested.report
    out: dict[str, Any] = {
        "n": len(data),
        "label_variance": float(np.var(data.ratings)),
        "default_model": {
            "chosen_on_all_data": default.chosen,
            **_pick(report, ("mse", "mae", "spearman", "pearson", "baseline", "ci")),
            "vs_baseline": report["vs_baseline"],
            "train": report["train"],
            "gap": report["gap"],
        },
        "fit_and_eval": fit_eval,
    }
    models: dict[str, Any] = {}
    for spec in candidates:
        run = cross_validate(
            lambda s=spec: SklearnRatingModel(RatingModelConfig(model=s)),
            data,
            folds,
            samples=samples,
        )
        models[spec] = {
            **_pick(run.report, ("mse", "spearman", "ci")),
            "train_mse": run.report["train"]["mse"],
            "seconds": run.seconds,
        }
    out["candidates_same_folds"] = models

    # Throughput of the saved default model once loaded, on texts it has never seen.
    with tempfile.TemporaryDirectory() as tmp:
        folder = default.save(Path(tmp) / "memozy")
        loaded = load_reward_model(folder)
        loaded.score(["워밍업 문장이다."])  # loads the embedding network if the model uses one
        fresh = _fresh_texts(data.texts, 200 if quick else 1000, seed=1)
        start = time.perf_counter()
        loaded.score(fresh)
        seconds = time.perf_counter() - start
    out["scoring"] = {
        "model": loaded.details().get("chosen"),
        "texts": len(fresh),
        "texts_per_second": len(fresh) / seconds,
    }
    # The suggested recipe (USE embeddings + rubric features, ridge) for reference, throughput.
    if not quick:
        use_model = SklearnRatingModel(RatingModelConfig(model="ridge:stats+use")).fit(data)
        use_model.score(["워밍업 문장이다."])
        fresh = _fresh_texts(data.texts, 300, seed=2)
        start = time.perf_counter()
        use_model.score(fresh)
        out["scoring_with_use_embeddings"] = {
            "model": "ridge:stats+use",
            "texts_per_second": len(fresh) / (time.perf_counter() - start),
        }
    return out


def bench_hh(quick: bool, samples: int) -> dict[str, Any]:
    data: PairData = load_pair_data(_need("hh-harmless-train.jsonl"))
    if quick:
        data = data.subset(range(300))
    folds = make_folds(data, 5, seed=0)
    feature_sets = (
        ("stats", "use-prompt")
        if quick
        else ("stats", "minilm", "minilm-prompt", "use", "use-prompt", "use-prompt+stats")
    )
    default_features = BradleyTerryConfig().features
    out: dict[str, Any] = {"n": len(data), "folds": 5, "models": {}}
    for features in feature_sets:
        run = cross_validate(
            lambda f=features: BradleyTerryModel(BradleyTerryConfig(features=f)),
            data,
            folds,
            samples=samples,
        )
        entry = {
            **_pick(run.report, ("accuracy", "log_loss", "baseline", "ci", "vs_baseline")),
            "train_accuracy": run.report["train"]["accuracy"],
            "seconds": run.seconds,
        }
        out["models"][f"bradley-terry:{features}"] = entry
        if features == default_features:
            out["default_model"] = {"model": f"bradley-terry:{features}", **entry}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small, fast smoke run")
    parser.add_argument("--only", choices=("memozy", "hh"), help="run one of the two parts")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    samples = 200 if args.quick else 1000
    result: dict[str, Any] = {"quick": args.quick, "cpu_count": os.cpu_count(), "targets": TARGETS}
    if hasattr(os, "getloadavg"):
        result["load_average_at_start"] = list(os.getloadavg())
    if args.only in (None, "memozy"):
        result["memozy"] = bench_memozy(args.quick, samples)
    if args.only in (None, "hh"):
        result["hh_harmless"] = bench_hh(args.quick, samples)
    checks: dict[str, bool] = {}
    if "memozy" in result:
        m = result["memozy"]
        checks["memozy_mse"] = m["default_model"]["mse"] <= TARGETS["memozy_mse_max"]
        checks["memozy_spearman"] = m["default_model"]["spearman"] >= TARGETS["memozy_spearman_min"]
        checks["fit_and_eval_time"] = (
            m["fit_and_eval"]["wall_seconds"] <= TARGETS["fit_and_eval_seconds_max"]
        )
        checks["scoring_speed"] = (
            m["scoring"]["texts_per_second"] >= TARGETS["texts_per_second_min"]
        )
    if "hh_harmless" in result and "default_model" in result["hh_harmless"]:
        checks["hh_accuracy"] = (
            result["hh_harmless"]["default_model"]["accuracy"] >= TARGETS["hh_accuracy_min"]
        )
    result["targets_met"] = checks
    sys.stdout.write(json.dumps(_round(result), ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
