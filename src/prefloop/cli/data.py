"""``prefloop init``, ``import``, ``export`` and ``stats``: the store and the data in it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from prefloop.cli._output import DbOption, JsonOption, console, err_console, print_json, redact_url

if TYPE_CHECKING:
    from prefloop.io import ImportResult
    from prefloop.store import Store

TaskOption = Annotated[str, typer.Option("--task", "-t", help="Task name, e.g. diary.")]
FileArgument = Annotated[
    Path, typer.Argument(help="JSONL file, one record per line.", show_default=False)
]
AuthorOption = Annotated[
    str, typer.Option(help="Author of the imported feedback (a line's own wins for ratings).")
]
SourceOption = Annotated[
    str, typer.Option(help="Source of the imported feedback: end_user, labeler, judge, …")
]
OutputOption = Annotated[
    Path, typer.Option("--output", "-o", help="File to write (JSONL).", show_default=False)
]
FormatOption = Annotated[
    str,
    typer.Option(
        "--format",
        help="plain: strings; conversational: lists of {role, content} messages.",
    ),
]
SourcesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--source",
        help="Use feedback from this source (repeat for several; default: end_user, labeler, "
        "auto).",
        show_default=False,
    ),
]


def open_store(db: str | None, *, create: bool) -> Store:
    """The store at ``db``; commands that only read refuse to create a new SQLite file."""
    from sqlalchemy.engine import make_url

    from prefloop.errors import NotFoundError
    from prefloop.store import Store, database_url

    url = database_url(db)
    if not create:
        parsed = make_url(url)
        database = parsed.database
        if (
            parsed.get_backend_name() == "sqlite"
            and database not in (None, "", ":memory:")
            and not Path(database).exists()
        ):
            raise NotFoundError(
                f"no prefloop store at {database}: create it with `prefloop init --db {url}` "
                "(or import a file), or point --db / PREFLOOP_DATABASE_URL at your store"
            )
    return Store.open(url, upgrade=create)


def init(db: DbOption = None, json_output: JsonOption = False) -> None:
    """Create the store, or upgrade it to this prefloop's schema; print where it is."""
    from prefloop.store import Store, database_url
    from prefloop.store.db import head_revision, make_engine

    url = database_url(db)
    probe = Store(url=url, engine=make_engine(url))
    try:
        before = probe.revision()
    finally:
        probe.close()
    with Store.open(url) as store:
        revision = store.revision()
    state = "created" if before is None else "up to date" if before == revision else "upgraded"
    assert revision == head_revision()
    if json_output:
        print_json({"url": redact_url(url), "state": state, "revision": revision})
    else:
        console.print(f"prefloop store {state} at {redact_url(url)} (schema {revision})")


@contextmanager
def _progress(path: Path, *, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar over the lines of ``path`` on stderr; the callback takes a line number."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from prefloop.io import count_lines

    total = count_lines(path) if path.is_file() else None
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=quiet,
    ) as progress:
        bar = progress.add_task(f"importing {path.name}", total=total)
        yield lambda line: progress.update(bar, completed=line)


def _run_import(
    importer: Callable[..., ImportResult],
    file: Path,
    task: str,
    db: str | None,
    json_output: bool,
    **options: Any,
) -> None:
    with (
        open_store(db, create=True) as store,
        _progress(file, quiet=json_output) as advance,
        store.session() as session,
    ):
        result = importer(session, file, task, progress=advance, **options)
    if json_output:
        print_json(result.to_json())
        return
    created = " (new task)" if result.created_task else ""
    console.print(
        f"imported {result.imported} {result.kind} from {result.file} into task "
        f"{result.task!r}{created}: {result.generations} generations, "
        f"{result.feedback} feedback events"
    )


def import_ratings(
    file: FileArgument,
    task: TaskOption,
    author: AuthorOption = "import",
    source: SourceOption = "labeler",
    scale: Annotated[
        str | None,
        typer.Option(
            help="Rating levels for a new task, comma-separated (default -1,-0.5,0,0.5,1).",
            show_default=False,
        ),
    ] = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Import rated texts: {"text", "rating", "prompt"?, "input"?, "id"?, "author"?} or
    {"image_id", "caption", "rate"} per line.

    Each line becomes a generation and one rating; ratings must be levels of the task's scale.
    The task is created if missing. A malformed line aborts the import with FILE:LINE and
    stores nothing.
    """
    from prefloop.errors import InvalidInputError
    from prefloop.io import import_ratings as run

    levels = None
    if scale is not None:
        try:
            levels = [float(level) for level in scale.split(",")]
        except ValueError:
            raise InvalidInputError(
                f"--scale {scale!r} must be numbers separated by commas, e.g. 1,2,3,4,5"
            ) from None
    _run_import(run, file, task, db, json_output, author=author, source=source, scale=levels)


def _import_command(kind: Literal["pairs", "rankings"], doc: str) -> Callable[..., None]:
    """The ``prefloop import pairs|rankings`` command: the same options, another importer."""

    def command(
        file: FileArgument,
        task: TaskOption,
        author: AuthorOption = "import",
        source: SourceOption = "labeler",
        db: DbOption = None,
        json_output: JsonOption = False,
    ) -> None:
        from prefloop import io

        importer = io.import_pairs if kind == "pairs" else io.import_rankings
        _run_import(importer, file, task, db, json_output, author=author, source=source)

    command.__name__ = command.__qualname__ = f"import_{kind}"
    command.__doc__ = doc
    return command


import_pairs = _import_command(
    "pairs",
    """Import preference pairs: {"prompt", "chosen", "rejected", "margin"?} or Anthropic HH's
    {"chosen", "rejected"} dialogues per line.

    Each line becomes two generations (same prompt) and one pairwise event, chosen winning.
    """,
)
import_rankings = _import_command(
    "rankings",
    """Import rankings: {"prompt", "responses": [...], "ranking": [...]} per line (1 = best,
    equal ranks are ties).

    Each line becomes K generations and one ranking event (K(K-1)/2 pairs on export).
    """,
)


def _run_export(
    kind: str,
    make_rows: Callable[..., Iterator[dict[str, Any]]],
    task: str,
    output: Path,
    db: str | None,
    json_output: bool,
    **options: Any,
) -> None:
    from prefloop.io import write_jsonl
    from prefloop.store.repo import get_task

    with open_store(db, create=False) as store, store.session(readonly=True) as session:
        found = get_task(session, task)
        count = write_jsonl(output, make_rows(session, found, **options))
    if json_output:
        print_json({"exported": count, "kind": kind, "task": task, "file": str(output)})
    else:
        console.print(f"wrote {count} {kind} rows of task {task!r} to {output}")


def _sources(sources: list[str] | None) -> tuple[str, ...]:
    from prefloop.errors import InvalidInputError
    from prefloop.feedback import HUMAN_SOURCES, SOURCES

    if not sources:
        return HUMAN_SOURCES
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise InvalidInputError(f"unknown --source {unknown}; sources are {', '.join(SOURCES)}")
    return tuple(sources)


def export_preferences(
    task: TaskOption,
    output: OutputOption,
    format: FormatOption = "plain",
    from_ratings: Annotated[
        bool,
        typer.Option(
            "--from-ratings",
            help="Add pairs of same-prompt generations with different rewards (with a margin).",
        ),
    ] = False,
    source: SourcesOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Export preference pairs {"prompt", "chosen", "rejected", "margin"?} (TRL's format):
    pairwise feedback, rankings expanded to pairs, and optionally rating-derived pairs."""
    from prefloop.io import preference_rows

    _run_export(
        "preference",
        preference_rows,
        task,
        output,
        db,
        json_output,
        format=format,
        from_ratings=from_ratings,
        sources=_sources(source),
    )


def export_sft(
    task: TaskOption,
    output: OutputOption,
    format: FormatOption = "plain",
    min_reward: Annotated[
        float | None,
        typer.Option(
            help="Keep generations with at least this reward (default: the second-highest "
            "level of the task's scale, 0.5 on the default scale).",
            show_default=False,
        ),
    ] = None,
    edits: Annotated[
        bool, typer.Option("--edits/--no-edits", help="Include users' edited final texts.")
    ] = True,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Export supervised fine-tuning data {"prompt", "completion"} (plain) or {"messages"}
    (conversational): well-rewarded generations and users' edited texts."""
    from prefloop.io import sft_rows

    _run_export(
        "sft",
        sft_rows,
        task,
        output,
        db,
        json_output,
        format=format,
        min_reward=min_reward,
        include_edits=edits,
    )


def export_unpaired(
    task: TaskOption,
    output: OutputOption,
    format: FormatOption = "plain",
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Export unpaired preferences {"prompt", "completion", "label"} (TRL's KTO format):
    label is true for a positive reward, false for a negative one."""
    from prefloop.io import unpaired_rows

    _run_export("unpaired", unpaired_rows, task, output, db, json_output, format=format)


def export_ratings(
    task: TaskOption,
    output: OutputOption,
    source: SourcesOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Export ratings {"text", "rating", "prompt"?, "input"?, "id", "author"}, one per rating
    event; `prefloop import ratings` reads them back."""
    from prefloop.io import rating_rows

    _run_export("rating", rating_rows, task, output, db, json_output, sources=_sources(source))


def stats(task: TaskOption, db: DbOption = None, json_output: JsonOption = False) -> None:
    """Counts of a task's generations and feedback (by kind and source), its rating
    distribution, rewards and how much its raters agree.

    With --json: one object; "distribution" maps each rating level, written in its shortest
    form ("-1", "-0.5", "0", "0.5", "1"), to its number of rating events.
    """
    from rich.table import Table

    from prefloop.feedback import feedback_stats
    from prefloop.store.repo import get_task

    with open_store(db, create=False) as store, store.session(readonly=True) as session:
        result = feedback_stats(session, get_task(session, task))
    if json_output:
        print_json(result.to_json())
        return

    def number(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    console.print(
        f"task [bold]{result.task}[/]: {result.generations} generations "
        f"({result.failed_generations} failed, {result.rewarded_generations} with a reward, "
        f"mean reward {number(result.mean_reward)}), {result.feedback} feedback events"
    )
    counts = Table("feedback", "events", title="by kind and source")
    for kind, n in result.by_kind.items():
        counts.add_row(f"kind {kind}", str(n))
    for source, n in result.by_source.items():
        counts.add_row(f"source {source}", str(n))
    console.print(counts)
    levels = Table("rating", "events", title=f"{result.ratings} ratings")
    for level, n in result.distribution.items():
        levels.add_row(level, str(n))
    console.print(levels)
    agreement = result.agreement
    console.print(
        f"agreement: Krippendorff's ordinal alpha {number(agreement.alpha)} over "
        f"{agreement.rated_units} generations rated twice or more; pair agreement "
        f"{number(agreement.pair_rate)} over {agreement.judged_pairs} pairs judged twice or more"
    )


def register(app: typer.Typer) -> None:
    """Add ``init``, ``import``, ``export`` and ``stats`` to the main prefloop app."""
    app.command("init")(init)
    groups: dict[tuple[str, str], dict[str, Callable[..., None]]] = {
        ("import", "Import feedback data from JSONL files (one transaction per file)."): {
            "ratings": import_ratings,
            "pairs": import_pairs,
            "rankings": import_rankings,
        },
        ("export", "Export a task's feedback as training data (JSONL, TRL's dataset formats)."): {
            "preferences": export_preferences,
            "sft": export_sft,
            "unpaired": export_unpaired,
            "ratings": export_ratings,
        },
    }
    for (name, about), commands in groups.items():
        group = typer.Typer(name=name, help=about, no_args_is_help=True)
        for command, function in commands.items():
            group.command(command)(function)
        app.add_typer(group)
    app.command("stats")(stats)
