"""The reference project's experiment: a simulated user over real generations, 200 iterations.

The generations come from a demo store (``--db``, e.g. ``sqlite:///prefloop-demo/prefloop.db``
after ``prefloop demo``); without ``--db`` the demo runs first into a temporary folder with the
local SmolLM2 (``--quick``: a small demo). A reward model fitted on the store's ratings (cross-
fitted, snapped to the five levels) — or, with ``--user rubric``, the rubric scorer — rates every
real output once; each arm's ratings form the pool its pulls draw from. prefloop's ``default``
policy and the reference project's UCB1 (``ucb1-reference``) then run ``--runs`` times for 200
iterations over the pools. Uniform allocation's expected regret is the baseline.

    .venv/bin/python bench/bench_simulate_reference.py --db sqlite:///prefloop-demo/prefloop.db
    .venv/bin/python bench/bench_simulate_reference.py --quick

Prints one JSON object; the plots go to ``--out`` (default bench/results/reference).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from prefloop.demo import (
    SIMULATED_USERS,
    DemoConfig,
    ReferenceConfig,
    run_demo,
    run_reference_experiment,
)
from prefloop.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--db", help="a demo store to take the generations from")
    parser.add_argument("--user", choices=SIMULATED_USERS, default="reward-model")
    parser.add_argument("--runs", type=int, default=None, help="runs per policy (default 200)")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--policies", default="default,ucb1-reference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/reference"))
    args = parser.parse_args()
    runs = args.runs or (50 if args.quick else 200)
    config = ReferenceConfig(
        iterations=args.iterations,
        runs=runs,
        policies=tuple(p.strip() for p in args.policies.split(",") if p.strip()),
        user=args.user,
        seed=args.seed,
    )

    started = time.perf_counter()
    demo: dict[str, object] = {"db": args.db}
    with tempfile.TemporaryDirectory(prefix="prefloop-reference-") as scratch:
        url = args.db
        if url is None:
            demo_config = DemoConfig(out_dir=Path(scratch), seed=args.seed, reward_model=None)
            if args.quick:
                demo_config = replace(demo_config.fast(), requests=24, max_tokens=48)
            demo_started = time.perf_counter()
            ran = run_demo(demo_config)
            url = ran.database_url
            demo = {
                "db": None,
                "ran_demo": {"requests": ran.requests, "max_tokens": demo_config.max_tokens},
                "seconds": round(time.perf_counter() - demo_started, 1),
            }
        with Store.open(url) as store:
            sim_started = time.perf_counter()
            result = run_reference_experiment(store, "diary", args.out, config)
            sim_s = time.perf_counter() - sim_started
    summary = result.to_json()
    policies = summary["policies"]
    print(
        json.dumps(
            {
                "benchmark": "reference experiment: simulated user over real generations",
                "quick": args.quick,
                "generations": demo,
                "simulated_user": summary["user"],
                "iterations": config.iterations,
                "runs": config.runs,
                "arms": summary["arms"],
                "best_arm": summary["best_arm"],
                "policies": policies,
                "baseline_uniform_regret": summary["uniform_regret"],
                "regret_vs_reference": (
                    round(policies["default"]["regret"] / policies["ucb1-reference"]["regret"], 3)
                    if {"default", "ucb1-reference"} <= set(policies)
                    and policies["ucb1-reference"]["regret"] > 0
                    else None
                ),
                "files": summary["files"],
                "simulation_seconds": round(sim_s, 1),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
