"""Online RL on the diary task with SmolLM2-135M-Instruct: does PPO (and RLOO) raise the rubric
score over the reference model, at a KL within its target, and does the hacking flag fire when
the reward pays for length with no KL penalty?

Inputs are drawn from the demo's diary task (seeded) and rendered with its hand-written
prompt: training prompts and 64 held-out ones. Each run is ``prefloop train ppo|rloo`` as a
user runs it (a fresh process, ``--json``), with the rubric scorer as reward and, as the
held-out reward, a rating reward model fitted on the reference project's human diary ratings
(``../shared/data/memozy-train.jsonl``). The baseline is the reference model itself, measured in
the same run: both answer the 64 held-out prompts (greedy) and the difference of mean rubric
score gets a paired bootstrap interval. A last run with β = 0 and ``--reward length`` shows
whether the hacking flag fires.

    .venv/bin/python bench/bench_rl.py               # PPO and RLOO, 64 held-out prompts
    .venv/bin/python bench/bench_rl.py --quick       # fewer steps and prompts (a smoke run)

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RATINGS = HERE.parents[1] / "shared" / "data" / "memozy-train.jsonl"


def _run(command: list[str]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=os.environ)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"failed: {' '.join(command)}")
    lines = done.stdout.strip().splitlines()
    return seconds, json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}


def _prompts(n: int, seed: int) -> list[dict[str, Any]]:
    from prefloop.demo._task import DIARY

    rng = np.random.default_rng(seed)
    return [
        {"prompt": DIARY.base_prompt.template.format(**inputs), "inputs": inputs}
        for inputs in DIARY.sample_inputs(n, rng)
    ]


def _paired(diff: np.ndarray, seed: int) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, diff.size, size=(4000, diff.size))
    low, high = np.quantile(diff[draws].mean(axis=1), [0.025, 0.975])
    return float(diff.mean()), float(low), float(high)


def _evaluate(model: Path, heldout: list[dict[str, Any]], rating_model: Path) -> dict[str, Any]:
    """Trained vs reference on the held-out prompts: rubric and held-out rating model."""
    from prefloop.train.evaluate import EvalConfig, evaluate_policy
    from prefloop.train.rewards import reward_function

    rubric = reward_function("rubric")
    rating = reward_function(str(rating_model))
    inputs = {row["prompt"]: row["inputs"] for row in heldout}

    def score(prompts: Any, completions: Any) -> list[float | None]:
        return list(rubric(list(prompts), list(completions), inputs=[inputs[p] for p in prompts]))

    evaluation = evaluate_policy(
        model,
        [row["prompt"] for row in heldout],
        score,
        EvalConfig(max_new_tokens=96, batch_size=8, toxicity=False),
        scorer_name="rubric",
    )
    rows = [
        s
        for s in evaluation.samples
        if s.trained_reward is not None and s.reference_reward is not None
    ]
    trained = np.array([s.trained_reward for s in rows], dtype=np.float64)
    reference = np.array([s.reference_reward for s in rows], dtype=np.float64)
    diff = trained - reference
    mean, low, high = _paired(diff, 0)
    prompts = [s.prompt for s in rows]
    held_trained = rating(prompts, [s.trained for s in rows])
    held_reference = rating(prompts, [s.reference for s in rows])
    held = np.array(
        [
            a - b
            for a, b in zip(held_trained, held_reference, strict=True)
            if a is not None and b is not None
        ],
        dtype=np.float64,
    )
    h_mean, h_low, h_high = _paired(held, 1) if held.size else (None, None, None)
    return {
        "prompts": len(rows),
        "rubric_reference": float(reference.mean()),
        "rubric_trained": float(trained.mean()),
        "rubric_gain": mean,
        "rubric_gain_interval": [low, high],
        "rubric_gain_excludes_0": bool(low > 0),
        "heldout_gain": h_mean,
        "heldout_gain_interval": [h_low, h_high],
        "kl_per_answer": evaluation.kl_per_answer,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few steps, 8 prompts")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--heldout", type=int, default=None)
    parser.add_argument("--methods", default="ppo,rloo")
    parser.add_argument("--target-kl", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=None, help="keep the models here")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse the models a run left in --out (each run's figures are kept in "
        "OUT/partial.json as they come, so a run cut short loses nothing)",
    )
    args = parser.parse_args()
    steps = args.steps or (2 if args.quick else 12)
    n_heldout = args.heldout or (8 if args.quick else 64)
    prefloop = [sys.executable, "-m", "prefloop"]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-rl-") as tmp:
        folder = args.out or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        db = f"sqlite:///{folder / 'runs.db'}"
        train_rows = _prompts(steps * 8, seed=1)
        heldout = _prompts(n_heldout, seed=2)
        train_file = folder / "train.jsonl"
        train_file.write_text("".join(json.dumps(r) + "\n" for r in train_rows), "utf-8")
        rating_model = folder / "rm-diary"
        partial = folder / "partial.json"
        runs: dict[str, Any] = {}
        if args.reuse and partial.exists():
            runs = json.loads(partial.read_text("utf-8"))

        def keep(key: str, value: Any) -> None:
            runs[key] = value
            partial.write_text(json.dumps(runs, indent=2), "utf-8")

        fit_seconds, _ = (0.0, {}) if args.reuse and rating_model.exists() else _run(
            [*prefloop, "reward", "fit", "--data", str(RATINGS), "--kind", "rating",
             "--out", str(rating_model), "--force"]
        )  # fmt: skip
        if fit_seconds:
            keep("rating_model_fit_seconds", round(fit_seconds, 1))
        for method in [m for m in args.methods.split(",") if m]:
            out = folder / method
            if args.reuse and method in runs:
                continue
            common = [
                *prefloop, "train", method, "--prompts", str(train_file), "--reward", "rubric",
                "--heldout", str(rating_model), "--max-steps", str(steps), "--out", str(out),
                "--target-kl", str(args.target_kl), "--kl-coef", "0.05", "--temperature", "0.7",
                "--max-new-tokens",
                "96", "--force", "--db", db, "--json",
            ]  # fmt: skip
            if method == "ppo":
                common += ["--batch-size", "8", "--learning-rate", "1e-4"]
            else:
                common += ["--batch-size", "4", "--num-generations", "2", "--learning-rate", "1e-4"]
            done = out / "report" / "result.json"
            if args.reuse and done.exists():
                summary = json.loads(done.read_text("utf-8"))
                summary.pop("history", None)
                seconds = float(summary["seconds"])
            else:
                seconds, summary = _run(common)
            evaluation = _evaluate(out, heldout, rating_model)
            keep(
                method,
                {
                    "train_seconds": round(seconds, 1),
                    "train": summary,
                    "heldout_eval": evaluation,
                    "kl_within_target": summary.get("kl_last") is not None
                    and summary["kl_last"] <= args.target_kl,
                },
            )
        hack_out = folder / "hack"
        hack_seconds, hack = _run(
            [*prefloop, "train", "ppo", "--prompts", str(train_file), "--reward", "length",
             "--heldout", "rubric", "--kl-coef", "0", "--missing-eos-penalty", "0",
             "--temperature", "0.7",
             "--max-steps", str(max(steps // 2, 6)), "--batch-size", "8",
             "--learning-rate", "3e-4", "--max-new-tokens", "96", "--out", str(hack_out),
             "--force", "--db", db, "--json"]
        )  # fmt: skip
        keep(
            "hacking_run",
            {
                "train_seconds": round(hack_seconds, 1),
                "hacking_flag": hack.get("hacking_flag"),
                "hacking_signs": hack.get("hacking_signs"),
                "reward_mean_first": hack.get("reward_mean_first"),
                "reward_mean_last": hack.get("reward_mean_last"),
                "heldout_first": hack.get("heldout_first"),
                "heldout_last": hack.get("heldout_last"),
            },
        )
    result = {
        "benchmark": "bench_rl",
        "model": "SmolLM2-135M-Instruct (packaged), LoRA r 16",
        "reward": "rubric (the demo's scorer)",
        "heldout_scorer": "rating reward model fitted on memozy-train.jsonl",
        "baseline": "the reference model (the base, adapter off) on the same held-out prompts",
        "steps": steps,
        "heldout_prompts": n_heldout,
        "target_kl": args.target_kl,
        **runs,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
