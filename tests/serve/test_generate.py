"""/v1/generate against a real chat-completions server on 127.0.0.1 (tests/support/chat_server)."""

from __future__ import annotations

import pytest

from prefloop.store import BanditDecision, Generation
from tests.serve.conftest import AppFactory, chat_backend, row_counts
from tests.support.chat_server import ChatServer

BODY = {"task": "diary", "inputs": {"place": "Jeju", "company": "my sister"}, "end_user": "u1"}


def test_generate_calls_the_backend_and_stores_the_generation(
    make_api: AppFactory, chat_server: ChatServer
) -> None:
    api = make_api(backend=chat_backend(chat_server))
    api.seed()
    chat_server.reply_next("A windy walk on Jeju with my sister.")
    answer = api.call("POST", "/v1/generate", "client", json={**BODY, "params": {"max_tokens": 50}})
    assert answer.status_code == 200, answer.text
    generation = answer.json()
    assert generation["status"] == "ok"
    assert generation["output"] == "A windy walk on Jeju with my sister."
    assert generation["model"] == chat_server.model and generation["completion_tokens"] == 8
    sent = chat_server.chat_requests[-1]
    assert sent.messages[-1]["content"] == generation["prompt"] and "Jeju" in generation["prompt"]
    assert sent.body["max_tokens"] == 50
    with api.store.session(readonly=True) as session:
        stored = session.get(Generation, generation["id"])
        assert stored is not None and stored.decision_id == generation["decision_id"]
        assert session.get(BanditDecision, generation["decision_id"]) is not None
    rated = api.rate(generation["id"], 1)
    assert rated.status_code == 201 and rated.json()["reward_changes"][0]["new"] == 1.0


def test_a_failed_llm_call_is_a_502_and_a_failed_generation_without_reward(
    make_api: AppFactory, chat_server: ChatServer
) -> None:
    api = make_api(backend=chat_backend(chat_server))
    api.seed()
    chat_server.fail_next(503, times=2)  # the first try and the one retry
    answer = api.call("POST", "/v1/generate", "client", json=BODY)
    assert answer.status_code == 502, answer.text
    failure = answer.json()
    assert failure["error"] == "llm_failed" and "LLMServerError" in failure["detail"]
    with api.store.session(readonly=True) as session:
        stored = session.get(Generation, failure["generation_id"])
        assert stored is not None
        assert (stored.status, stored.output, stored.reward) == ("failed", None, None)
        assert stored.decision_id == failure["decision_id"] and "503" in (stored.error or "")
    refused = api.rate(failure["generation_id"], -1)
    assert refused.status_code == 409 and "failed" in refused.json()["detail"]
    stats = api.call("GET", "/v1/stats?task=diary").json()
    assert sum(arm["count"] for arm in stats["arms"]) == 0
    assert 'prefloop_llm_failures_total{task="diary"' in api.client.get("/metrics").text


@pytest.mark.parametrize("garbage", ["not-json", "empty-choices"])
def test_garbage_from_the_backend_is_a_failure_too(
    make_api: AppFactory, chat_server: ChatServer, garbage: str
) -> None:
    api = make_api(backend=chat_backend(chat_server))
    api.seed()
    chat_server.garbage_next(garbage, times=2)  # type: ignore[arg-type]
    answer = api.call("POST", "/v1/generate", "client", json=BODY)
    assert answer.status_code == 502, answer.text


def test_bad_input_to_generate_calls_nothing_and_writes_nothing(
    make_api: AppFactory, chat_server: ChatServer
) -> None:
    api = make_api(backend=chat_backend(chat_server))
    api.seed()
    before = row_counts(api.store)
    missing = api.call("POST", "/v1/generate", "client", json={"task": "diary", "inputs": {}})
    assert missing.status_code == 409 and "place" in missing.json()["detail"]
    bad_params = api.call("POST", "/v1/generate", "client", json={**BODY, "params": {"top_p": 0}})
    assert bad_params.status_code == 422 and "top_p" in bad_params.json()["detail"]
    assert row_counts(api.store) == before and chat_server.chat_requests == []


def test_generate_without_a_configured_backend_is_503(
    make_api: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFLOOP_LLM_API_KEY", raising=False)
    api = make_api(llm_backend="openai")
    api.seed()
    before = row_counts(api.store)
    answer = api.call("POST", "/v1/generate", "client", json=BODY)
    assert answer.status_code == 503 and "PREFLOOP_LLM_API_KEY" in answer.json()["detail"]
    assert row_counts(api.store) == before
