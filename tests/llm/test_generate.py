"""Generating with an arm and storing it, on SQLite and PostgreSQL, against the chat server."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from prefloop.errors import InvalidInputError
from prefloop.llm import (
    GenerationParams,
    GenerationRequest,
    OpenAIChatBackend,
    RetryPolicy,
    generate_batch,
    generate_for_arm,
    render_template,
    template_fields,
)
from prefloop.store import BanditDecision, Generation, Store
from prefloop.store.repo import create_arm, get_or_create_task
from tests.support.chat_server import ChatServer, Fail

TEMPLATE = "Write a diary entry about {place} with {company}, feeling {mood}."
INPUTS = {"place": "Busan", "company": "family", "mood": "happy"}


def backend_for(server: ChatServer) -> OpenAIChatBackend:
    return OpenAIChatBackend(
        base_url=server.url,
        api_key="k",
        model=server.model,
        timeout=5.0,
        retry=RetryPolicy(max_retries=1, backoff_initial=0.01),
    )


def setup_task(store: Store) -> None:
    with store.session() as s:
        task = get_or_create_task(s, "diary", input_fields=["place", "company", "mood"])
        create_arm(s, task, "a", template=TEMPLATE, labels=["production"])
        create_arm(
            s,
            task,
            "b",
            template="Diary: {place}",
            params={"system": "You write diaries.", "temperature": 0.1, "stop": ["END"]},
        )


def count_generations(store: Store) -> int:
    with store.session(readonly=True) as s:
        return int(s.scalar(select(func.count()).select_from(Generation)) or 0)


# -- templates ------------------------------------------------------------------------------
def test_render_template_fills_fields_and_keeps_doubled_braces() -> None:
    assert render_template(TEMPLATE, INPUTS) == (
        "Write a diary entry about Busan with family, feeling happy."
    )
    assert render_template("{{json}} {n:>3}", {"n": 7}) == "{json}   7"
    assert template_fields("{b} {a} {b}") == ["b", "a"]


def test_a_missing_field_is_named() -> None:
    message = r"needs input field\(s\) mood.*given: company, place"
    with pytest.raises(InvalidInputError, match=message):
        render_template(TEMPLATE, {"place": "Seoul", "company": "alone"}, arm_name="a")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("about {place", "malformed"),
        ("about place}", "malformed"),
        ("about {}", "not a plain field name"),
        ("about {place.__class__}", "not a plain field name"),
        ("about {place[0]}", "not a plain field name"),
    ],
)
def test_malformed_templates_are_refused(template: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        render_template(template, {"place": "Seoul"})


# -- generate_for_arm -----------------------------------------------------------------------
def test_a_generation_is_stored_with_prompt_output_tokens_and_how_the_arm_was_chosen(
    store: Store, chat_server: ChatServer
) -> None:
    setup_task(store)
    with store.session() as s:
        task = get_or_create_task(s, "diary")
        arm = task.arms[0]
        decision = BanditDecision(task_id=task.id, policy="ucb1", arm_id=arm.id, propensity=0.25)
        s.add(decision)
        s.flush()
        generation = generate_for_arm(
            s,
            task,
            arm,
            INPUTS,
            backend_for(chat_server),
            GenerationParams(max_tokens=50),
            decision=decision,
            end_user="user-1",
            context={"device": "phone"},
        )
        generation_id, decision_id = generation.id, decision.id

    with store.session(readonly=True) as s:
        stored = s.get(Generation, generation_id)
        assert stored is not None
        assert stored.status == "ok" and stored.error is None
        assert stored.prompt == render_template(TEMPLATE, INPUTS)
        assert stored.output == "echo: " + stored.prompt
        assert stored.input == INPUTS
        assert stored.model == chat_server.model
        assert stored.prompt_tokens == len(stored.prompt.split())
        assert stored.completion_tokens == len(stored.output.split())
        assert stored.latency_ms is not None and stored.latency_ms > 0
        assert (stored.decision_id, stored.policy, stored.propensity) == (decision_id, "ucb1", 0.25)
        assert (stored.end_user, stored.context) == ("user-1", {"device": "phone"})
        assert stored.reward is None


def test_arm_params_give_the_system_message_and_override_sampling(
    store: Store, chat_server: ChatServer
) -> None:
    setup_task(store)
    with store.session() as s:
        task = get_or_create_task(s, "diary")
        generate_for_arm(
            s,
            task,
            task.arms[1],
            INPUTS,
            backend_for(chat_server),
            GenerationParams(max_tokens=50, temperature=0.9),
        )
    (seen,) = chat_server.chat_requests
    assert seen.body["messages"] == [
        {"role": "system", "content": "You write diaries."},
        {"role": "user", "content": "Diary: Busan"},
    ]
    assert (seen.body["temperature"], seen.body["max_tokens"], seen.body["stop"]) == (
        0.1,
        50,
        ["END"],
    )


@pytest.mark.parametrize("status", [400, 503])
def test_a_failed_call_is_stored_as_failed_without_reward(
    store: Store, chat_server: ChatServer, status: int
) -> None:
    setup_task(store)
    chat_server.fail_next(status, times=5)
    with store.session() as s:
        task = get_or_create_task(s, "diary")
        generation = generate_for_arm(
            s, task, task.arms[0], INPUTS, backend_for(chat_server), GenerationParams()
        )
        generation_id = generation.id
    with store.session(readonly=True) as s:
        stored = s.get(Generation, generation_id)
        assert stored is not None
        assert stored.status == "failed"
        assert stored.output is None and stored.reward is None
        assert stored.error is not None and str(status) in stored.error
        assert stored.error.startswith("LLMRequestError" if status == 400 else "LLMServerError")
        assert stored.prompt == render_template(TEMPLATE, INPUTS)
        assert stored.model == chat_server.model, "one naming for failed and ok generations"


def test_bad_input_stores_nothing_and_calls_no_llm(store: Store, chat_server: ChatServer) -> None:
    setup_task(store)
    with store.session() as s:
        task = get_or_create_task(s, "diary")
        with pytest.raises(InvalidInputError, match="needs input field"):
            generate_for_arm(
                s,
                task,
                task.arms[0],
                {"place": "Seoul"},
                backend_for(chat_server),
                GenerationParams(),
            )
        other = get_or_create_task(s, "other")
        with pytest.raises(InvalidInputError, match="belongs to another task"):
            generate_for_arm(
                s, other, task.arms[0], INPUTS, backend_for(chat_server), GenerationParams()
            )
        decision = BanditDecision(
            task_id=task.id, policy="p", arm_id=task.arms[1].id, propensity=0.5
        )
        s.add(decision)
        s.flush()
        with pytest.raises(InvalidInputError, match="chose arm id"):
            generate_for_arm(
                s,
                task,
                task.arms[0],
                INPUTS,
                backend_for(chat_server),
                GenerationParams(),
                decision=decision,
            )
        with pytest.raises(InvalidInputError, match="propensity"):
            generate_for_arm(
                s,
                task,
                task.arms[0],
                INPUTS,
                backend_for(chat_server),
                GenerationParams(),
                propensity=1.5,
            )
    assert count_generations(store) == 0
    assert chat_server.chat_requests == []


def test_a_batch_stores_successes_and_failures_in_order(
    store: Store, chat_server: ChatServer
) -> None:
    setup_task(store)

    def responder(messages: list[dict[str, object]]) -> str | Fail:
        text = str(messages[-1]["content"])
        return Fail(400) if "Daegu" in text else f"diary of {text}"

    chat_server.responder = responder
    places = ["Seoul", "Daegu", "Busan", "Yeosu"]
    with store.session() as s:
        task = get_or_create_task(s, "diary")
        requests = [
            GenerationRequest(
                task.arms[i % 2], {**INPUTS, "place": place}, policy="random", propensity=0.5
            )
            for i, place in enumerate(places)
        ]
        generations = generate_batch(
            s, task, requests, backend_for(chat_server), GenerationParams()
        )
        rows = [(g.status, g.arm_id, g.input["place"], g.output, g.reward) for g in generations]
    assert [r[2] for r in rows] == places
    assert [r[0] for r in rows] == ["ok", "failed", "ok", "ok"]
    assert rows[1][3] is None and all(r[4] is None for r in rows)
    assert rows[2][3] == "diary of " + render_template(TEMPLATE, {**INPUTS, "place": "Busan"})
    assert rows[3][3] == "diary of Diary: Yeosu"
    assert count_generations(store) == 4
    assert len(chat_server.chat_requests) == 4  # a 400 is not retried


def test_bad_sampling_params_on_an_arm_are_named(store: Store, chat_server: ChatServer) -> None:
    setup_task(store)
    with store.session() as s:
        task = get_or_create_task(s, "diary")
        arm = create_arm(s, task, "c", template="{place}", params={"max_tokens": "many"})
        with pytest.raises(InvalidInputError, match="arm 'c' has bad sampling params"):
            generate_for_arm(s, task, arm, INPUTS, backend_for(chat_server), GenerationParams())
    assert chat_server.chat_requests == []


def test_a_batch_with_one_bad_input_stores_nothing(store: Store, chat_server: ChatServer) -> None:
    setup_task(store)
    with store.session() as s:
        task = get_or_create_task(s, "diary")
        requests = [GenerationRequest(task.arms[0], INPUTS), GenerationRequest(task.arms[0], {})]
        with pytest.raises(InvalidInputError, match="needs input field"):
            generate_batch(s, task, requests, backend_for(chat_server), GenerationParams())
    assert count_generations(store) == 0
    assert chat_server.chat_requests == []
