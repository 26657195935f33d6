"""Distillation of a scripted LLM judge (on the local chat server) into cheap local models."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prefloop.errors import InvalidInputError
from prefloop.llm import OpenAIChatBackend, RetryPolicy
from prefloop.reward import RatingData, load_reward_model
from prefloop.reward.distill import (
    DistillConfig,
    distill_from_files,
    distill_ratings,
)
from prefloop.reward.judge import JudgeConfig, LLMJudge
from prefloop.reward.rating import RatingModelConfig, SklearnRatingModel
from tests.support.chat_server import ChatServer, Fail

QUALITY = {"wonderful": 1.0, "good": 0.5, "ordinary": 0.0, "dull": -0.5, "terrible": -1.0}
PLACES = ["Busan", "Seoul", "the beach", "the park", "a cafe", "the hills", "the market"]
COMPANY = ["with friends", "alone", "with my family", "with my sister"]


def diary(rng: random.Random) -> tuple[str, float]:
    word = rng.choice(list(QUALITY))
    place, company = rng.choice(PLACES), rng.choice(COMPANY)
    return f"Today I went to {place} {company}. It was a {word} day.", QUALITY[word]


def rated_text(messages: list[dict[str, Any]]) -> str:
    return re.findall(r"<<<\n(.*?)\n>>>", messages[-1]["content"], flags=re.S)[-1]


def judge_responder(messages: list[dict[str, Any]]) -> Any:
    """The teacher: reads the quality word, but its server always fails on texts about cafes
    and it is too kind about the hills (people disagree there)."""
    text = rated_text(messages)
    if "cafe" in text:
        return Fail(500)
    level = next(v for w, v in QUALITY.items() if w in text)
    if "hills" in text:
        level = 1.0
    return f"Score: {level:g}"


@pytest.fixture
def server() -> Iterator[ChatServer]:
    with ChatServer.start(responder=judge_responder) as running:
        yield running


def few_shot() -> RatingData:
    texts = [f"It was a {word} day." for word in QUALITY]
    return RatingData(texts=texts, ratings=np.array(list(QUALITY.values())), prompts=[None] * 5)


def judge_on(server: ChatServer) -> LLMJudge:
    backend = OpenAIChatBackend(
        base_url=server.url,
        api_key="test",
        model=server.model,
        timeout=5.0,
        retry=RetryPolicy(max_retries=0),
    )
    return LLMJudge(JudgeConfig(max_attempts=2), backend=backend).fit(few_shot())


def student() -> SklearnRatingModel:
    return SklearnRatingModel(RatingModelConfig(model="ridge:use"))


def test_student_agrees_with_teacher_and_failures_are_excluded(server: ChatServer) -> None:
    rng = random.Random(0)
    items = [diary(rng) for _ in range(120)]
    texts = [t for t, _ in items]
    people = np.array([v for _, v in items])
    cafes = sum("cafe" in t for t in texts)
    assert cafes > 5  # the data really holds items the teacher cannot label

    judge, model = judge_on(server), student()
    report = distill_ratings(judge, model, texts, people=people, config=DistillConfig(seed=1))

    assert report.teacher_failed == cafes == judge.stats.failed
    assert report.train_items + report.test_items == len(texts) - cafes
    assert model.train_ is not None and model.train_.n == len(texts) - cafes  # refit on all
    rated = [r.messages for r in server.chat_requests]
    assert sum("cafe" in rated_text(m) for m in rated) == 2 * cafes  # two attempts, then none

    agreement = report.student_vs_teacher
    assert agreement.n == report.test_items
    assert agreement.spearman is not None and agreement.spearman >= 0.85
    teacher_labels = np.array([judge_responder_level(t) for t in texts if "cafe" not in t])
    assert agreement.mse is not None and agreement.mse < 0.3 * float(np.var(teacher_labels))

    assert report.student_vs_people is not None and report.teacher_vs_people is not None
    assert report.teacher_vs_people.mse is not None and report.teacher_vs_people.mse > 0
    assert report.teacher_vs_people.n == report.student_vs_people.n == report.test_items
    assert model.metrics["distillation"]["teacher_failed"] == cafes


def judge_responder_level(text: str) -> float:
    reply = judge_responder([{"role": "user", "content": f"<<<\n{text}\n>>>"}])
    return float(str(reply).split(":")[1])


def test_a_teacher_that_fails_everything_stops_with_a_clear_error(server: ChatServer) -> None:
    server.responder = lambda messages: Fail(503)
    judge = judge_on(server)
    with pytest.raises(InvalidInputError, match="labeled only 0 of 12"):
        distill_ratings(judge, student(), [f"text {i}" for i in range(12)])


def test_wrong_kinds_and_settings_are_refused(server: ChatServer) -> None:
    judge = judge_on(server)
    with pytest.raises(InvalidInputError, match="test_fraction"):
        distill_ratings(judge, student(), ["a"] * 10, config=DistillConfig(test_fraction=1.0))
    with pytest.raises(InvalidInputError, match="not fitted"):
        distill_ratings(LLMJudge(JudgeConfig()), student(), ["a"] * 10)
    with pytest.raises(InvalidInputError, match="3 texts, 3 prompts and 2 human ratings"):
        distill_ratings(judge, student(), ["a", "b", "c"], people=[0.0, 1.0])


def test_distill_from_files_with_a_saved_judge(
    server: ChatServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    judge_dir = judge_on(server).save(tmp_path / "judge")
    # A loaded judge builds its backend from the environment, as the CLI does.
    monkeypatch.setenv("PREFLOOP_LLM_BASE_URL", server.url)
    monkeypatch.setenv("PREFLOOP_LLM_API_KEY", "test")
    monkeypatch.setenv("PREFLOOP_LLM_MODEL", server.model)
    monkeypatch.setenv("PREFLOOP_LLM_MAX_RETRIES", "0")
    rng = random.Random(2)
    data = tmp_path / "ratings.jsonl"
    with data.open("w", encoding="utf-8") as handle:
        for _ in range(60):
            text, value = diary(rng)
            handle.write(json.dumps({"text": text, "rating": value}) + "\n")

    report = distill_from_files(judge_dir, data, student(), tmp_path / "student")

    assert report.items == 60 and report.student_vs_people is not None
    saved = load_reward_model(tmp_path / "student", kind="rating")
    assert saved.metrics["distillation"]["items"] == 60
    scores = saved.score(["It was a wonderful day.", "It was a terrible day."])
    assert scores[0] > scores[1]


# ---- pairs: the judge's compare mode teaches a Bradley–Terry model ---------------------------
def compare_responder(messages: list[dict[str, Any]]) -> Any:
    """Picks the reply with the better quality word; fails on cafes; says "A" whenever the hills
    come up (a position bias that the swap exposes)."""
    first, second = re.findall(r"<<<\n(.*?)\n>>>", messages[-1]["content"], flags=re.S)
    if "cafe" in first + second:
        return Fail(500)
    if "hills" in first + second:
        return "Winner: A"
    level = {text: next(v for w, v in QUALITY.items() if w in text) for text in (first, second)}
    return "Winner: A" if level[first] > level[second] else "Winner: B"


def test_pairwise_distillation_excludes_failures_and_ties(server: ChatServer) -> None:
    from prefloop.reward import PairData
    from prefloop.reward.distill import distill_pairs
    from prefloop.reward.pairwise import BradleyTerryConfig, BradleyTerryModel

    server.responder = compare_responder
    rng = random.Random(3)
    prompts, chosen, rejected = [], [], []
    while len(chosen) < 240:
        (a, va), (b, vb) = diary(rng), diary(rng)
        if va != vb:  # people prefer the better day
            prompts.append("How was your day?")
            chosen.append(a if va > vb else b)
            rejected.append(b if va > vb else a)
    pairs = PairData(prompts=prompts, chosen=chosen, rejected=rejected)
    cafes = sum("cafe" in c + r for c, r in zip(chosen, rejected, strict=True))
    hills = sum(
        "hills" in c + r and "cafe" not in c + r for c, r in zip(chosen, rejected, strict=True)
    )
    assert cafes > 5 and hills > 5

    model = BradleyTerryModel(BradleyTerryConfig(features="use"))
    report = distill_pairs(judge_on(server), model, pairs, config=DistillConfig(seed=0))

    assert report.teacher_failed == cafes and report.teacher_ties == hills
    assert report.train_items + report.test_items == 240 - cafes - hills
    assert model.train_ is not None and model.train_.n == 240 - cafes - hills
    assert report.student_vs_teacher.accuracy is not None
    assert report.student_vs_teacher.accuracy >= 0.8
    # This teacher always agrees with people where it answers, and so must the student mostly.
    assert report.teacher_vs_people is not None and report.teacher_vs_people.accuracy == 1.0
    assert report.student_vs_people is not None and report.student_vs_people.accuracy >= 0.8


def test_distill_from_an_unrated_texts_file(server: ChatServer, tmp_path: Path) -> None:
    rng = random.Random(4)
    data = tmp_path / "texts.jsonl"
    rows = [{"text": diary(rng)[0], "prompt": "Write today's diary."} for _ in range(40)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    calls: list[tuple[str, int, int]] = []
    report = distill_from_files(
        judge_on(server), data, student(), progress=lambda *a: calls.append(a)
    )

    cafes = sum("cafe" in r["text"] for r in rows)
    assert report.items == 40 and report.student_vs_people is None
    assert report.teacher_failed == cafes
    assert calls[-1] == ("judging", 40 - cafes, 40) and len(calls) == 2  # one per round
    prompts = {m[-1]["content"].split("\n")[1] for m in (r.messages for r in server.chat_requests)}
    assert prompts == {"Write today's diary."}  # the prompt reached the judge as its input

    (tmp_path / "bad.jsonl").write_text('{"text": ""}\n', encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"bad.jsonl:1"):
        distill_from_files(judge_on(server), tmp_path / "bad.jsonl", student())
