"""Local generation throughput with SmolLM2-135M-Instruct: batched vs single-stream.

Both runs generate greedily from the same prompts with the same token budget, in the same
process; tokens/second counts only generated tokens (up to each row's end). The target is
batched >= 5x single-stream.

    .venv/bin/python bench/bench_generation.py            # 16 prompts, batch 16, 48 tokens
    .venv/bin/python bench/bench_generation.py --quick    # 8 prompts, batch 8, 16 tokens

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

from prefloop.llm import Completion, GenerationParams, LocalChatBackend

TARGET_SPEEDUP = 5.0
PLACES = ["Seoul", "Busan", "Yeosu", "Chuncheon", "Lisbon", "Kyoto", "Oslo", "Lima"]
COMPANY = ["my friend", "my family", "nobody"]
MOODS = ["happy", "joyful", "calm", "tired"]


def prompts(n: int) -> list[list[dict[str, str]]]:
    out = []
    for i in range(n):
        place, company, mood = PLACES[i % 8], COMPANY[i % 3], MOODS[i % 4]
        text = f"Write a short diary entry about a day in {place} with {company}, feeling {mood}."
        out.append([{"role": "user", "content": text}])
    return out


def generated_tokens(results: list[Completion]) -> int:
    return sum(r.completion_tokens or 0 for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run")
    parser.add_argument("--prompts", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's choice)"
    )
    args = parser.parse_args()
    n_prompts = args.prompts or (8 if args.quick else 16)
    batch_size = args.batch_size or n_prompts
    max_tokens = args.max_tokens or (16 if args.quick else 48)

    import torch

    started = time.perf_counter()
    backend = LocalChatBackend.smollm2(batch_size=batch_size, num_threads=args.threads)
    load_s = time.perf_counter() - started
    params = GenerationParams(max_tokens=max_tokens, temperature=0.0)
    conversations = prompts(n_prompts)
    backend.complete(conversations[0], GenerationParams(max_tokens=2, temperature=0.0))  # warm-up

    started = time.perf_counter()
    single = [backend.complete(c, params) for c in conversations]
    single_s = time.perf_counter() - started

    started = time.perf_counter()
    batched_results = backend.complete_batch(conversations, params)
    batched_s = time.perf_counter() - started
    batched = [r for r in batched_results if isinstance(r, Completion)]
    if len(batched) != len(batched_results):
        errors = [str(r) for r in batched_results if not isinstance(r, Completion)]
        sys.exit(f"batched generation failed: {errors}")

    single_tps = generated_tokens(single) / single_s
    batched_tps = generated_tokens(batched) / batched_s
    speedup = batched_tps / single_tps
    same = sum(a.text == b.text for a, b in zip(single, batched, strict=True))
    print(
        json.dumps(
            {
                "benchmark": "local generation, SmolLM2-135M-Instruct (fp32, greedy)",
                "quick": args.quick,
                "prompts": n_prompts,
                "batch_size": batch_size,
                "max_tokens": max_tokens,
                "torch_threads": args.threads or torch.get_num_threads(),
                "machine": platform.machine(),
                "load_s": round(load_s, 2),
                "baseline_single_stream": {
                    "seconds": round(single_s, 2),
                    "generated_tokens": generated_tokens(single),
                    "tokens_per_s": round(single_tps, 2),
                },
                "batched": {
                    "seconds": round(batched_s, 2),
                    "generated_tokens": generated_tokens(batched),
                    "tokens_per_s": round(batched_tps, 2),
                },
                "speedup": round(speedup, 2),
                "target_speedup": TARGET_SPEEDUP,
                "meets_target": speedup >= TARGET_SPEEDUP,
                "identical_outputs": f"{same}/{n_prompts}",
            }
        )
    )


if __name__ == "__main__":
    main()
