"""The OpenAI-compatible chat backend: OpenAI, vLLM, Ollama and llama.cpp servers.

The official ``openai`` client makes the requests; its own retries are off and this module
retries instead (timeouts, 429, 5xx, connection errors) with capped, jittered exponential
backoff, so that the number of attempts and the errors raised are prefloop's.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from prefloop.errors import InvalidInputError
from prefloop.llm._messages import check_conversations, check_params
from prefloop.llm._retry import RetryPolicy
from prefloop.llm.base import (
    Completion,
    GenerationParams,
    LLMError,
    LLMRateLimitError,
    LLMRequestError,
    LLMServerError,
    LLMTimeoutError,
    Message,
)
from prefloop.llm.settings import OpenAISettings, load_openai_settings

_RETRYABLE_STATUS = frozenset({408, 409})
_BODY_PREVIEW_CHARS = 200


class _Retryable(Exception):
    """An attempt failed in a way that a retry may fix; carries the error to raise at the end."""

    def __init__(self, error: LLMError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class OpenAIChatBackend:
    """Chat completions over HTTP with the ``openai`` client.

    ``timeout`` is per attempt (seconds without an answer); a call makes at most
    ``1 + retry.max_retries`` attempts. ``complete_batch`` sends ``batch_workers`` requests at
    a time. Build one from the environment with :meth:`from_settings`.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        model: str,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        batch_workers: int = 4,
        input_cost_per_mtok: float | None = None,
        output_cost_per_mtok: float | None = None,
        seed: int | None = None,
    ) -> None:
        if timeout <= 0:
            raise InvalidInputError(f"timeout must be > 0 seconds, got {timeout}")
        if batch_workers < 1:
            raise InvalidInputError(f"batch_workers must be >= 1, got {batch_workers}")
        if not model:
            raise InvalidInputError("model must be a non-empty name, e.g. gpt-4o-mini")
        self.name = f"openai:{model}"
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.batch_workers = batch_workers
        self.input_cost_per_mtok = input_cost_per_mtok
        self.output_cost_per_mtok = output_cost_per_mtok
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._client = openai.OpenAI(
            base_url=self.base_url, api_key=api_key, timeout=timeout, max_retries=0
        )

    @classmethod
    def from_settings(cls, settings: OpenAISettings | None = None) -> OpenAIChatBackend:
        """A backend configured by ``PREFLOOP_LLM_*`` (or the given settings)."""
        s = settings if settings is not None else load_openai_settings()
        return cls(
            base_url=s.base_url,
            api_key=s.api_key.get_secret_value(),
            model=s.model,
            timeout=s.timeout,
            retry=RetryPolicy(
                max_retries=s.max_retries,
                backoff_initial=s.backoff_initial,
                backoff_max=s.backoff_max,
            ),
            batch_workers=s.batch_workers,
            input_cost_per_mtok=s.input_cost_per_mtok,
            output_cost_per_mtok=s.output_cost_per_mtok,
        )

    # -- ChatBackend -------------------------------------------------------------------------
    def complete(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        check_conversations([messages])
        check_params(params)
        return self._complete(messages, params)

    def complete_batch(
        self, batch: Sequence[Sequence[Message]], params: GenerationParams
    ) -> list[Completion | LLMError]:
        check_conversations(batch)
        check_params(params)
        if not batch:
            return []

        def one(messages: Sequence[Message]) -> Completion | LLMError:
            try:
                return self._complete(messages, params)
            except LLMError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=min(self.batch_workers, len(batch))) as pool:
            return list(pool.map(one, batch))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAIChatBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one call with retries ---------------------------------------------------------------
    def _complete(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        request = self._request(messages, params)
        started = time.perf_counter()
        attempts = self.retry.max_retries + 1
        for attempt in range(attempts):
            try:
                response = self._attempt(request)
            except _Retryable as failure:
                if attempt + 1 == attempts:
                    raise type(failure.error)(
                        f"{failure.error} (gave up after {attempts} attempt"
                        f"{'s' if attempts > 1 else ''})"
                    ) from None
                with self._rng_lock:
                    wait = self.retry.delay(attempt, self._rng, failure.retry_after)
                time.sleep(wait)
                continue
            latency_ms = (time.perf_counter() - started) * 1000.0
            return self._completion(response, latency_ms, attempts=attempt + 1)
        raise AssertionError("unreachable: the loop returns or raises")

    def _request(self, messages: Sequence[Message], params: GenerationParams) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            request["seed"] = params.seed
        if params.stop:
            request["stop"] = list(params.stop)
        return request

    def _attempt(self, request: dict[str, Any]) -> object:
        where = f"{self.base_url}/chat/completions"
        try:
            return self._client.chat.completions.create(**request)
        except openai.APITimeoutError:
            raise _Retryable(
                LLMTimeoutError(
                    f"{where} did not answer within {self.timeout:g} s; raise "
                    "PREFLOOP_LLM_TIMEOUT or check the server's load"
                )
            ) from None
        except openai.APIConnectionError as exc:
            raise _Retryable(
                LLMServerError(
                    f"{where} is unreachable (could not connect: {exc}); is the server running?"
                )
            ) from None
        except openai.APIStatusError as exc:
            raise self._status_error(exc, where) from None
        except openai.OpenAIError as exc:  # e.g. a response that fails validation
            raise LLMServerError(
                f"{where} answered something that is not a completion: {exc}"
            ) from exc

    def _status_error(self, exc: openai.APIStatusError, where: str) -> Exception:
        status = exc.status_code
        detail = _error_detail(exc)
        if status == 429:
            return _Retryable(
                LLMRateLimitError(f"{where} answered 429 (rate limited): {detail}"),
                retry_after=_retry_after(exc),
            )
        if status >= 500 or status in _RETRYABLE_STATUS:
            return _Retryable(
                LLMServerError(f"{where} answered {status}: {detail}"),
                retry_after=_retry_after(exc),
            )
        hint = ""
        if status in (401, 403):
            hint = "; check PREFLOOP_LLM_API_KEY"
        elif status == 404:
            hint = f"; check PREFLOOP_LLM_BASE_URL and that the server has model {self.model!r}"
        return LLMRequestError(f"{where} rejected the request with {status}: {detail}{hint}")

    def _completion(self, response: object, latency_ms: float, *, attempts: int) -> Completion:
        where = f"{self.base_url}/chat/completions"
        if not isinstance(response, ChatCompletion):
            preview = str(response)[:_BODY_PREVIEW_CHARS]
            raise LLMServerError(f"{where} answered a body that is not JSON: {preview!r}")
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise LLMServerError(f"{where} answered a completion without choices")
        message = getattr(choices[0], "message", None)
        text = getattr(message, "content", None)
        if not isinstance(text, str):
            raise LLMServerError(f"{where} answered a choice without a text message")
        usage = getattr(response, "usage", None)
        prompt_tokens = _count(getattr(usage, "prompt_tokens", None))
        completion_tokens = _count(getattr(usage, "completion_tokens", None))
        return Completion(
            text=text,
            model=str(getattr(response, "model", None) or self.model),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_ms=latency_ms,
            cost=self._cost(prompt_tokens, completion_tokens),
            finish_reason=getattr(choices[0], "finish_reason", None),
            extra={"attempts": attempts, "id": getattr(response, "id", None)},
        )

    def _cost(self, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
        if self.input_cost_per_mtok is None or self.output_cost_per_mtok is None:
            return None
        if prompt_tokens is None or completion_tokens is None:
            return None
        return (
            prompt_tokens * self.input_cost_per_mtok + completion_tokens * self.output_cost_per_mtok
        ) / 1e6


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and value >= 0 else None


def _error_detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:_BODY_PREVIEW_CHARS]
    return str(exc.message)[:_BODY_PREVIEW_CHARS]


def _retry_after(exc: openai.APIStatusError) -> float | None:
    raw = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return float(raw) if raw is not None else None
    except ValueError:  # an HTTP date: not worth parsing, the backoff applies
        return None
