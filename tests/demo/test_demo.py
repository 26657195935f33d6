"""The demo end to end: on a tiny local model (SQLite and PostgreSQL) and, through the CLI, over
an OpenAI-compatible server on 127.0.0.1 whose answers make one prompt clearly best."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from prefloop.bandit import check_state
from prefloop.cli import app
from prefloop.demo import (
    DIARY,
    RUBRIC_AUTHOR,
    DemoConfig,
    RubricScorer,
    cumulative_regret,
    run_demo,
)
from prefloop.errors import PrefloopError
from prefloop.llm import GenerationParams, LocalChatBackend, generate_for_arm
from prefloop.store import Store
from prefloop.store.models import Arm, BanditDecision, Feedback, Generation, Task
from prefloop.store.repo import get_arm, get_task
from tests.demo.conftest import BEST_MARK
from tests.support.chat_server import ChatServer

SUMMARY_KEYS = {
    "arms",
    "recommended",
    "confidence",
    "regret_policy",
    "regret_uniform",
    "report_files",
    "timings",
    "proposal",
    "reward_model",
}


def _check_report(summary: dict[str, Any]) -> None:
    files = summary["report_files"]
    for key in ("arm_means_png", "regret_png", "allocation_png"):
        data = Path(files[key]).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{key} is not a PNG"
        assert len(data) > 5_000, f"{key} looks empty"
    page = Path(files["html"]).read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 3  # self-contained: plots embedded
    assert "rubric scorer" in page
    # Per-arm means with their intervals, the recommended prompt with its confidence, and the
    # regret against uniform allocation, as the summary has them.
    intervals = [
        (float(low), float(high))
        for low, high in re.findall(r"\[([+-]\d\.\d\d), ([+-]\d\.\d\d)\]", page)
    ]
    for arm in summary["arms"]:
        assert arm["name"] in page
        if arm["ci"] is not None:
            assert any(
                (low, high) == pytest.approx(tuple(arm["ci"]), abs=0.0051)
                for low, high in intervals
            ), (arm["name"], arm["ci"], intervals)
    shown = re.search(
        r"Recommended prompt: ([^<]+)</b> — probability ([\d.]+) that it is the best.*?"
        r"Regret of the bandit: <b>([\d.]+)</b> against <b>([\d.]+)</b>",
        page,
    )
    assert shown, "the recommendation and the regret are on the page"
    assert shown[1] == summary["recommended"]
    assert float(shown[2]) == pytest.approx(summary["confidence"], abs=1e-3)
    assert float(shown[3]) == pytest.approx(summary["regret_policy"], abs=0.01)
    assert float(shown[4]) == pytest.approx(summary["regret_uniform"], abs=0.01)


def test_demo_on_a_tiny_local_model(store_url: str, tmp_path: Path, tiny_backend: LocalChatBackend):
    config = DemoConfig(
        out_dir=tmp_path / "out",
        database_url=store_url,
        requests=16,
        batch_size=8,
        warmup=4,
        max_tokens=16,  # the tiny model's context is 128 tokens
        cv_folds=3,
        reward_model="ridge:stats",
    )
    phases: list[str] = []
    result = run_demo(config, backend=tiny_backend, progress=lambda p, d, t: phases.append(p))

    assert {"load model", "warm-up", "propose", "requests", "reward model", "report"} <= set(phases)
    summary = result.to_json()
    assert set(summary) >= SUMMARY_KEYS
    json.dumps(summary)  # plain JSON
    # The tiny model cannot propose (the meta-prompt overflows its context): the fallback
    # variants are used, and the result says so instead of hiding it.
    assert summary["proposal"]["errors"], "the failed proposer calls are reported"
    assert summary["proposal"]["fallbacks"] == [p.name for p in DIARY.fallback_prompts]
    assert "hand-written variant" in summary["proposal"]["message"]

    with Store.open(store_url) as store, store.session(readonly=True) as session:
        task = session.scalar(select(Task).where(Task.name == "diary"))
        assert task is not None
        arms = {a.id: a for a in session.scalars(select(Arm).where(Arm.task_id == task.id))}
        assert len(arms) == 4
        generations = session.scalars(select(Generation).where(Generation.task_id == task.id)).all()
        assert len(generations) == 4 + 16  # warm-up + requests
        arms_used = {g.arm_id for g in generations if g.decision_id is not None}
        assert len(arms_used) >= 3, "the bandit spreads its first batches over the arms"
        decisions = session.scalar(select(func.count()).select_from(BanditDecision))
        assert decisions == 16
        ratings = session.scalars(select(Feedback).where(Feedback.task_id == task.id)).all()
        ok = [g for g in generations if g.status == "ok"]
        assert len(ratings) == len(ok) == result.rated
        assert {(f.kind, f.source, f.author) for f in ratings} == {
            ("rating", "auto", RUBRIC_AUTHOR)
        }
        # Each cached reward is exactly the rubric's verdict on that output.
        scorer = RubricScorer()
        for g in ok:
            assert g.output is not None
            assert g.reward == scorer.score(g.output, DIARY.facts(g.input)).value
        check = check_state(session, task, "default")
        assert check.stored is not None
        assert check.matches

    # Regret as documented: against the best estimated mean, uniform from the same estimates.
    means = {a["name"]: a["mean"] for a in summary["arms"] if a["mean"] is not None}
    chosen = [name for name in result.chosen if name in means]
    assert result.regret_policy == pytest.approx(cumulative_regret(chosen, means)[-1], abs=1e-3)
    assert result.regret_uniform == pytest.approx(
        len(chosen) * (max(means.values()) - np.mean(list(means.values()))), abs=1e-3
    )
    assert summary["reward_model"]["ratings"] == len(ok)
    _check_report(summary)


def test_demo_cli_over_an_openai_compatible_server(
    diary_server: ChatServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFLOOP_LLM_BASE_URL", diary_server.url)
    monkeypatch.setenv("PREFLOOP_LLM_API_KEY", "test")
    monkeypatch.setenv("PREFLOOP_LLM_MODEL", diary_server.model)
    monkeypatch.setenv("PREFLOOP_LLM_MAX_RETRIES", "0")
    diary_server.fail_next(400, times=2)  # two warm-up requests fail: failed, no reward
    out = tmp_path / "demo"

    run = CliRunner().invoke(
        app,
        [
            *("demo", "--out", str(out), "--backend", "openai", "--requests", "64"),
            *("--reward-model", "ridge:stats", "--json"),
        ],
    )

    assert run.exit_code == 0, run.output
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(summary) >= SUMMARY_KEYS
    # One proposal was usable; the missing-placeholder and duplicate ones were rejected with
    # their reasons, and two hand-written variants made up the difference.
    proposal = summary["proposal"]
    assert proposal["accepted"] == ["proposed-1"]
    reasons = " ".join(r["reason"] for r in proposal["rejected"])
    assert "{mood}" in reasons and "near-duplicate" in reasons
    assert proposal["fallbacks"] == ["fallback-facts-first", "fallback-cheerful"]
    arms = {a["name"]: a for a in summary["arms"]}
    assert BEST_MARK in arms["proposed-1"]["template"]
    assert arms["proposed-1"]["created_by"] == "proposer"

    # The server writes perfect diaries only for the proposed prompt: the bandit finds it.
    assert summary["recommended"] == "proposed-1"
    assert summary["confidence"] > 0.95 and summary["confident"]
    assert arms["proposed-1"]["raw_mean"] == 1.0
    low, high = arms["proposed-1"]["ci"]
    assert low <= arms["proposed-1"]["mean"] <= high
    assert arms["proposed-1"]["share"] > 0.5
    assert summary["regret_policy"] < 0.6 * summary["regret_uniform"]

    assert summary["failed"] == 2 and arms["hand-written"]["failed"] == 2
    with Store.open(f"sqlite:///{out / 'prefloop.db'}") as store, store.session() as session:
        failed = session.scalars(select(Generation).where(Generation.status == "failed")).all()
        assert len(failed) == 2
        assert all(g.reward is None and g.error for g in failed)
        rated_failures = session.scalar(
            select(func.count())
            .select_from(Feedback)
            .where(Feedback.generation_id.in_([g.id for g in failed]))
        )
        assert rated_failures == 0
    _check_report(summary)

    # For people: the table, the recommendation, the regret and where the report is.
    again = CliRunner().invoke(
        app,
        [
            "demo",
            "--out",
            str(out),
            "--backend",
            "openai",
            "--requests",
            "8",
            "--reward-model",
            "none",
        ],
    )
    assert again.exit_code == 0, again.output
    for text in ("proposed-1", "recommended:", "regret: bandit", "reused", "report.html"):
        assert text in again.stdout, text
    # Progress bars on stderr, one per step, so stdout stays the report.
    for label in ("Simulated requests (decide → generate → rate)", "Writing the report"):
        assert label in again.stderr and label not in again.stdout, label


def test_a_second_run_reuses_the_arms_and_rates_what_an_interrupted_run_left(
    tmp_path: Path, tiny_backend: LocalChatBackend
) -> None:
    config = DemoConfig(
        out_dir=tmp_path, requests=8, warmup=0, max_tokens=8, propose=False, reward_model=None
    )
    first = run_demo(config, backend=tiny_backend)
    # What a run killed between storing a batch and rating it leaves: an unrated output.
    with Store.open(config.url) as store, store.session() as session:
        task = get_task(session, "diary")
        arm = get_arm(session, task, "fallback-cheerful")
        inputs = {"place": "Seoul", "company": "alone", "mood": "calm"}
        params = GenerationParams(max_tokens=8, seed=1)
        left = generate_for_arm(session, task, arm, inputs, tiny_backend, params).id

    second = run_demo(config, backend=tiny_backend)
    assert [a.name for a in second.arms] == [a.name for a in first.arms]
    assert second.proposal.reused and not first.proposal.reused
    assert len(second.chosen) == 16
    assert any("reused" in note for note in second.notes)
    assert any("rated 1 output" in note for note in second.notes)
    with Store.open(config.url) as store, store.session(readonly=True) as session:
        rating = session.scalar(select(Feedback).where(Feedback.generation_id == left))
        assert rating is not None and rating.author == RUBRIC_AUTHOR


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"requests": 0}, "--requests"),
        ({"batch_size": 0}, "--batch-size"),
        ({"candidates": 9}, "candidates"),
        ({"seed": -1}, "--seed"),
        ({"warmup": -2}, "warmup"),
        ({"reward_model": "svm"}, "unknown rating model 'svm'"),
        ({"policy": "greedy"}, "no bandit policy named 'greedy'"),
        ({"top_p": 0.0}, "top_p"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PrefloopError, match=message):
        DemoConfig(**kwargs)  # type: ignore[arg-type]


def test_cli_refuses_an_unknown_backend(tmp_path: Path) -> None:
    run = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--backend", "gpt"])
    assert run.exit_code != 0
    assert "gpt" in str(run.exception) or "gpt" in run.output


def test_demo_against_a_port_where_nothing_listens_fails_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every LLM call fails: the run exits 1, names the unreachable server, counts the failed
    calls with their error, and its JSON and HTML report recommend nothing."""
    from tests.support.live_server import free_port

    monkeypatch.setenv("PREFLOOP_LLM_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
    monkeypatch.setenv("PREFLOOP_LLM_API_KEY", "test")
    monkeypatch.setenv("PREFLOOP_LLM_MODEL", "nobody-home")
    monkeypatch.setenv("PREFLOOP_LLM_MAX_RETRIES", "0")
    out = tmp_path / "demo"
    run = CliRunner().invoke(
        app,
        [
            *("demo", "--out", str(out), "--backend", "openai", "--requests", "8"),
            *("--no-propose", "--reward-model", "none", "--json"),
        ],
    )
    assert run.exit_code == 1, run.output
    assert "unreachable" in run.stderr and "collected no reward" in run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["collected_rewards"] is False and summary["recommended"] is None
    assert summary["failed"] >= 8 and summary["rated"] == 0
    [error] = summary["llm_errors"]
    assert "unreachable" in error["error"] and error["count"] == summary["failed"]
    html = (out / "report.html").read_text()
    assert "LLM calls failed" in html and "unreachable" in html
