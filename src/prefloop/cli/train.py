"""``prefloop train``: fine-tune the model from feedback (SFT, reward model, DPO family, KTO,
RRHF), list the recorded runs.

The five method commands share their options; each adds the few that only it has (``--loss``
and ``--beta`` for dpo, ``--beta`` for kto). Their signatures are assembled from one list of
shared options below, so a shared option is written once.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from prefloop.cli._output import (
    DbOption,
    JsonOption,
    console,
    err_console,
    fail,
    phase_bars,
    print_json,
)

app = typer.Typer(
    help="Fine-tune an open model from feedback: sft, reward, dpo (ipo, hinge, slic, robust), "
    "kto, rrhf offline; ppo, rloo, grpo online against a reward; list runs.",
    no_args_is_help=True,
)


def register(main: typer.Typer) -> None:
    """Add ``prefloop train`` to the main prefloop app."""
    main.add_typer(app, name="train")


def _option(default: Any, annotation: Any, *flags: str, help: str) -> inspect.Parameter:
    name = flags[0].lstrip("-").split("/")[0].replace("-", "_")
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[annotation, typer.Option(*flags, help=help, show_default=False)],
    )


_SHARED: list[inspect.Parameter] = [
    _option(None, Path | None, "--out", help="Folder for the trained model (required)."),
    _option(None, str | None, "--task", help="Train on this task's feedback in the store."),
    _option(None, Path | None, "--data", help="Train on a JSONL file instead (see docs/train.md)."),
    _option(None, str | None, "--base", help="Base model: smollm2 (default) or a model folder."),
    _option(None, bool | None, "--lora/--no-lora", help="Train a LoRA adapter (default) or all."),
    _option(False, bool, "--merge", help="Save the adapter merged into the base."),
    _option(None, float | None, "--epochs", help="Passes over the data (default 1)."),
    _option(None, int | None, "--max-steps", help="Stop after this many optimizer steps."),
    _option(None, float | None, "--learning-rate", help="Peak learning rate."),
    _option(None, int | None, "--batch-size", help="Examples per step."),
    _option(None, int | None, "--max-length", help="Tokens of prompt and reply (default 256)."),
    _option(None, int | None, "--seed", help="Seed of data order and initialisation."),
    _option(None, int | None, "--save-steps", help="Checkpoint every N steps (default 50)."),
    _option(None, Path | None, "--config", help="YAML file of settings (docs/train.md)."),
    _option(False, bool, "--resume", help="Continue from the last checkpoint of OUT."),
    _option(False, bool, "--force", help="Replace a model prefloop trained earlier in OUT."),
    _option(False, bool, "--keep-checkpoints", help="Keep OUT.checkpoints after success."),
    _option(
        False,
        bool,
        "--with-model-feedback",
        help="Also use judge and reward-model feedback from the store (people's only by default).",
    ),
    _option(None, str | None, "--db", help="Database URL (default: $PREFLOOP_DATABASE_URL)."),
    _option(False, bool, "--json", help="Print one JSON object (for scripts)."),
]
_LOSS = _option(None, str | None, "--loss", help="dpo (default), ipo, hinge, slic or robust.")
_BETA = _option(None, float | None, "--beta", help="Strength of the pull to the reference.")
_EXTRA: dict[str, list[inspect.Parameter]] = {"dpo": [_LOSS, _BETA], "kto": [_BETA]}
_HELP = {
    "sft": "Supervised fine-tuning on edited finals and top-rated outputs (loss on replies).",
    "reward": "A reward model: the language model with a scalar head, on preference pairs.",
    "dpo": "DPO and relatives (--loss ipo|hinge|slic|robust) on preference pairs.",
    "kto": "KTO on outputs rated or thumbed on their own (no pairs needed).",
    "rrhf": "RRHF: rank each prompt's rated outputs by likelihood, imitate the best.",
}


def _method_command(method: str) -> Callable[..., None]:
    def command(**options: Any) -> None:
        _train(method, options)

    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [*_SHARED, *_EXTRA.get(method, [])]
    )
    command.__doc__ = _HELP[method]
    command.__name__ = method
    return command


for _method in _HELP:
    app.command(_method, help=_HELP[_method])(_method_command(_method))


# -- online methods: ppo, rloo, grpo ----------------------------------------------------------
_ONLINE: list[inspect.Parameter] = [
    _option(None, Path | None, "--out", help="Folder for the trained policy (required)."),
    _option(
        None,
        str | None,
        "--reward",
        help="Reward SPEC (required): a reward-model folder, "
        "rubric, judge, toxicity, length, or a combination (docs/train.md).",
    ),
    _option(
        None,
        str | None,
        "--heldout",
        help="A second scorer SPEC for the report only: the "
        "held-out reward that shows reward hacking.",
    ),
    _option(None, str | None, "--task", help="Train on this task's prompts in the store."),
    _option(None, Path | None, "--prompts", help='A JSONL file of {"prompt", "inputs"?} lines.'),
    _option(None, str | None, "--base", help="Base model: smollm2 (default) or a model folder."),
    _option(None, bool | None, "--lora/--no-lora", help="Train a LoRA adapter (default) or all."),
    _option(False, bool, "--merge", help="Save the adapter merged into the base."),
    _option(None, float | None, "--kl-coef", help="β, the KL penalty's weight (default 0.05)."),
    _option(None, float | None, "--target-kl", help="Adapt β to hold this KL (Ziegler et al.)."),
    _option(None, float | None, "--kl-budget", help="Stop when a step's KL exceeds this."),
    _option(None, int | None, "--max-steps", help="Rollout-and-update steps (default 20)."),
    _option(None, int | None, "--batch-size", help="Prompts per step (default 8)."),
    _option(None, int | None, "--max-new-tokens", help="Longest reply in tokens (default 48)."),
    _option(None, float | None, "--length-penalty", help="Subtract this × reply/max length."),
    _option(None, float | None, "--reward-clip", help="Clip each score to [−C, C]."),
    _option(
        None,
        float | None,
        "--missing-eos-penalty",
        help="Subtract from replies that never end (default 1).",
    ),
    _option(None, float | None, "--learning-rate", help="Learning rate."),
    _option(None, int | None, "--seed", help="Seed of prompt order, sampling and init."),
    _option(None, Path | None, "--config", help="YAML file of settings (docs/train.md)."),
    _option(False, bool, "--force", help="Replace a model prefloop trained earlier in OUT."),
    _option(None, str | None, "--db", help="Database URL (default: $PREFLOOP_DATABASE_URL)."),
    _option(False, bool, "--json", help="Print one JSON object (for scripts)."),
]
_GENERATIONS = _option(None, int | None, "--num-generations", help="Replies per prompt (4).")
_ONLINE_HELP = {
    "ppo": "PPO with a value head, GAE and an adaptive KL penalty (prefloop's own).",
    "rloo": "REINFORCE leave-one-out through TRL, with a KL penalty (β > 0).",
    "grpo": "GRPO through TRL, with a KL penalty (β > 0).",
}


def _online_command(method: str) -> Callable[..., None]:
    def command(**options: Any) -> None:
        _train_online(method, options)

    extra = [] if method == "ppo" else [_GENERATIONS]
    command.__signature__ = inspect.Signature([*_ONLINE, *extra])  # type: ignore[attr-defined]
    command.__doc__ = _ONLINE_HELP[method]
    command.__name__ = method
    return command


for _method in _ONLINE_HELP:
    app.command(_method, help=_ONLINE_HELP[_method])(_online_command(_method))


def _train_online(method: str, options: dict[str, Any]) -> None:
    from prefloop.errors import InvalidInputError
    from prefloop.train._run import TrainingInterrupted
    from prefloop.train.config import OnlineConfig, config_for
    from prefloop.train.data import from_file, from_task
    from prefloop.train.online import run_online
    from prefloop.train.rewards import reward_function

    out, task, prompts = options["out"], options["task"], options["prompts"]
    if out is None:
        raise fail("give --out DIR: the folder the trained policy is written to")
    if not options["reward"]:
        raise fail(
            "give --reward SPEC: what the policy is trained to please, e.g. --reward rubric, "
            "--reward models/rating, or --reward 'min(models/a,models/b)' (docs/train.md)"
        )
    if (task is None) == (prompts is None):
        raise fail("give exactly one of --task NAME (the store's prompts) or --prompts FILE")
    config_type = config_for(method)
    config = config_type.from_yaml(options["config"]) if options["config"] else config_type()
    changes = {
        key: options.get(key)
        for key in (
            "base",
            "lora",
            "kl_coef",
            "target_kl",
            "kl_budget",
            "max_steps",
            "batch_size",
            "max_new_tokens",
            "missing_eos_penalty",
            "length_penalty",
            "reward_clip",
            "learning_rate",
            "seed",
            "num_generations",
        )
    }
    config = config.updated(merge=options["merge"] or None, **changes)
    assert isinstance(config, OnlineConfig)
    if config.merge and not config.lora:
        raise InvalidInputError("--merge merges a LoRA adapter; drop it with --no-lora")
    from prefloop.cli.data import open_store

    with open_store(options["db"], create=True) as store:
        data = from_task(store, task, config) if task is not None else from_file(prompts, method)
        reward = reward_function(options["reward"], task=task, store=store, seed=config.seed)
        heldout = None
        if options["heldout"]:
            heldout = reward_function(options["heldout"], task=task, store=store, seed=config.seed)
        show = not options["json"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with phase_bars({"steps": f"{method} steps"}, quiet=not show) as bars:
                    result = run_online(
                        data,
                        config,
                        out,
                        reward,
                        heldout=heldout,
                        reward_name=options["reward"],
                        heldout_name=options["heldout"],
                        store=store,
                        force=options["force"],
                        progress=lambda step, total: bars("steps", step, total),
                    )
            except TrainingInterrupted as exc:
                raise fail(str(exc), code=130) from None
            finally:
                _show_warnings(caught)
    if options["json"]:
        summary = result.to_json()
        summary.pop("history")
        print_json(summary)
        return
    _print_online(result)


def _print_online(result: Any) -> None:
    from rich.table import Table

    table = Table(title=f"prefloop train {result.method}", show_header=False)
    rows = [
        ("policy", result.out),
        ("base", result.base),
        ("reward", result.reward),
        ("prompts", str(result.prompts)),
        ("steps", f"{result.steps} ({result.stopped})"),
        ("seconds", f"{result.seconds:.1f}"),
        ("reward", f"{_fmt(result.reward_mean_first)} → {_fmt(result.reward_mean_last)}"),
        ("held-out", f"{_fmt(result.heldout_first)} → {_fmt(result.heldout_last)}"),
        ("KL, β (last)", f"{_fmt(result.kl_last)}, {_fmt(result.beta_last)}"),
        ("report", result.report),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if result.stopped == "kl_budget":
        err_console.print(
            "[yellow]stopped:[/] a step's KL exceeded --kl-budget; the policy of the last step "
            "within it was saved"
        )
    for sign in result.hacking_signs:
        err_console.print(f"[red]reward hacking?[/] {sign}", highlight=False)


def _register_eval() -> None:
    from prefloop.cli.train_eval import eval_command

    app.command("eval")(eval_command)


_register_eval()


def _train(method: str, options: dict[str, Any]) -> None:
    from prefloop.errors import InvalidInputError
    from prefloop.feedback import HUMAN_SOURCES, SOURCES
    from prefloop.train._run import TrainingInterrupted, run_training
    from prefloop.train.config import config_for
    from prefloop.train.data import from_file, from_task

    out, task, data_file = options["out"], options["task"], options["data"]
    if out is None:
        raise fail("give --out DIR: the folder the trained model is written to")
    if (task is None) == (data_file is None):
        raise fail("give exactly one of --task NAME (the store's feedback) or --data FILE")
    config_type = config_for(method)
    config = config_type.from_yaml(options["config"]) if options["config"] else config_type()
    config = config.updated(
        base=options["base"],
        lora=options["lora"],
        merge=options["merge"] or None,
        epochs=options["epochs"],
        max_steps=options["max_steps"],
        learning_rate=options["learning_rate"],
        batch_size=options["batch_size"],
        max_length=options["max_length"],
        seed=options["seed"],
        save_steps=options["save_steps"],
        **{k: options[k] for k in ("loss", "beta") if options.get(k) is not None},
    )
    if config.merge and not config.lora:
        raise InvalidInputError("--merge merges a LoRA adapter; drop it with --no-lora")
    sources = SOURCES if options["with_model_feedback"] else HUMAN_SOURCES
    from accelerate import PartialState

    from prefloop.cli.data import open_store

    state = PartialState()  # one process, or each of several under `accelerate launch`
    with state.main_process_first():  # the main process creates or upgrades the store first
        store = open_store(options["db"], create=True)
    with store:
        if task is not None:
            data = from_task(store, task, config, sources=sources)
        else:
            data = from_file(data_file, method)
        show = not options["json"] and state.is_main_process
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with phase_bars({"steps": f"{method} steps"}, quiet=not show) as bars:
                    result = run_training(
                        data,
                        config,
                        out,
                        store=store,
                        resume=options["resume"],
                        force=options["force"],
                        keep_checkpoints=options["keep_checkpoints"],
                        progress=lambda step, total: bars("steps", step, total),
                    )
            except TrainingInterrupted as exc:
                raise fail(str(exc), code=130) from None
            finally:
                if state.is_main_process:
                    _show_warnings(caught)
        if method == "reward" and state.is_main_process:
            from prefloop.reward.registry import register_folder

            register_folder(store, result.out, name=Path(result.out).name, task=task)
    if not state.is_main_process:
        return
    if options["json"]:
        print_json(result.to_json())
        return
    _print_result(result)


def _show_warnings(caught: list[warnings.WarningMessage]) -> None:
    from prefloop.train._run import TruncationWarning

    for item in caught:
        if (
            issubclass(item.category, TruncationWarning | UserWarning)
            and str(item.filename).find("prefloop") >= 0
        ):
            err_console.print(f"[yellow]warning:[/] {item.message}", highlight=False)


def _print_result(result: Any) -> None:
    from rich.table import Table

    table = Table(title=f"prefloop train {result.method}", show_header=False)
    rows = [
        ("model", result.out),
        ("base", result.base),
        ("examples", str(result.examples)),
        ("steps", str(result.steps)),
        ("seconds", f"{result.seconds:.1f}"),
        ("loss", f"{_fmt(result.loss_first)} → {_fmt(result.loss_last)}"),
    ]
    if result.reference_cache:
        rows.append(("reference log-probs", f"cache {result.reference_cache}"))
    for key in ("rewards/accuracies", "rewards/margins", "accuracy", "margin", "rank_accuracy"):
        if key in result.eval:
            rows.append((key, f"{result.eval[key]:.3f}"))
    if result.run_id is not None:
        rows.append(("run", str(result.run_id)))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


@app.command("list")
def list_runs(
    task: Annotated[str | None, typer.Option("--task", help="Only this task's runs.")] = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """The recorded training runs, newest first."""
    from sqlalchemy import select

    from prefloop.cli.data import open_store
    from prefloop.store.models import Task, TrainingRun

    with open_store(db, create=False) as store, store.session(readonly=True) as session:
        query = select(TrainingRun, Task.name).outerjoin(Task, TrainingRun.task_id == Task.id)
        if task is not None:
            query = query.where(Task.name == task)
        rows = session.execute(query.order_by(TrainingRun.id.desc())).all()
        runs = [
            {
                "id": run.id,
                "method": run.method,
                "task": name,
                "base": run.base,
                "status": run.status,
                "examples": run.examples,
                "data_fingerprint": run.data_fingerprint,
                "metrics": run.metrics,
                "out": run.output_path,
                "parent": run.parent_id,
                "created_at": run.created_at.isoformat(),
            }
            for run, name in rows
        ]
    if json_output:
        print_json({"runs": runs})
        return
    from rich.table import Table

    table = Table(title="training runs")
    for column in ("id", "method", "task", "status", "examples", "loss", "out"):
        table.add_column(column)
    for run in runs:
        metrics = run["metrics"] if isinstance(run["metrics"], dict) else {}
        loss = f"{_fmt(metrics.get('loss_first'))} → {_fmt(metrics.get('loss_last'))}"
        table.add_row(
            str(run["id"]),
            str(run["method"]),
            str(run["task"] or "—"),
            str(run["status"]),
            str(run["examples"]),
            loss,
            str(run["out"]),
        )
    console.print(table)
