"""`prefloop reward …` end to end on small files (typer's runner; a subprocess where the exit
status and the error message matter)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from prefloop.cli import app
from prefloop.errors import PrefloopError
from prefloop.reward import MANIFEST_NAME, read_model_info
from prefloop.store import Store
from prefloop.store.repo import add_generation, get_or_create_task
from tests.reward.conftest import synthetic_ratings, write_jsonl
from tests.support.chat_server import ChatServer, Fail

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
    # Each candidate's figures equal that model cross-validated alone with the same seed: the
    # same folds (and the same baseline) for every model compared.
    for spec in ("ridge:stats", "gradient-boosting:stats"):
        alone = run_json(
            "reward", "cv", "--data", ratings_file, "--folds", "3", "--model", spec,
            "--report", tmp_path / f"{spec[:5]}.json", *FAST,
        )  # fmt: skip
        assert report["models"][spec]["mse"] == pytest.approx(alone["mse"], abs=1e-12)
        assert report["models"][spec]["train_mse"] == pytest.approx(alone["train"]["mse"])
        assert alone["baseline"] == report["baseline"]


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


# ---- the issue's interfaces, point by point ----------------------------------------------------
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def invoke(*args: str | Path) -> Any:
    """The CLI in this process; the result keeps stdout and stderr apart."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


def one_json_object(stdout: str) -> dict[str, Any]:
    """stdout must be exactly one JSON object (nothing else printed), with no NaN in it."""
    obj = json.loads(stdout, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert isinstance(obj, dict)
    return obj


def test_eval_json_is_one_object_with_the_issue_keys(
    tmp_path: Path, ratings_file: Path, pairs_file: Path
) -> None:
    for data, spec in ((ratings_file, "ridge:stats"), (pairs_file, "bradley-terry:stats")):
        out = tmp_path / spec.replace(":", "-")
        invoke("reward", "fit", "--data", data, "--model", spec, "--out", out, "--cv", "0")
        report_file = tmp_path / f"{out.name}.json"
        result = invoke(
            "reward", "eval", "--model", out, "--data", data, "--json",
            "--report", report_file, *FAST,
        )  # fmt: skip
        report = one_json_object(result.stdout)
        if spec.startswith("ridge"):
            assert {"n", "mse", "mae", "spearman", "pearson", "baseline", "ci"} <= set(report)
            assert {"mse", "mae"} <= set(report["baseline"])
            assert {"mse", "mae", "spearman", "pearson"} <= set(report["ci"])
        else:
            assert {"n", "accuracy", "baseline", "ci"} <= set(report)
            assert set(report["baseline"]) == {"shorter_wins", "length_model"}
            assert {"accuracy", "shorter_wins", "length_model"} <= set(report["ci"])
        assert report["n"] == 60 and report["unscored"] == 0
        assert json.loads(report_file.read_text("utf-8")) == report
        assert Path(report["png"]) == report_file.with_suffix(".png")
        assert report_file.with_suffix(".png").read_bytes().startswith(PNG_MAGIC)


def test_cv_json_has_the_eval_keys_out_of_fold_and_the_gap_is_shown(
    tmp_path: Path, ratings_file: Path
) -> None:
    common = ("reward", "cv", "--data", ratings_file, "--model", "ridge:stats", "--folds", "3")
    report = one_json_object(
        invoke(*common, "--json", "--report", tmp_path / "cv.json", *FAST).stdout
    )
    assert {"n", "mse", "mae", "spearman", "pearson", "baseline", "ci", "train", "gap"} <= set(
        report
    )
    assert report["folds"] == 3 and report["n"] == 60
    assert report["gap"]["mse"] == pytest.approx(report["mse"] - report["train"]["mse"])
    assert (tmp_path / "cv.png").read_bytes().startswith(PNG_MAGIC)
    text = invoke(*common, "--report", tmp_path / "cv2.json", *FAST).stdout
    assert "in-sample mse (overfitting gap)" in text
    assert f"({report['gap']['mse']:+.3f})" in text


def test_cv_by_input_reports_how_drafts_of_one_input_are_ordered(tmp_path: Path) -> None:
    """The diary format's image_id keys the drafts: --group-by input holds each photo out
    whole, and the report says how often two drafts of one photo come out in the rater's
    order, next to "the longer text wins"."""
    rows = [
        {"image_id": f"{i // 5:03d}.jpg", "caption": r["text"], "rate": r["rating"]}
        for i, r in enumerate(synthetic_ratings(60))
    ]
    data = write_jsonl(tmp_path / "diary.jsonl", rows)
    common = ("reward", "cv", "--data", data, "--model", "ridge:stats", "--folds", "3", *FAST)
    report = one_json_object(
        invoke(*common, "--group-by", "input", "--json", "--report", tmp_path / "a.json").stdout
    )
    within = report["within_input"]
    assert report["group_by"] == "input" and within["inputs"] == 12
    assert {"pairs", "ordered_right", "longer_wins", "ci", "vs_baseline"} <= set(within)
    assert 0.5 < within["ordered_right"] <= 1.0
    assert report["resampled"] == {"unit": "group", "count": 12}
    text = invoke(*common, "--report", tmp_path / "b.json").stdout
    assert "same-input pairs ordered right" in text and "longer text wins" in text
    assert re.search(r"intervals resample\W+12 inputs", text)
    message = error_of(*common, "--group-by", "photo")
    assert "--group-by must be one of text, input, not 'photo'" in message
    plain = write_jsonl(tmp_path / "plain.jsonl", synthetic_ratings(60))
    message = error_of(
        "reward", "cv", "--data", plain, "--model", "ridge:stats", "--group-by", "input"
    )
    assert "no item in" in message and 'give each line an "input" object' in message
    # fit: the saved model chose its candidate on folds grouped the same way
    folder = tmp_path / "by-input"
    fit_args = ("--data", data, "--candidates", "ridge:stats,stack:stats", "--cv", "0")
    invoke("reward", "fit", *fit_args, "--group-by", "input", "--out", folder, *FAST)
    saved = json.loads((folder / "prefloop-reward.json").read_text())
    assert saved["config"]["group_by"] == "input"
    text = invoke("reward", "fit", *fit_args, "--out", tmp_path / "default", *FAST).stdout
    assert re.search(r"auto chose (ridge|stack):stats: inner CV MSE [0-9.]+ on 5 folds", text)
    assert "of the training data by input (next: " in " ".join(text.split())
    saved = json.loads((tmp_path / "default" / "prefloop-reward.json").read_text())
    assert saved["config"]["group_by"] == "auto"  # by input here: 12 photos are named


def test_candidates_help_names_the_auto_candidates() -> None:
    from prefloop.reward.rating import AUTO_CANDIDATES

    text = " ".join(CliRunner().invoke(app, ["reward", "cv", "--help"]).stdout.split())
    text = re.sub(r"[│ ]+", " ", text)
    assert ", ".join(AUTO_CANDIDATES) in text


def test_fit_never_silently_replaces_a_model(tmp_path: Path, ratings_file: Path) -> None:
    out = tmp_path / "rm"
    fit = ("reward", "fit", "--data", ratings_file, "--model", "ridge:stats", "--cv", "0")
    invoke(*fit, "--out", out)
    before = read_model_info(out)

    message = error_of(*fit, "--out", out)
    assert "already holds a reward model" in message and "--force" in message
    assert read_model_info(out).created_at == before.created_at

    other = write_jsonl(tmp_path / "other.jsonl", synthetic_ratings(40, seed=5))
    invoke("reward", "fit", "--data", other, "--model", "ridge:stats", "--cv", "0",
           "--out", out, "--force")  # fmt: skip
    after = read_model_info(out)
    assert after.train is not None and before.train is not None
    assert after.train.fingerprint != before.train.fingerprint and after.train.n == 40
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me", "utf-8")
    message = error_of(*fit, "--out", mine, "--force")
    assert "is not a prefloop reward-model folder" in message
    assert (mine / "notes.txt").read_text("utf-8") == "keep me"


def test_a_fit_that_fails_at_the_end_leaves_nothing(tmp_path: Path, ratings_file: Path) -> None:
    """The model and its CV report are saved, then registering them in the store fails: the
    folder, the report and the figure go away again."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("", "utf-8")
    url = f"sqlite:///{blocker / 'p.db'}"
    out = tmp_path / "models" / "rm"
    result = CliRunner().invoke(
        app,
        ["reward", "fit", "--data", str(ratings_file), "--model", "ridge:stats", "--cv", "3",
         "--out", str(out), "--db", url, *FAST],
    )  # fmt: skip
    assert isinstance(result.exception, PrefloopError)
    assert "cannot open the database" in str(result.exception)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == []


def test_identical_texts_and_other_kinds_and_versions_via_the_cli(
    tmp_path: Path, ratings_file: Path, pairs_file: Path
) -> None:
    same = write_jsonl(
        tmp_path / "same.jsonl",
        [{"prompt": f"q{i}", "chosen": f"a{i}", "rejected": f"b{i}"} for i in range(5)]
        + [{"prompt": "q", "chosen": "same words", "rejected": "same words"}],
    )
    message = error_of("reward", "fit", "--data", same, "--out", tmp_path / "x", "--cv", "0")
    assert "same.jsonl:6" in message and "chosen and rejected are the same text" in message
    assert not (tmp_path / "x").exists()

    bt = tmp_path / "bt"
    invoke("reward", "fit", "--data", pairs_file, "--model", "bradley-terry:stats",
           "--out", bt, "--cv", "0")  # fmt: skip
    message = error_of("reward", "eval", "--model", bt, "--data", ratings_file)
    assert "holds ratings, not pairs" in message

    manifest = bt / MANIFEST_NAME
    raw = json.loads(manifest.read_text("utf-8"))
    raw["format"] = 99
    manifest.write_text(json.dumps(raw), "utf-8")
    message = error_of("reward", "predict", "--model", bt, "--data", pairs_file, "-o",
                       tmp_path / "p.jsonl")  # fmt: skip
    assert "format 99" in message and "retrain" in message
    assert not (tmp_path / "p.jsonl").exists()


def test_long_texts_are_truncated_counted_and_warned(tmp_path: Path) -> None:
    rows = synthetic_ratings(20, seed=11)
    for i in (0, 7):  # two texts longer than the USE featurizer takes (4,000 characters)
        rows[i]["text"] = f"Long text {i} for the truncation test. " + "word " * 1000
    data = write_jsonl(tmp_path / "long.jsonl", rows)
    result = invoke("reward", "fit", "--data", data, "--model", "ridge:use", "--cv", "0",
                    "--out", tmp_path / "m")  # fmt: skip
    stderr = " ".join(result.stderr.split())
    assert "warning: 2 of 20 texts are longer than" in stderr and "truncated" in stderr


def test_predict_gives_raw_rewards_and_their_sigmoid_for_pairs(
    tmp_path: Path, pairs_file: Path
) -> None:
    out = tmp_path / "bt"
    invoke("reward", "fit", "--data", pairs_file, "--model", "bradley-terry:stats",
           "--out", out, "--cv", "0")  # fmt: skip
    rankings = write_jsonl(
        tmp_path / "rank.jsonl",
        [
            {
                "prompt": "q",
                "responses": ["Plain words here.", "**Draft** Note: x"],
                "ranking": [1, 2],
            }
        ],
    )
    for data in (pairs_file, rankings):
        scored = tmp_path / f"{data.stem}.out.jsonl"
        invoke("reward", "predict", "--model", out, "--data", data, "-o", scored)
        for line in scored.read_text("utf-8").splitlines():
            row = json.loads(line)
            raw = row.get("rewards") or [row["reward_chosen"], row["reward_rejected"]]
            unit = row.get("rewards_unit") or [
                row["reward_unit_chosen"],
                row["reward_unit_rejected"],
            ]
            assert unit == pytest.approx([1 / (1 + math.exp(-r)) for r in raw])


def test_list_shows_the_registered_models_with_their_manifest(
    tmp_path: Path, ratings_file: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    for _ in range(2):
        invoke("reward", "fit", "--data", ratings_file, "--model", "ridge:stats", "--cv", "3",
               "--out", tmp_path / "rm", "--db", url, "--force", *FAST)  # fmt: skip
    listed = one_json_object(invoke("reward", "list", "--db", url, "--json").stdout)
    assert [(m["name"], m["version"]) for m in listed["models"]] == [("rm", 2), ("rm", 1)]
    newest = listed["models"][0]
    assert newest["data_fingerprint"] == read_model_info(tmp_path / "rm").train.fingerprint  # type: ignore[union-attr]
    assert newest["metrics"]["cv"]["n"] == 60 and newest["class"] == "sklearn-rating"
    table = invoke("reward", "list", "--db", url).stdout
    assert "rm" in table and "MSE" in table


# ---- an LLM judge (the real chat server on 127.0.0.1) through the CLI ----------------------------
def rated_line(i: int, level: float, broken: bool) -> dict[str, Any]:
    return {"text": f"entry {i}{' broken' if broken else ''} level {level:g}", "rating": level}


def judge_reply(messages: list[dict[str, Any]]) -> Any:
    """Rates by the level written in the text; its server always fails on "broken" texts."""
    item = re.findall(r"<<<\n(.*?)\n>>>", messages[-1]["content"], flags=re.S)[-1]
    if "broken" in item:
        return Fail(500)
    return f"Score: {float(re.findall(r'level (-?[0-9.]+)', item)[-1]):g}"


@pytest.fixture
def judge_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ChatServer]:
    """A chat server that a judge made by the CLI reaches through PREFLOOP_LLM_*."""
    with ChatServer.start(responder=judge_reply) as server:
        monkeypatch.setenv("PREFLOOP_LLM_BASE_URL", server.url)
        monkeypatch.setenv("PREFLOOP_LLM_API_KEY", "test")
        monkeypatch.setenv("PREFLOOP_LLM_MODEL", server.model)
        monkeypatch.setenv("PREFLOOP_LLM_MAX_RETRIES", "0")
        yield server


def test_a_judge_with_failing_items_through_fit_eval_and_predict(
    tmp_path: Path, judge_server: ChatServer
) -> None:
    levels = (-1.0, -0.5, 0.0, 0.5, 1.0)
    rows = [rated_line(i, levels[i % 5], broken=i % 6 == 1) for i in range(20)]
    data = write_jsonl(tmp_path / "judged.jsonl", rows)
    broken = sum("broken" in r["text"] for r in rows)
    assert 0 < broken < len(rows)
    out = tmp_path / "judge"

    summary = one_json_object(
        invoke("reward", "fit", "--data", data, "--model", "llm-judge", "--out", out,
               "--cv", "4", "--json", *FAST).stdout
    )  # fmt: skip
    assert summary["class"] == "llm-judge"
    assert summary["cv"]["unscored"] == broken and summary["cv"]["n"] == 20 - broken
    assert summary["cv"]["mse"] == 0.0  # the scripted judge reads the level right

    result = invoke("reward", "eval", "--model", out, "--data", data, "--json",
                    "--report", tmp_path / "eval.json", *FAST)  # fmt: skip
    report = one_json_object(result.stdout)
    assert report["unscored"] == broken and report["n"] == 20 - broken
    assert report["mse"] == 0.0 and report["spearman"] == pytest.approx(1.0)
    assert all(v is not None for v in report["ci"]["mse"])
    assert f"{broken} of 20 items got no score" in " ".join(result.stderr.split())

    calls_before = len(judge_server.chat_requests)
    scored = tmp_path / "scored.jsonl"
    result = invoke("reward", "predict", "--model", out, "--data", data, "-o", scored)
    lines = scored.read_text("utf-8").splitlines()
    back = [
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in JSON")) for line in lines
    ]
    for row, original in zip(back, rows, strict=True):
        if "broken" in original["text"]:
            assert row["reward"] is None and row["reward_unit"] is None
        else:
            assert row["reward"] == original["rating"]
            assert row["reward_unit"] == (original["rating"] + 1) / 2
    assert f"{broken} of 20 texts got no score" in " ".join(result.stderr.split())
    # each text is asked once (raw and unit rewards come from one call), broken ones 3 times
    assert len(judge_server.chat_requests) - calls_before == (20 - broken) + 3 * broken
    told = " ".join(result.stderr.split())
    assert f"{3 * broken} of {20 + 2 * broken} LLM judge calls failed" in told and "500" in told

    # a judge that scores nothing could not do its job: exit 1, with the errors
    nothing = write_jsonl(tmp_path / "broken.jsonl", [rated_line(i, 0, True) for i in range(2)])
    args = ["reward", "predict", "--model", out, "--data", nothing, "-o", tmp_path / "x.jsonl"]
    failed = CliRunner().invoke(app, [str(a) for a in args])
    assert failed.exit_code == 1, failed.output
    told = " ".join(failed.stderr.split())
    assert "LLM judge calls failed" in told and "no text got a score" in told


def test_a_judge_fitted_on_a_task_gets_its_rubric(tmp_path: Path, judge_server: ChatServer) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    rubric = "1: vivid and warm; 0: plain; -1: broken format."
    with Store.open(url) as store, store.session() as s:
        task = get_or_create_task(s, "diary", description="photo diary entries", rubric=rubric)
        for i in range(10):
            add_generation(s, task, output=f"entry {i} level {(i % 3) / 2:g}").reward = (i % 3) / 2
    out = tmp_path / "judge"
    invoke("reward", "fit", "--task", "diary", "--kind", "rating", "--db", url,
           "--model", "llm-judge", "--cv", "0", "--out", out)  # fmt: skip
    info = read_model_info(out)
    assert info.config["rubric"] == rubric and info.config["task"] == "photo diary entries"

    data = write_jsonl(tmp_path / "new.jsonl", [{"text": "entry 99 level 0.5", "rating": 0.5}])
    invoke("reward", "predict", "--model", out, "--data", data, "-o", tmp_path / "s.jsonl")
    system = judge_server.chat_requests[-1].messages[0]["content"]
    assert rubric in system and "photo diary entries" in system


def test_distill_a_judge_into_a_local_model(tmp_path: Path, judge_server: ChatServer) -> None:
    levels = (-1.0, -0.5, 0.0, 0.5, 1.0)
    few_shot = write_jsonl(
        tmp_path / "few.jsonl", [rated_line(i, level, False) for i, level in enumerate(levels)]
    )
    teacher = tmp_path / "judge"
    invoke("reward", "fit", "--data", few_shot, "--model", "llm-judge", "--cv", "0",
           "--out", teacher)  # fmt: skip
    texts = [
        {"text": f"entry {i}{' broken' if i % 7 == 3 else ''} level {levels[i % 5]:g}"
         + " and more" * (i % 5)}
        for i in range(40)
    ]  # fmt: skip
    data = write_jsonl(tmp_path / "texts.jsonl", texts)
    broken = sum("broken" in t["text"] for t in texts)
    student = tmp_path / "student"

    command = ("reward", "distill", "--teacher", teacher, "--data", data, "--student",
               "ridge:stats", "--out", student)  # fmt: skip
    result = invoke(*command, "--json")
    summary = one_json_object(result.stdout)
    assert summary["items"] == 40 and summary["teacher_failed"] == broken
    assert summary["train_items"] + summary["test_items"] == 40 - broken
    assert summary["teacher_stats"]["failed"] == broken
    assert summary["student_vs_people"] is None  # the texts carry no human ratings
    assert summary["student_vs_teacher"]["n"] == summary["test_items"]
    assert f"no label to {broken} of 40 items" in " ".join(result.stderr.split())

    saved = read_model_info(student)
    assert saved.kind == "rating" and saved.model_class == "sklearn-rating"
    assert saved.train is not None and saved.train.n == 40 - broken  # refit on every label
    assert saved.metrics["distillation"]["teacher_failed"] == broken

    message = error_of(*command)
    assert "already holds a reward model" in message
    message = error_of("reward", "distill", "--teacher", tmp_path, "--data", data,
                       "--out", tmp_path / "s2")  # fmt: skip
    assert "is not a prefloop reward model" in message and not (tmp_path / "s2").exists()
    message = error_of(*command[:-1], tmp_path / "s3", "--kind", "pairwise")
    assert "--model ridge:stats is a rating regressor" in message
    assert not (tmp_path / "s3").exists()


def test_fit_pairs_from_a_task_in_the_store(tmp_path: Path) -> None:
    from prefloop.store import Feedback
    from tests.reward.conftest import synthetic_pairs

    url = f"sqlite:///{tmp_path / 'p.db'}"
    rows = synthetic_pairs(16, seed=3)
    with Store.open(url) as store, store.session() as s:
        task = get_or_create_task(s, "chat")
        for row in rows:
            good = add_generation(s, task, output=row["chosen"])
            bad = add_generation(s, task, output=row["rejected"])
            s.flush()
            s.add(
                Feedback(
                    task_id=task.id,
                    kind="pairwise",
                    generation_id=bad.id,
                    other_generation_id=good.id,
                    value=-1.0,  # the other one (good) wins
                )
            )
    message = error_of("reward", "fit", "--task", "chat", "--db", url, "--out", tmp_path / "x")
    assert "with --task, say which model to train: --kind rating|pairwise" in message
    out = tmp_path / "bt"
    summary = one_json_object(
        invoke("reward", "fit", "--task", "chat", "--kind", "pairwise", "--db", url,
               "--model", "bradley-terry:stats", "--cv", "0", "--out", out, "--json").stdout
    )  # fmt: skip
    assert summary["kind"] == "pairwise" and summary["n"] == 16
    assert summary["registered"]["task"] == "chat" and summary["registered"]["version"] == 1
    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows)
    report = one_json_object(
        invoke("reward", "eval", "--model", out, "--data", pairs, "--json",
               "--report", tmp_path / "e.json", *FAST).stdout
    )  # fmt: skip
    assert report["accuracy"] >= 0.9  # it learned that the plain reply is preferred


def test_empty_data_is_a_clear_error_for_every_command(tmp_path: Path, ratings_file: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", "utf-8")
    model = tmp_path / "rm"
    invoke("reward", "fit", "--data", ratings_file, "--model", "ridge:stats", "--cv", "0",
           "--out", model)  # fmt: skip
    commands = {
        "cv": ("cv", "--data", empty),
        "eval": ("eval", "--model", model, "--data", empty),
        "predict": ("predict", "--model", model, "--data", empty, "-o", tmp_path / "o.jsonl"),
        "distill": ("distill", "--teacher", model, "--data", empty, "--out", tmp_path / "s"),
    }
    for name, args in commands.items():
        message = error_of("reward", *args)
        assert "empty.jsonl is empty" in message, (name, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl", "ratings.jsonl", "rm"]


def test_what_the_commands_write_is_readable_like_any_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saved models, reports and scored files are written under private temporary names
    (0700 / 0600) and renamed; they must end up with the umask's permissions, like a file
    made with open(), so that others can read them."""
    import stat

    import prefloop._files

    monkeypatch.setattr(prefloop._files, "_umask", None)  # read the umask set below
    old = os.umask(0o022)
    try:
        data = write_jsonl(tmp_path / "ratings.jsonl", synthetic_ratings(40))
        folder = tmp_path / "model"
        invoke(
            "reward",
            "fit",
            "--data",
            data,
            "--model",
            "ridge:stats",
            "--cv",
            "3",
            "--out",
            folder,
            *FAST,
        )
        invoke("reward", "predict", "--model", folder, "--data", data, "-o", tmp_path / "s.jsonl")
    finally:
        os.umask(old)
    modes = {
        path.name: stat.S_IMODE(path.stat().st_mode)
        for path in (
            folder,
            folder / "prefloop-reward.json",
            tmp_path / "model.cv.json",
            tmp_path / "model.cv.png",
            tmp_path / "s.jsonl",
        )
    }
    assert modes == {
        "model": 0o755,
        "prefloop-reward.json": 0o644,
        "model.cv.json": 0o644,
        "model.cv.png": 0o644,
        "s.jsonl": 0o644,
    }
