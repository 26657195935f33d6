"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import random
import socket
import time

import pytest

from prefloop.errors import InvalidInputError
from prefloop.llm import (
    ChatBackend,
    GenerationParams,
    LLMError,
    LLMRateLimitError,
    LLMRequestError,
    LLMServerError,
    LLMTimeoutError,
    OpenAIChatBackend,
    OpenAISettings,
    RetryPolicy,
    make_backend,
)
from tests.support.chat_server import ChatServer, Fail, Reply, Stall

HELLO = [{"role": "user", "content": "hello there"}]
FAST_RETRY = RetryPolicy(max_retries=3, backoff_initial=0.01, backoff_max=0.05)


def backend_for(
    server: ChatServer, *, timeout: float = 5.0, retry: RetryPolicy = FAST_RETRY, **kw: object
) -> OpenAIChatBackend:
    return OpenAIChatBackend(
        base_url=server.url,
        api_key="test-key",
        model=server.model,
        timeout=timeout,
        retry=retry,
        seed=0,
        **kw,  # type: ignore[arg-type]
    )


def test_a_completion_has_text_tokens_latency_and_the_request_is_what_was_asked(
    chat_server: ChatServer,
) -> None:
    chat_server.responder = lambda messages: Reply("one two three", prompt_tokens=7)
    backend = backend_for(chat_server, input_cost_per_mtok=1.0, output_cost_per_mtok=2.0)
    assert isinstance(backend, ChatBackend)
    params = GenerationParams(max_tokens=12, temperature=0.3, top_p=0.9, seed=5, stop=("END",))

    completion = backend.complete([{"role": "system", "content": "be brief"}, *HELLO], params)

    assert completion.text == "one two three"
    assert completion.model == chat_server.model
    assert (completion.prompt_tokens, completion.completion_tokens) == (7, 3)
    assert completion.cost == pytest.approx((7 * 1.0 + 3 * 2.0) / 1e6)
    assert completion.latency_ms is not None and completion.latency_ms > 0
    assert completion.finish_reason == "stop"
    assert completion.extra["attempts"] == 1
    (seen,) = chat_server.chat_requests
    assert seen.headers["authorization"] == "Bearer test-key"
    assert seen.body["messages"] == [{"role": "system", "content": "be brief"}, *HELLO]
    assert seen.body["model"] == chat_server.model
    assert (seen.body["max_tokens"], seen.body["temperature"], seen.body["top_p"]) == (12, 0.3, 0.9)
    assert (seen.body["seed"], seen.body["stop"]) == (5, ["END"])


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_failures_are_retried_until_success(chat_server: ChatServer, status: int) -> None:
    chat_server.fail_next(status, times=2)
    completion = backend_for(chat_server).complete(HELLO, GenerationParams())
    assert completion.text == "echo: hello there"
    assert completion.extra["attempts"] == 3
    assert len(chat_server.chat_requests) == 3


@pytest.mark.parametrize(
    ("status", "error"),
    [(429, LLMRateLimitError), (500, LLMServerError), (503, LLMServerError)],
)
def test_persistent_failures_raise_a_typed_error_after_max_retries(
    chat_server: ChatServer, status: int, error: type[LLMError]
) -> None:
    chat_server.fail_next(status, times=10)
    backend = backend_for(chat_server, retry=RetryPolicy(max_retries=2, backoff_initial=0.01))
    with pytest.raises(error, match=f"{status}.*gave up after 3 attempts"):
        backend.complete(HELLO, GenerationParams())
    assert len(chat_server.chat_requests) == 3


def test_backoff_waits_at_least_the_servers_retry_after(chat_server: ChatServer) -> None:
    chat_server.script(Fail(429, retry_after=0.3), Fail(503, retry_after=0.3))
    backend = backend_for(
        chat_server, retry=RetryPolicy(max_retries=2, backoff_initial=0.0, backoff_max=1.0)
    )
    backend.complete(HELLO, GenerationParams())
    times = [r.time for r in chat_server.chat_requests]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.3 and times[2] - times[1] >= 0.3


def test_a_rejected_request_is_not_retried(chat_server: ChatServer) -> None:
    chat_server.fail_next(400)
    with pytest.raises(LLMRequestError, match="400"):
        backend_for(chat_server).complete(HELLO, GenerationParams())
    assert len(chat_server.chat_requests) == 1


def test_an_unauthorised_request_says_to_check_the_key(chat_server: ChatServer) -> None:
    chat_server.fail_next(401)
    with pytest.raises(LLMRequestError, match="PREFLOOP_LLM_API_KEY"):
        backend_for(chat_server).complete(HELLO, GenerationParams())
    assert len(chat_server.chat_requests) == 1


def test_a_stalled_server_times_out_within_the_configured_timeout(
    chat_server: ChatServer,
) -> None:
    chat_server.stall_next(10.0, times=5)
    backend = backend_for(
        chat_server, timeout=0.4, retry=RetryPolicy(max_retries=1, backoff_initial=0.01)
    )
    started = time.perf_counter()
    with pytest.raises(LLMTimeoutError, match=r"did not answer within 0\.4 s"):
        backend.complete(HELLO, GenerationParams())
    elapsed = time.perf_counter() - started
    assert 0.8 <= elapsed < 0.8 + 1.5  # two attempts of 0.4 s, a short backoff, slack
    assert len(chat_server.chat_requests) == 2


def test_a_timed_out_attempt_is_retried_and_the_next_answer_used(chat_server: ChatServer) -> None:
    chat_server.script(Stall(10.0), Fail(429), Fail(502), Reply("third time lucky"))
    backend = backend_for(chat_server, timeout=0.4)
    started = time.perf_counter()
    completion = backend.complete(HELLO, GenerationParams())
    assert completion.text == "third time lucky"
    assert completion.extra["attempts"] == 4
    assert len(chat_server.chat_requests) == 4
    assert 0.4 <= time.perf_counter() - started < 0.4 + 2.0  # one timeout, short backoffs


def test_a_slow_answer_within_the_timeout_succeeds(chat_server: ChatServer) -> None:
    chat_server.script(Stall(0.2, then="late but fine"))
    completion = backend_for(chat_server, timeout=3.0).complete(HELLO, GenerationParams())
    assert completion.text == "late but fine"
    assert completion.latency_ms is not None and completion.latency_ms >= 200


@pytest.mark.parametrize("kind", ["not-json", "no-choices", "empty-choices", "no-message"])
def test_a_200_that_is_not_a_completion_is_a_server_error(
    chat_server: ChatServer, kind: str
) -> None:
    chat_server.garbage_next(kind)  # type: ignore[arg-type]
    with pytest.raises(LLMServerError, match=r"not JSON|without choices|without a text"):
        backend_for(chat_server).complete(HELLO, GenerationParams())
    assert len(chat_server.chat_requests) == 1


def test_an_unreachable_server_is_a_server_error_after_retries() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    backend = OpenAIChatBackend(
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key="k",
        model="m",
        timeout=2.0,
        retry=RetryPolicy(max_retries=1, backoff_initial=0.01),
    )
    with pytest.raises(LLMServerError, match=r"unreachable \(could not connect.*2 attempts"):
        backend.complete(HELLO, GenerationParams())


def test_complete_batch_keeps_order_and_returns_failures_as_errors(
    chat_server: ChatServer,
) -> None:
    def responder(messages: list[dict[str, object]]) -> str | Fail:
        text = str(messages[-1]["content"])
        return Fail(400, "refused") if "bad" in text else f"ok {text}"

    chat_server.responder = responder
    batch = [
        [{"role": "user", "content": f"{word} {i}"}]
        for i, word in enumerate(["good", "bad", "good", "good", "bad", "good"])
    ]
    results = backend_for(chat_server, batch_workers=3).complete_batch(batch, GenerationParams())

    assert len(results) == 6
    for i, result in enumerate(results):
        if i in (1, 4):
            assert isinstance(result, LLMRequestError)
        else:
            assert not isinstance(result, LLMError)
            assert result.text == f"ok good {i}"
    assert len(chat_server.chat_requests) == 6


def test_malformed_messages_are_refused_before_any_request(chat_server: ChatServer) -> None:
    backend = backend_for(chat_server)
    with pytest.raises(InvalidInputError, match="role 'robot'"):
        backend.complete([{"role": "robot", "content": "x"}], GenerationParams())  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="top_p"):
        backend.complete(HELLO, GenerationParams(top_p=0.0))
    with pytest.raises(InvalidInputError, match="non-empty list"):
        backend.complete_batch([HELLO, []], GenerationParams())
    assert chat_server.chat_requests == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout"),
        ({"batch_workers": 0}, "batch_workers"),
        ({"model": ""}, "model"),
    ],
)
def test_bad_backend_settings_are_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"base_url": "http://127.0.0.1:9/v1", "api_key": "k", "model": "m"}
    with pytest.raises(InvalidInputError, match=message):
        OpenAIChatBackend(**{**args, **kwargs})  # type: ignore[arg-type]


def test_retry_delays_are_jittered_below_a_doubling_capped_ceiling() -> None:
    policy = RetryPolicy(max_retries=10, backoff_initial=0.5, backoff_max=4.0)
    rng = random.Random(0)
    for retry in range(10):
        ceiling = min(4.0, 0.5 * 2**retry)
        draws = [policy.delay(retry, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert max(draws) > 0.8 * ceiling  # the whole range is used, not a constant
    assert policy.delay(0, rng, retry_after=2.0) >= 2.0
    assert policy.delay(0, rng, retry_after=60.0) == 4.0  # capped
    with pytest.raises(InvalidInputError, match="max_retries"):
        RetryPolicy(max_retries=-1)


def test_settings_come_from_the_environment(
    chat_server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFLOOP_LLM_BASE_URL", chat_server.url)
    monkeypatch.setenv("PREFLOOP_LLM_API_KEY", "from-env")
    monkeypatch.setenv("PREFLOOP_LLM_MODEL", "env-model")
    monkeypatch.setenv("PREFLOOP_LLM_TIMEOUT", "2.5")
    monkeypatch.setenv("PREFLOOP_LLM_MAX_RETRIES", "1")
    settings = OpenAISettings()  # type: ignore[call-arg]
    assert (settings.timeout, settings.max_retries) == (2.5, 1)

    backend = make_backend("openai")
    assert isinstance(backend, OpenAIChatBackend)
    chat_server.fail_next(503, times=5)
    with pytest.raises(LLMServerError, match="2 attempts"):
        backend.complete(HELLO, GenerationParams())
    (first, _second) = chat_server.chat_requests
    assert first.headers["authorization"] == "Bearer from-env"
    assert first.body["model"] == "env-model"


def test_a_missing_api_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFLOOP_LLM_API_KEY", raising=False)
    with pytest.raises(InvalidInputError, match="PREFLOOP_LLM_API_KEY is not set"):
        make_backend("openai")
    monkeypatch.setenv("PREFLOOP_LLM_API_KEY", "k")
    monkeypatch.setenv("PREFLOOP_LLM_TIMEOUT", "soon")
    with pytest.raises(InvalidInputError, match="PREFLOOP_LLM_TIMEOUT='soon'"):
        make_backend("openai")
    with pytest.raises(InvalidInputError, match="unknown LLM backend 'gpt'"):
        make_backend("gpt")
