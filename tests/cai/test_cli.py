"""``prefloop cai …`` end to end: typer's runner, the chat server as the LLM, a SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from prefloop.cli import app
from prefloop.errors import PrefloopError
from prefloop.llm import LLMError
from prefloop.store import Feedback, Generation, Store
from prefloop.store.repo import get_or_create_task
from prefloop.train import from_file
from tests.cai.conftest import scripted_model
from tests.conftest import shared_data
from tests.support.chat_server import ChatServer, Fail

runner = CliRunner()


@pytest.fixture
def env(chat_server: ChatServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The CLI pointed at the chat server (playing the scripted model) and a fresh store with
    a task whose two inputs have two outputs each."""
    url = f"sqlite:///{tmp_path / 'cai.db'}"
    monkeypatch.setenv("PREFLOOP_DATABASE_URL", url)
    monkeypatch.setenv("PREFLOOP_LLM_BACKEND", "openai")
    monkeypatch.setenv("PREFLOOP_LLM_BASE_URL", chat_server.url)
    monkeypatch.setenv("PREFLOOP_LLM_API_KEY", "cli-key")
    monkeypatch.setenv("PREFLOOP_LLM_MODEL", chat_server.model)
    monkeypatch.setenv("PREFLOOP_LLM_MAX_RETRIES", "0")
    chat_server.responder = scripted_model()
    with Store.open(url) as store, store.session() as s:
        task = get_or_create_task(s, "trip", input_fields=["place"])
        for place in ("Busan", "Seoul"):
            for text in (f"A polite note on {place}.", f"Go away, {place}."):
                s.add(
                    Generation(
                        task_id=task.id,
                        input={"place": place},
                        prompt=f"Tell me about {place}.",
                        output=text,
                    )
                )
    return url


def prompts_file(tmp_path: Path, *prompts: str) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts), encoding="utf-8")
    return path


def error_of(result: object) -> str:
    exception = getattr(result, "exception", None)
    assert isinstance(exception, PrefloopError), getattr(result, "output", "")
    return " ".join(str(exception).split())


def test_revise_from_a_prompts_file_writes_sft_data(
    env: str, chat_server: ChatServer, tmp_path: Path
) -> None:
    out = tmp_path / "revised.jsonl"
    result = runner.invoke(
        app,
        [
            "cai",
            "revise",
            "--prompts",
            str(prompts_file(tmp_path, "p one", "p two")),
            "-o",
            str(out),
            "--rounds",
            "2",
            "--seed",
            "4",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["revised"], summary["failed"], summary["rounds"]) == (2, 0, 2)
    assert summary["calls"] == 10 == len(chat_server.chat_requests)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["completion"] == "better [better [answer to p one]]"
    assert len(rows[0]["principles"]) == 2
    assert len(from_file(out, "sft")) == 2


def test_revise_from_a_task_uses_its_prompts(env: str, tmp_path: Path) -> None:
    out = tmp_path / "task.jsonl"
    result = runner.invoke(app, ["cai", "revise", "--task", "trip", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "revised 2 of 2 prompts" in result.stdout
    assert [json.loads(line)["prompt"] for line in out.read_text().splitlines()] == [
        "Tell me about Busan.",
        "Tell me about Seoul.",
    ]


def test_revise_when_every_call_fails_writes_nothing_and_names_the_fix(
    env: str, chat_server: ChatServer, tmp_path: Path
) -> None:
    chat_server.responder = lambda messages: Fail(500, "model crashed")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(
        app, ["cai", "revise", "--prompts", str(prompts_file(tmp_path, "a", "b")), "-o", str(out)]
    )
    assert isinstance(result.exception, LLMError)
    message = error_of(result)
    assert "every one of the 2 prompts failed, nothing was written" in message
    assert "prefloop llm complete hello --backend openai" in message
    assert not out.exists()


def test_revise_with_some_failures_warns_and_writes_the_rest(
    env: str, chat_server: ChatServer, tmp_path: Path
) -> None:
    model = scripted_model()
    chat_server.responder = lambda m: Fail(500) if m[0]["content"] == "bad" else model(m)
    out = tmp_path / "out.jsonl"
    result = runner.invoke(
        app,
        ["cai", "revise", "--prompts", str(prompts_file(tmp_path, "good", "bad")), "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "prompt 2 left out (answer)" in " ".join(result.stderr.split())
    assert len(out.read_text().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rounds", "0"], "Invalid value for '--rounds'"),
        (["--principle", "nope"], "no principle 'nope'"),
    ],
)
def test_revise_refuses_bad_options(
    env: str, tmp_path: Path, chat_server: ChatServer, args: list[str], message: str
) -> None:
    prompts = prompts_file(tmp_path, "a")
    result = runner.invoke(
        app, ["cai", "revise", "--prompts", str(prompts), "-o", str(tmp_path / "o.jsonl"), *args]
    )
    assert result.exit_code != 0
    assert message in (result.output + str(result.exception))
    assert not chat_server.chat_requests


def test_revise_needs_exactly_one_source_of_prompts(env: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["cai", "revise", "-o", str(tmp_path / "o.jsonl")])
    assert "either --prompts FILE or --task NAME" in error_of(result)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = runner.invoke(app, ["cai", "revise", "--prompts", str(empty), "-o", "o.jsonl"])
    assert "holds no prompts" in error_of(result)


def test_a_constitution_that_does_not_parse_fails_before_any_call(
    env: str, chat_server: ChatServer, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: mine\nprinciples:\n  - id: a\n    critique: [oops\n")
    for command in (
        ["revise", "--prompts", str(prompts_file(tmp_path, "a")), "-o", str(tmp_path / "o")],
        ["label", "--task", "trip"],
        ["agree", "--pairs", str(tmp_path / "whatever.jsonl")],
    ):
        result = runner.invoke(app, ["cai", *command, "--constitution", str(bad)])
        assert f"{bad}:5: the constitution is not valid YAML" in error_of(result)
    assert not chat_server.chat_requests


def test_constitution_prints_writes_and_checks_a_file(env: str, tmp_path: Path) -> None:
    printed = runner.invoke(app, ["cai", "constitution"])
    assert printed.exit_code == 0 and "principles:" in printed.stdout
    target = tmp_path / "mine.yaml"
    assert runner.invoke(app, ["cai", "constitution", "-o", str(target)]).exit_code == 0
    assert target.read_text() == printed.stdout
    again = runner.invoke(app, ["cai", "constitution", "-o", str(target)])
    assert "add --force" in error_of(again)
    target.write_text(target.read_text().replace("id: harm", "id: no-harm"))
    checked = runner.invoke(app, ["cai", "constitution", "--check", str(target), "--json"])
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout)["principles"][0]["id"] == "no-harm"


def test_label_stores_judge_feedback_and_reports_it(
    env: str, chat_server: ChatServer, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["cai", "label", "--task", "trip", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["stored"] == 2 and summary["source"] == "judge"
    assert summary["winners"]["a"] == 2  # the polite note was stored first in each pair
    with Store.open(env) as store, store.session(readonly=True) as s:
        events = list(s.scalars(select(Feedback)))
        assert {(e.source, e.value) for e in events} == {("judge", 1.0)}
    human = tmp_path / "human.jsonl"
    judged = tmp_path / "judged.jsonl"
    for path, extra in ((human, []), (judged, ["--source", "judge"])):
        exported = runner.invoke(
            app, ["export", "preferences", "--task", "trip", "-o", str(path), *extra]
        )
        assert exported.exit_code == 0, exported.output
    assert human.read_text() == ""  # people's pairs only, by default
    assert len(judged.read_text().splitlines()) == 2
    again = runner.invoke(app, ["cai", "label", "--task", "trip"])
    assert "no pair of different outputs" in error_of(again)


def test_label_with_a_judge_backend_that_fails_every_call(
    env: str, chat_server: ChatServer
) -> None:
    chat_server.responder = lambda messages: Fail(503, "overloaded")
    result = runner.invoke(app, ["cai", "label", "--task", "trip", "--max-attempts", "1"])
    message = error_of(result)
    assert "every one of the 4 judge calls" in message and "nothing was stored" in message
    with Store.open(env) as store, store.session(readonly=True) as s:
        assert list(s.scalars(select(Feedback))) == []


def test_agree_on_hh_pairs_prints_accuracy_with_an_interval(
    env: str, chat_server: ChatServer
) -> None:
    result = runner.invoke(
        app,
        [
            "cai",
            "agree",
            "--pairs",
            str(shared_data("hh-harmless-train.jsonl")),
            "--limit",
            "12",
            "--samples",
            "200",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["pairs"] == 12 and len(report["accuracy_ci"]) == 2
    assert report["report"]["baseline"]["shorter_wins"] >= 0
    assert len(chat_server.chat_requests) == 24
    table = runner.invoke(
        app,
        [
            "cai",
            "agree",
            "--pairs",
            str(shared_data("hh-harmless-train.jsonl")),
            "--limit",
            "12",
            "--samples",
            "200",
            "--principle",
            "harm",
        ],
    )
    assert table.exit_code == 0, table.output
    assert "accuracy (ties half)" in table.stdout and "under harm" in table.stdout
