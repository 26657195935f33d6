"""``prefloop reward``: fit, evaluate, cross-validate, apply and list reward models."""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from prefloop.cli._output import JsonOption, console, err_console, print_json
from prefloop.errors import ImportFileError, InvalidInputError
from prefloop.io import split_hh_dialogue
from prefloop.io.readers import iter_json_lines

__all__ = ["register"]

DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="A JSONL file: ratings ({text, rating} or {caption, rate}), pairs "
        "({prompt?, chosen, rejected}) or rankings ({prompt, responses, ranking}).",
    ),
]
TaskOption = Annotated[
    str | None,
    typer.Option("--task", help="Train from this task's feedback in the store instead of a file."),
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
        "gradient-boosting; features like stats, use, stats+use), for pairs "
        "bradley-terry[:FEATURES] (default features use-prompt; e.g. bradley-terry:minilm-prompt).",
    ),
]
CandidatesOption = Annotated[
    str | None,
    typer.Option(
        "--candidates",
        help="For --model auto on ratings: the candidates to choose from, comma-separated, "
        "cheapest first (default: ridge:stats, gradient-boosting:stats, random-forest:stats, "
        "ridge:stats+use, random-forest:stats+use).",
    ),
]
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database URL (default: PREFLOOP_DATABASE_URL, else sqlite:///prefloop.db). "
        "Giving it registers the fitted model in the store.",
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
SeedOption = Annotated[int, typer.Option("--seed", help="Seed for folds and models.")]
SamplesOption = Annotated[
    int, typer.Option("--bootstrap", min=100, help="Bootstrap resamples for the 95% intervals.")
]


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main prefloop app."""
    reward_app = typer.Typer(
        help="Reward models learned from feedback: fit, eval, cv, predict, list.",
        no_args_is_help=True,
    )
    reward_app.command("fit")(fit)
    reward_app.command("eval")(evaluate)
    reward_app.command("cv")(cv)
    reward_app.command("predict")(predict)
    reward_app.command("list")(list_models)
    app.add_typer(reward_app, name="reward")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


@contextmanager
def _progress(enabled: bool = True) -> Iterator[Callable[[str, int, int], None]]:
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
                    err_console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False)


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


def _detect_kind(path: Path) -> str:
    for _line, obj in iter_json_lines(path):
        if "chosen" in obj or "responses" in obj:
            return "pairwise"
        return "rating"
    raise InvalidInputError(f"{path} is empty: it holds no ratings, pairs or rankings")


def _check_kind(kind: str | None) -> str | None:
    if kind is not None and kind not in ("rating", "pairwise"):
        raise InvalidInputError(f"--kind must be rating or pairwise, not {kind!r}")
    return kind


def _load_data(
    data: Path | None, task: str | None, kind: str | None, scale: str | None, db: str | None
) -> tuple[Any, str]:
    from prefloop.reward import (
        load_pair_data,
        load_rating_data,
        pair_data_from_store,
        rating_data_from_store,
    )

    kind = _check_kind(kind)
    if (data is None) == (task is None):
        raise InvalidInputError("give either --data FILE or --task NAME (one of them)")
    if data is not None:
        kind = kind or _detect_kind(data)
        if kind == "rating":
            return load_rating_data(data, _parse_scale(scale)), kind
        return load_pair_data(data), kind
    if kind is None:
        raise InvalidInputError("with --task, say which model to train: --kind rating|pairwise")
    from prefloop.store import Store

    assert task is not None
    with Store.open(db) as store:
        if kind == "rating":
            return rating_data_from_store(store, task), kind
        return pair_data_from_store(store, task), kind


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


def _model_factory(
    kind: str,
    spec: str,
    seed: int,
    balance: bool = False,
    candidates: tuple[str, ...] | None = None,
) -> Callable[[], Any]:
    from prefloop.reward.base import model_class
    from prefloop.reward.pairwise import BradleyTerryConfig, BradleyTerryModel
    from prefloop.reward.rating import (
        REGRESSORS,
        RatingModelConfig,
        SklearnRatingModel,
        parse_candidate,
    )

    if kind == "rating":
        if spec != "auto" and spec.partition(":")[0] not in REGRESSORS:
            cls = model_class(spec)
            if cls.kind != "rating":
                raise InvalidInputError(f"--model {spec} is a {cls.kind} model, not a rating one")
            return cls
        if spec != "auto":
            parse_candidate(spec)
        config = RatingModelConfig(model=spec, seed=seed, balance_levels=balance)
        if candidates is not None:
            config = RatingModelConfig(
                model=spec, seed=seed, balance_levels=balance, candidates=candidates
            )
        return lambda: SklearnRatingModel(config)
    name, _, features = spec.partition(":")
    if name in ("auto", "bradley-terry", "bt"):
        defaults = BradleyTerryConfig()
        bt = BradleyTerryConfig(features=features or defaults.features, seed=seed)
        from prefloop.reward.featurizers import build_featurizer

        build_featurizer(bt.features)
        return lambda: BradleyTerryModel(bt)
    cls = model_class(name)
    if cls.kind != "pairwise":
        raise InvalidInputError(f"--model {spec} is a {cls.kind} model, not a pairwise one")
    return cls


def _slug(path: Path | None, task: str | None) -> str:
    raw = path.stem if path is not None else f"task-{task}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip("-") or "data"


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf (an undefined correlation) become null, numpy scalars plain numbers."""
    from prefloop.reward.base import to_jsonable

    return to_jsonable(obj)


def _write_json(path: Path, obj: Any) -> None:
    obj = _clean(obj)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, ensure_ascii=False, indent=2, default=str)
        handle.write("\n")
    os.replace(tmp, path)


def _plot(kind: str, data: Any, figures: dict[str, Any], png: Path, title: str) -> Path:
    from prefloop.reward.plots import plot_pairs, plot_ratings

    if kind == "rating":
        return plot_ratings(
            data.ratings,
            figures["pred"],
            png,
            baseline=figures.get("baseline_mean"),
            title=title,
        )
    return plot_pairs(
        data, figures["p_model"], figures["p_shorter"], figures["p_length"], png, title=title
    )


def _fmt_ci(report: dict[str, Any], key: str, ci_key: str | None = None) -> str:
    lo, hi = report["ci"].get(ci_key or key, [float("nan"), float("nan")])
    return f"{report[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def _show(report: dict[str, Any], kind: str, heading: str) -> None:
    table = Table(title=heading, show_header=True)
    table.add_column("figure")
    table.add_column("value [95% CI]")
    base = report["baseline"]
    if kind == "rating":
        for key in ("mse", "mae", "spearman", "pearson"):
            table.add_row(f"model {key}", _fmt_ci(report, key))
        for key in ("mse", "mae"):
            lo, hi = report["ci"][f"baseline_{key}"]
            table.add_row(
                f"baseline {key} (training mean)", f"{base[key]:.3f} [{lo:.3f}, {hi:.3f}]"
            )
        gain = report["vs_baseline"]
        verdict = "beats" if gain["beats_baseline"] else "does NOT clearly beat"
        note = (
            f"MSE reduction {gain['mse_reduction']:.3f} [{gain['ci'][0]:.3f}, "
            f"{gain['ci'][1]:.3f}]: the model {verdict} the training-mean baseline"
        )
    else:
        table.add_row("model accuracy", _fmt_ci(report, "accuracy"))
        for key, label in (
            ("shorter_wins", "shorter reply wins"),
            ("length_model", "length model"),
        ):
            lo, hi = report["ci"][key]
            table.add_row(f"baseline: {label}", f"{base[key]:.3f} [{lo:.3f}, {hi:.3f}]")
        gain = report["vs_baseline"]
        verdict = "beats" if gain["beats_baseline"] else "does NOT clearly beat"
        note = (
            f"accuracy gain {gain['accuracy_gain']:.3f} [{gain['ci'][0]:.3f}, "
            f"{gain['ci'][1]:.3f}]: the model {verdict} the better length baseline"
        )
    if "train" in report:
        main = "mse" if kind == "rating" else "accuracy"
        table.add_row(
            f"in-sample {main} (overfitting gap)",
            f"{report['train'][main]:.3f} ({report['gap'][main]:+.3f})",
        )
    console.print(table)
    console.print(note, highlight=False)


def _cv_run(
    kind: str,
    data: Any,
    spec: str,
    folds_k: int,
    seed: int,
    samples: int,
    progress: Callable[[str, int, int], None],
    balance: bool = False,
    candidates: tuple[str, ...] | None = None,
    compare: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Cross-validate ``spec`` and, with ``compare`` for ``auto`` ratings, each candidate on
    the same folds."""
    from prefloop.reward.evaluate import (
        cross_validate,
        make_folds,
        shorter_wins_probabilities,
    )
    from prefloop.reward.rating import RatingModelConfig

    folds = make_folds(data, folds_k, seed=seed)
    result = cross_validate(
        _model_factory(kind, spec, seed, balance, candidates),
        data,
        folds,
        samples=samples,
        seed=seed,
        progress=progress,
        label=f"cross-validating {spec}",
    )
    report = result.report
    figures: dict[str, Any] = {}
    if kind == "rating":
        figures = {"pred": result.predictions, "baseline_mean": float(np.mean(data.ratings))}
        if spec == "auto" and compare:
            models: dict[str, Any] = {}
            for candidate in candidates or RatingModelConfig().candidates:
                run = cross_validate(
                    _model_factory(kind, candidate, seed, balance),
                    data,
                    folds,
                    samples=samples,
                    seed=seed,
                    progress=progress,
                    label=f"cross-validating {candidate}",
                )
                models[candidate] = {
                    key: run.report[key] for key in ("mse", "mae", "spearman", "pearson", "ci")
                }
                models[candidate]["train_mse"] = run.report["train"]["mse"]
            report["models"] = models
    else:
        from prefloop.reward.evaluate import cross_fitted_length_probabilities

        figures = {
            "p_model": result.predictions,
            "p_shorter": shorter_wins_probabilities(data),
            "p_length": cross_fitted_length_probabilities(data, folds_k, seed),
        }
    report["model"] = spec
    report["seconds"] = round(result.seconds, 2)
    return report, figures


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------


def fit(
    out: Annotated[Path, typer.Option("--out", help="Folder to save the model in.")],
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
    balance_levels: Annotated[
        bool,
        typer.Option("--balance-levels", help="Up-weight rare rating levels (training only)."),
    ] = False,
    candidates: CandidatesOption = None,
    seed: SeedOption = 0,
    samples: SamplesOption = 1000,
    json_out: JsonOption = False,
) -> None:
    """Fit a reward model on a file (or a task's feedback) and save it to --out."""
    with _surface_warnings():
        dataset, kind = _load_data(data, task, kind, scale, db)
        chosen_candidates = _parse_candidates(candidates)
        factory = _model_factory(kind, model, seed, balance_levels, chosen_candidates)
        report: dict[str, Any] | None = None
        figures: dict[str, Any] = {}
        with _progress(not json_out) as progress:
            if cv_folds:
                report, figures = _cv_run(
                    kind,
                    dataset,
                    model,
                    cv_folds,
                    seed,
                    samples,
                    progress,
                    balance_levels,
                    chosen_candidates,
                    compare=False,
                )
            fitted = factory().fit(dataset, progress=progress)
        if report is not None:
            fitted.metrics = {"cv": {k: v for k, v in report.items() if k != "models"}}
        saved = fitted.save(out)
        png: Path | None = None
        if report is not None:
            _write_json(saved.parent / f"{saved.name}.cv.json", report)
            png = _plot(
                kind,
                dataset,
                figures,
                saved.parent / f"{saved.name}.cv.png",
                f"{saved.name}: {cv_folds}-fold CV",
            )
        registered = None
        if db is not None or task is not None:
            from prefloop.reward.registry import register_folder
            from prefloop.store import Store

            with Store.open(db) as store:
                registered = register_folder(store, saved, name=name, task=task)
    summary = {
        "path": str(saved),
        "kind": kind,
        "class": fitted.name,
        "n": len(dataset),
        "details": fitted.details(),
        "data_fingerprint": fitted.train_.fingerprint if fitted.train_ else None,
        "cv": report,
        "png": None if png is None else str(png),
        "registered": registered,
    }
    if json_out:
        print_json(_clean(summary))
        return
    console.print(f"saved a {kind} reward model ({fitted.name}) to [bold]{escape(str(saved))}[/]")
    if report is not None:
        _show(report, kind, f"{cv_folds}-fold cross-validation (out of fold)")
        console.print(f"figure: {escape(str(png))}")
    if registered is not None:
        console.print(f"registered as {registered['name']} v{registered['version']}")


def evaluate(
    model: Annotated[Path, typer.Option("--model", help="A saved reward-model folder.")],
    data: Annotated[Path, typer.Option("--data", help="A JSONL file of ratings or pairs.")],
    json_out: JsonOption = False,
    report_path: ReportOption = None,
    png: PngOption = None,
    scale: ScaleOption = None,
    seed: SeedOption = 0,
    samples: SamplesOption = 1000,
) -> None:
    """Evaluate a saved model on a file, with 95% intervals and baselines."""
    from prefloop.reward import load_pair_data, load_rating_data, load_reward_model
    from prefloop.reward.evaluate import (
        cross_fitted_length_probabilities,
        evaluate_pairs,
        evaluate_ratings,
        shorter_wins_probabilities,
    )

    with _surface_warnings():
        fitted = load_reward_model(model)
        kind = fitted.kind
        if kind == "rating":
            train_scale = fitted.train_.scale if fitted.train_ else None
            ratings = load_rating_data(data, _parse_scale(scale) or train_scale)
            report = evaluate_ratings(fitted, ratings, samples=samples, seed=seed)
            figures = {
                "pred": fitted.score(ratings.texts, ratings.prompts),
                "baseline_mean": report["baseline"]["mean"],
            }
            dataset: Any = ratings
        else:
            pairs = load_pair_data(data)
            report = evaluate_pairs(fitted, pairs, samples=samples, seed=seed)
            figures = {
                "p_model": fitted.preference_probability(pairs),
                "p_shorter": shorter_wins_probabilities(pairs),
                "p_length": cross_fitted_length_probabilities(pairs, 5, seed),
            }
            dataset = pairs
        report["model"] = str(model)
        report["data"] = str(data)
        json_path = report_path or Path("reports") / f"reward-eval-{_slug(data, None)}.json"
        png_path = png or json_path.with_suffix(".png")
        report["png"] = str(_plot(kind, dataset, figures, png_path, f"{model.name} on {data.name}"))
        report["report"] = str(json_path)
        _write_json(json_path, report)
    if json_out:
        print_json(_clean(report))
        return
    _show(report, kind, f"{model.name} on {data.name}")
    console.print(f"report: {escape(str(json_path))}  figure: {escape(report['png'])}")


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
    balance_levels: Annotated[
        bool,
        typer.Option("--balance-levels", help="Up-weight rare rating levels (training only)."),
    ] = False,
    candidates: CandidatesOption = None,
    seed: SeedOption = 0,
    samples: SamplesOption = 1000,
) -> None:
    """Cross-validate a model: every figure out of fold, next to baselines on the same folds."""
    with _surface_warnings():
        dataset, kind = _load_data(data, task, kind, scale, db)
        with _progress(not json_out) as progress:
            report, figures = _cv_run(
                kind,
                dataset,
                model,
                folds,
                seed,
                samples,
                progress,
                balance_levels,
                _parse_candidates(candidates),
            )
        json_path = report_path or Path("reports") / f"reward-cv-{_slug(data, task)}.json"
        png_path = png or json_path.with_suffix(".png")
        report["png"] = str(
            _plot(kind, dataset, figures, png_path, f"{model}: {folds}-fold CV, n={len(dataset)}")
        )
        report["report"] = str(json_path)
        _write_json(json_path, report)
    if json_out:
        print_json(_clean(report))
        return
    _show(report, kind, f"{model}: {folds}-fold cross-validation (out of fold)")
    if "models" in report:
        table = Table(title="candidates on the same folds")
        for column in ("candidate", "mse", "spearman", "train mse"):
            table.add_column(column)
        for name, figures_ in report["models"].items():
            table.add_row(
                name,
                f"{figures_['mse']:.3f}",
                f"{figures_['spearman']:.3f}",
                f"{figures_['train_mse']:.3f}",
            )
        console.print(table)
    console.print(f"report: {escape(str(json_path))}  figure: {escape(report['png'])}")


def _predict_line(fitted: Any, obj: dict[str, Any], where: str, line: int) -> dict[str, Any]:
    def one(texts: list[str], prompt: str | None) -> tuple[list[float], list[float]]:
        raw = fitted.score(texts, [prompt] * len(texts))
        unit = fitted.score_unit(texts, [prompt] * len(texts))
        return [float(v) for v in raw], [float(v) for v in unit]

    out = dict(obj)
    if "chosen" in obj and "rejected" in obj:
        chosen, rejected = obj["chosen"], obj["rejected"]
        if not isinstance(chosen, str) or not isinstance(rejected, str):
            raise ImportFileError(where, line, '"chosen" and "rejected" must be strings')
        prompt = obj.get("prompt")
        if not isinstance(prompt, str):
            try:
                prompt, chosen, rejected = split_hh_dialogue(chosen, rejected)
            except ValueError as exc:
                raise ImportFileError(where, line, str(exc)) from None
        raw, unit = one([chosen, rejected], prompt)
        out["reward_chosen"], out["reward_rejected"] = raw
        out["reward_unit_chosen"], out["reward_unit_rejected"] = unit
        return out
    if "responses" in obj:
        responses = obj["responses"]
        if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
            raise ImportFileError(where, line, '"responses" must be a list of strings')
        prompt = obj.get("prompt") if isinstance(obj.get("prompt"), str) else None
        out["rewards"], out["rewards_unit"] = one(responses, prompt)
        return out
    text = obj.get("text", obj.get("caption"))
    if not isinstance(text, str):
        raise ImportFileError(
            where,
            line,
            'each line needs "text" (or "caption"), "chosen"+"rejected", or "responses"; '
            f"found keys {sorted(obj)}",
        )
    prompt = obj.get("prompt") if isinstance(obj.get("prompt"), str) else None
    raw, unit = one([text], prompt)
    out["reward"], out["reward_unit"] = raw[0], unit[0]
    return out


def predict(
    model: Annotated[Path, typer.Option("--model", help="A saved reward-model folder.")],
    data: Annotated[Path, typer.Option("--data", help="JSONL: texts, pairs or rankings.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="JSONL to write (the input plus rewards).")
    ],
) -> None:
    """Score every line of a file: adds "reward" (and "reward_unit" in [0, 1]); pairs get
    "reward_chosen"/"reward_rejected", rankings "rewards"."""
    from prefloop.reward import load_reward_model

    with _surface_warnings():
        fitted = load_reward_model(model)
        lines = list(iter_json_lines(data))
        if not lines:
            raise InvalidInputError(f"{data} is empty: nothing to score")
        output.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle, _progress() as progress:
                for done, (line, obj) in enumerate(lines):
                    progress("scoring", done, len(lines))
                    row = _predict_line(fitted, obj, str(data), line)
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                progress("scoring", len(lines), len(lines))
            os.replace(tmp, output)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    err_console.print(f"scored {len(lines)} lines → {escape(str(output))}", highlight=False)


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
