"""Printing for the CLI: Rich for people, plain JSON for scripts, one way to report errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console

from prefloop.errors import PrefloopError

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database URL (default: $PREFLOOP_DATABASE_URL or sqlite:///prefloop.db).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object (for scripts).")]

console = Console()
err_console = Console(stderr=True)


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout (no Rich markup, so scripts can parse it)."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr; ``raise fail(...)`` ends the command."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def run_app(app: typer.Typer) -> None:
    """Run ``app``; a :class:`PrefloopError` becomes a one-line message and exit code 2."""
    try:
        app()
    except PrefloopError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise SystemExit(2) from None


def redact_url(url: str) -> str:
    """A database URL fit to print: the password hidden."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


PhaseProgress = Callable[[str, int, int], None]


@contextmanager
def phase_bars(labels: Mapping[str, str], *, quiet: bool) -> Iterator[PhaseProgress]:
    """A ``progress(phase, done, total)`` callback drawing one Rich bar per phase on stderr
    (labelled from ``labels``, else the phase's name); ``quiet`` draws nothing (``--json``)."""
    if quiet:
        yield lambda _phase, _done, _total: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bars = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
    )
    ids: dict[str, Any] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in ids:
            ids[phase] = bars.add_task(labels.get(phase, phase), total=max(total, 1))
        bars.update(ids[phase], completed=done, total=max(total, 1))

    with bars:
        yield update
