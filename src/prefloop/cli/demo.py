"""CLI of the demo: ``prefloop demo`` runs the whole loop on this machine and writes a report."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from prefloop.cli._output import console, err_console, phase_bars, print_json
from prefloop.errors import InvalidInputError

if TYPE_CHECKING:
    from prefloop.demo import DemoResult

_PHASE_LABELS = {
    "load model": "Loading the LLM",
    "warm-up": "Warm-up on the hand-written prompt",
    "propose": "The LLM proposes candidate prompts",
    "requests": "Simulated requests (decide → generate → rate)",
    "train": "Training a LoRA adapter (KTO) on the ratings",
    "requests after training": "More requests, the trained model as an arm",
    "reward model": "Fitting a reward model on the ratings",
    "report": "Writing the report",
}


_HELP = (
    "Run prefloop's loop end to end on this machine and write a report.\n\n"
    "A diary task with a hand-written prompt and three candidates written by the local LLM; "
    "simulated requests with random inputs; the bandit picks a prompt per request; SmolLM2 "
    "writes the outputs in batches; a transparent rubric scorer (the demo's stand-in for "
    "people) rates them; a reward model is fitted on the ratings. The report (terminal table, "
    "PNG plots, OUT/report.html) shows per-prompt means with intervals, the recommended prompt "
    "and its confidence, and the regret against uniform allocation. About five minutes on two "
    "CPU cores (--fast: less)."
)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main prefloop app."""
    app.command("demo", help=_HELP)(demo)


def demo(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the store, the reward model and the report.")
    ] = Path("prefloop-demo"),
    requests: Annotated[
        int | None, typer.Option("--requests", min=1, help="Simulated requests (default 96).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the whole run.")] = 0,
    db: Annotated[
        str | None,
        typer.Option("--db", help="Database URL (default: sqlite:///OUT/prefloop.db)."),
    ] = None,
    fast: Annotated[
        bool, typer.Option("--fast", help="A smaller run: 40 requests, shorter outputs.")
    ] = False,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            "-b",
            envvar="PREFLOOP_LLM_BACKEND",
            help="LLM backend: 'local' (SmolLM2-135M on this machine, or "
            "PREFLOOP_LLM_LOCAL_MODEL) or 'openai' (PREFLOOP_LLM_BASE_URL, PREFLOOP_LLM_API_KEY, "
            "PREFLOOP_LLM_MODEL).",
        ),
    ] = "local",
    policy: Annotated[
        str, typer.Option("--policy", help="Bandit policy (prefloop bandit policies).")
    ] = "default",
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Requests per batch (default 8).")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", min=1, help="Tokens per output (default 100).")
    ] = None,
    no_propose: Annotated[
        bool,
        typer.Option(
            "--no-propose", help="Use the hand-written candidate prompts instead of asking the LLM."
        ),
    ] = False,
    reward_model: Annotated[
        str,
        typer.Option(
            "--reward-model",
            help="Reward model fitted on the ratings: auto, REGRESSOR[:FEATURES] (e.g. "
            "ridge:stats) or none.",
        ),
    ] = "auto",
    train: Annotated[
        bool,
        typer.Option(
            "--train",
            help="Then train a LoRA adapter (KTO) on the ratings, add it as a model arm and "
            "serve more requests: does the trained model beat the prompts? (about 10 more "
            "minutes on two cores)",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON summary object for scripts.")
    ] = False,
) -> None:
    """``prefloop demo``; its help text is ``_HELP``."""
    from prefloop.demo import DemoConfig, run_demo
    from prefloop.llm import BACKEND_KINDS

    if backend not in BACKEND_KINDS:
        raise InvalidInputError(
            f"unknown --backend {backend!r}; choose one of {', '.join(BACKEND_KINDS)}"
        )
    config = DemoConfig(
        out_dir=out,
        database_url=db,
        seed=seed,
        policy=policy,
        backend=backend,
        reward_model=None if reward_model.lower() == "none" else reward_model,
        train=train,
    )
    if fast:
        config = config.fast()
    overrides: dict[str, object] = {}
    if requests is not None:
        overrides["requests"] = requests
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    if max_tokens is not None:
        overrides["max_tokens"] = max_tokens
    if no_propose:
        overrides["propose"] = False
    config = replace(config, **overrides)  # type: ignore[arg-type]

    with phase_bars(_PHASE_LABELS, quiet=as_json) as progress:
        result = run_demo(config, progress=progress)
    if as_json:
        print_json(result.to_json())
    else:
        from prefloop.demo import rich_summary

        console.print(rich_summary(result))
    _fail_unless_rewarded(result)


def _fail_unless_rewarded(result: DemoResult) -> None:
    """Exit 1, saying why, when no output could be rated (every LLM call failed): the run
    could not do its job, and its report recommends nothing. Failed calls are counted on
    stderr in any case."""
    failures = result.failure_summary()
    if failures is not None:
        err_console.print(f"[yellow]{failures}[/yellow]")
    if result.collected_rewards:
        return
    hint = ""
    if any("unreachable" in error for error in result.llm_errors):
        hint = " The LLM server was unreachable: start it, or check PREFLOOP_LLM_BASE_URL."
    err_console.print(
        f"[red]prefloop demo collected no reward: all {result.failed} LLM calls failed, so "
        f"nothing was rated and no prompt is recommended.{hint}[/red]"
    )
    raise typer.Exit(1)
