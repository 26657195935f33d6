"""`prefloop reward …` end to end on small files (typer's runner; a subprocess where the exit
status and the error message matter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from prefloop.cli import app
from prefloop.errors import PrefloopError
from prefloop.store import Store
from prefloop.store.repo import add_generation, get_or_create_task
from tests.reward.conftest import synthetic_ratings, write_jsonl

FAST = ["--bootstrap", "100"]


def run(*args: str | Path, cwd: Path | None = None) -> str:
    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(old)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.stdout


def run_json(*args: str | Path, cwd: Path | None = None) -> dict[str, Any]:
    out = run(*args, "--json", cwd=cwd)
    return json.loads(out.strip().splitlines()[-1])


def prefloop(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The command in a subprocess; stderr comes back with Rich's line wrapping undone."""
    env = {k: v for k, v in os.environ.items() if k != "PREFLOOP_DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "prefloop", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
        check=False,
    )
    result.stderr = " ".join(result.stderr.split())
    return result


def test_fit_eval_predict_list_for_ratings(tmp_path: Path, ratings_file: Path) -> None:
    out = tmp_path / "models" / "diary"
    summary = run_json(
        "reward",
        "fit",
        "--data",
        ratings_file,
        "--kind",
        "rating",
        "--model",
        "ridge:stats",
        "--out",
        out,
        "--cv",
        "3",
        *FAST,
    )
    assert summary["path"] == str(out) and summary["class"] == "sklearn-rating"
    assert summary["cv"]["mse"] < summary["cv"]["baseline"]["mse"]
    assert Path(summary["png"]).exists() and (tmp_path / "models" / "diary.cv.json").exists()

    report = run_json(
        "reward",
        "eval",
        "--model",
        out,
        "--data",
        ratings_file,
        "--report",
        tmp_path / "eval.json",
        *FAST,
    )
    assert {"n", "mse", "mae", "spearman", "pearson", "baseline", "ci"} <= set(report)
    assert set(report["baseline"]) >= {"mse", "mae"}
    assert report["baseline"]["mean"] == 0.0  # the training mean of the synthetic ratings
    assert (tmp_path / "eval.json").exists() and (tmp_path / "eval.png").exists()
    assert report["ci"]["mse"][0] <= report["mse"] <= report["ci"]["mse"][1]

    scored = tmp_path / "scored.jsonl"
    run("reward", "predict", "--model", out, "--data", ratings_file, "-o", scored)
    rows = [json.loads(line) for line in scored.read_text("utf-8").splitlines()]
    original = [json.loads(line) for line in ratings_file.read_text("utf-8").splitlines()]
    assert len(rows) == len(original)
    assert all(-1.0 <= r["reward"] <= 1.0 and 0.0 <= r["reward_unit"] <= 1.0 for r in rows)
    assert all(
        r["text"] == o["text"] and r["rating"] == o["rating"]
        for r, o in zip(rows, original, strict=True)
    )
    good = [r["reward"] for r in rows if r["rating"] == 1.0]
    bad = [r["reward"] for r in rows if r["rating"] == -1.0]
    assert min(good) > max(bad)

    listed = run_json("reward", "list", "--dir", tmp_path / "models")
    assert [m["name"] for m in listed["models"]] == ["diary"]


def test_cv_for_pairs_with_baselines(tmp_path: Path, pairs_file: Path) -> None:
    report = run_json(
        "reward",
        "cv",
        "--data",
        pairs_file,
        "--kind",
        "pairwise",
        "--model",
        "bradley-terry:stats",
        "--folds",
        "3",
        "--report",
        tmp_path / "cv.json",
        *FAST,
    )
    assert {"n", "accuracy", "baseline", "ci", "train", "gap"} <= set(report)
    assert set(report["baseline"]) == {"shorter_wins", "length_model"}
    assert report["accuracy"] > max(report["baseline"].values())
    assert (tmp_path / "cv.png").exists()


def test_pairs_fit_and_predict(tmp_path: Path, pairs_file: Path) -> None:
    out = tmp_path / "bt"
    run(
        "reward",
        "fit",
        "--data",
        pairs_file,
        "--model",
        "bradley-terry:stats",
        "--out",
        out,
        "--cv",
        "0",
    )
    report = run_json(
        "reward",
        "eval",
        "--model",
        out,
        "--data",
        pairs_file,
        "--report",
        tmp_path / "e.json",
        *FAST,
    )
    assert report["accuracy"] >= 0.9 and set(report["baseline"]) == {"shorter_wins", "length_model"}
    scored = tmp_path / "p.jsonl"
    run("reward", "predict", "--model", out, "--data", pairs_file, "-o", scored)
    rows = [json.loads(line) for line in scored.read_text("utf-8").splitlines()]
    assert sum(r["reward_chosen"] > r["reward_rejected"] for r in rows) >= 0.9 * len(rows)


def test_cv_auto_lists_every_candidate_on_the_same_folds(
    tmp_path: Path, ratings_file: Path
) -> None:
    report = run_json(
        "reward",
        "cv",
        "--data",
        ratings_file,
        "--folds",
        "3",
        "--candidates",
        "ridge:stats,gradient-boosting:stats",
        "--report",
        tmp_path / "cv.json",
        *FAST,
    )
    assert report["model"] == "auto"
    assert set(report["models"]) == {"ridge:stats", "gradient-boosting:stats"}
    for figures in report["models"].values():
        assert {"mse", "spearman", "train_mse", "ci"} <= set(figures)
    assert report["mse"] < report["baseline"]["mse"]


def test_fit_from_a_task_registers_in_the_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    with Store.open(url) as store, store.session() as s:
        task = get_or_create_task(s, "diary")
        for row in synthetic_ratings(30):
            add_generation(s, task, output=row["text"]).reward = row["rating"]
    out = tmp_path / "rm"
    summary = run_json(
        "reward",
        "fit",
        "--task",
        "diary",
        "--kind",
        "rating",
        "--db",
        url,
        "--model",
        "ridge:stats",
        "--out",
        out,
        "--cv",
        "3",
        *FAST,
    )
    assert summary["registered"]["version"] == 1 and summary["n"] == 30
    listed = run_json("reward", "list", "--db", url)
    assert [(m["name"], m["task"]) for m in listed["models"]] == [("rm", "diary")]


def error_of(*args: str | Path) -> str:
    """The message of the prefloop error the command raises (in this process)."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert isinstance(result.exception, PrefloopError), result.output
    return " ".join(str(result.exception).split())


def test_an_error_exits_with_status_2_and_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", "utf-8")
    result = prefloop("reward", "fit", "--data", empty, "--out", tmp_path / "m", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "empty.jsonl is empty" in result.stderr
    assert not (tmp_path / "m").exists()


def test_bad_input_gives_clear_errors(tmp_path: Path, ratings_file: Path) -> None:
    flat = write_jsonl(
        tmp_path / "flat.jsonl", [{"text": f"t{i}", "rating": 0.5} for i in range(8)]
    )
    message = error_of(
        "reward",
        "fit",
        "--data",
        flat,
        "--out",
        tmp_path / "m",
        "--cv",
        "0",
        "--model",
        "ridge:stats",
    )
    assert "every rating in" in message and "at least two different rating levels" in message
    assert not (tmp_path / "m").exists()

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    run(
        "reward",
        "fit",
        "--data",
        ratings_file,
        "--model",
        "ridge:stats",
        "--out",
        tmp_path / "rm",
        "--cv",
        "0",
    )
    message = error_of("reward", "eval", "--model", tmp_path / "rm", "--data", pairs)
    assert "holds pairs, not ratings" in message
    message = error_of("reward", "eval", "--model", tmp_path, "--data", ratings_file)
    assert "is not a prefloop reward model" in message
    message = error_of(
        "reward", "fit", "--data", ratings_file, "--model", "lasso", "--out", tmp_path / "x"
    )
    assert "lasso" in message
    message = error_of(
        "reward", "fit", "--data", pairs, "--kind", "pairwise", "--out", tmp_path / "x", "--cv", "0"
    )
    assert "only 1 pairs" in message
    message = error_of("reward", "cv", "--data", ratings_file, "--kind", "ranking")
    assert "--kind must be rating or pairwise" in message
    message = error_of("reward", "fit", "--out", tmp_path / "x")
    assert "either --data FILE or --task NAME" in message
