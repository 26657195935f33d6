"""``prefloop reward``: fit, evaluate, cross-validate, apply, distill and list reward models."""

from __future__ import annotations

import json
import math
import re
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import numpy as np
import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from prefloop._files import atomic_path, move_into_place, staging_folder, write_atomic
from prefloop.cli._output import JsonOption, console, err_console, print_json
from prefloop.errors import ImportFileError, InvalidInputError

if TYPE_CHECKING:
    from prefloop.reward import (
        FoldGrouping,
        Kind,
        ModelSpec,
        PairData,
        PairReport,
        RatingData,
        RatingReport,
        RewardModel,
        SpecCrossValidation,
    )

__all__ = ["register"]

Progressed = Callable[[str, int, int], None]

# ---------------------------------------------------------------------------------------------
# options shared by several commands
# ---------------------------------------------------------------------------------------------

_FILE_FORMATS = (
    "ratings ({text, rating} or {caption, rate}), pairs ({prompt?, chosen, rejected}) or "
    "rankings ({prompt, responses, ranking})"
)
DataOption = Annotated[
    Path | None,
    typer.Option("--data", help=f"A JSONL file: {_FILE_FORMATS}."),
]
DataFileOption = Annotated[
    Path,
    typer.Option(
        "--data",
        help=f"A JSONL file: {_FILE_FORMATS}; predict and distill also take plain texts "
        "({text, prompt?}).",
    ),
]
TaskOption = Annotated[
    str | None,
    typer.Option(
        "--task",
        help="Train from this task's feedback in the store instead of a file (an llm-judge "
        "gets the task's rubric and description).",
    ),
]
KindOption = Annotated[
    str | None,
    typer.Option(
        "--kind",
        help="rating or pairwise (default: from the file's keys; needed with --task).",
    ),
]
ModelSpecOption = Annotated[
    str,
    typer.Option(
        "--model",
        help="auto, or for ratings REGRESSOR[:FEATURES] (ridge, random-forest, "
        "gradient-boosting, ridge+boosting, stack; features joined by +: stats, style, char-lm, "
        "use, minilm, e5, toxicity; e.g. stack:stats+style+char-lm), for pairs "
        "bradley-terry[:FEATURES] (default features use-prompt; e.g. bradley-terry:minilm-prompt), "
        "or a registered model name (llm-judge, finetuned-transformer).",
    ),
]
ModelDirOption = Annotated[Path, typer.Option("--model", help="A saved reward-model folder.")]
OutOption = Annotated[
    Path,
    typer.Option(
        "--out",
        help="Folder to save the model in: new or empty (or a saved model, with --force).",
    ),
]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Replace a reward model already saved in --out.")
]
CandidatesOption = Annotated[
    str | None,
    typer.Option(
        "--candidates",
        help="For --model auto on ratings: the candidates to choose from, comma-separated, "
        "cheapest first (default: ridge:stats, ridge+boosting:stats, ridge+boosting:stats+style, "
        "stack:stats+style, stack:stats+style+char-lm).",
    ),
]
BalanceOption = Annotated[
    bool,
    typer.Option("--balance-levels", help="Up-weight rare rating levels (training only)."),
]
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database URL (default: PREFLOOP_DATABASE_URL, else sqlite:///prefloop.db): the "
        "store --task reads feedback from; 'fit' also registers the model there, 'list' lists "
        "the models registered there.",
    ),
]
PngOption = Annotated[
    Path | None,
    typer.Option("--png", help="Where to write the figure (default: beside the JSON report)."),
]
ReportOption = Annotated[
    Path | None,
    typer.Option(
        "--report",
        help="Where to write the JSON report (default: reports/reward-<command>-<data>.json).",
    ),
]
ScaleOption = Annotated[
    str | None,
    typer.Option(
        "--scale",
        help="Rating levels, comma-separated (default: -1,-0.5,0,0.5,1 when the ratings fit it, "
        "else the levels seen).",
    ),
]
SeedOption = Annotated[
    int, typer.Option("--seed", help="Seed for the folds, the models and the bootstrap.")
]
GroupByOption = Annotated[
    str,
    typer.Option(
        "--group-by",
        help="Keep rated texts together in folds by 'text' (copies of a text) or by 'input' "
        "(every draft of one input, e.g. one image_id: measures inputs never seen). 'auto' "
        "chooses its model on folds by input whenever the data name at least 10 inputs, and "
        "always with 'input'. Pairs are always grouped by prompt.",
    ),
]
SamplesOption = Annotated[
    int, typer.Option("--bootstrap", min=100, help="Bootstrap resamples for the 95% intervals.")
]


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main prefloop app."""
    reward_app = typer.Typer(
        help="Reward models learned from feedback: fit, eval, cv, predict, distill, list.",
        no_args_is_help=True,
    )
    reward_app.command("fit")(fit)
    reward_app.command("eval")(evaluate)
    reward_app.command("cv")(cv)
    reward_app.command("predict")(predict)
    reward_app.command("distill")(distill)
    reward_app.command("list")(list_models)
    app.add_typer(reward_app, name="reward")


# ---------------------------------------------------------------------------------------------
# helpers: progress, warnings, options, output
# ---------------------------------------------------------------------------------------------


@contextmanager
def _progress(enabled: bool = True) -> Iterator[Progressed]:
    """A rich progress bar on stderr, fed by the models' ``progress(what, done, total)``."""
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not enabled,
    )
    tasks: dict[str, Any] = {}

    def update(what: str, done: int, total: int) -> None:
        if what not in tasks:
            tasks[what] = bars.add_task(what, total=total)
        bars.update(tasks[what], completed=done, total=total)

    with bars:
        yield update


def _warn(text: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False)


@contextmanager
def _surface_warnings() -> Iterator[None]:
    """Show the library's warnings (truncated texts, version drift) as one line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            seen: set[str] = set()
            for item in caught:
                if issubclass(item.category, DeprecationWarning | FutureWarning):
                    continue
                text = str(item.message)
                if text not in seen:
                    seen.add(text)
                    _warn(text)


def _parse_scale(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InvalidInputError(
            f"--scale must be numbers separated by commas, e.g. -1,-0.5,0,0.5,1; got {text!r}"
        ) from None
    return values


def _check_kind(kind: str | None) -> Kind | None:
    if kind is None:
        return None
    if kind in ("rating", "pairwise"):
        return cast("Kind", kind)
    raise InvalidInputError(f"--kind must be rating or pairwise, not {kind!r}")


def _check_group_by(group_by: str, kind: Kind) -> FoldGrouping:
    """Before any long work: a known grouping, and a warning when it cannot apply."""
    if group_by not in ("text", "input"):
        raise InvalidInputError(f"--group-by must be one of text, input, not {group_by!r}")
    if kind == "pairwise" and group_by != "text":
        _warn("--group-by applies to rated texts; pairs are always grouped by prompt")
    return cast("FoldGrouping", group_by)


def _parse_candidates(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    from prefloop.reward.rating import parse_candidate

    specs = tuple(c.strip() for c in text.split(",") if c.strip())
    if not specs:
        raise InvalidInputError("--candidates needs at least one REGRESSOR:FEATURES entry")
    for spec in specs:
        parse_candidate(spec)
    return specs


@dataclass(frozen=True)
class _Loaded:
    """Training data from --data or --task, and what the task says about itself."""

    data: RatingData | PairData
    kind: Kind
    rubric: str = ""
    description: str = ""


def _load_data(
    data: Path | None, task: str | None, kind: str | None, scale: str | None, db: str | None
) -> _Loaded:
    """The one way fit and cv read their data: a file (--data) or a task's feedback (--task)."""
    from prefloop.reward import (
        data_kind,
        load_pair_data,
        load_rating_data,
        pair_data_from_store,
        rating_data_from_store,
    )

    checked = _check_kind(kind)
    if (data is None) == (task is None):
        raise InvalidInputError("give either --data FILE or --task NAME (one of them)")
    if data is not None:
        checked = checked or data_kind(data)
        if checked == "rating":
            return _Loaded(load_rating_data(data, _parse_scale(scale)), checked)
        return _Loaded(load_pair_data(data), checked)
    if checked is None:
        raise InvalidInputError("with --task, say which model to train: --kind rating|pairwise")
    from prefloop.store import Store
    from prefloop.store.repo import get_task

    assert task is not None
    with Store.open(db) as store:
        with store.session(readonly=True) as session:
            row = get_task(session, task)
            rubric, description = row.rubric or "", row.description or ""
        loaded = (
            rating_data_from_store(store, task)
            if checked == "rating"
            else pair_data_from_store(store, task)
        )
    return _Loaded(loaded, checked, rubric=rubric, description=description)


def _spec(
    loaded: _Loaded,
    model: str,
    seed: int,
    balance: bool = False,
    candidates: str | None = None,
    group_by: str = "text",
) -> ModelSpec:
    """What --model and its companion options ask for; a bad spec fails here, before any long
    work."""
    from prefloop.reward import ModelSpec, make_reward_model

    by = _check_group_by(group_by, loaded.kind)
    spec = ModelSpec(
        kind=loaded.kind,
        model=model,
        seed=seed,
        balance_levels=balance,
        candidates=_parse_candidates(candidates),
        group_by=by if loaded.kind == "rating" else "text",
        rubric=loaded.rubric,
        description=loaded.description,
    )
    make_reward_model(spec)
    return spec


def _slug(path: Path | None, task: str | None) -> str:
    raw = path.stem if path is not None else f"task-{task}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip("-") or "data"


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n")


def _warn_unscored(unscored: int, n: int, what: str) -> None:
    if unscored:
        _warn(
            f"{unscored} of {n + unscored} {what} got no score from the model (for an "
            "LLM judge: its calls failed) and are left out of every figure"
        )


def _warn_judge_failures(model: object) -> None:
    """For an LLM judge whose calls failed: how many, and their distinct errors (stderr)."""
    from prefloop.reward import LLMJudge

    if not isinstance(model, LLMJudge) or not model.stats.llm_errors:
        return
    stats = model.stats
    common = sorted(stats.errors.items(), key=lambda item: -item[1])[:5]
    _warn(
        f"{stats.llm_errors} of {stats.calls} LLM judge calls failed: "
        + "; ".join(f"{error} (×{count})" for error, count in common)
    )


def _with_ci(value: float, ci: Sequence[float] | None) -> str:
    lo, hi = ci if ci is not None else (float("nan"), float("nan"))
    return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def _show(report: RatingReport | PairReport, heading: str) -> None:
    from prefloop.reward import RatingReport

    table = Table(title=heading, show_header=True)
    table.add_column("figure")
    table.add_column("value [95% CI]")
    ci, gain = report.ci, report.vs_baseline
    verdict = "beats" if gain.beats_baseline else "does NOT clearly beat"
    if isinstance(report, RatingReport):
        main, group = "mse", "inputs"
        for key, value in (
            ("mse", report.mse),
            ("mae", report.mae),
            ("spearman", report.spearman),
            ("pearson", report.pearson),
        ):
            table.add_row(f"model {key}", _with_ci(value, ci.get(key)))
        for key, value in (("mse", report.baseline.mse), ("mae", report.baseline.mae)):
            table.add_row(
                f"baseline {key} (training mean)", _with_ci(value, ci.get(f"baseline_{key}"))
            )
        note = (
            f"MSE reduction {_with_ci(gain.value, gain.ci)}: the model {verdict} "
            "the training-mean baseline"
        )
        within = report.within_input
    else:
        main, group = "accuracy", "prompts"
        table.add_row("model accuracy", _with_ci(report.accuracy, ci.get("accuracy")))
        for key, label, value in (
            ("shorter_wins", "shorter reply wins", report.baseline.shorter_wins),
            ("length_model", "length model", report.baseline.length_model),
        ):
            table.add_row(f"baseline: {label}", _with_ci(value, ci.get(key)))
        note = (
            f"accuracy gain {_with_ci(gain.value, gain.ci)}: the model {verdict} "
            "the better length baseline"
        )
        within = None
    if within is not None:
        table.add_row(
            f"same-input pairs ordered right ({within.pairs} pairs, {within.inputs} inputs)",
            _with_ci(within.ordered_right, within.ci.get("ordered_right")),
        )
        table.add_row(
            "baseline: longer text wins",
            _with_ci(within.longer_wins, within.ci.get("longer_wins")),
        )
    table.add_row("items measured", str(report.n))
    # whole inputs (all their drafts) or prompts, or single items
    unit = "items" if report.resampled.unit == "item" else group
    table.add_row("intervals resample", f"{report.resampled.count} {unit}")
    if report.unscored:
        table.add_row("items without a score (left out)", str(report.unscored))
    if report.cross_validation is not None:
        train, gap = report.cross_validation.train, report.cross_validation.gap
        table.add_row(
            f"in-sample {main} (overfitting gap)", f"{train[main]:.3f} ({gap[main]:+.3f})"
        )
    console.print(table)
    console.print(note, highlight=False)


def _plot(
    data: RatingData | PairData,
    predictions: np.ndarray,
    png: Path,
    *,
    title: str,
    folds: int,
    seed: int,
    baseline_mean: float | None,
) -> Path:
    from prefloop.reward.plots import plot_evaluation

    return plot_evaluation(
        data, predictions, png, title=title, baseline_mean=baseline_mean, folds=folds, seed=seed
    )


def _save_model(
    model: RewardModel,
    out: Path,
    *,
    force: bool,
    run: SpecCrossValidation | None,
    data: RatingData | PairData,
    title: str,
    folds: int,
    seed: int,
) -> tuple[list[Path], dict[str, Any] | None]:
    """Save ``model`` to ``out`` and, given a cross-validation ``run``, its report
    ``OUT.cv.json`` and figure ``OUT.cv.png`` beside it. Everything is written under temporary
    names first and renamed at the end, so a failure leaves nothing half-written. Returns the
    paths written and the report as written."""
    from prefloop.reward import RatingData

    with staging_folder(out, suffix=".reports") as staging:
        extras: list[Path] = []
        written: dict[str, Any] | None = None
        if run is not None:
            json_path, png_path = (out.parent / f"{out.name}.cv.{ext}" for ext in ("json", "png"))
            mean = float(np.mean(data.ratings)) if isinstance(data, RatingData) else None
            _plot(
                data,
                run.predictions,
                staging / png_path.name,
                title=title,
                folds=folds,
                seed=seed,
                baseline_mean=mean,
            )
            written = {**run.to_json(), "png": str(png_path), "report": str(json_path)}
            _write_json(staging / json_path.name, written)
            extras = [png_path, json_path]

        saved = model.save(out, overwrite=force)
        for path in extras:
            move_into_place(staging / path.name, path)
    return [saved, *extras], written


def _register_or_undo(
    written: list[Path], existed: bool, db: str | None, name: str | None, task: str | None
) -> dict[str, Any]:
    """Record the saved folder in the store; if that fails, remove what this command wrote
    (unless it replaced an older model, which cannot be brought back)."""
    from prefloop.reward.registry import register_folder
    from prefloop.store import Store

    try:
        with Store.open(db) as store:
            return register_folder(store, written[0], name=name, task=task)
    except BaseException:
        if not existed:
            shutil.rmtree(written[0], ignore_errors=True)
            for path in written[1:]:
                path.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------


def fit(
    out: OutOption,
    data: DataOption = None,
    task: TaskOption = None,
    kind: KindOption = None,
    model: ModelSpecOption = "auto",
    cv_folds: Annotated[
        int,
        typer.Option(
            "--cv",
            min=0,
            help="Also cross-validate with this many folds and store the figures with the "
            "model (0 skips it).",
        ),
    ] = 5,
    name: Annotated[
        str | None, typer.Option("--name", help="Name in the registry (default: folder name).")
    ] = None,
    db: DbOption = None,
    scale: ScaleOption = None,
    balance_levels: BalanceOption = False,
    candidates: CandidatesOption = None,
    force: ForceOption = False,
    seed: SeedOption = 0,
    samples: SamplesOption = 1000,
    group_by: GroupByOption = "text",
    json_out: JsonOption = False,
) -> None:
    """Fit a reward model on a file (or a task's feedback) and save it to --out.

    --out must be new or empty; --force replaces a reward model saved there before. A failed
    fit leaves no folder behind (files are written under a temporary name, renamed at the end).
    """
    from prefloop.reward import (
        check_model_target,
        cross_validate_spec,
        make_reward_model,
        read_model_info,
    )

    check_model_target(out, overwrite=force)  # before any long work
    existed = out.exists()
    with _surface_warnings():
        loaded = _load_data(data, task, kind, scale, db)
        spec = _spec(loaded, model, seed, balance_levels, candidates, group_by)
        run: SpecCrossValidation | None = None
        with _progress(not json_out) as progress:
            if cv_folds:
                run = cross_validate_spec(
                    spec,
                    loaded.data,
                    folds=cv_folds,
                    samples=samples,
                    progress=progress,
                    compare_candidates=False,
                )
            fitted = make_reward_model(spec).fit(loaded.data, progress=progress)
        if run is not None:
            fitted.metrics = {"cv": run.to_json()}
            _warn_unscored(run.report.unscored, run.report.n, "items (out of fold)")
        written, report = _save_model(
            fitted,
            out,
            force=force,
            run=run,
            data=loaded.data,
            title=f"{out.name}: {cv_folds}-fold CV",
            folds=cv_folds,
            seed=seed,
        )
        registered = None
        if db is not None or task is not None:
            registered = _register_or_undo(written, existed, db, name, task)
    saved = written[0]
    details = read_model_info(saved).details
    summary = {
        "path": str(saved),
        "kind": loaded.kind,
        "class": fitted.name,
        "n": len(loaded.data),
        "details": details,
        "data_fingerprint": fitted.train_.fingerprint if fitted.train_ else None,
        "cv": report,
        "png": None if report is None else report["png"],
        "registered": registered,
    }
    if json_out:
        print_json(summary)
        return
    console.print(
        f"saved a {loaded.kind} reward model ({fitted.name}) to [bold]{escape(str(saved))}[/]"
    )
    selection = details.get("selection") or {}
    if "candidates" in selection:
        console.print(_chosen_line(selection), highlight=False)
    if run is not None and report is not None:
        _show(run.report, f"{cv_folds}-fold cross-validation (out of fold)")
        console.print(f"figure: {escape(str(report['png']))}")
    if registered is not None:
        console.print(f"registered as {registered['name']} v{registered['version']}")


def _chosen_line(selection: dict[str, Any]) -> str:
    """What ``auto`` chose and on what evidence, from a rating model's ``selection``."""
    scores = selection["candidates"]
    ranked = sorted(scores, key=lambda spec: scores[spec]["mse"])
    chosen = selection["chosen"]
    line = (
        f"auto chose {chosen}: inner CV MSE {scores[chosen]['mse']:.3f} on "
        f"{selection['inner_folds']} folds of the training data by "
        f"{selection.get('group_by', 'text')}"
    )
    runner_up = next((spec for spec in ranked if spec != chosen), None)
    if runner_up is not None:
        line += f" (next: {runner_up} {scores[runner_up]['mse']:.3f})"
    return line


def evaluate(
    model: ModelDirOption,
    data: DataFileOption,
    json_out: JsonOption = False,
    report_path: ReportOption = None,
    png: PngOption = None,
    scale: ScaleOption = None,
    seed: SeedOption = 0,
    samples: SamplesOption = 1000,
) -> None:
    """Evaluate a saved model on a file, with 95% intervals and baselines."""
    from prefloop.reward import (
        RatingReport,
        evaluate_model,
        load_pair_data,
        load_rating_data,
        load_reward_model,
    )

    with _surface_warnings():
        fitted = load_reward_model(model)
        dataset: RatingData | PairData
        with _progress(not json_out) as progress:
            if fitted.kind == "rating":
                train_scale = fitted.train_.scale if fitted.train_ else None
                dataset = load_rating_data(data, _parse_scale(scale) or train_scale)
            else:
                dataset = load_pair_data(data)
            result = evaluate_model(fitted, dataset, samples=samples, seed=seed, progress=progress)
        report = result.report
        _warn_unscored(report.unscored, report.n, "items" if fitted.kind == "rating" else "pairs")
        _warn_judge_failures(fitted)
        json_path = report_path or Path("reports") / f"reward-eval-{_slug(data, None)}.json"
        png_path = _plot(
            dataset,
            result.predictions,
            png or json_path.with_suffix(".png"),
            title=f"{model.name} on {data.name}",
            folds=5,
            seed=seed,
            baseline_mean=report.baseline.mean if isinstance(report, RatingReport) else None,
        )
        printed = {
            **report.to_json(),
            "model": str(model),
            "data": str(data),
            "png": str(png_path),
            "report": str(json_path),
        }
        _write_json(json_path, printed)
    if json_out:
        print_json(printed)
        return
    _show(report, f"{model.name} on {data.name}")
    console.print(f"report: {escape(str(json_path))}  figure: {escape(str(png_path))}")


def cv(
    data: DataOption = None,
    task: TaskOption = None,
    kind: KindOption = None,
    model: ModelSpecOption = "auto",
    folds: Annotated[int, typer.Option("--folds", min=2, help="Number of folds.")] = 5,
    db: DbOption = None,
    json_out: JsonOption = False,
    report_path: ReportOption = None,
    png: PngOption = None,
    scale: ScaleOption = None,
    balance_levels: BalanceOption = False,
    candidates: CandidatesOption = None,
    seed: SeedOption = 0,
    samples: SamplesOption = 1000,
    group_by: GroupByOption = "text",
) -> None:
    """Cross-validate a model: every figure out of fold, next to baselines on the same folds."""
    from prefloop.reward import RatingData, cross_validate_spec

    with _surface_warnings():
        loaded = _load_data(data, task, kind, scale, db)
        spec = _spec(loaded, model, seed, balance_levels, candidates, group_by)
        with _progress(not json_out) as progress:
            run = cross_validate_spec(
                spec, loaded.data, folds=folds, samples=samples, progress=progress
            )
        _warn_unscored(run.report.unscored, run.report.n, "items (out of fold)")
        json_path = report_path or Path("reports") / f"reward-cv-{_slug(data, task)}.json"
        ratings = loaded.data.ratings if isinstance(loaded.data, RatingData) else None
        png_path = _plot(
            loaded.data,
            run.predictions,
            png or json_path.with_suffix(".png"),
            title=f"{model}: {folds}-fold CV, n={len(loaded.data)}",
            folds=folds,
            seed=seed,
            baseline_mean=None if ratings is None else float(np.mean(ratings)),
        )
        printed = {**run.to_json(), "png": str(png_path), "report": str(json_path)}
        _write_json(json_path, printed)
    if json_out:
        print_json(printed)
        return
    _show(run.report, f"{model}: {folds}-fold cross-validation (out of fold)")
    if run.candidates:
        table = Table(title="candidates on the same folds")
        for column in ("candidate", "mse", "spearman", "train mse"):
            table.add_column(column)
        for candidate, score in run.candidates.items():
            table.add_row(
                candidate, f"{score.mse:.3f}", f"{score.spearman:.3f}", f"{score.train_mse:.3f}"
            )
        console.print(table)
    console.print(f"report: {escape(str(json_path))}  figure: {escape(str(png_path))}")


@dataclass(frozen=True)
class _Line:
    """One line of a predict input: what to score, and where the rewards go."""

    obj: dict[str, Any]
    form: str  # "pair", "ranking" or "text"
    texts: list[str]
    prompt: str | None


def _read_line(obj: dict[str, Any], where: str, line: int) -> _Line:
    if "chosen" in obj and "rejected" in obj:
        chosen, rejected = obj["chosen"], obj["rejected"]
        if not isinstance(chosen, str) or not isinstance(rejected, str):
            raise ImportFileError(where, line, '"chosen" and "rejected" must be strings')
        prompt = obj.get("prompt")
        if not isinstance(prompt, str):
            from prefloop.io import split_hh_dialogue

            try:
                prompt, chosen, rejected = split_hh_dialogue(chosen, rejected)
            except ValueError as exc:
                raise ImportFileError(where, line, str(exc)) from None
        return _Line(obj, "pair", [chosen, rejected], prompt)
    prompt = obj.get("prompt") if isinstance(obj.get("prompt"), str) else None
    if "responses" in obj:
        responses = obj["responses"]
        if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
            raise ImportFileError(where, line, '"responses" must be a list of strings')
        return _Line(obj, "ranking", list(responses), prompt)
    text = obj.get("text", obj.get("caption"))
    if not isinstance(text, str):
        raise ImportFileError(
            where,
            line,
            'each line needs "text" (or "caption"), "chosen"+"rejected", or "responses"; '
            f"found keys {sorted(obj)}",
        )
    return _Line(obj, "text", [text], prompt)


def _with_rewards(item: _Line, raw: list[float | None], unit: list[float | None]) -> dict[str, Any]:
    out = dict(item.obj)
    if item.form == "pair":
        out["reward_chosen"], out["reward_rejected"] = raw
        out["reward_unit_chosen"], out["reward_unit_rejected"] = unit
    elif item.form == "ranking":
        out["rewards"], out["rewards_unit"] = raw, unit
    else:
        out["reward"], out["reward_unit"] = raw[0], unit[0]
    return out


def _json_numbers(values: np.ndarray) -> list[float | None]:
    """Plain floats, None (JSON null) where there is no score: NaN is not valid JSON."""
    return [float(v) if math.isfinite(v) else None for v in values]


def predict(
    model: ModelDirOption,
    data: DataFileOption,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="JSONL to write (the input plus rewards).")
    ],
) -> None:
    """Score every line of a file: adds "reward" and "reward_unit" in [0, 1] (a rating model's
    reward rescaled linearly from its scale, a pairwise model's through a sigmoid); pairs get
    "reward_chosen"/"reward_rejected", rankings "rewards". A text the model gave no score (an
    LLM judge whose calls failed) gets null, counted on stderr."""
    from prefloop.io.readers import iter_json_lines
    from prefloop.reward import load_reward_model, score_in_chunks

    with _surface_warnings():
        fitted = load_reward_model(model)
        items = [_read_line(obj, str(data), line) for line, obj in iter_json_lines(data)]
        if not items:
            raise InvalidInputError(f"{data} is empty: nothing to score")
        texts = [text for item in items for text in item.texts]
        prompts = [item.prompt for item in items for _ in item.texts]
        with _progress() as progress:
            raw = score_in_chunks(fitted, texts, prompts, progress)
        unit = fitted.to_unit(raw)
        with atomic_path(output) as temporary, temporary.open("w", encoding="utf-8") as handle:
            start = 0
            for item in items:
                stop = start + len(item.texts)
                row = _with_rewards(
                    item, _json_numbers(raw[start:stop]), _json_numbers(unit[start:stop])
                )
                handle.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
                start = stop
    unscored = int(np.sum(~np.isfinite(raw)))
    _warn_judge_failures(fitted)
    err_console.print(
        f"scored {len(items)} lines ({len(texts)} texts) → {escape(str(output))}", highlight=False
    )
    if unscored:
        _warn(
            f"{unscored} of {len(texts)} texts got no score from the model (for an LLM judge: "
            "its calls failed); their rewards are null"
        )
    if texts and unscored == len(texts):
        err_console.print(
            "[red]no text got a score: the model could not do its job (see the errors above)[/red]"
        )
        raise typer.Exit(1)


def distill(
    teacher: Annotated[
        Path,
        typer.Option(
            "--teacher", help="A saved reward-model folder that labels the data (e.g. llm-judge)."
        ),
    ],
    data: DataFileOption,
    out: OutOption,
    student: Annotated[
        str,
        typer.Option(
            "--student",
            help="The cheap model that learns the teacher's labels: a --model spec of "
            "`reward fit` (e.g. ridge:use, bradley-terry:use; default auto).",
        ),
    ] = "auto",
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="The student's kind: rating (learns the teacher's scores; the file holds texts "
            "or ratings) or pairwise (learns its verdicts on the file's pairs). Default: the "
            "teacher's kind.",
        ),
    ] = None,
    test_fraction: Annotated[
        float,
        typer.Option(
            "--test-fraction",
            help="Share of the teacher-labeled items held out to measure agreement.",
        ),
    ] = 0.25,
    refit: Annotated[
        bool,
        typer.Option(
            "--refit/--no-refit",
            help="After measuring, fit the student again on every labeled item (what is saved).",
        ),
    ] = True,
    force: ForceOption = False,
    seed: SeedOption = 0,
    json_out: JsonOption = False,
) -> None:
    """Distill a teacher into a cheap local student: the teacher labels --data, the student
    learns its labels and is saved to --out. Items the teacher could not label (a failed judge
    call) are left out and counted, never scored 0."""
    from prefloop.reward import (
        DistillConfig,
        LLMJudge,
        ModelSpec,
        check_model_target,
        distill_from_files,
        load_reward_model,
        make_reward_model,
    )

    check_model_target(out, overwrite=force)
    config = DistillConfig(test_fraction=test_fraction, seed=seed, refit_on_all=refit)
    config.check()
    with _surface_warnings():
        teacher_model = load_reward_model(teacher)
        student_kind = _check_kind(kind) or teacher_model.kind
        student_model = make_reward_model(ModelSpec(kind=student_kind, model=student, seed=seed))
        with _progress(not json_out) as progress:
            report = distill_from_files(
                teacher_model, data, student_model, config=config, progress=progress
            )
        saved = student_model.save(out, overwrite=force)
    summary: dict[str, Any] = {"path": str(saved), "teacher_path": str(teacher)}
    summary.update(report.to_json())
    if isinstance(teacher_model, LLMJudge):
        summary["teacher_stats"] = teacher_model.stats.to_json()
    _warn_judge_failures(teacher_model)
    if report.teacher_failed:
        _warn(
            f"the teacher gave no label to {report.teacher_failed} of {report.items} items; "
            "they are left out of training and of every figure"
        )
    if json_out:
        print_json(summary)
        return
    table = Table(title=f"{report.student} distilled from {report.teacher} ({teacher.name})")
    for column in ("agreement on held-out items", "n", "mse", "spearman", "accuracy"):
        table.add_column(column)
    for label, key in (
        ("student vs teacher", "student_vs_teacher"),
        ("student vs people", "student_vs_people"),
        ("teacher vs people (ceiling)", "teacher_vs_people"),
    ):
        row = summary.get(key)
        if row is None:
            continue
        cells = [row.get(k) for k in ("n", "mse", "spearman", "accuracy")]
        table.add_row(label, *("-" if v is None else f"{v:g}" for v in cells))
    console.print(table)
    console.print(
        f"{report.items} items: {report.train_items} trained, {report.test_items} held out, "
        f"{report.teacher_failed} without a teacher label, {report.teacher_ties} ties",
        highlight=False,
    )
    console.print(f"saved the student to [bold]{escape(str(saved))}[/]")


def list_models(
    db: DbOption = None,
    folder: Annotated[
        Path | None,
        typer.Option("--dir", help="Scan this folder for saved models instead of the store."),
    ] = None,
    task: Annotated[str | None, typer.Option("--task", help="Only this task's models.")] = None,
    json_out: JsonOption = False,
) -> None:
    """List the registered reward models (from the store, or the folders under --dir)."""
    from prefloop.reward.registry import list_registered, scan_folders

    if folder is not None:
        rows = scan_folders(folder)
    else:
        from prefloop.store import Store

        with Store.open(db) as store:
            rows = list_registered(store, task=task)
    if json_out:
        print_json({"models": rows})
        return
    if not rows:
        console.print("no reward models yet: train one with `prefloop reward fit`")
        return
    table = Table(title="reward models")
    for column in ("name", "version", "kind", "class", "CV figure", "path"):
        table.add_column(column)
    for row in rows:
        if "error" in row:
            table.add_row("?", "", "", "", escape(row["error"]), escape(row["path"]))
            continue
        cv_report = (row.get("metrics") or {}).get("cv") or {}
        if "mse" in cv_report:
            figure = f"MSE {cv_report['mse']:.3f} (baseline {cv_report['baseline']['mse']:.3f})"
        elif "accuracy" in cv_report:
            figure = f"acc {cv_report['accuracy']:.3f}"
        else:
            figure = "-"
        table.add_row(
            escape(str(row.get("name"))),
            str(row.get("version", "")),
            str(row.get("kind")),
            str(row.get("class")),
            figure,
            escape(str(row.get("path"))),
        )
    console.print(table)
