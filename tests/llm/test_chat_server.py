"""The test chat server speaks the protocol the official client expects."""

from __future__ import annotations

import time

import openai
import pytest

from tests.support.chat_server import ChatServer, Reply


def test_the_official_client_lists_models_and_gets_completions(chat_server: ChatServer) -> None:
    client = openai.OpenAI(base_url=chat_server.url, api_key="k", max_retries=0)
    assert [m.id for m in client.models.list()] == [chat_server.model]

    chat_server.script(Reply("one two three four five"), "cut here STOP rest")
    long = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], max_tokens=3
    )
    stopped = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stop=["STOP"]
    )
    echoed = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "say this"}]
    )
    assert (long.choices[0].message.content, long.choices[0].finish_reason) == (
        "one two three",
        "length",
    )
    assert stopped.choices[0].message.content == "cut here "
    assert echoed.choices[0].message.content == "echo: say this"
    assert echoed.usage is not None and echoed.usage.prompt_tokens == 2
    assert chat_server.pending() == 0
    assert [r.method for r in chat_server.requests] == ["GET", "POST", "POST", "POST"]


def test_servers_are_independent_and_close_cleanly() -> None:
    started = time.perf_counter()
    with ChatServer.start(responder=lambda messages: "first") as one, ChatServer.start() as two:
        assert one.port != two.port
        one.stall_next(30.0)  # a stalled handler must not keep close() waiting
        client = openai.OpenAI(base_url=one.url, api_key="k", max_retries=0, timeout=0.2)
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert len(two.requests) == 0
    assert time.perf_counter() - started < 10.0


def test_a_responder_that_raises_answers_500_and_keeps_the_error() -> None:
    def broken(messages: list[dict[str, object]]) -> str:
        raise KeyError("oops")

    with ChatServer.start(responder=broken) as server:
        client = openai.OpenAI(base_url=server.url, api_key="k", max_retries=0)
        with pytest.raises(openai.InternalServerError, match="responder raised"):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert [type(e) for e in server.responder_errors] == [KeyError]
