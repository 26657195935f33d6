"""Benchmark of prefloop's fast reward models on the real data in ../shared/data.

* memozy-train.jsonl (450 Korean diary drafts rated on -1 … 1): 5-fold CV of the default rating
  model (``auto``: the candidate is chosen inside each training fold, i.e. nested CV) for fold
  seeds 0, 1 and 2, each against the training-mean baseline of the same folds; every candidate
  on the seed-0 folds; the default's usual pick on folds grouped by photo (``image_id``), which
  measures drafts of photos never seen; the time to fit and evaluate (wall and CPU); scoring
  throughput of the saved default model once loaded (torch at one thread). Also, from the same
  out-of-fold predictions, how often the default model orders two drafts of one photo with
  different ratings as the rater did (what choosing the best of several drafts, or comparing
  prompts on the same input, needs), next to "the longer draft wins", with intervals from
  resampling photos.
* hh-harmless-train.jsonl (1,500 English preference pairs): 5-fold CV (folds grouped by prompt)
  of the Bradley–Terry model, the default features for fold seeds 0, 1 and 2 and other feature
  sets on seed 0, against "the shorter reply wins" and a length-only Bradley–Terry model fitted
  on the same folds. ``--smollm2`` adds the SmolLM2 features (``smollm2-prompt``, alone and next
  to ``use-prompt``) on seed 0 and times their extraction.

Prints one JSON object. ``--quick`` runs a small smoke version (subsets, few resamples).

    .venv/bin/python bench/bench_reward.py            # the full run (several minutes)
    .venv/bin/python bench/bench_reward.py --quick
"""

from __future__ import annotations

import argparse
import functools
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
import torch

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


def _load() -> list[float]:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else []


def bench_memozy(quick: bool, samples: int) -> dict[str, Any]:
    path = _need("memozy-train.jsonl")
    data = load_rating_data(path)
    keep = list(range(len(data)))
    if quick:
        keep = keep[::3]
        data = data.subset(keep)
    candidates = ("ridge:stats", "stack:stats+style") if quick else AUTO_CANDIDATES
    config = RatingModelConfig(model="auto", candidates=candidates)

    # The default model: fit once on everything, then evaluate it by nested 5-fold CV (seed 0
    # timed), then the same for fold seeds 1 and 2.
    wall, cpu = time.perf_counter(), time.process_time()
    default = SklearnRatingModel(config).fit(data)
    nested = cross_validate(
        lambda: SklearnRatingModel(config), data, make_folds(data, 5, seed=0), samples=samples
    )
    fit_eval = {
        "wall_seconds": time.perf_counter() - wall,
        "cpu_seconds": time.process_time() - cpu,
        "load_average_after": _load(),
    }
    by_seed: dict[str, Any] = {}
    for seed in (0,) if quick else (0, 1, 2):
        result = (
            nested
            if seed == 0
            else cross_validate(
                lambda: SklearnRatingModel(config),
                data,
                make_folds(data, 5, seed=seed),
                samples=samples,
            )
        )
        report = result.report.to_json()
        by_seed[f"fold_seed_{seed}"] = {
            **_pick(report, ("mse", "mae", "spearman", "pearson", "baseline", "ci")),
            "vs_baseline": report["vs_baseline"],
            "train": report["train"],
            # Pairs of same-photo drafts (the reader keys each draft by its image_id).
            "within_photo": report["within_input"],
        }
    seeds = list(by_seed.values())
    out: dict[str, Any] = {
        "n": len(data),
        "label_variance": float(np.var(data.ratings)),
        "default_model": {
            "chosen_on_all_data": default.chosen,
            "selection_on_all_data": default.selection_.get("candidates"),
            "mse": float(np.mean([r["mse"] for r in seeds])),
            "spearman": float(np.mean([r["spearman"] for r in seeds])),
            "baseline_mse": float(np.mean([r["baseline"]["mse"] for r in seeds])),
            "within_photo_ordered_right": float(
                np.mean([r["within_photo"]["ordered_right"] for r in seeds])
            ),
            "within_photo_longer_wins": float(
                np.mean([r["within_photo"]["longer_wins"] for r in seeds])
            ),
            "by_fold_seed": by_seed,
        },
        "fit_and_eval": fit_eval,
    }
    folds = make_folds(data, 5, seed=0)
    models: dict[str, Any] = {}
    for spec in candidates:
        run = cross_validate(
            functools.partial(SklearnRatingModel, RatingModelConfig(model=spec)),
            data,
            folds,
            samples=samples,
        )
        models[spec] = {
            **_pick(run.report.to_json(), ("mse", "spearman", "ci")),
            "train_mse": run.report.to_json()["train"]["mse"],
            "seconds": run.seconds,
        }
    out["candidates_same_folds"] = models
    # Drafts of unseen photos: the default's pick on folds grouped by image_id (seed 0).
    if default.chosen is not None:
        run = cross_validate(
            lambda: SklearnRatingModel(RatingModelConfig(model=str(default.chosen))),
            data,
            make_folds(data, 5, seed=0, by="input"),
            samples=samples,
        )
        out["photo_grouped_folds"] = {
            "model": default.chosen,
            **_pick(run.report.to_json(), ("mse", "spearman", "baseline", "ci")),
        }

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
        "torch_threads": torch.get_num_threads(),
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


def bench_hh(quick: bool, samples: int, smollm2: bool = False) -> dict[str, Any]:
    data: PairData = load_pair_data(_need("hh-harmless-train.jsonl"))
    if quick:
        data = data.subset(range(300))
    feature_sets: tuple[str, ...] = (
        ("stats", "use-prompt")
        if quick
        else (
            "stats",
            "minilm-prompt",
            "use-prompt",
            "use-prompt+toxicity",
            "use-prompt+stats",
            "use-prompt+minilm-prompt",
        )
    )
    if smollm2:
        # SmolLM2 reads about 2.5 replies per second on one core: 3,000 replies take ~20 min.
        feature_sets += ("smollm2-prompt", "use-prompt+smollm2-prompt")
    smollm2_seconds: dict[str, Any] = {}
    if smollm2:
        from prefloop.reward.featurizers import build_featurizer

        wall, cpu = time.perf_counter(), time.process_time()
        build_featurizer("smollm2-prompt").transform(
            [*data.chosen, *data.rejected], [*data.prompts, *data.prompts]
        )
        smollm2_seconds = {
            "replies": 2 * len(data),
            "wall_seconds": time.perf_counter() - wall,
            "cpu_seconds": time.process_time() - cpu,
            "replies_per_cpu_second": 2 * len(data) / max(1e-9, time.process_time() - cpu),
            "load_average_after": _load(),
        }
    default_features = BradleyTerryConfig().features
    out: dict[str, Any] = {"n": len(data), "folds": 5, "models": {}}
    if smollm2_seconds:
        out["smollm2_featurizing"] = smollm2_seconds

    def run(features: str, seed: int) -> dict[str, Any]:
        result = cross_validate(
            lambda: BradleyTerryModel(BradleyTerryConfig(features=features)),
            data,
            make_folds(data, 5, seed=seed),
            samples=samples,
        )
        return {
            **_pick(
                result.report.to_json(), ("accuracy", "log_loss", "baseline", "ci", "vs_baseline")
            ),
            "train_accuracy": result.report.to_json()["train"]["accuracy"],
            "seconds": result.seconds,
        }

    for features in feature_sets:
        out["models"][f"bradley-terry:{features}"] = run(features, 0)
    by_seed = {"fold_seed_0": out["models"][f"bradley-terry:{default_features}"]}
    for seed in () if quick else (1, 2):
        by_seed[f"fold_seed_{seed}"] = run(default_features, seed)
    out["default_model"] = {
        "model": f"bradley-terry:{default_features}",
        "accuracy": float(np.mean([r["accuracy"] for r in by_seed.values()])),
        "by_fold_seed": by_seed,
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small, fast smoke run")
    parser.add_argument("--only", choices=("memozy", "hh"), help="run one of the two parts")
    parser.add_argument(
        "--smollm2",
        action="store_true",
        help="also try the SmolLM2 features on the HH pairs (about 20 more minutes)",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)  # the throughput target is for one thread
    samples = 200 if args.quick else 1000
    result: dict[str, Any] = {"quick": args.quick, "cpu_count": os.cpu_count(), "targets": TARGETS}
    if hasattr(os, "getloadavg"):
        result["load_average_at_start"] = list(os.getloadavg())
    if args.only in (None, "memozy"):
        result["memozy"] = bench_memozy(args.quick, samples)
    if args.only in (None, "hh"):
        result["hh_harmless"] = bench_hh(args.quick, samples, smollm2=args.smollm2)
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
    result["load_average_at_end"] = _load()
    sys.stdout.write(json.dumps(_round(result), ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
