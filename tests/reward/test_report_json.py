"""The JSON that `prefloop reward fit|eval|cv --json` prints keeps its keys, their order and the
type of each value: scripts read it. The reports are typed objects inside prefloop; this pins
what their ``to_json()`` gives the command line (taken from the output before they were)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from prefloop.cli import app
from tests.reward.conftest import synthetic_pairs, synthetic_ratings, write_jsonl

FAST = ["--bootstrap", "100"]


def _shape(value: Any, path: str = "") -> list[str]:
    """``"key.subkey: type"`` for every leaf, in the order printed (a list by its first item);
    numbers and null are one type, since an undefined figure (NaN) prints as null."""
    if isinstance(value, dict):
        return [
            line
            for key, item in value.items()
            for line in _shape(item, f"{path}.{key}" if path else key)
        ]
    if isinstance(value, list):
        return [f"{path}: list of {_kind(value[0]) if value else 'nothing'}"]
    return [f"{path}: {_kind(value)}"]


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if value is None or isinstance(value, int | float):
        return "num"
    return type(value).__name__


def _printed(*args: str | Path) -> dict[str, Any]:
    result = CliRunner().invoke(app, [*map(str, args), "--json", *FAST])
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout)
    assert isinstance(obj, dict)
    # one line, compact, non-ASCII as is: the bytes json.dumps gives the parsed object
    assert result.stdout == json.dumps(obj, ensure_ascii=False) + "\n"
    return obj


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report-json")
    write_jsonl(root / "ratings.jsonl", synthetic_ratings())
    write_jsonl(root / "pairs.jsonl", synthetic_pairs())
    rows = [
        {"image_id": f"{i // 5:03d}.jpg", "caption": r["text"], "rate": r["rating"]}
        for i, r in enumerate(synthetic_ratings(60))
    ]
    write_jsonl(root / "diary.jsonl", rows)
    return root


CASES: dict[str, tuple[str, ...]] = {
    "fit-rating": ("fit", "--data", "ratings.jsonl", "--model", "ridge:stats", "--cv", "3",
                   "--out", "m-rating"),
    "eval-rating": ("eval", "--model", "m-rating", "--data", "ratings.jsonl",
                    "--report", "eval-rating.json"),
    "cv-auto": ("cv", "--data", "ratings.jsonl", "--candidates", "ridge:stats,stack:stats",
                "--folds", "3", "--report", "cv-auto.json"),
    "cv-input": ("cv", "--data", "diary.jsonl", "--model", "ridge:stats", "--group-by", "input",
                 "--folds", "3", "--report", "cv-input.json"),
    "fit-pairs": ("fit", "--data", "pairs.jsonl", "--model", "bradley-terry:stats", "--cv", "3",
                  "--out", "m-pairs"),
    "eval-pairs": ("eval", "--model", "m-pairs", "--data", "pairs.jsonl",
                   "--report", "eval-pairs.json"),
    "cv-pairs": ("cv", "--data", "pairs.jsonl", "--model", "bradley-terry:stats", "--folds", "3",
                 "--report", "cv-pairs.json"),
}  # fmt: skip

SHAPES: dict[str, list[str]] = {
    "fit-rating": [
        "path: str",
        "kind: str",
        "class: str",
        "n: num",
        "details.chosen: str",
        "details.selection.chosen: str",
        "data_fingerprint: str",
        "cv.n: num",
        "cv.unscored: num",
        "cv.mse: num",
        "cv.mae: num",
        "cv.spearman: num",
        "cv.pearson: num",
        "cv.baseline.mse: num",
        "cv.baseline.mae: num",
        "cv.ci.mse: list of num",
        "cv.ci.mae: list of num",
        "cv.ci.spearman: list of num",
        "cv.ci.pearson: list of num",
        "cv.ci.baseline_mse: list of num",
        "cv.ci.baseline_mae: list of num",
        "cv.vs_baseline.mse_reduction: num",
        "cv.vs_baseline.ci: list of num",
        "cv.vs_baseline.beats_baseline: bool",
        "cv.resampled.unit: str",
        "cv.resampled.count: num",
        "cv.gap.mse: num",
        "cv.train.mse: num",
        "cv.train.mae: num",
        "cv.train.spearman: num",
        "cv.train.pearson: num",
        "cv.train.unscored: num",
        "cv.folds: num",
        "cv.model: str",
        "cv.group_by: str",
        "cv.seconds: num",
        "cv.png: str",
        "cv.report: str",
        "png: str",
        "registered: num",
    ],
    "eval-rating": [
        "n: num",
        "unscored: num",
        "mse: num",
        "mae: num",
        "spearman: num",
        "pearson: num",
        "baseline.mse: num",
        "baseline.mae: num",
        "baseline.mean: num",
        "ci.mse: list of num",
        "ci.mae: list of num",
        "ci.spearman: list of num",
        "ci.pearson: list of num",
        "ci.baseline_mse: list of num",
        "ci.baseline_mae: list of num",
        "vs_baseline.mse_reduction: num",
        "vs_baseline.ci: list of num",
        "vs_baseline.beats_baseline: bool",
        "resampled.unit: str",
        "resampled.count: num",
        "model: str",
        "data: str",
        "png: str",
        "report: str",
    ],
    "cv-auto": [
        "n: num",
        "unscored: num",
        "mse: num",
        "mae: num",
        "spearman: num",
        "pearson: num",
        "baseline.mse: num",
        "baseline.mae: num",
        "ci.mse: list of num",
        "ci.mae: list of num",
        "ci.spearman: list of num",
        "ci.pearson: list of num",
        "ci.baseline_mse: list of num",
        "ci.baseline_mae: list of num",
        "vs_baseline.mse_reduction: num",
        "vs_baseline.ci: list of num",
        "vs_baseline.beats_baseline: bool",
        "resampled.unit: str",
        "resampled.count: num",
        "gap.mse: num",
        "train.mse: num",
        "train.mae: num",
        "train.spearman: num",
        "train.pearson: num",
        "train.unscored: num",
        "folds: num",
        "models.ridge:stats.mse: num",
        "models.ridge:stats.mae: num",
        "models.ridge:stats.spearman: num",
        "models.ridge:stats.pearson: num",
        "models.ridge:stats.ci.mse: list of num",
        "models.ridge:stats.ci.mae: list of num",
        "models.ridge:stats.ci.spearman: list of num",
        "models.ridge:stats.ci.pearson: list of num",
        "models.ridge:stats.ci.baseline_mse: list of num",
        "models.ridge:stats.ci.baseline_mae: list of num",
        "models.ridge:stats.unscored: num",
        "models.ridge:stats.train_mse: num",
        "models.stack:stats.mse: num",
        "models.stack:stats.mae: num",
        "models.stack:stats.spearman: num",
        "models.stack:stats.pearson: num",
        "models.stack:stats.ci.mse: list of num",
        "models.stack:stats.ci.mae: list of num",
        "models.stack:stats.ci.spearman: list of num",
        "models.stack:stats.ci.pearson: list of num",
        "models.stack:stats.ci.baseline_mse: list of num",
        "models.stack:stats.ci.baseline_mae: list of num",
        "models.stack:stats.unscored: num",
        "models.stack:stats.train_mse: num",
        "model: str",
        "group_by: str",
        "seconds: num",
        "png: str",
        "report: str",
    ],
    "cv-input": [
        "n: num",
        "unscored: num",
        "mse: num",
        "mae: num",
        "spearman: num",
        "pearson: num",
        "baseline.mse: num",
        "baseline.mae: num",
        "ci.mse: list of num",
        "ci.mae: list of num",
        "ci.spearman: list of num",
        "ci.pearson: list of num",
        "ci.baseline_mse: list of num",
        "ci.baseline_mae: list of num",
        "vs_baseline.mse_reduction: num",
        "vs_baseline.ci: list of num",
        "vs_baseline.beats_baseline: bool",
        "resampled.unit: str",
        "resampled.count: num",
        "within_input.pairs: num",
        "within_input.inputs: num",
        "within_input.ordered_right: num",
        "within_input.longer_wins: num",
        "within_input.ci.ordered_right: list of num",
        "within_input.ci.longer_wins: list of num",
        "within_input.vs_baseline.gain: num",
        "within_input.vs_baseline.ci: list of num",
        "within_input.vs_baseline.beats_baseline: bool",
        "gap.mse: num",
        "train.mse: num",
        "train.mae: num",
        "train.spearman: num",
        "train.pearson: num",
        "train.unscored: num",
        "folds: num",
        "model: str",
        "group_by: str",
        "seconds: num",
        "png: str",
        "report: str",
    ],
    "fit-pairs": [
        "path: str",
        "kind: str",
        "class: str",
        "n: num",
        "details.C: num",
        "details.selection.inner_folds: num",
        "details.selection.log_loss_by_c.0.003: num",
        "details.selection.log_loss_by_c.0.01: num",
        "details.selection.log_loss_by_c.0.03: num",
        "details.selection.log_loss_by_c.0.1: num",
        "details.selection.log_loss_by_c.0.3: num",
        "details.selection.log_loss_by_c.1: num",
        "details.selection.log_loss_by_c.3: num",
        "data_fingerprint: str",
        "cv.n: num",
        "cv.unscored: num",
        "cv.accuracy: num",
        "cv.log_loss: num",
        "cv.baseline.shorter_wins: num",
        "cv.baseline.length_model: num",
        "cv.ci.accuracy: list of num",
        "cv.ci.shorter_wins: list of num",
        "cv.ci.length_model: list of num",
        "cv.vs_baseline.accuracy_gain: num",
        "cv.vs_baseline.ci: list of num",
        "cv.vs_baseline.beats_baseline: bool",
        "cv.resampled.unit: str",
        "cv.resampled.count: num",
        "cv.gap.accuracy: num",
        "cv.train.accuracy: num",
        "cv.train.unscored: num",
        "cv.folds: num",
        "cv.model: str",
        "cv.group_by: str",
        "cv.seconds: num",
        "cv.png: str",
        "cv.report: str",
        "png: str",
        "registered: num",
    ],
    "eval-pairs": [
        "n: num",
        "unscored: num",
        "accuracy: num",
        "log_loss: num",
        "baseline.shorter_wins: num",
        "baseline.length_model: num",
        "ci.accuracy: list of num",
        "ci.shorter_wins: list of num",
        "ci.length_model: list of num",
        "vs_baseline.accuracy_gain: num",
        "vs_baseline.ci: list of num",
        "vs_baseline.beats_baseline: bool",
        "resampled.unit: str",
        "resampled.count: num",
        "model: str",
        "data: str",
        "png: str",
        "report: str",
    ],
    "cv-pairs": [
        "n: num",
        "unscored: num",
        "accuracy: num",
        "log_loss: num",
        "baseline.shorter_wins: num",
        "baseline.length_model: num",
        "ci.accuracy: list of num",
        "ci.shorter_wins: list of num",
        "ci.length_model: list of num",
        "vs_baseline.accuracy_gain: num",
        "vs_baseline.ci: list of num",
        "vs_baseline.beats_baseline: bool",
        "resampled.unit: str",
        "resampled.count: num",
        "gap.accuracy: num",
        "train.accuracy: num",
        "train.unscored: num",
        "folds: num",
        "model: str",
        "group_by: str",
        "seconds: num",
        "png: str",
        "report: str",
    ],
}


@pytest.mark.parametrize("case", list(CASES))
def test_printed_json_keeps_its_keys_order_and_types(
    case: str, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(folder)
    if case.startswith("eval"):  # the model it evaluates
        fit = "fit-rating" if case == "eval-rating" else "fit-pairs"
        if not (folder / CASES[fit][CASES[fit].index("--out") + 1]).exists():
            _printed("reward", *CASES[fit])
    printed = _printed("reward", *CASES[case])
    assert _shape(printed) == SHAPES[case]
    written = printed["cv"]["report"] if case.startswith("fit") else printed["report"]
    assert json.loads(Path(written).read_text("utf-8")) == (
        printed["cv"] if case.startswith("fit") else printed
    )
