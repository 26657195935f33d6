"""``prefloop tasks create|list`` and ``prefloop arms add|list|label|retire``.

A prompt arm is a template (``--template``); a model arm is a model folder (``--model``: the
``--out`` of ``prefloop train``, any Hugging Face causal-LM folder, or ``smollm2``), served by
its own model when it generates. Every command takes ``--json`` (one object on stdout, the same
fields as the service's API) and refuses bad input before writing anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from prefloop.cli._output import DbOption, JsonOption, console, print_json
from prefloop.cli.data import open_store

if TYPE_CHECKING:
    from prefloop.store import Arm, Task

TaskOption = Annotated[str, typer.Option("--task", "-t", help="Task name, e.g. diary.")]
ArmArgument = Annotated[str, typer.Argument(help="Arm name or id.", show_default=False)]

tasks_app = typer.Typer(
    name="tasks", help="Tasks: the generation jobs arms compete on.", no_args_is_help=True
)
arms_app = typer.Typer(
    name="arms",
    help="A task's arms: prompt templates and model folders (trained adapters, any causal LM).",
    no_args_is_help=True,
)


def register(main: typer.Typer) -> None:
    """Add ``prefloop tasks`` and ``prefloop arms`` to the main prefloop app."""
    main.add_typer(tasks_app, name="tasks")
    main.add_typer(arms_app, name="arms")


def _task_json(task: Task) -> dict[str, Any]:
    from prefloop.serve.schemas import TaskOut

    return TaskOut.of(task).model_dump(mode="json")


def _arm_json(arm: Arm, task: Task) -> dict[str, Any]:
    from prefloop.serve.schemas import ArmOut

    return ArmOut.of(arm, task).model_dump(mode="json")


def _parse_scale(scale: str | None) -> list[float] | None:
    from prefloop.errors import InvalidInputError

    if scale is None:
        return None
    try:
        return [float(part) for part in scale.split(",") if part.strip()]
    except ValueError:
        raise InvalidInputError(
            f"--scale {scale!r} must be numbers separated by commas, e.g. -1,-0.5,0,0.5,1"
        ) from None


@tasks_app.command("create")
def create_task(
    name: Annotated[str, typer.Argument(help="The task's name, e.g. diary.", show_default=False)],
    input_fields: Annotated[
        list[str] | None,
        typer.Option(
            "--input-field",
            "-f",
            help="An input field the templates use as {field} (repeatable).",
            show_default=False,
        ),
    ] = None,
    description: Annotated[str, typer.Option(help="What the task generates.")] = "",
    scale: Annotated[
        str | None,
        typer.Option(
            help="Rating levels, increasing, comma-separated (default -1,-0.5,0,0.5,1).",
            show_default=False,
        ),
    ] = None,
    rubric: Annotated[str, typer.Option(help="What a good output is (for judges).")] = "",
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create a task (its name must be new)."""
    from prefloop.errors import InvalidInputError
    from prefloop.serve import ops

    fields = [f.strip() for f in input_fields or []]
    bad = [f for f in fields if not f.isidentifier()]
    if bad:
        raise InvalidInputError(
            f"input field {bad[0]!r} is not a plain name; templates use it as {{field}}, so "
            "use letters, digits and underscores (e.g. place)"
        )
    levels = _parse_scale(scale)
    with open_store(db, create=True) as store, store.session() as session:
        task = ops.create_task(
            session,
            name,
            description=description,
            input_fields=list(dict.fromkeys(fields)),
            scale=levels,
            rubric=rubric,
        )
        row = _task_json(task)
    if json_output:
        print_json(row)
    else:
        shown = ", ".join(row["input_fields"]) or "none"
        console.print(f"task {escape(name)} created (input fields: {escape(shown)})")


@tasks_app.command("list")
def list_tasks(db: DbOption = None, json_output: JsonOption = False) -> None:
    """The store's tasks, with their input fields and how many arms are active."""
    from prefloop.serve import ops
    from prefloop.store.repo import active_arms

    with open_store(db, create=False) as store, store.session(readonly=True) as session:
        rows = [
            {**_task_json(task), "active_arms": len(active_arms(session, task))}
            for task in ops.list_tasks(session)
        ]
    if json_output:
        print_json({"tasks": rows})
        return
    table = Table("task", "input fields", "scale", "active arms")
    for row in rows:
        table.add_row(
            escape(row["name"]),
            escape(", ".join(row["input_fields"])),
            ", ".join(f"{v:g}" for v in row["scale"]),
            str(row["active_arms"]),
        )
    console.print(table)


@arms_app.command("add")
def add_arm(
    task: TaskOption,
    name: Annotated[str, typer.Option("--name", "-n", help="The new arm's name.")],
    template: Annotated[
        str | None,
        typer.Option(
            "--template",
            help="The prompt, with the task's input fields as {field}. For a --model arm: how "
            "the input becomes the model's user message (default: the production prompt arm's "
            "template, else one 'field: {field}' line per input field).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Make a model arm: the --out folder of `prefloop train` (adapter or whole "
            "model), a Hugging Face causal-LM folder, or smollm2.",
            show_default=False,
        ),
    ] = None,
    system: Annotated[
        str | None, typer.Option("--system", help="A system message sent before the prompt.")
    ] = None,
    labels: Annotated[
        list[str] | None,
        typer.Option(
            "--label", "-l", help="A label (repeatable; default candidate).", show_default=False
        ),
    ] = None,
    parent: Annotated[
        str | None,
        typer.Option(
            "--parent", help="Name or id of the arm this one improves.", show_default=False
        ),
    ] = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Add a prompt arm (--template) or a model arm (--model) to a task."""
    from prefloop.errors import InvalidInputError
    from prefloop.llm import add_model_arm, check_arm_template
    from prefloop.store.repo import create_arm, get_arm, get_task

    if template is None and model is None:
        raise InvalidInputError(
            "give --template TEXT for a prompt arm or --model DIR for a model arm"
        )
    params = {"system": system} if system else {}
    chosen_labels = labels or ["candidate"]
    with open_store(db, create=False) as store, store.session() as session:
        the_task = get_task(session, task)
        parent_arm = get_arm(session, the_task, parent) if parent is not None else None
        if model is not None:
            arm = add_model_arm(
                session,
                the_task,
                name,
                model,
                template=template,
                params=params,
                labels=chosen_labels,
                parent=parent_arm,
            )
        else:
            assert template is not None
            arm = create_arm(
                session,
                the_task,
                name,
                template=check_arm_template(the_task, template),
                params=params,
                labels=chosen_labels,
                parent=parent_arm,
            )
        row = _arm_json(arm, the_task)
    if json_output:
        print_json(row)
    elif row["kind"] == "model":
        console.print(
            f"model arm {escape(name)} added to {escape(task)}: {escape(row['model_ref'])}\n"
            f"template: {escape(row['params']['template'])}",
            highlight=False,
        )
    else:
        console.print(f"prompt arm {escape(name)} added to {escape(task)}", highlight=False)


@arms_app.command("list")
def list_arms(
    task: TaskOption,
    include_retired: Annotated[bool, typer.Option("--all", help="Include retired arms.")] = False,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """A task's arms: kind, labels, and the template or model folder."""
    from prefloop.serve import ops

    with open_store(db, create=False) as store, store.session(readonly=True) as session:
        the_task = ops.get_task(session, task)
        rows = [
            _arm_json(arm, the_task)
            for arm in ops.list_arms(session, task)
            if include_retired or not arm.retired
        ]
    if json_output:
        print_json({"task": task, "arms": rows})
        return
    table = Table("id", "arm", "kind", "labels", "template / model")
    for row in rows:
        what = row["model_ref"] if row["kind"] == "model" else row["template"]
        table.add_row(
            str(row["id"]),
            escape(row["name"]),
            row["kind"],
            escape(", ".join(row["labels"])),
            escape(str(what)),
        )
    console.print(table)


@arms_app.command("label")
def label_arm(
    task: TaskOption,
    arm: ArmArgument,
    labels: Annotated[
        list[str],
        typer.Argument(help="The arm's new labels (replace the old ones).", show_default=False),
    ],
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Replace an arm's labels, e.g. `prefloop arms label --task diary tuned production`."""
    from prefloop.serve import ops

    with open_store(db, create=False) as store, store.session() as session:
        changed = ops.set_arm_labels(session, task, arm, labels)
        row = _arm_json(changed, ops.get_task(session, task))
    if json_output:
        print_json(row)
    else:
        console.print(f"arm {escape(row['name'])}: {escape(', '.join(row['labels']))}")


@arms_app.command("retire")
def retire_arm(
    task: TaskOption,
    arm: ArmArgument,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Retire an arm: the policies stop choosing it; its history stays."""
    from prefloop.serve import ops

    with open_store(db, create=False) as store, store.session() as session:
        retired = ops.retire_arm(session, task, arm)
        row = _arm_json(retired, ops.get_task(session, task))
    if json_output:
        print_json(row)
    else:
        console.print(f"arm {escape(row['name'])} retired")
