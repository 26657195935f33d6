"""``prefloop bandit …``: simulate policies, list them, and inspect a task's bandit in the store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from prefloop.cli._output import DbOption, JsonOption, console, err_console, print_json

if TYPE_CHECKING:
    from prefloop.bandit import SimulationSummary
    from prefloop.store import Store

TaskOption = Annotated[str, typer.Option("--task", "-t", help="Task name, e.g. diary.")]
PolicyOption = Annotated[str, typer.Option("--policy", "-p", help="Registered policy name.")]

app = typer.Typer(
    name="bandit",
    help="Bandit policies over a task's arms: simulate them, inspect and rebuild their state.",
    no_args_is_help=True,
)


def register(main: typer.Typer) -> None:
    """Add ``prefloop bandit`` to the main prefloop app."""
    main.add_typer(app, name="bandit")


@app.command()
def simulate(
    spec: Annotated[
        Path,
        typer.Option(
            "--spec",
            help='JSON: {"arms": {"A": {"values": [-1, -0.5, 0, 0.5, 1], "probs": [...]}, ...}}.',
            show_default=False,
        ),
    ],
    policies: Annotated[
        str,
        typer.Option(
            "--policies",
            help="Comma-separated policies (see `prefloop bandit policies`).",
        ),
    ] = "default,ucb1-reference",
    horizon: Annotated[int, typer.Option("--horizon", "-T", help="Decisions per run.")] = 2000,
    runs: Annotated[int, typer.Option("--runs", "-R", help="Independent seeded runs.")] = 300,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the whole simulation.")] = 0,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Save the regret curves as this PNG.", show_default=False),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Compare policies on arms with known reward distributions: regret and best-arm share."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from prefloop import bandit

    parsed = bandit.load_spec(spec)
    names = [p.strip() for p in policies.split(",") if p.strip()]
    if plot is not None and not plot.parent.resolve().is_dir():
        raise _missing_folder(plot)  # before minutes of simulation, not after
    if json_output:
        result = bandit.simulate(parsed, names, horizon=horizon, runs=runs, seed=seed)
    else:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeRemainingColumn(),
            console=err_console,
            transient=True,
        ) as progress:
            bars = {n: progress.add_task(f"{n:24s}", total=horizon) for n in names}

            def advance(name: str, step: int) -> None:
                if step % 50 == 0 or step == horizon:
                    progress.update(bars[name], completed=step)

            result = bandit.simulate(
                parsed, names, horizon=horizon, runs=runs, seed=seed, on_step=advance
            )
    summary = result.summary()
    plotted = None if plot is None else bandit.plot_regret(result, plot)
    if json_output:
        data = summary.to_json()
        print_json(data if plotted is None else data | {"plot": str(plotted)})
        return
    _print_simulation(summary, {n: r.seconds for n, r in result.policies.items()}, plotted)


def _missing_folder(plot: Path) -> Exception:
    from prefloop.errors import InvalidInputError

    return InvalidInputError(
        f"cannot write the plot {str(plot)!r}: folder {str(plot.parent)!r} does not exist"
    )


def _print_simulation(
    summary: SimulationSummary, seconds: dict[str, float], plotted: Path | None
) -> None:
    from rich.table import Table

    table = Table(title=f"{summary.runs} runs × {summary.horizon} decisions")
    table.add_column("policy")
    table.add_column("regret", justify="right")
    table.add_column("95% CI", justify="right")
    table.add_column("P(best arm recommended)", justify="right")
    table.add_column("seconds", justify="right")
    for name, row in summary.policies.items():
        low, high = row.regret_ci
        table.add_row(
            name,
            f"{row.regret:.2f}",
            f"[{low:.2f}, {high:.2f}]",
            f"{row.p_best:.3f}",
            f"{seconds[name]:.1f}",
        )
    console.print(table)
    console.print(f"best arm: [bold]{summary.best_arm}[/]")
    if plotted is not None:
        console.print(f"regret curves: {plotted}")


@app.command("policies")
def list_policies(json_output: JsonOption = False) -> None:
    """The registered policies, their default configs and papers."""
    from prefloop.bandit import POLICIES, simulation_policies

    rows: dict[str, dict[str, Any]] = {
        name: {"class": cls.__name__, "config": config.to_dict(), "paper": cls.paper}
        for name, (cls, config) in POLICIES.items()
    }
    baselines = [n for n in simulation_policies() if n not in POLICIES]
    if json_output:
        print_json({"policies": rows, "simulation_baselines": baselines})
        return
    from rich.table import Table

    table = Table()
    for column in ("name", "policy", "config", "paper"):
        table.add_column(column)
    for name, row in rows.items():
        config = ", ".join(f"{k}={v}" for k, v in row["config"].items())
        table.add_row(name, str(row["class"]), config, str(row["paper"]))
    console.print(table)
    console.print(f"simulation baselines: {', '.join(baselines)}")


@app.command()
def stats(
    task: TaskOption,
    policy: Annotated[
        str | None,
        typer.Option("--policy", "-p", help="Count decisions of this policy only."),
    ] = None,
    threshold: Annotated[
        float, typer.Option(help="Confidence the best arm must reach to stop the experiment.")
    ] = 0.95,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Per arm: rewards, mean, 95% interval, decision share; the best arm, and whether to stop."""
    from prefloop import bandit
    from prefloop.store import repo

    with _open_store(db) as store, store.session(readonly=True) as session:
        chosen = repo.get_task(session, task)
        summary = bandit.arm_stats(session, chosen, policy=policy)
        recommendation = bandit.recommend_arm(session, chosen, threshold=threshold)
    if json_output:
        print_json(
            summary.to_json()
            | {"recommendation": str(recommendation), "stop": recommendation.confident}
        )
        return
    from rich.table import Table

    table = Table(title=f"task {task}")
    for column in ("arm", "rewards", "mean", "95% interval", "raw mean", "share", "P(best)"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    for arm in summary.arms:
        table.add_row(
            arm.arm + (" (retired)" if arm.retired else ""),
            str(arm.count),
            "–" if arm.mean_reward is None else f"{arm.mean_reward:+.3f}",
            "–" if arm.interval is None else f"[{arm.interval[0]:+.2f}, {arm.interval[1]:+.2f}]",
            "–" if arm.raw_mean_reward is None else f"{arm.raw_mean_reward:+.3f}",
            f"{arm.share:.1%}",
            "–" if arm.p_best is None else f"{arm.p_best:.3f}",
        )
    console.print(table)
    console.print(str(recommendation))


@app.command()
def recompute(
    task: TaskOption,
    policy: PolicyOption = "default",
    fix: Annotated[
        bool, typer.Option("--fix", help="Replace the stored state by the recomputed one.")
    ] = False,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Rebuild a policy's state from the decision log and compare it with the stored one."""
    from prefloop import bandit
    from prefloop.store import repo

    with _open_store(db) as store, store.session(readonly=not fix) as session:
        chosen = repo.get_task(session, task)
        check = bandit.check_state(session, chosen, policy, tolerance=1e-9)
        differences, fresh = check.differences, check.recomputed
        if fix and differences:
            bandit.rebuild_state(session, chosen, policy)
    report = {
        "task": task,
        "policy": policy,
        "matches": not differences,
        "differences": differences,
        "fixed": fix and bool(differences),
        "decisions": fresh["t"],
    }
    if json_output:
        print_json(report)
        return
    if not differences:
        console.print(
            f"[green]the stored state of {policy!r} matches the log[/] ({fresh['t']} decisions)"
        )
        return
    console.print(f"[yellow]the stored state of {policy!r} differs from the log:[/]")
    for line in differences[:20]:
        console.print(f"  {line}", highlight=False)
    console.print("rebuilt from the log." if fix else "run again with --fix to rebuild it.")


def _open_store(db: str | None) -> Store:
    """The store at ``db``; a missing SQLite file is an error (these commands only read it)."""
    from prefloop.cli.data import open_store

    return open_store(db, create=False)
