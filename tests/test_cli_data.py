"""The data commands end to end on a temporary store (SQLite and PostgreSQL).

Most commands run in this process through typer's runner; those whose exit status and error
output matter run as `python -m prefloop …` in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from prefloop.cli import app
from prefloop.errors import PrefloopError
from prefloop.io import import_ratings, iter_pairs
from prefloop.store import Store
from prefloop.store.models import Base
from tests.conftest import shared_data


def prefloop(
    *args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "PREFLOOP_DATABASE_URL"}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "prefloop", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=300,
    )


def ok(*args: str | Path, **kwargs: Any) -> str:
    result = prefloop(*args, **kwargs)
    assert result.returncode == 0, result.stderr
    return result.stdout


def run(*args: str | Path, env: dict[str, str] | None = None) -> str:
    """The command in this process (typer's runner): for the many calls that need no exit code."""
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.stdout


def import_file(url: str, rows: list[dict[str, Any]], task: str) -> None:
    with Store.open(url) as store, store.session() as s:
        path = Path(tempfile.mkdtemp()) / "rows.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        import_ratings(s, path, task)


def row_counts(url: str) -> dict[str, int]:
    with Store.open(url) as store, store.session(readonly=True) as s:
        return {
            table.name: s.scalar(select(func.count()).select_from(table)) or 0
            for table in Base.metadata.sorted_tables
        }


def test_import_diary_ratings_then_stats(store_url: str) -> None:
    imported = json.loads(
        run(
            "import",
            "ratings",
            shared_data("memozy-train.jsonl"),
            "--task",
            "diary",
            "--db",
            store_url,
            "--json",
        )
    )
    assert imported["imported"] == 450 and imported["task"] == "diary"
    stats = json.loads(run("stats", "--task", "diary", "--db", store_url, "--json"))
    assert stats["ratings"] == 450
    assert stats["distribution"] == {"-1": 33, "-0.5": 52, "0": 153, "0.5": 141, "1": 71}
    assert list(stats["distribution"]) == ["-1", "-0.5", "0", "0.5", "1"]
    assert stats["by_source"] == {"labeler": 450} and stats["by_kind"] == {"rating": 450}
    assert stats["mean_rating"] == pytest.approx(0.1833, abs=1e-4)
    assert stats["agreement"]["alpha"] is None  # one rater per text


def test_import_hh_pairs_then_export_preferences(store_url: str, tmp_path: Path) -> None:
    source = shared_data("hh-harmless-train.jsonl")
    out = run("import", "pairs", source, "--task", "harmless", "--db", store_url)
    assert "imported 1500 pairs" in out
    run(
        "export",
        "preferences",
        "--task",
        "harmless",
        "-o",
        tmp_path / "out.jsonl",
        "--db",
        store_url,
    )
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 1500
    assert all(set(row) == {"prompt", "chosen", "rejected"} for row in rows)
    originals = [json.loads(line) for line in source.read_text().splitlines()]
    for row, original in zip(rows, originals, strict=True):
        assert row["prompt"].startswith("\n\nHuman:") and row["prompt"].endswith("\n\nAssistant:")
        # the prompt is the shared dialogue; chosen and rejected are the final replies
        assert original["chosen"] == row["prompt"] + original["chosen"][len(row["prompt"]) :]
        assert original["chosen"][len(row["prompt"]) :].strip() == row["chosen"]
        assert original["rejected"][len(row["prompt"]) :].strip() == row["rejected"]
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [
        (p.prompt, p.chosen, p.rejected) for p in iter_pairs(source)
    ]


def test_a_malformed_line_7_fails_and_changes_nothing(store_url: str, tmp_path: Path) -> None:
    import_file(store_url, [{"text": f"t{i}", "rating": 0} for i in range(3)], "diary")
    before = row_counts(store_url)
    lines = [json.dumps({"text": f"line {i}", "rating": 0.5}) for i in range(1, 11)]
    lines[6] = json.dumps({"text": "line 7", "rating": "excellent"})
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    for task in ("diary", "fresh"):
        result = prefloop("import", "ratings", bad, "--task", task, "--db", store_url)
        assert result.returncode != 0
        assert f"{bad}:7:" in result.stderr and '"rating" must be a finite number' in result.stderr
        assert "Traceback" not in result.stderr
        assert row_counts(store_url) == before


def test_init_and_the_default_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PREFLOOP_DATABASE_URL", raising=False)
    first = json.loads(run("init", "--json"))
    assert first == {
        "url": "sqlite:///prefloop.db",
        "state": "created",
        "revision": first["revision"],
    }
    assert (tmp_path / "prefloop.db").exists()
    assert "up to date" in run("init")
    env = {"PREFLOOP_DATABASE_URL": f"sqlite:///{tmp_path / 'from-env.db'}"}
    assert "created" in run("init", env=env)
    assert (tmp_path / "from-env.db").exists()


def test_the_other_exports_and_human_output(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    rated = tmp_path / "rated.jsonl"
    rated.write_text(
        "".join(
            json.dumps({"text": text, "rating": rating, "prompt": "P"}) + "\n"
            for text, rating in (("best", 1), ("fine", 0.5), ("zero", 0), ("worst", -1))
        )
    )
    run("import", "ratings", rated, "--task", "t", "--author", "ann", "--db", db)
    stats = run("stats", "--task", "t", "--db", db)
    assert "4 ratings" in stats and "labeler" in stats

    def export(kind: str, *options: str) -> list[dict[str, Any]]:
        out = tmp_path / f"{kind}.jsonl"
        report = json.loads(
            run("export", kind, "--task", "t", "-o", out, "--db", db, "--json", *options)
        )
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert report == {
            "exported": len(rows),
            "kind": report["kind"],
            "task": "t",
            "file": str(out),
        }
        return rows

    assert [r["completion"] for r in export("sft")] == ["best", "fine"]
    assert [r["completion"] for r in export("sft", "--min-reward", "1")] == ["best"]
    assert export("sft", "--format", "conversational")[0]["messages"][-1] == {
        "role": "assistant",
        "content": "best",
    }
    assert [(r["completion"], r["label"]) for r in export("unpaired")] == [
        ("best", True),
        ("fine", True),
        ("worst", False),
    ]
    first_rating = export("ratings")[0]
    assert (first_rating["text"], first_rating["rating"], first_rating["author"]) == (
        "best",
        1.0,
        "ann",
    )
    assert export("preferences") == []
    pairs = export("preferences", "--from-ratings")
    assert len(pairs) == 6 and {r["margin"] for r in pairs} == {0.5, 1.0, 1.5, 2.0}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["stats", "--task", "nope"], "no task named 'nope'; known tasks: t"),
        (
            ["export", "sft", "--task", "t", "-o", "x.jsonl", "--format", "chatml"],
            "unknown format 'chatml'",
        ),
        (
            ["export", "ratings", "--task", "t", "-o", "x.jsonl", "--source", "robot"],
            "unknown --source",
        ),
        (["import", "ratings", "missing.jsonl", "--task", "t"], "missing.jsonl: no such file"),
        (
            ["import", "pairs", "r.jsonl", "--task", "t", "--source", "robot"],
            "unknown feedback source",
        ),
        (["import", "ratings", "r.jsonl", "--task", "t", "--scale", "1,x"], "--scale '1,x'"),
        (["import", "ratings", "r.jsonl", "--task", "t", "--author", " "], "non-empty name"),
    ],
)
def test_bad_input_raises_a_prefloop_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    db = f"sqlite:///{tmp_path / 's.db'}"
    (tmp_path / "r.jsonl").write_text(json.dumps({"text": "a", "rating": 1}) + "\n")
    run("import", "ratings", "r.jsonl", "--task", "t", "--db", db)
    before = row_counts(db)
    result = CliRunner().invoke(app, [*args, "--db", db])
    assert isinstance(result.exception, PrefloopError)
    assert message in str(result.exception)
    assert not (tmp_path / "x.jsonl").exists()
    assert row_counts(db) == before


def test_the_runner_prints_errors_in_one_line_and_exits_2(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    import_file(db, [{"text": "a", "rating": 1}], "t")
    result = prefloop("stats", "--task", "nope", "--db", db)
    assert result.returncode == 2
    assert result.stderr.startswith("error: no task named 'nope'; known tasks: t")
    assert "Traceback" not in result.stderr


def test_reading_commands_do_not_create_a_store(tmp_path: Path) -> None:
    result = prefloop("stats", "--task", "t", "--db", f"sqlite:///{tmp_path / 'absent.db'}")
    assert result.returncode == 2 and "prefloop init" in result.stderr
    assert not (tmp_path / "absent.db").exists()


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["init"],
        ["stats"],
        ["import"],
        ["import", "ratings"],
        ["import", "pairs"],
        ["import", "rankings"],
        ["export"],
        ["export", "preferences"],
        ["export", "sft"],
        ["export", "unpaired"],
        ["export", "ratings"],
    ],
)
def test_help_everywhere(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    takes_a_task = command == ["stats"] or (
        command[:1] in (["import"], ["export"]) and len(command) == 2
    )
    if takes_a_task:
        assert "--task" in result.output and "--db" in result.output
