"""``label_task`` and ``judge_agreement``: the judge on the real chat-completions test server,
its verdicts in the store as judge feedback, and its agreement with human pairs."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from prefloop.cai import (
    AgreementConfig,
    CompareConfig,
    LabelConfig,
    default_constitution,
    judge_agreement,
    label_task,
    parse_choice,
)
from prefloop.errors import InvalidInputError
from prefloop.feedback import SOURCES, preference_pairs
from prefloop.io.exporting import preference_rows
from prefloop.llm import LLMError
from prefloop.reward import PairData, load_pair_data, pair_data_from_store
from prefloop.store import Feedback, Generation, Store
from prefloop.store.repo import create_arm, get_or_create_task, get_task
from prefloop.train import DPOConfig, from_task
from tests.cai.conftest import backend_for, options, prefers, scripted_model
from tests.conftest import shared_data
from tests.support.chat_server import ChatServer, Fail

INPUTS = ["Busan", "Seoul", "Jeju"]


def seed_task(store: Store, outputs_per_input: int = 2) -> dict[str, list[str]]:
    """A task whose every input has a polite and a rude output (and more when asked)."""
    ids: dict[str, list[str]] = {}
    with store.session() as s:
        task = get_or_create_task(s, "trip", input_fields=["place"])
        arm = create_arm(s, task, "a", template="Tell me about {place}.")
        for place in INPUTS:
            texts = [f"A polite note on {place}.", f"Go away, {place} is none of your business."]
            texts += [f"Another note {k} on {place}." for k in range(outputs_per_input - 2)]
            for text in texts:
                g = Generation(
                    task_id=task.id,
                    arm_id=arm.id,
                    input={"place": place},
                    prompt=f"Tell me about {place}.",
                    output=text,
                )
                s.add(g)
                s.flush()
                ids.setdefault(place, []).append(g.id)
        s.add(  # a failed call and an output of an input with one output are never paired
            Generation(
                task_id=task.id,
                input={"place": "Busan"},
                prompt="Tell me about Busan.",
                status="failed",
                error="timeout",
            )
        )
        s.add(Generation(task_id=task.id, input={"place": "Yeosu"}, prompt="x", output="alone"))
    return ids


def judge_events(store: Store) -> list[Feedback]:
    with store.session(readonly=True) as s:
        rows = list(s.scalars(select(Feedback).order_by(Feedback.id)))
        s.expunge_all()
    return rows


def test_label_stores_judge_pairwise_feedback_with_the_right_winner(
    store: Store, chat_server: ChatServer
) -> None:
    ids = seed_task(store)
    chat_server.responder = scripted_model(judge=prefers("polite"))
    result = label_task(store, "trip", backend_for(chat_server), default_constitution())

    events = judge_events(store)
    assert len(events) == 3 == result.to_json()["stored"]
    assert len(chat_server.chat_requests) == 6  # each pair asked in both orders
    for event in events:
        assert (event.kind, event.source) == ("pairwise", "judge")
        polite = next(ids[p][0] for p in INPUTS if event.generation_id in ids[p])
        # generation_id is a, other is b; value +1 means a won: the polite output must win
        winner = event.generation_id if event.value == 1.0 else event.other_generation_id
        assert winner == polite
        principle = event.author.split(":")[-1]
        assert event.author == f"cai:prefloop-default:{principle}"
        assert principle in default_constitution().ids
    assert {j.principle for j in result.judged} == {e.author.split(":")[-1] for e in events}
    assert result.stats.position_inconsistent == 0 and not result.failures


def test_judge_feedback_stays_out_of_human_exports_and_training_unless_asked(
    sqlite_store: Store, chat_server: ChatServer
) -> None:
    seed_task(sqlite_store)
    chat_server.responder = scripted_model()
    label_task(sqlite_store, "trip", backend_for(chat_server), default_constitution())

    assert len(pair_data_from_store(sqlite_store, "trip")) == 0  # reward-model training data
    assert len(pair_data_from_store(sqlite_store, "trip", sources=SOURCES)) == 3
    with pytest.raises(InvalidInputError, match="no training data for dpo"):  # the trainers'
        from_task(sqlite_store, "trip", DPOConfig(from_ratings=False))
    assert len(from_task(sqlite_store, "trip", DPOConfig(), sources=SOURCES)) == 3
    with sqlite_store.session(readonly=True) as s:
        task = get_task(s, "trip")
        assert list(preference_rows(s, task)) == []  # the default (human) export
        judged = list(preference_rows(s, task, sources=("judge",)))
        assert len(judged) == 3 and all("polite" in row["chosen"] for row in judged)
        assert all(p.origin == "pairwise" for p in preference_pairs(s, task, sources=SOURCES))


def test_a_position_biased_judge_gives_ties(sqlite_store: Store, chat_server: ChatServer) -> None:
    seed_task(sqlite_store)
    chat_server.responder = scripted_model(judge=lambda a, b: "(A)")
    result = label_task(sqlite_store, "trip", backend_for(chat_server), default_constitution())
    assert [e.value for e in judge_events(sqlite_store)] == [0.0, 0.0, 0.0]
    assert result.stats.position_inconsistent == 3
    assert result.to_json()["winners"] == {"a": 0, "b": 0, "tie": 3}


def test_pairs_already_judged_are_skipped_and_limit_spreads_over_inputs(
    sqlite_store: Store, chat_server: ChatServer
) -> None:
    seed_task(sqlite_store, outputs_per_input=3)  # three pairs per input
    chat_server.responder = scripted_model()
    backend = backend_for(chat_server)
    first = label_task(sqlite_store, "trip", backend, default_constitution(), LabelConfig(limit=3))
    assert first.candidates == 9
    with sqlite_store.session(readonly=True) as s:
        places = {s.get(Generation, j.a).input["place"] for j in first.judged}  # type: ignore[union-attr]
    assert places == set(INPUTS)  # one pair of each input before a second of any
    second = label_task(sqlite_store, "trip", backend, default_constitution())
    assert second.candidates == 6 and len(second.judged) == 6
    with pytest.raises(InvalidInputError, match="no pair of different outputs"):
        label_task(sqlite_store, "trip", backend, default_constitution())
    again = label_task(  # another author judges them again
        sqlite_store, "trip", backend, default_constitution(), LabelConfig(author="other", limit=1)
    )
    assert again.judged[0].principle in default_constitution().ids
    assert len(judge_events(sqlite_store)) == 10


def test_a_backend_that_fails_every_call_stores_nothing_and_says_what_to_do(
    sqlite_store: Store, chat_server: ChatServer
) -> None:
    seed_task(sqlite_store)
    chat_server.responder = lambda messages: Fail(500, "the judge is down")
    with pytest.raises(LLMError) as caught:
        label_task(sqlite_store, "trip", backend_for(chat_server), default_constitution())
    message = str(caught.value)
    assert "every one of the 18 judge calls" in message  # 3 pairs × 2 orders × 3 attempts
    assert "nothing was stored" in message and "PREFLOOP_LLM_BASE_URL" in message
    assert judge_events(sqlite_store) == []


def test_a_judge_that_never_names_an_option_stores_nothing(
    sqlite_store: Store, chat_server: ChatServer
) -> None:
    seed_task(sqlite_store)
    chat_server.responder = scripted_model(judge=lambda a, b: "Both replies have merit.")
    with pytest.raises(LLMError, match=r"named neither \(A\) nor \(B\).*nothing was stored"):
        label_task(
            sqlite_store,
            "trip",
            backend_for(chat_server),
            default_constitution(),
            LabelConfig(compare=CompareConfig(max_attempts=2)),
        )
    assert judge_events(sqlite_store) == []
    corrections = [r for r in chat_server.chat_requests if len(r.messages) == 4]
    assert len(corrections) == 6  # each unreadable answer was asked again, with a correction
    assert "(A) or (B)" in corrections[0].messages[-1]["content"]


def test_an_unreadable_answer_is_asked_again_and_a_pair_without_verdict_is_left_out(
    sqlite_store: Store, chat_server: ChatServer
) -> None:
    seed_task(sqlite_store)

    def judge(messages: list[dict[str, Any]]) -> str:
        a, b = options(messages) or ("", "")
        if "Jeju" in a:
            return "I cannot say."  # never decides the Jeju pair
        if "Seoul" in a and len(messages) == 2:
            return "hmm"  # the first answer on Seoul is unreadable; after the correction, fine
        return prefers("polite")(a, b)

    chat_server.responder = judge
    result = label_task(sqlite_store, "trip", backend_for(chat_server), default_constitution())

    assert len(result.failures) == 1
    assert "neither (A) nor (B): 'I cannot say.'" in result.failures[0].reason
    assert result.failures[0].attempts == 6  # both orders, three attempts each
    events = judge_events(sqlite_store)
    assert len(events) == 2  # Busan and Seoul; no verdict for Jeju, never a guessed one
    assert result.stats.unparsable == 2 + 6
    with sqlite_store.session(readonly=True) as s:
        for event in events:
            winner = event.generation_id if event.value == 1.0 else event.other_generation_id
            assert "polite" in (s.get(Generation, winner).output or "")  # type: ignore[union-attr]


def test_a_task_without_two_outputs_of_one_input_says_how_to_get_them(
    sqlite_store: Store, chat_server: ChatServer
) -> None:
    with sqlite_store.session() as s:
        task = get_or_create_task(s, "solo")
        s.add(Generation(task_id=task.id, input={"q": 1}, prompt="p", output="only one"))
    with pytest.raises(InvalidInputError, match="at least two outputs per input"):
        label_task(sqlite_store, "solo", backend_for(chat_server), default_constitution())
    with pytest.raises(InvalidInputError, match="limit=0"):
        label_task(
            sqlite_store,
            "solo",
            backend_for(chat_server),
            default_constitution(),
            LabelConfig(limit=0),
        )
    assert not chat_server.chat_requests


@pytest.mark.parametrize(
    ("reply", "choice"),
    [
        ("(A)", "A"),
        ("B", "B"),
        ("A.", "A"),
        ("**(B)** because it is kinder", "B"),
        ("The answer is (B).", "B"),
        ("Winner: A", "A"),
        ('{"winner": "B"}', "B"),
        ("I would pick (A), clearly.", "A"),
        ("A good question; both are fine.", None),
        ("(A) and (B) are equally good", "A"),
        ("Neither.", None),
    ],
)
def test_parse_choice(reply: str, choice: str | None) -> None:
    assert parse_choice(reply) == choice


# -- agreement with people ----------------------------------------------------------------------
def polite_pairs(n: int) -> PairData:
    return PairData(
        prompts=[f"q{i}" for i in range(n)],
        chosen=[f"a polite reply number {i} with some more words" for i in range(n)],
        rejected=[f"rude {i}" for i in range(n)],
    )


def test_agreement_of_a_judge_that_always_agrees_and_of_one_that_only_follows_the_position(
    chat_server: ChatServer,
) -> None:
    chat_server.responder = scripted_model(judge=prefers("polite"))
    quick = AgreementConfig(samples=200)
    report = judge_agreement(
        backend_for(chat_server), polite_pairs(20), default_constitution(), quick
    )
    assert report.accuracy == 1.0 and report.interval == (1.0, 1.0)
    assert report.report["n"] == 20 and report.report["unscored"] == 0
    assert sum(int(f["pairs"]) for f in report.by_principle.values()) == 20

    chat_server.responder = scripted_model(judge=lambda a, b: "(B)")
    biased = judge_agreement(
        backend_for(chat_server), polite_pairs(20), default_constitution(), quick
    )
    assert biased.accuracy == 0.5 and biased.stats.position_inconsistent == 20


def test_agreement_on_the_hh_pairs_matches_the_shorter_wins_baseline_for_a_length_judge(
    chat_server: ChatServer,
) -> None:
    """A judge that always picks the shorter reply must score exactly "shorter wins"; the
    report is the reward evaluation's, with a bootstrap interval around the accuracy."""
    data = load_pair_data(shared_data("hh-harmless-train.jsonl"))
    chat_server.responder = scripted_model(
        judge=lambda a, b: "(A)" if len(a) < len(b) else "(B)" if len(b) < len(a) else "hmm"
    )
    config = AgreementConfig(limit=40, samples=200, compare=CompareConfig(max_attempts=1, seed=1))
    report = judge_agreement(backend_for(chat_server), data, default_constitution(), config)

    sub = report.report
    assert report.pairs == 40
    assert sub["n"] + sub["unscored"] == 40
    assert report.accuracy == pytest.approx(sub["baseline"]["shorter_wins"])
    low, high = report.interval
    assert low <= report.accuracy <= high and high - low > 0.05
    assert report.to_json()["accuracy_ci"] == [low, high]


def test_agreement_with_a_failing_backend_is_an_error(chat_server: ChatServer) -> None:
    chat_server.responder = lambda messages: Fail(503, "down")
    with pytest.raises(LLMError, match="every one of the 12 judge calls"):
        judge_agreement(
            backend_for(chat_server),
            polite_pairs(2),
            default_constitution(),
            AgreementConfig(compare=CompareConfig(max_attempts=3)),
        )


def test_the_judge_sees_the_conversation_the_principle_and_both_options(
    chat_server: ChatServer,
) -> None:
    chat_server.responder = scripted_model()
    data = PairData(
        prompts=["\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help me"],
        chosen=["a polite reply"],
        rejected=["no"],
    )
    judge_agreement(
        backend_for(chat_server), data, default_constitution(), AgreementConfig(principle="respect")
    )
    asked = sorted(r.messages[1]["content"] for r in chat_server.chat_requests)  # sent at once
    assert len(asked) == 2
    for question in asked:
        assert "Human: hi\nAssistant: hello\nHuman: help me" in question
        assert default_constitution().principle("respect").comparison in question
    assert sum("(A) a polite reply\n\n(B) no\n" in q for q in asked) == 1
    assert sum("(A) no\n\n(B) a polite reply\n" in q for q in asked) == 1
