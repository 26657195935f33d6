"""CLI of Constitutional AI: ``prefloop cai constitution|revise|label|agree``.

The work is in :mod:`prefloop.cai`; these commands read files and the store, pick the LLM
backend (``--backend``, the local model by default) and print the results.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from prefloop.cli._output import DbOption, JsonOption, console, err_console, phase_bars, print_json
from prefloop.cli.llm import BackendOption, _backend
from prefloop.errors import InvalidInputError

if TYPE_CHECKING:
    from prefloop.cai import CompareStats, Constitution, JudgeAgreement, LabelResult

__all__ = ["register"]

ConstitutionOption = Annotated[
    Path | None,
    typer.Option(
        "--constitution",
        "-c",
        help="A constitution YAML file (default: the packaged one; write a copy to edit with "
        "`prefloop cai constitution -o FILE`).",
        show_default=False,
    ),
]
PrincipleOption = Annotated[
    str | None,
    typer.Option(
        "--principle",
        help="Use only this principle (its id) instead of drawing one at random each time.",
    ),
]
SeedOption = Annotated[
    int, typer.Option("--seed", help="Draws the principles; sent to the backend as its seed.")
]
LimitOption = Annotated[
    int | None, typer.Option("--limit", min=1, help="At most this many pairs.", show_default=False)
]
AttemptsOption = Annotated[
    int,
    typer.Option(
        "--max-attempts",
        min=1,
        help="Calls per order of a pair at most; a failed call or an answer that names neither "
        "(A) nor (B) is asked again.",
    ),
]
_LABELS = {"revising": "critique and revision calls", "judging": "judge answers"}


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main prefloop app."""
    cai_app = typer.Typer(
        help="Constitutional AI: revise answers by principles (SFT data) and label pairs with an "
        "AI judge (judge feedback).",
        no_args_is_help=True,
    )
    cai_app.command("constitution")(constitution)
    cai_app.command("revise")(revise)
    cai_app.command("label")(label)
    cai_app.command("agree")(agree)
    app.add_typer(cai_app, name="cai")


def _load(path: Path | None) -> Constitution:
    from prefloop.cai import load_constitution

    return load_constitution(path)


def _quiet(as_json: bool) -> bool:
    """No progress bar for ``--json`` or when stderr is not a terminal."""
    return as_json or not err_console.is_terminal


def _warn_errors(errors: dict[str, int], calls: int) -> None:
    if errors:
        worst = sorted(errors.items(), key=lambda item: -item[1])[:3]
        listed = "; ".join(f"{escape(e)} (×{n})" for e, n in worst)
        err_console.print(
            f"[yellow]warning:[/] {sum(errors.values())} of {calls} LLM calls failed: {listed}"
        )


def constitution(
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write it to this file instead of printing it."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out file.")] = False,
    check: Annotated[
        Path | None,
        typer.Option("--check", help="Check this constitution file and list its principles."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Print the packaged constitution (YAML, to copy and edit), or check a file of your own."""
    from prefloop.cai import default_constitution_text

    if check is not None:
        loaded = _load(check)
        if as_json:
            print_json(loaded.to_json())
            return
        console.print(f"{escape(str(check))}: constitution {escape(loaded.name)!r} is valid")
        for principle in loaded.principles:
            console.print(f"  {escape(principle.id)}: {escape(principle.comparison)}")
        return
    text = default_constitution_text()
    if out is None:
        if as_json:
            print_json(_load(None).to_json())
        else:
            typer.echo(text, nl=False)
        return
    if out.exists() and not force:
        raise InvalidInputError(f"{out} exists; choose another --out or add --force to replace it")
    if not out.parent.is_dir():
        raise InvalidInputError(f"the folder of {str(out)!r} does not exist; create it first")
    out.write_text(text, encoding="utf-8")
    if as_json:
        print_json({"written": str(out)})
    else:
        console.print(f"wrote {escape(str(out))}; edit it and pass it with --constitution")


def _task_prompts(task: str, db: str | None) -> list[str]:
    from prefloop.cli.data import open_store
    from prefloop.feedback import task_prompts
    from prefloop.store.repo import get_task

    with open_store(db, create=False) as store, store.session(readonly=True) as session:
        prompts = [p.prompt for p in task_prompts(session, get_task(session, task))]
    if not prompts:
        raise InvalidInputError(
            f"task {task!r} has no generations with a prompt to revise; generate or import some "
            "first, or give --prompts FILE"
        )
    return prompts


def revise(
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="The JSONL file to write (prompt, completion, and the trace)."
        ),
    ],
    prompts: Annotated[
        Path | None,
        typer.Option("--prompts", help='A JSONL file with one {"prompt": "..."} per line.'),
    ] = None,
    task: Annotated[
        str | None, typer.Option("--task", help="Revise answers to this task's prompts.")
    ] = None,
    constitution_file: ConstitutionOption = None,
    rounds: Annotated[
        int, typer.Option("--rounds", min=1, help="Critique-and-revise rounds per prompt.")
    ] = 1,
    seed: SeedOption = 0,
    principle: PrincipleOption = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="Only the first N prompts.", show_default=False),
    ] = None,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", min=1, help="Most tokens of each answer.")
    ] = 256,
    temperature: Annotated[
        float, typer.Option("--temperature", min=0.0, help="Sampling temperature; 0 is greedy.")
    ] = 0.7,
    backend: BackendOption = "local",
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Answer, critique by a principle and revise: SFT data for `train sft --data`.

    The model answers each prompt, critiques its answer against a principle drawn at random
    (seeded) and rewrites it, --rounds times. Each row of --out holds the prompt, the final
    revision as its completion, and the trace. A prompt whose LLM call fails is reported and
    left out; when every prompt fails nothing is written and the command fails."""
    from prefloop.cai import ReviseConfig, check_output_path, write_revisions
    from prefloop.cai import revise as run_revise
    from prefloop.llm import LLMError
    from prefloop.train.evaluate import read_prompts_file

    if (prompts is None) == (task is None):
        raise InvalidInputError("give either --prompts FILE or --task NAME (one of them)")
    loaded = _load(constitution_file)
    if principle is not None:
        loaded.principle(principle)
    config = ReviseConfig(
        rounds=rounds,
        seed=seed,
        principle=principle,
        max_tokens=max_tokens,
        temperature=temperature,
    )
    config.check()
    check_output_path(out)
    texts = read_prompts_file(prompts) if prompts is not None else _task_prompts(str(task), db)
    texts = texts[:limit] if limit is not None else texts
    with _backend(backend) as chat, phase_bars(_LABELS, quiet=_quiet(as_json)) as progress:
        result = run_revise(chat, texts, loaded, config, progress=progress)
    if not result.examples:
        first = result.failures[0]
        raise LLMError(
            f"every one of the {result.prompts} prompts failed, nothing was written to {out} "
            f"(first: {first.step}: {first.reason}). Check that the backend answers, e.g. "
            f"`prefloop llm complete hello --backend {backend}`, and its settings "
            "(PREFLOOP_LLM_BASE_URL, PREFLOOP_LLM_API_KEY, PREFLOOP_LLM_MODEL for openai)"
        )
    write_revisions(result, out)
    _warn_errors(result.errors, result.calls)
    for failure in result.failures[:5]:
        err_console.print(
            f"[yellow]warning:[/] prompt {failure.index + 1} left out ({escape(failure.step)}): "
            f"{escape(failure.reason)}"
        )
    if len(result.failures) > 5:
        err_console.print(f"[yellow]warning:[/] … and {len(result.failures) - 5} more left out")
    if as_json:
        print_json({**result.to_json(), "out": str(out)})
        return
    console.print(
        f"revised {len(result.examples)} of {result.prompts} prompts ({result.rounds} "
        f"round(s), {result.calls} calls, {result.seconds:.1f} s) with constitution "
        f"{escape(result.constitution)!r} → {escape(str(out))}"
    )
    if result.failures:
        console.print(f"{len(result.failures)} prompt(s) failed and were left out")
    console.print(f"[dim]train on it: prefloop train sft --data {escape(str(out))} --out DIR[/]")


def _stats_line(stats: CompareStats) -> str:
    return (
        f"{stats.calls} calls, {stats.llm_errors} failed, {stats.unparsable} unreadable answers, "
        f"{stats.position_inconsistent} pairs whose verdict followed the position (ties)"
    )


def label(
    task: Annotated[str, typer.Option("--task", help="The task whose output pairs to judge.")],
    constitution_file: ConstitutionOption = None,
    limit: LimitOption = None,
    principle: PrincipleOption = None,
    seed: SeedOption = 0,
    author: Annotated[
        str,
        typer.Option(
            "--author",
            help="Prefix of the verdicts' author, AUTHOR:CONSTITUTION:PRINCIPLE; pairs already "
            "judged under this prefix and constitution are skipped.",
        ),
    ] = "cai",
    max_attempts: AttemptsOption = 3,
    backend: BackendOption = "local",
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Judge pairs of a task's outputs by the constitution; store them as judge feedback.

    An LLM judge compares two outputs of one input under a principle drawn at random, as a
    multiple-choice question ((A) or (B)) asked in both orders; two votes for one output make
    it the winner, a split vote is a tie. Each verdict is stored as pairwise feedback with
    source `judge`, which exports and reward-model training leave out unless asked
    (`--source judge`, `--with-model-feedback`). Nothing is stored if the judge decides no
    pair."""
    from prefloop.cai import CompareConfig, LabelConfig, label_task
    from prefloop.cli.data import open_store

    loaded = _load(constitution_file)
    config = LabelConfig(
        limit=limit,
        principle=principle,
        author=author,
        compare=CompareConfig(max_attempts=max_attempts, seed=seed),
    )
    config.check()
    if principle is not None:
        loaded.principle(principle)
    with (
        open_store(db, create=False) as store,
        _backend(backend) as chat,
        phase_bars(_LABELS, quiet=_quiet(as_json)) as progress,
    ):
        result = label_task(store, task, chat, loaded, config, progress=progress)
    _warn_errors(result.stats.errors, result.stats.calls)
    if result.failures:
        err_console.print(
            f"[yellow]warning:[/] {len(result.failures)} pair(s) got no verdict and were not "
            f"stored (first: {escape(result.failures[0].reason)})"
        )
    if as_json:
        print_json(result.to_json())
        return
    _print_label(result)


def _print_label(result: LabelResult) -> None:
    summary = result.to_json()
    winners = summary["winners"]
    console.print(
        f"stored {summary['stored']} judge verdict(s) on task {escape(result.task)!r} "
        f"(first output {winners['a']}, second {winners['b']}, tie {winners['tie']}; "
        f"{len(result.failures)} without a verdict; {result.candidates} pair(s) were waiting)"
    )
    console.print(
        f"[dim]{escape(_stats_line(result.stats))}; author {summary['author_prefix']}…[/]"
    )


def agree(
    pairs: Annotated[
        Path | None,
        typer.Option(
            "--pairs",
            help="Human preference pairs (JSONL: prompt/chosen/rejected, or HH "
            "chosen/rejected dialogues).",
        ),
    ] = None,
    task: Annotated[
        str | None, typer.Option("--task", help="Use this task's human preference pairs.")
    ] = None,
    constitution_file: ConstitutionOption = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", min=1, help="Judge a random sample (seeded) of N pairs.", show_default=False
        ),
    ] = None,
    principle: PrincipleOption = None,
    seed: SeedOption = 0,
    samples: Annotated[
        int, typer.Option("--samples", min=100, help="Bootstrap resamples of the interval.")
    ] = 1000,
    max_attempts: AttemptsOption = 3,
    backend: BackendOption = "local",
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The judge's agreement with human preference pairs, with a 95% interval.

    How often the judge picks the reply people preferred (ties half), with a bootstrap
    interval over prompts, next to the length baselines: the report `prefloop reward eval`
    gives any pairwise reward model."""
    from prefloop.cai import AgreementConfig, CompareConfig, judge_agreement
    from prefloop.reward import load_pair_data, pair_data_from_store

    if (pairs is None) == (task is None):
        raise InvalidInputError("give either --pairs FILE or --task NAME (one of them)")
    loaded = _load(constitution_file)
    config = AgreementConfig(
        limit=limit,
        principle=principle,
        samples=samples,
        compare=CompareConfig(max_attempts=max_attempts, seed=seed),
    )
    config.check()
    if principle is not None:
        loaded.principle(principle)
    if pairs is not None:
        if not pairs.is_file():
            raise InvalidInputError(f"pairs file {str(pairs)!r} does not exist")
        data = load_pair_data(pairs)
    else:
        from prefloop.cli.data import open_store

        with open_store(db, create=False) as store:
            data = pair_data_from_store(store, str(task))
        if len(data) == 0:
            raise InvalidInputError(
                f"task {task!r} has no human preference pairs to compare the judge with; "
                "collect pairwise feedback or rankings first, or give --pairs FILE"
            )
    with _backend(backend) as chat, phase_bars(_LABELS, quiet=_quiet(as_json)) as progress:
        result = judge_agreement(chat, data, loaded, config, progress=progress)
    _warn_errors(result.stats.errors, result.stats.calls)
    if as_json:
        print_json(result.to_json())
        return
    _print_agreement(result)


def _print_agreement(result: JudgeAgreement) -> None:
    report = result.report
    low, high = result.interval
    table = Table(title=f"judge agreement with people on {result.source}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("accuracy (ties half)", f"{result.accuracy:.3f}  [{low:.3f}, {high:.3f}]")
    table.add_row("pairs judged (no verdict)", f"{report['n']} ({report['unscored']})")
    table.add_row("shorter reply wins", f"{report['baseline']['shorter_wins']:.3f}")
    table.add_row("length-only model", f"{report['baseline']['length_model']:.3f}")
    gain = report["vs_baseline"]
    gain_low, gain_high = gain["ci"]
    table.add_row(
        "gain over the better baseline",
        f"{gain['accuracy_gain']:+.3f}  [{gain_low:+.3f}, {gain_high:+.3f}]",
    )
    for principle, figures in result.by_principle.items():
        table.add_row(
            f"  under {escape(principle)}",
            f"{figures['accuracy']:.3f} on {int(figures['pairs'])}",
        )
    console.print(table)
    console.print(f"[dim]{escape(_stats_line(result.stats))}; backend {escape(result.backend)}[/]")
