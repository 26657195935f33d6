"""``prefloop train eval``: a trained model against its reference, judged by a reward model.

:func:`eval_command` is registered under the ``train`` group
(``train_app.command("eval")(eval_command)``); the work is
:func:`prefloop.train.evaluate.evaluate_policy`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from prefloop.cli._output import DbOption, JsonOption, console, err_console, phase_bars, print_json
from prefloop.errors import InvalidInputError

if TYPE_CHECKING:
    from prefloop.train.evaluate import PolicyEvaluation

__all__ = ["eval_command"]

_PHASE_LABELS = {
    "trained": "generating (trained)",
    "reference": "generating (reference)",
    "kl": "log-probabilities",
    "scoring": "scoring",
}


def _task_prompts(task: str, db: str | None) -> list[str]:
    from prefloop.feedback import task_prompts
    from prefloop.store import Store
    from prefloop.store.repo import get_task

    with Store.open(db) as store, store.session(readonly=True) as session:
        prompts = [p.prompt for p in task_prompts(session, get_task(session, task))]
    if not prompts:
        raise InvalidInputError(
            f"task {task!r} has no generations with a prompt to evaluate on; import or serve "
            "some first, or give --prompts FILE"
        )
    return prompts


def _summary(ev: PolicyEvaluation) -> Table:
    table = Table(title=f"{ev.model} ({ev.method}) against its reference", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")

    def num(value: float | None, fmt: str = ".3f") -> str:
        return "–" if value is None else format(value, fmt)

    interval = ev.win_rate_interval
    table.add_row(
        "win rate (ties half)",
        f"{num(ev.win_rate)}  [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "–",
    )
    table.add_row("wins / ties / losses", f"{ev.wins} / {ev.ties} / {ev.losses}")
    table.add_row(
        "mean reward (trained, reference)",
        f"{num(ev.mean_reward_trained)}, {num(ev.mean_reward_reference)}",
    )
    table.add_row(
        "KL per token, sampled / full (nats)",
        f"{ev.kl_per_token:.4f} / {ev.kl_full_per_token:.4f}",
    )
    table.add_row(
        "answer tokens (trained, reference)",
        f"{ev.mean_tokens_trained:.1f}, {ev.mean_tokens_reference:.1f}  "
        f"(ratio {num(ev.length_ratio, '.2f')})",
    )
    if ev.toxicity_threshold is not None:
        table.add_row(
            f"toxic share, P ≥ {ev.toxicity_threshold:g} (trained, reference)",
            f"{num(ev.toxicity_trained, '.1%')}, {num(ev.toxicity_reference, '.1%')}",
        )
    table.add_row("prompts (scored)", f"{ev.prompts} ({ev.scored})")
    return table


def eval_command(
    model: Annotated[
        Path,
        typer.Option("--model", help="The --out folder of a `prefloop train` run."),
    ],
    reward: Annotated[
        Path,
        typer.Option(
            "--reward",
            help="A prefloop reward-model folder that judges both answers (best one not "
            "trained on the same pairs as the model).",
        ),
    ],
    prompts: Annotated[
        Path | None,
        typer.Option(
            "--prompts",
            help='Held-out prompts: a JSONL file with {"prompt": "..."} on each line.',
        ),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option("--task", help="Evaluate on this task's prompts in the store instead."),
    ] = None,
    db: DbOption = None,
    n: Annotated[
        int | None, typer.Option("--n", help="Use the first N prompts (default: all).", min=1)
    ] = None,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="Longest answer in tokens.", min=1)
    ] = 64,
    temperature: Annotated[
        float,
        typer.Option(
            "--temperature", help="0 decodes greedily; above 0 samples (seeded by --seed).", min=0
        ),
    ] = 0.0,
    seed: Annotated[
        int, typer.Option("--seed", help="Seeds sampling and the bootstrap interval.")
    ] = 0,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Prompts generated together.", min=1)
    ] = 8,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            help="torch threads (default: $PREFLOOP_LLM_LOCAL_THREADS, else one per core; on a "
            "busy machine 1 can be many times faster).",
            min=1,
            show_default=False,
        ),
    ] = None,
    toxicity: Annotated[
        bool,
        typer.Option(
            "--toxicity/--no-toxicity",
            help="Measure the share of toxic answers with the packaged classifier "
            "(pip install --no-deps toxic-comment-classifier h5py).",
        ),
    ] = True,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for report.html, rewards.png, lengths.png and eval.json (every answer).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Generate from a trained model and its reference on held-out prompts and compare them:
    win rate judged by a reward model (bootstrap 95% interval), KL per token, length ratio,
    toxicity before and after."""
    from prefloop.reward import load_reward_model
    from prefloop.train.evaluate import (
        EvalConfig,
        evaluate_policy,
        read_prompts_file,
        write_eval_report,
    )
    from prefloop.train.models import read_manifest

    if (prompts is None) == (task is None):
        raise InvalidInputError("give the prompts with exactly one of --prompts FILE or --task")
    if not model.is_dir():
        raise InvalidInputError(
            f"--model {str(model)!r} does not exist; give the --out folder of a "
            "`prefloop train` run"
        )
    read_manifest(model)  # a folder prefloop did not train fails before anything loads
    texts = read_prompts_file(prompts) if prompts is not None else _task_prompts(str(task), db)
    scorer = load_reward_model(reward)
    if threads is None:
        from prefloop.llm.settings import load_local_settings

        threads = load_local_settings().threads
    config = EvalConfig(
        n=n,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        batch_size=batch_size,
        threads=threads,
        toxicity=toxicity,
    )
    with phase_bars(_PHASE_LABELS, quiet=as_json) as progress:
        evaluation = evaluate_policy(
            model, texts, scorer, config, scorer_name=str(reward), progress=progress
        )
    if out is not None:
        evaluation = evaluation.with_files(write_eval_report(evaluation, out))
    for message in evaluation.scorer_errors:
        err_console.print(f"[yellow]warning:[/] the scorer failed: {escape(message)}")
    if evaluation.unscored:
        err_console.print(
            f"[yellow]warning:[/] {evaluation.unscored} prompt(s) left out of the win rate: "
            "the reward model gave no score"
        )
    if as_json:
        print_json(evaluation.to_json())
        return

    console.print(_summary(evaluation))
    console.print(escape(evaluation.verdict))
    for name, path in evaluation.files.items():
        console.print(f"[dim]{name}: {escape(path)}[/]")
