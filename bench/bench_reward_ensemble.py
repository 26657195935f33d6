"""Accuracy of an equal-weight ensemble of pairwise reward models from saved out-of-fold runs
(HH harmless), next to each member and the baselines, on the same pairs.

    .venv/bin/python bench/bench_reward_finetune.py --folds 5 --ensemble --prompt-view dialogue \\
        --seed 0 --save-oof runs/ft-dialogue-s0.npz
    .venv/bin/python bench/bench_reward_finetune.py --folds 5 --ensemble --prompt-view last-turn \\
        --seed 0 --save-oof runs/ft-last-turn-s0.npz
    .venv/bin/python bench/bench_reward_ensemble.py runs/ft-dialogue-s0.npz runs/ft-last-turn-s0.npz

Each file holds one fine-tuned model's out-of-fold log-odds ``d_model`` (and fast BT's ``d_bt``)
for the pairs ``index`` of one fold seed. A member is one fine-tuned model setting (prompt view
and token limit): files that differ only in their training seed (``--train-seed``) are one
member, the mean of their log-odds (a seed ensemble). Fast Bradley–Terry is one more member (its
``d_bt`` is the same model on the same folds in every file; the first file's is used and the
others are checked against it). The ensemble is the mean of the members' log-odds that chosen
beats rejected, weights equal and fixed in advance. Every file must cover
all pairs with the same fold seed, so the figures are out of fold for every member. The
baselines ("the shorter reply wins", a length-only model cross-fitted on the same folds) and
the bootstrap intervals come from :func:`prefloop.reward.evaluate.pair_report`. Prints one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from _pairs import DATA, TARGET_ACCURACY, accuracy, sigmoid
from prefloop.reward import load_pair_data
from prefloop.reward.evaluate import (
    bootstrap_intervals,
    cross_fitted_length_probabilities,
    pair_report,
    shorter_wins_probabilities,
)


def _accuracy(d: np.ndarray) -> float:
    return accuracy(sigmoid(d))


def load_run(path: Path, pairs: int) -> dict[str, Any]:
    """One saved run, reordered by pair index; an incomplete or malformed file is an error."""
    with np.load(path) as saved:
        missing = {"index", "d_model", "fold_seed"} - set(saved.files)
        if missing:
            sys.exit(f"{path}: not a --save-oof file of bench_reward_finetune.py (no {missing})")
        index = saved["index"].astype(int)
        if sorted(index.tolist()) != list(range(pairs)):
            sys.exit(
                f"{path}: covers {len(set(index.tolist()))} of {pairs} pairs; "
                "an interrupted run cannot be combined — run all folds"
            )
        order = np.argsort(index)
        fold_seed = int(saved["fold_seed"])
        run: dict[str, Any] = {
            "path": str(path),
            "fold_seed": fold_seed,
            # runs saved before --train-seed existed trained with the fold seed
            "train_seed": int(saved["train_seed"]) if "train_seed" in saved.files else fold_seed,
            "prompt_view": str(saved["prompt_view"]) if "prompt_view" in saved.files else None,
            "max_length": int(saved["max_length"]) if "max_length" in saved.files else None,
            "d_model": saved["d_model"][order],
        }
        if "d_bt" in saved.files:
            run["d_bt"] = saved["d_bt"][order]
    return run


def _seed_averaged_members(runs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """One member per fine-tuned setting: the mean log-odds of its runs' training seeds."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        name = f"finetuned[{run['prompt_view']},{run['max_length']} tokens]"
        groups.setdefault(name, []).append(run)
    members = {}
    for name, group in groups.items():
        seeds = [run["train_seed"] for run in group]
        if len(set(seeds)) != len(seeds):
            paths = ", ".join(run["path"] for run in group)
            sys.exit(f"{paths}: the same setting with the same training seed twice; pass it once")
        label = name if len(group) == 1 else f"{name} x{len(group)} seeds"
        members[label] = np.mean(np.vstack([run["d_model"] for run in group]), axis=0)
    return members


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="files written by --save-oof")
    parser.add_argument(
        "--no-fast-bt", action="store_true", help="leave fast BT out of the ensemble"
    )
    args = parser.parse_args()
    if not DATA.exists():
        sys.exit(f"{DATA} is missing (see ../shared/data/README.md)")
    data = load_pair_data(DATA)
    runs = [load_run(path, len(data)) for path in args.runs]
    seeds = {run["fold_seed"] for run in runs}
    if len(seeds) != 1:
        sys.exit(f"the runs use different fold seeds {sorted(seeds)}; combine runs of one seed")
    seed = seeds.pop()

    members = _seed_averaged_members(runs)
    if not args.no_fast_bt:
        with_bt = [run for run in runs if "d_bt" in run]
        if not with_bt:
            sys.exit("no run holds fast BT's log-odds (run with --ensemble) or pass --no-fast-bt")
        for run in with_bt[1:]:
            if not np.allclose(run["d_bt"], with_bt[0]["d_bt"], atol=1e-6):
                sys.exit(f"{run['path']}: fast BT differs from {with_bt[0]['path']}'s")
        members["fast_bt"] = with_bt[0]["d_bt"]

    p_shorter = shorter_wins_probabilities(data)
    p_length = cross_fitted_length_probabilities(data, 5, seed)
    ensemble = np.mean(np.vstack(list(members.values())), axis=0)

    def report(d: np.ndarray) -> dict[str, Any]:
        r = pair_report(sigmoid(d), p_shorter, p_length, seed=seed).to_json()
        return {
            "accuracy": round(r["accuracy"], 4),
            "ci95": [round(x, 4) for x in r["ci"]["accuracy"]],
        }

    full = pair_report(sigmoid(ensemble), p_shorter, p_length, seed=seed).to_json()
    best = max(members, key=lambda name: _accuracy(members[name]))

    def gains(i: np.ndarray) -> dict[str, float]:
        """The ensemble's paired gain over its best member and over fast BT."""
        out = {"over_best_member": _accuracy(ensemble[i]) - _accuracy(members[best][i])}
        if "fast_bt" in members:
            out["over_fast_bt"] = _accuracy(ensemble[i]) - _accuracy(members["fast_bt"][i])
        return out

    gain_ci = bootstrap_intervals(gains, len(data), seed=seed)
    point = gains(np.arange(len(data)))
    print(
        json.dumps(
            {
                "bench": "reward_ensemble",
                "dataset": DATA.name,
                "pairs": len(data),
                "fold_seed": seed,
                "runs": {
                    f"{run['path']} (training seed {run['train_seed']})": report(run["d_model"])
                    for run in runs
                },
                "members": {name: report(d) for name, d in members.items()},
                "ensemble": report(ensemble),
                "ensemble_gain": {
                    k: {"accuracy": round(v, 4), "ci95": [round(x, 4) for x in gain_ci[k]]}
                    for k, v in point.items()
                },
                "best_member": best,
                "baselines": {k: round(v, 4) for k, v in full["baseline"].items()},
                "gain_over_best_baseline": {
                    "accuracy_gain": round(full["vs_baseline"]["accuracy_gain"], 4),
                    "ci95": [round(x, 4) for x in full["vs_baseline"]["ci"]],
                },
                "target_accuracy": TARGET_ACCURACY,
                "meets_target": full["accuracy"] >= TARGET_ACCURACY,
            }
        )
    )


if __name__ == "__main__":
    main()
