"""DPO with LoRA on SmolLM2-135M-Instruct: ``prefloop train dpo`` against a plain TRL script.

The first N HH harmless pairs are imported into a fresh store. The baseline is a plain
``trl.DPOTrainer`` script (bench/_plain_trl_dpo.py) on the same pairs, exported with
``prefloop export preferences --format conversational``, with the same settings (LoRA r 16 on
every linear layer, max_length, batch size, one epoch, seed); prefloop trains from the store
with ``prefloop train dpo --task``. prefloop runs twice: the first run computes the reference
log-probs once and caches them (targets: wall-time ratio baseline/prefloop ≥ 0.95), the second
reuses them (≥ 1.25); both runs' final losses must agree with the baseline's within 2%. Each
run is a fresh process, timed from start to exit.

    .venv/bin/python bench/bench_train.py            # 64 pairs, max_length 256, batch 4
    .venv/bin/python bench/bench_train.py --quick    # 8 pairs, max_length 128

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

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data" / "hh-harmless-train.jsonl"
TARGET_FIRST, TARGET_CACHED, LOSS_TOLERANCE = 0.95, 1.25, 0.02


def _run(command: list[str], env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"failed: {' '.join(command)}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 pairs, max_length 128")
    parser.add_argument("--pairs", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    pairs = args.pairs or (8 if args.quick else 64)
    max_length = args.max_length or (128 if args.quick else 256)
    prefloop = [sys.executable, "-m", "prefloop"]
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        folder = Path(tmp)
        env = {**os.environ, "PREFLOOP_REFERENCE_CACHE": str(folder / "refs")}
        first = folder / "first.jsonl"
        lines = DATA.read_text(encoding="utf-8").splitlines()[:pairs]
        first.write_text("\n".join(lines) + "\n", encoding="utf-8")
        db = f"sqlite:///{folder / 'bench.db'}"
        subprocess.run(
            [*prefloop, "import", "pairs", str(first), "--task", "harmless", "--db", db],
            check=True,
            capture_output=True,
            env=env,
        )
        exported = folder / "export.jsonl"
        subprocess.run(
            [
                *(*prefloop, "export", "preferences", "--task", "harmless", "--db", db),
                *("--format", "conversational", "-o", str(exported)),
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        settings = ["--max-length", str(max_length), "--batch-size", str(args.batch_size)]
        baseline_s, baseline = _run(
            [
                *(sys.executable, str(HERE / "_plain_trl_dpo.py"), str(exported)),
                *(str(folder / "trl-out"), *settings),
            ],
            env,
        )
        ours = [*prefloop, "train", "dpo", "--task", "harmless", "--db", db, "--json", *settings]
        first_s, first_run = _run([*ours, "--out", str(folder / "a")], env)
        cached_s, cached_run = _run([*ours, "--out", str(folder / "b")], env)
    loss_gap = max(
        abs(run["loss_last"] - baseline["loss_last"]) / abs(baseline["loss_last"])
        for run in (first_run, cached_run)
    )
    result = {
        "benchmark": "bench_train",
        "config": {
            "pairs": pairs,
            "max_length": max_length,
            "batch_size": args.batch_size,
            "epochs": 1,
            "lora_r": 16,
            "base": "SmolLM2-135M-Instruct",
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "baseline_trl": {
            "wall_s": round(baseline_s, 1),
            "train_s": baseline["train_s"],
            "loss_last": baseline["loss_last"],
        },
        "prefloop_first": {
            "wall_s": round(first_s, 1),
            "train_s": first_run["seconds"],
            "loss_last": first_run["loss_last"],
            "reference_cache": first_run["reference_cache"],
        },
        "prefloop_cached": {
            "wall_s": round(cached_s, 1),
            "train_s": cached_run["seconds"],
            "loss_last": cached_run["loss_last"],
            "reference_cache": cached_run["reference_cache"],
        },
        "ratio_first": round(baseline_s / first_s, 3),
        "ratio_cached": round(baseline_s / cached_s, 3),
        "loss_gap": round(loss_gap, 4),
        "targets": {
            "ratio_first": TARGET_FIRST,
            "ratio_cached": TARGET_CACHED,
            "loss_gap": LOSS_TOLERANCE,
        },
        "met": {
            "ratio_first": baseline_s / first_s >= TARGET_FIRST,
            "ratio_cached": baseline_s / cached_s >= TARGET_CACHED,
            "loss_gap": loss_gap <= LOSS_TOLERANCE,
        },
        "load_average": list(os.getloadavg()),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
