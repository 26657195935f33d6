"""CLI of the LLM area: ``prefloop llm complete|generate|prepare`` and ``prefloop propose``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from prefloop.cli._output import DbOption, JsonOption, console, err_console, fail, print_json
from prefloop.errors import InvalidInputError

if TYPE_CHECKING:  # the LLM, proposer and store modules load when a command runs, not at start-up
    from prefloop.llm import ChatBackend, GenerationParams

BackendOption = Annotated[
    str,
    typer.Option(
        "--backend",
        "-b",
        envvar="PREFLOOP_LLM_BACKEND",
        help="LLM backend: openai or local. 'openai' reads PREFLOOP_LLM_BASE_URL, "
        "PREFLOOP_LLM_API_KEY and PREFLOOP_LLM_MODEL; 'local' runs SmolLM2-135M-Instruct (or "
        "PREFLOOP_LLM_LOCAL_MODEL) on this machine.",
    ),
]
MaxTokens = Annotated[int, typer.Option("--max-tokens", min=1, help="Most tokens to generate.")]
Temperature = Annotated[
    float, typer.Option("--temperature", min=0.0, help="Sampling temperature; 0 is greedy.")
]
TopP = Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling mass.")]
Seed = Annotated[int | None, typer.Option("--seed", help="Seed for reproducible sampling.")]
Stop = Annotated[
    list[str] | None, typer.Option("--stop", help="Stop before this text (repeatable).")
]


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main prefloop app."""
    llm_app = typer.Typer(
        help="Call LLM backends: complete a prompt, generate with an arm, prepare the local model.",
        no_args_is_help=True,
    )
    llm_app.command("complete")(complete)
    llm_app.command("generate")(generate)
    llm_app.command("prepare")(prepare)
    app.add_typer(llm_app, name="llm")
    app.command("propose")(propose)


@contextmanager
def _backend(kind: str) -> Iterator[ChatBackend]:
    from prefloop.llm import make_backend

    with err_console.status(f"Loading the {kind} LLM backend…"):
        backend = make_backend(kind)
    try:
        yield backend
    finally:
        close = getattr(backend, "close", None)
        if callable(close):
            close()


def _params(
    max_tokens: int, temperature: float, top_p: float, seed: int | None, stop: list[str] | None
) -> GenerationParams:
    from prefloop.llm import GenerationParams

    if top_p <= 0:
        raise InvalidInputError(f"--top-p must be in (0, 1], got {top_p}")
    return GenerationParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        stop=tuple(stop or ()),
    )


def _parse_inputs(pairs: list[str] | None, inputs_json: str | None) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    if inputs_json:
        try:
            loaded = json.loads(inputs_json)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"--inputs-json is not JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise InvalidInputError('--inputs-json must be a JSON object like {"place": "Seoul"}')
        inputs.update(loaded)
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(
                f"--input {pair!r} must look like FIELD=VALUE, e.g. place=Seoul"
            )
        inputs[key.strip()] = value
    return inputs


def complete(
    prompt: Annotated[str, typer.Argument(help="The user message.")],
    system: Annotated[str | None, typer.Option("--system", help="A system message.")] = None,
    backend: BackendOption = "local",
    max_tokens: MaxTokens = 256,
    temperature: Temperature = 0.7,
    top_p: TopP = 1.0,
    seed: Seed = None,
    stop: Stop = None,
    as_json: JsonOption = False,
) -> None:
    """Send one prompt to the backend and print the answer (nothing is stored)."""
    params = _params(max_tokens, temperature, top_p, seed, stop)
    messages: list[Any] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    with _backend(backend) as chat, err_console.status("Generating…"):
        completion = chat.complete(messages, params)
    if as_json:
        print_json(
            {
                "text": completion.text,
                "model": completion.model,
                "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens,
                "latency_ms": completion.latency_ms,
                "cost": completion.cost,
                "finish_reason": completion.finish_reason,
            }
        )
    else:
        console.print(completion.text, highlight=False, markup=False)


def generate(
    task: Annotated[str, typer.Option("--task", "-t", help="Task name.")],
    arm: Annotated[str, typer.Option("--arm", "-a", help="Arm name or id.")],
    inputs: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="An input field as FIELD=VALUE (repeatable)."),
    ] = None,
    inputs_json: Annotated[
        str | None, typer.Option("--inputs-json", help='All inputs as JSON: {"place": "Seoul"}.')
    ] = None,
    end_user: Annotated[
        str | None, typer.Option("--end-user", help="The end user's pseudonymous id.")
    ] = None,
    backend: BackendOption = "local",
    max_tokens: MaxTokens = 256,
    temperature: Temperature = 0.7,
    top_p: TopP = 1.0,
    seed: Seed = None,
    stop: Stop = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Generate with an arm and store the generation: a prompt arm's template goes to the
    backend, a model arm runs its own model on this machine (a failed call is stored as failed,
    with no reward, and the command exits with code 1)."""
    from prefloop.llm import generate_for_arm
    from prefloop.store import Store
    from prefloop.store.repo import get_arm, get_task

    params = _params(max_tokens, temperature, top_p, seed, stop)
    values = _parse_inputs(inputs, inputs_json)
    with Store.open(db) as store:
        with store.session(readonly=True) as session:  # fail on bad names before loading a model
            model_arm = get_arm(session, get_task(session, task), arm).kind == "model"
        with (
            nullcontext(None) if model_arm else _backend(backend) as chat,
            store.session() as session,
        ):
            the_task = get_task(session, task)
            the_arm = get_arm(session, the_task, arm)
            with err_console.status("Generating…"):
                generation = generate_for_arm(
                    session, the_task, the_arm, values, chat, params, end_user=end_user
                )
            row = {
                "id": generation.id,
                "task": the_task.name,
                "arm": the_arm.name,
                "status": generation.status,
                "output": generation.output,
                "error": generation.error,
                "model": generation.model,
                "prompt_tokens": generation.prompt_tokens,
                "completion_tokens": generation.completion_tokens,
                "latency_ms": generation.latency_ms,
            }
    if as_json:
        print_json(row)
    elif row["status"] == "ok":
        where = f"{row['id']} ({row['arm']}, {row['model']})"
        console.print(f"[dim]{escape(where)}[/]")
        console.print(str(row["output"]), highlight=False, markup=False)
    if row["status"] != "ok":
        raise fail(escape(f"the LLM call failed (stored as {row['id']}): {row['error']}"), code=1)


def prepare(
    as_json: JsonOption = False,
) -> None:
    """Convert the packaged SmolLM2-135M-Instruct once into the cache (about 30 s)."""
    from prefloop.llm import smollm2_folder

    with err_console.status("Converting SmolLM2-135M-Instruct (once; about 30 s)…"):
        folder = smollm2_folder()
    if as_json:
        print_json({"model": "SmolLM2-135M-Instruct", "folder": str(folder)})
    else:
        console.print(f"SmolLM2-135M-Instruct is ready in {folder}", highlight=False)


def propose(
    task: Annotated[str, typer.Option("--task", "-t", help="Task name.")],
    n: Annotated[int, typer.Option("-n", "--n", min=1, help="New templates to add.")] = 3,
    backend: BackendOption = "local",
    max_calls: Annotated[
        int, typer.Option("--max-calls", min=1, help="Most LLM calls to get n valid templates.")
    ] = 3,
    max_similarity: Annotated[
        float,
        typer.Option(
            "--max-similarity",
            min=0.0,
            max=1.0,
            help="Reject templates at least this similar to an existing arm or to each other.",
        ),
    ] = 0.8,
    similarity: Annotated[
        str,
        typer.Option("--similarity", help="token_jaccard or char_ngram_cosine."),
    ] = "token_jaccard",
    temperature: Temperature = 0.9,
    max_tokens: MaxTokens = 800,
    seed: Seed = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the templates; add no arms.")
    ] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Let an LLM write new candidate prompt arms from the task's best and worst rated outputs."""
    from prefloop.llm import GenerationParams
    from prefloop.propose import ProposerConfig, propose_arms
    from prefloop.store import Store
    from prefloop.store.repo import get_task

    config = ProposerConfig(
        n=n,
        max_llm_calls=max_calls,
        max_similarity=max_similarity,
        similarity=similarity,  # type: ignore[arg-type]  # checked by ProposerConfig
        params=GenerationParams(max_tokens=max_tokens, temperature=temperature, seed=seed),
        dry_run=dry_run,
    )
    with Store.open(db) as store:
        with store.session(readonly=True) as session:
            get_task(session, task)  # a clear error before loading a model
        with _backend(backend) as chat, err_console.status("Asking the LLM for templates…"):
            report = propose_arms(store, task, chat, config)
    if as_json:
        print_json(report.to_json())
    else:
        for proposed in report.accepted:
            console.print(f"[bold green]{escape(proposed.name or 'candidate')}[/]", highlight=False)
            console.print(proposed.template, highlight=False, markup=False)
        for rejection in report.rejected:
            console.print(f"[yellow]rejected:[/] {escape(rejection.reason)}", highlight=False)
        for error in report.errors:
            console.print(f"[red]error:[/] {escape(error)}", highlight=False)
        console.print(report.summary(), highlight=False)
    if not report.ok:
        raise fail(escape(f"no usable template for task {task!r}: {report.summary()}"), code=1)
