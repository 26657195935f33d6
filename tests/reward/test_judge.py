"""The LLM judge against a real chat-completions server on 127.0.0.1 (tests/support)."""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from prefloop.errors import InvalidInputError
from prefloop.llm import OpenAIChatBackend, RetryPolicy
from prefloop.reward import RatingData, load_reward_model
from prefloop.reward.judge import JudgeConfig, LLMJudge, parse_level, parse_winner
from tests.support.chat_server import ChatServer, Fail, Garbage, Reply

SCALE = (-1.0, -0.5, 0.0, 0.5, 1.0)


# ---- parsing ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reply", "level"),
    [
        ("Score: 0.5", 0.5),
        ("score: -1", -1.0),
        ("Score: +0.5", 0.5),
        ("Score: 0.50", 0.5),
        ("Score: .5", 0.5),
        ("**Score:** 1", 1.0),
        ("`Score: -0.5`", -0.5),
        ("Score: −0.5", -0.5),  # a Unicode minus
        ('{"score": -0.5}', -0.5),
        ('Here you go: {"score": "1"}', 1.0),
        ("0", 0.0),
        ("1.0.", 1.0),
        ("The text is fine but plain. Score: 0", 0.0),
        ("Rating = 0.5", 0.5),
        ("I would give it a score of 1", 1.0),
        ("Score: 0.5 (solid, not rich)", 0.5),
    ],
)
def test_parse_level_accepts_the_levels_in_nearby_formats(reply: str, level: float) -> None:
    assert parse_level(reply, SCALE) == level


@pytest.mark.parametrize(
    "reply",
    [
        "Score: 0.7",  # not a level
        "Score: 3",
        "Score: 4/5",
        "It is a nice diary.",
        "",
        "Score: between 0 and 0.5",
        '{"score": true}',
        '{"verdict": 1}',
    ],
)
def test_parse_level_refuses_anything_else(reply: str) -> None:
    assert parse_level(reply, SCALE) is None


@pytest.mark.parametrize(
    ("reply", "winner"),
    [("Winner: A", "A"), ("winner: b", "B"), ('{"winner": "B"}', "B"), ("B", "B"),
     ("Response A.", "A"), ("**Winner:** Response B", "B"), ("Both are fine", None), ("", None)],
)  # fmt: skip
def test_parse_winner(reply: str, winner: str | None) -> None:
    assert parse_winner(reply) == winner


# ---- a judge on the local chat server ----------------------------------------------------------
def ratings(n_per_level: int = 3) -> RatingData:
    texts, values = [], []
    for level in SCALE:
        for k in range(n_per_level):
            texts.append(f"labeled example {k} at level {level:g}")
            values.append(level)
    return RatingData(texts=texts, ratings=np.array(values), prompts=[None] * len(texts))


def item_text(messages: list[dict[str, Any]]) -> str:
    """The text being rated: the last user message's text between <<< and >>>."""
    user = [m["content"] for m in messages if m["role"] == "user"]
    found = re.findall(r"<<<\n(.*?)\n>>>", user[-1], flags=re.S)
    return found[-1] if found else user[-1]


@pytest.fixture
def server() -> Iterator[ChatServer]:
    with ChatServer.start(responder=lambda messages: "Score: 0") as running:
        yield running


def judge_on(server: ChatServer, **settings: Any) -> LLMJudge:
    backend = OpenAIChatBackend(
        base_url=server.url,
        api_key="test",
        model=server.model,
        timeout=2.0,
        retry=RetryPolicy(max_retries=0),
    )
    return LLMJudge(JudgeConfig(**settings), backend=backend).fit(ratings())


def request_words(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m["content"]).split()) for m in messages)


def test_well_formed_answers_are_scored_and_tokens_counted(server: ChatServer) -> None:
    replies = {"alpha": "Score: 1", "beta": "Score: -0.5", "gamma": "Score: 0.5"}
    server.responder = lambda messages: replies[item_text(messages)]
    judge = judge_on(server)

    scores = judge.score(list(replies))

    assert scores.tolist() == [1.0, -0.5, 0.5]
    assert judge.stats.calls == 3 and judge.stats.scored == 3 and judge.stats.failed == 0
    requests = server.chat_requests
    assert len(requests) == 3
    # The server counts whitespace words; the judge must sum what the server reported.
    assert judge.stats.prompt_tokens == sum(request_words(r.messages) for r in requests)
    assert judge.stats.completion_tokens == sum(len(r.split()) for r in replies.values())
    # The unit score maps the scale linearly onto [0, 1].
    assert judge.score_unit(["alpha"]).tolist() == [1.0]


def test_sloppy_formats_are_mapped_to_levels(server: ChatServer) -> None:
    replies = {"a": "+0.5", "b": "Score: 0.50", "c": '{"score": -1}', "d": "**Score:** 1"}
    server.responder = lambda messages: replies[item_text(messages)]
    judge = judge_on(server)

    assert judge.score(list(replies)).tolist() == [0.5, 0.5, -1.0, 1.0]
    assert judge.stats.unparsable == 0 and judge.stats.calls == 4


def test_an_unreadable_answer_is_retried_with_a_correction(server: ChatServer) -> None:
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def responder(messages: list[dict[str, Any]]) -> str:
        with lock:
            text = item_text(messages) if "<<<" in messages[-1]["content"] else "retry"
            seen[text] = seen.get(text, 0) + 1
        return "Score: 0.5" if text == "retry" else "This diary is lovely, really good!"

    server.responder = responder
    judge = judge_on(server)

    assert judge.score(["first", "second"]).tolist() == [0.5, 0.5]
    assert judge.stats.calls == 4 and judge.stats.unparsable == 2 and judge.stats.failed == 0
    retry = server.chat_requests[-1].messages
    assert retry[-2] == {"role": "assistant", "content": "This diary is lovely, really good!"}
    assert "-1, -0.5, 0, 0.5, 1" in retry[-1]["content"]


def test_a_garbage_http_answer_then_a_good_one(server: ChatServer) -> None:
    server.script(Garbage("not-json"), Garbage("no-choices"), "Score: -1")
    judge = judge_on(server)

    assert judge.score(["only item"]).tolist() == [-1.0]
    assert judge.stats.calls == 3 and judge.stats.llm_errors == 2
    assert judge.stats.scored == 1 and judge.failures_ == []


def test_permanent_failure_gives_no_score_never_zero(server: ChatServer) -> None:
    server.responder = lambda messages: Fail(503)
    judge = judge_on(server, max_attempts=2)

    scores = judge.score(["x", "y", "z"])

    assert np.isnan(scores).all()  # not 0: a failed call is not a reward
    assert judge.stats.failed == 3 and judge.stats.scored == 0
    assert judge.stats.calls == 6 == len(server.chat_requests)  # bounded: 2 attempts each
    assert [f.index for f in judge.failures_] == [0, 1, 2]
    assert all(f.attempts == 2 and "503" in f.reason for f in judge.failures_)


def test_garbage_forever_is_a_bounded_failure(server: ChatServer) -> None:
    server.responder = lambda messages: "no idea"
    judge = judge_on(server, max_attempts=3)

    scores = judge.score(["x", "y"])

    assert np.isnan(scores).all()
    assert judge.stats.calls == 6 and judge.stats.unparsable == 6 and judge.stats.failed == 2
    assert "no idea" in judge.failures_[0].reason


def test_a_rejected_request_is_not_retried(server: ChatServer) -> None:
    server.responder = lambda messages: Fail(400, "bad request")
    judge = judge_on(server, max_attempts=3)

    assert math.isnan(judge.score(["x"])[0])
    assert len(server.chat_requests) == 1 and judge.stats.failed == 1


def test_mixed_batch_keeps_items_apart(server: ChatServer) -> None:
    def responder(messages: list[dict[str, Any]]) -> Any:
        text = item_text(messages)
        return {"ok": "Score: 1", "broken": Fail(500)}[text]

    server.responder = responder
    judge = judge_on(server, max_attempts=2)

    scores = judge.score(["ok", "broken", "ok"])

    assert scores[0] == 1.0 and scores[2] == 1.0 and math.isnan(scores[1])
    assert judge.stats.scored == 2 and judge.stats.failed == 1


def test_missing_usage_is_counted_apart(server: ChatServer) -> None:
    server.responder = lambda messages: Reply("Score: 0", prompt_tokens=7, completion_tokens=2)
    judge = judge_on(server)
    judge.score(["a", "b"])
    assert judge.stats.prompt_tokens == 14 and judge.stats.completion_tokens == 4
    assert judge.stats.calls_without_usage == 0


# ---- few-shot examples ---------------------------------------------------------------------
def test_fit_picks_examples_per_level_deterministically(server: ChatServer) -> None:
    first = judge_on(server, shots_per_level=2, seed=3)
    again = judge_on(server, shots_per_level=2, seed=3)
    other = judge_on(server, shots_per_level=2, seed=4)

    assert first.examples_ == again.examples_
    assert first.examples_ != other.examples_
    per_level = {level: sum(ex.rating == level for ex in first.examples_) for level in SCALE}
    assert per_level == dict.fromkeys(SCALE, 2)
    data = ratings()
    for ex in first.examples_:  # each example carries the rating people gave it
        assert data.ratings[data.texts.index(ex.text)] == ex.rating

    messages = first.messages_for("the new text")
    assert messages[0]["role"] == "system" and "-1, -0.5, 0, 0.5, 1" in messages[0]["content"]
    shots = messages[1:-1]
    assert len(shots) == 2 * len(first.examples_)
    assert [m["content"] for m in shots[1::2]] == [
        f"Score: {ex.rating:g}" for ex in first.examples_
    ]
    assert "the new text" in messages[-1]["content"]


def test_a_level_without_examples_is_warned(server: ChatServer) -> None:
    data = ratings()
    keep = [i for i, r in enumerate(data.ratings) if r != 1.0]
    judge = judge_on(server)
    with pytest.warns(UserWarning, match="level"):
        judge.fit(data.subset(keep))
    assert judge.missing_levels_ == [1.0]
    assert all(ex.rating != 1.0 for ex in judge.examples_)


def test_examples_are_shortened(server: ChatServer) -> None:
    data = RatingData(
        texts=["word " * 500, "short", "mid text", "another", "fifth"],
        ratings=np.array([1.0, -1.0, 0.0, 0.5, -0.5]),
        prompts=[None] * 5,
    )
    judge = judge_on(server, max_example_chars=100).fit(data)
    longest = max(len(m["content"]) for m in judge.messages_for("x")[1:-1])
    assert longest < 200


def test_save_and_load_round_trip(server: ChatServer, tmp_path: Any) -> None:
    judge = judge_on(server, shots_per_level=1, seed=7, rubric="Rich and natural is best.")
    judge.save(tmp_path / "judge")

    loaded = load_reward_model(tmp_path / "judge")

    assert isinstance(loaded, LLMJudge)
    assert loaded.examples_ == judge.examples_ and loaded.scale_ == judge.scale_
    assert loaded.config == judge.config
    loaded.use_backend(judge.backend)
    assert loaded.messages_for("t") == judge.messages_for("t")
    assert loaded.score(["t"]).tolist() == [0.0]


# ---- pairwise mode -------------------------------------------------------------------------
def pair_texts(messages: list[dict[str, Any]]) -> tuple[str, str]:
    a, b = re.findall(r"<<<\n(.*?)\n>>>", messages[-1]["content"], flags=re.S)
    return a, b


def test_compare_swaps_positions(server: ChatServer) -> None:
    def prefers_polite(messages: list[dict[str, Any]]) -> str:
        first, _ = pair_texts(messages)
        return "Winner: A" if "please" in first else "Winner: B"

    server.responder = prefers_polite
    judge = judge_on(server)

    p = judge.compare(["please help", "go away"], ["go away", "please stay"])

    assert p.tolist() == [1.0, 0.0]
    assert len(server.chat_requests) == 4 and judge.stats.position_inconsistent == 0
    orders = {pair_texts(r.messages) for r in server.chat_requests}
    assert ("please help", "go away") in orders and ("go away", "please help") in orders


def test_compare_with_a_position_biased_judge_gives_half(server: ChatServer) -> None:
    server.responder = lambda messages: "Winner: A"
    judge = judge_on(server)
    assert judge.compare(["one"], ["two"]).tolist() == [0.5]
    assert judge.stats.position_inconsistent == 1


def test_compare_failure_is_nan(server: ChatServer) -> None:
    server.responder = lambda messages: Fail(500)
    judge = judge_on(server, max_attempts=1)
    assert math.isnan(judge.compare(["one"], ["two"])[0])
    assert judge.stats.failed == 1


# ---- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings",
    [{"max_attempts": 0}, {"shots_per_level": -1}, {"max_tokens": 0}, {"temperature": -0.1}],
)
def test_bad_settings_are_refused_at_fit(server: ChatServer, settings: dict[str, Any]) -> None:
    name = next(iter(settings))
    with pytest.raises(InvalidInputError, match=name):
        judge_on(server, **settings)


def test_unfitted_judge_refuses_to_score(server: ChatServer) -> None:
    with pytest.raises(InvalidInputError, match="fit"):
        LLMJudge(JudgeConfig()).score(["x"])


# ---- the real local model --------------------------------------------------------------------
@pytest.mark.slow
def test_with_the_local_smollm2_backend() -> None:
    """SmolLM2-135M through the local transformers backend: every item ends with a level of the
    scale or NaN, and the counts add up (the model is small; its verdicts are not checked)."""
    from prefloop.llm import LocalChatBackend

    judge = LLMJudge(JudgeConfig(max_tokens=8, max_attempts=2), backend=LocalChatBackend.smollm2())
    judge.fit(ratings(1))
    scores = judge.score(["Today I walked by the river with my sister.", "day good"])

    assert all(math.isnan(s) or s in SCALE for s in scores)
    assert judge.stats.scored + judge.stats.failed == 2
    assert judge.stats.scored == int(np.sum(~np.isnan(scores)))
    assert 2 <= judge.stats.calls <= 4
    assert judge.stats.prompt_tokens > 100 and judge.stats.completion_tokens > 0


# ---- evaluation of a judge that fails on some items ---------------------------------------------
def rubric_level(text: str) -> float:
    """The level a scripted judge gives: the number after "level" in the text."""
    return float(re.findall(r"level (-?[0-9.]+)", text)[-1])


def failing_on_broken(messages: list[dict[str, Any]]) -> Any:
    """Rates by the level written in the text, but its server fails for texts saying "broken"
    (every attempt: the judge gives up and leaves them unscored)."""
    text = item_text(messages)
    return Fail(500) if "broken" in text else f"Score: {rubric_level(text):g}"


def rated_items(n_per_level: int = 4, broken_every: int = 5) -> RatingData:
    """Texts whose written level is one step off from people's rating at the ends; every
    ``broken_every``-th item makes the judge's server fail."""
    texts, values = [], []
    for _ in range(n_per_level):
        for level in SCALE:
            i = len(texts)
            mark = " broken" if i % broken_every == 2 else ""
            texts.append(f"item {i}{mark} level {level:g}")
            values.append(level if abs(level) < 1 else level / 2)  # judge says ±1, people ±0.5
    return RatingData(texts=texts, ratings=np.array(values), prompts=[None] * len(texts))


def test_evaluate_ratings_leaves_unscored_items_out(server: ChatServer) -> None:
    from prefloop.reward.evaluate import evaluate_ratings

    server.responder = failing_on_broken
    judge = judge_on(server, max_attempts=2)
    data = rated_items()
    broken = np.array(["broken" in t for t in data.texts])
    assert 0 < broken.sum() < len(data)

    report = evaluate_ratings(judge, data, samples=200)

    assert report.unscored == int(broken.sum()) == judge.stats.failed
    assert report.n == len(data) - int(broken.sum())
    said = np.array([rubric_level(t) for t in data.texts])[~broken]
    people = data.ratings[~broken]
    assert report.mse == pytest.approx(float(np.mean((said - people) ** 2)))
    assert report.baseline.mse == pytest.approx(
        float(np.mean((judge.train_.mean - people) ** 2))  # type: ignore[union-attr]
    )
    assert all(math.isfinite(v) for v in (report.mse, report.spearman, *report.ci["mse"]))


@pytest.mark.filterwarnings("ignore:no labeled example")
def test_cross_validate_a_judge_with_unscored_items(server: ChatServer) -> None:
    from prefloop.reward.evaluate import cross_validate, make_folds

    server.responder = failing_on_broken
    backend = judge_on(server).backend
    data = rated_items()
    broken = np.array(["broken" in t for t in data.texts])

    result = cross_validate(
        lambda: LLMJudge(JudgeConfig(max_attempts=1), backend=backend),
        data,
        make_folds(data, 3),
        samples=200,
    )

    report = result.report
    assert report.unscored == int(broken.sum())
    assert report.n == len(data) - int(broken.sum())
    assert np.array_equal(np.isnan(result.predictions), broken)
    # each item is in two training parts, so each broken one is unscored twice in-sample
    assert report.cross_validation.train["unscored"] == 2 * int(broken.sum())
    assert math.isfinite(report.mse) and math.isfinite(report.cross_validation.gap["mse"])
    said = np.array([rubric_level(t) for t in data.texts])
    assert report.mse == pytest.approx(float(np.mean((said - data.ratings)[~broken] ** 2)))


def test_evaluate_pairs_leaves_unscored_pairs_out(server: ChatServer) -> None:
    from prefloop.reward import PairData
    from prefloop.reward.evaluate import evaluate_pairs

    server.responder = failing_on_broken
    judge = judge_on(server, max_attempts=1)
    chosen = [f"reply {i}{' broken' if i % 4 == 0 else ''} level 1" for i in range(12)]
    rejected = [f"other reply {i} level -0.5" for i in range(12)]
    pairs = PairData(prompts=[f"q{i}" for i in range(12)], chosen=chosen, rejected=rejected)

    report = evaluate_pairs(judge, pairs, folds=3, samples=200)

    assert report.unscored == 3 and report.n == 9
    assert report.accuracy == 1.0  # every scored pair is ordered right; none counted as 0


def test_a_judge_that_scores_nothing_cannot_be_evaluated(server: ChatServer) -> None:
    from prefloop.reward.evaluate import evaluate_ratings

    judge = judge_on(server, max_attempts=1)
    server.responder = lambda messages: Fail(503)
    with pytest.raises(InvalidInputError, match="no score for any of the 20 items"):
        evaluate_ratings(judge, rated_items(), samples=100)
