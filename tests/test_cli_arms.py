"""``prefloop tasks …`` and ``prefloop arms …`` end to end, and ``llm generate`` with a model arm.

The commands run in this process (typer's runner); one runs as ``python -m prefloop`` to check
the exit status and the one-line error of refused input.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from prefloop.cli import app
from prefloop.errors import ConflictError, InvalidInputError, NotFoundError, PrefloopError
from prefloop.store import Arm, Generation, Store, Task
from tests.support.tiny_adapter import TinyModels


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'arms.db'}"
    monkeypatch.setenv("PREFLOOP_DATABASE_URL", url)
    for name in ("PREFLOOP_LLM_BACKEND", "PREFLOOP_LLM_API_KEY", "PREFLOOP_LLM_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return url


def run(*args: str | Path) -> Any:
    """The command's JSON output (it must succeed)."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def refused(*args: str | Path) -> PrefloopError:
    """The error the command raised (the CLI prints it as one line and exits with code 2)."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert isinstance(result.exception, PrefloopError), result.output
    return result.exception


def counts(url: str) -> tuple[int, int]:
    with Store.open(url) as store, store.session(readonly=True) as s:
        tasks = s.scalar(select(func.count()).select_from(Task)) or 0
        return int(tasks), int(s.scalar(select(func.count()).select_from(Arm)) or 0)


def test_tasks_and_arms_from_the_command_line(db: str, tiny_models: TinyModels) -> None:
    task = run("tasks", "create", "diary", "-f", "place", "-f", "company", "--json")
    assert task["name"] == "diary" and task["input_fields"] == ["place", "company"]
    assert task["scale"] == [-1.0, -0.5, 0.0, 0.5, 1.0]
    run(
        "tasks",
        "create",
        "qa",
        "-f",
        "question",
        "--scale",
        "0,1",
        "--rubric",
        "be right",
        "--json",
    )
    listed = run("tasks", "list", "--json")["tasks"]
    assert [(t["name"], t["active_arms"]) for t in listed] == [("diary", 0), ("qa", 0)]
    assert listed[1]["scale"] == [0.0, 1.0] and listed[1]["rubric"] == "be right"

    prompt = run(
        "arms", "add", "--task", "diary", "--name", "vivid",
        "--template", "A vivid diary about {place} with {company}.", "-l", "production", "--json",
    )  # fmt: skip
    assert (prompt["kind"], prompt["labels"], prompt["model_ref"]) == (
        "prompt",
        ["production"],
        None,
    )
    model = run(
        "arms", "add", "--task", "diary", "--name", "tuned",
        "--model", tiny_models.adapter_a, "--parent", "vivid", "--json",
    )  # fmt: skip
    assert model["kind"] == "model" and model["template"] is None
    assert model["model_ref"] == str(tiny_models.adapter_a.resolve())
    assert model["params"] == {"template": "A vivid diary about {place} with {company}."}
    assert model["parent_id"] == prompt["id"] and model["labels"] == ["candidate"]
    own = run(
        "arms", "add", "--task", "diary", "--name", "tuned-short", "--model", tiny_models.adapter_b,
        "--template", "Diary: {place}", "--system", "Be brief.", "--json",
    )  # fmt: skip
    assert own["params"] == {"system": "Be brief.", "template": "Diary: {place}"}

    labelled = run("arms", "label", "--task", "diary", "tuned", "production", "--json")
    assert labelled["labels"] == ["production"]
    retired = run("arms", "retire", "--task", "diary", "tuned-short", "--json")
    assert retired["retired"] and "retired" in retired["labels"]
    arms = run("arms", "list", "--task", "diary", "--json")
    assert arms["task"] == "diary" and [a["name"] for a in arms["arms"]] == ["vivid", "tuned"]
    every = run("arms", "list", "--task", "diary", "--all", "--json")["arms"]
    assert [a["name"] for a in every] == ["vivid", "tuned", "tuned-short"]
    assert run("tasks", "list", "--json")["tasks"][0]["active_arms"] == 2


def test_bad_input_is_refused_with_the_fix_and_nothing_is_written(
    db: str, tiny_models: TinyModels, tmp_path: Path
) -> None:
    run("tasks", "create", "diary", "-f", "place", "--json")
    run("arms", "add", "--task", "diary", "--name", "a", "--template", "About {place}", "--json")
    before = counts(db)
    not_a_model = tmp_path / "notes"
    not_a_model.mkdir()
    (not_a_model / "readme.txt").write_text("hello", encoding="utf-8")
    cases: list[tuple[list[str | Path], type[PrefloopError], str]] = [
        (["tasks", "create", "diary"], ConflictError, "already exists"),
        (["tasks", "create", "x", "-f", "a place"], InvalidInputError, "not a plain name"),
        (["tasks", "create", "x", "--scale", "1,0"], InvalidInputError, "strictly increasing"),
        (["tasks", "create", "x", "--scale", "a,b"], InvalidInputError, "numbers separated"),
        (
            ["arms", "add", "--task", "nope", "--name", "m", "--model", tiny_models.adapter_a],
            NotFoundError,
            "no task named 'nope'; known tasks: diary",
        ),
        (
            ["arms", "add", "--task", "diary", "--name", "m", "--model", tmp_path / "missing"],
            InvalidInputError,
            "does not exist; give the --out folder of `prefloop train`",
        ),
        (
            ["arms", "add", "--task", "diary", "--name", "m", "--model", not_a_model],
            InvalidInputError,
            "is not a model folder",
        ),
        (
            ["arms", "add", "--task", "diary", "--name", "a", "--model", tiny_models.adapter_a],
            ConflictError,
            "already has an arm named 'a'",
        ),
        (
            ["arms", "add", "--task", "diary", "--name", "a", "--template", "Again {place}"],
            ConflictError,
            "already has an arm named 'a'",
        ),
        (["arms", "add", "--task", "diary", "--name", "b"], InvalidInputError, "--template TEXT"),
        (
            ["arms", "add", "--task", "diary", "--name", "b", "--template", "About {mood}"],
            InvalidInputError,
            "does not have; its input fields are place",
        ),
        (
            ["arms", "add", "--task", "diary", "--name", "b", "--template", "x", "--parent", "zz"],
            NotFoundError,
            "has no arm 'zz'",
        ),
        (["arms", "label", "--task", "diary", "zz", "production"], NotFoundError, "no arm 'zz'"),
        (["arms", "retire", "--task", "nope", "a"], NotFoundError, "no task named 'nope'"),
    ]
    for args, kind, message in cases:
        error = refused(*args)
        assert isinstance(error, kind) and message in str(error), (args, error)
    assert counts(db) == before


def test_a_refused_command_prints_one_line_and_exits_2(db: str, tmp_path: Path) -> None:
    environment = {**os.environ, "PREFLOOP_DATABASE_URL": db}
    environment["PYTHONPATH"] = os.pathsep.join(sys.path)
    run("tasks", "create", "diary", "-f", "place", "--json")
    result = subprocess.run(
        [sys.executable, "-m", "prefloop", "arms", "add", "--task", "diary", "--name", "m",
         "--model", str(tmp_path / "missing")],
        capture_output=True, text=True, env=environment, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: model folder") and "Traceback" not in result.stderr


def test_llm_generate_runs_a_model_arm_on_its_own_model(db: str, tiny_models: TinyModels) -> None:
    from prefloop.llm import GenerationParams, LocalChatBackend
    from prefloop.train.models import load_trained

    run("tasks", "create", "diary", "-f", "place", "--json")
    run(
        "arms", "add", "--task", "diary", "--name", "tuned", "--model", tiny_models.adapter_a,
        "--template", "A diary line about {place}.", "--json",
    )  # fmt: skip
    # no API key and the openai backend: only the model arm's own model can answer
    generated = run(
        "llm", "generate", "--task", "diary", "--arm", "tuned", "-i", "place=Jeju",
        "--backend", "openai", "--temperature", "0", "--max-tokens", "6", "--json",
    )  # fmt: skip
    assert generated["status"] == "ok" and generated["model"] == "local:adapter-a"
    model, tokenizer, _ = load_trained(tiny_models.adapter_a)
    expected = LocalChatBackend(model=model, tokenizer=tokenizer).complete(
        [{"role": "user", "content": "A diary line about Jeju."}],
        GenerationParams(max_tokens=6, temperature=0.0),
    )
    assert generated["output"] == expected.text
    with Store.open(db) as store, store.session(readonly=True) as s:
        stored = s.get(Generation, generated["id"])
        assert stored is not None and stored.prompt == "A diary line about Jeju."
