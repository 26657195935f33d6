"""The one interface every LLM backend implements, and its typed errors.

A backend turns chat messages into a :class:`Completion` or raises an :class:`LLMError`
subclass. It never returns an empty or made-up text on failure: callers record a failed
generation (no reward) when they catch :class:`LLMError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypedDict, runtime_checkable

from prefloop.errors import PrefloopError


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Sampling settings shared by all backends."""

    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    cost: float | None = None
    finish_reason: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


class LLMError(PrefloopError):
    """An LLM call did not produce a usable answer."""


class LLMTimeoutError(LLMError):
    """The backend did not answer in time (after retries)."""


class LLMRateLimitError(LLMError):
    """The backend kept answering 429 (after retries)."""


class LLMServerError(LLMError):
    """The backend answered 5xx (after retries) or something that is not a completion."""


class LLMRequestError(LLMError):
    """The backend rejected the request (4xx other than 429): retrying will not help."""


def model_name(backend: ChatBackend) -> str:
    """The model a backend calls, without the backend's kind (``openai:smollm2`` → ``smollm2``):
    what a generation stores as its ``model``, whether the call succeeded (then the server's
    own name for it) or failed, so the two can be counted together."""
    return backend.name.split(":", 1)[-1]


@runtime_checkable
class ChatBackend(Protocol):
    """Anything that completes chat messages. Implementations live in ``prefloop.llm``."""

    name: str

    def complete(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        """One completion, or an :class:`LLMError`."""
        ...

    def complete_batch(
        self, batch: Sequence[Sequence[Message]], params: GenerationParams
    ) -> list[Completion | LLMError]:
        """One result per conversation, in order; a failure is returned as its error."""
        ...
