"""LLM backends behind one interface (:class:`ChatBackend`)."""

from prefloop.llm.base import (
    ChatBackend,
    Completion,
    GenerationParams,
    LLMError,
    LLMRateLimitError,
    LLMRequestError,
    LLMServerError,
    LLMTimeoutError,
    Message,
)

__all__ = [
    "ChatBackend",
    "Completion",
    "GenerationParams",
    "LLMError",
    "LLMRateLimitError",
    "LLMRequestError",
    "LLMServerError",
    "LLMTimeoutError",
    "Message",
]
