"""Checks on chat messages shared by the backends (bad input is the caller's error)."""

from __future__ import annotations

from collections.abc import Sequence

from prefloop.errors import InvalidInputError
from prefloop.llm.base import GenerationParams, Message

ROLES = ("system", "user", "assistant")


def check_conversations(batch: Sequence[Sequence[Message]]) -> None:
    """Raise :class:`InvalidInputError` naming the first malformed message."""
    for i, messages in enumerate(batch):
        if isinstance(messages, str | bytes) or not messages:
            raise InvalidInputError(
                f"conversation {i} must be a non-empty list of messages like "
                "{'role': 'user', 'content': '...'}"
            )
        for j, message in enumerate(messages):
            if not isinstance(message, dict):
                raise InvalidInputError(f"conversation {i}, message {j} is not a dict: {message!r}")
            if message.get("role") not in ROLES:
                raise InvalidInputError(
                    f"conversation {i}, message {j}: role {message.get('role')!r} is not one of "
                    f"{', '.join(ROLES)}"
                )
            if not isinstance(message.get("content"), str):
                raise InvalidInputError(
                    f"conversation {i}, message {j}: content must be a string, got "
                    f"{type(message.get('content')).__name__}"
                )


def check_params(params: GenerationParams) -> None:
    if params.max_tokens < 1:
        raise InvalidInputError(f"max_tokens must be >= 1, got {params.max_tokens}")
    if params.temperature < 0:
        raise InvalidInputError(f"temperature must be >= 0, got {params.temperature}")
    if not 0 < params.top_p <= 1:
        raise InvalidInputError(f"top_p must be in (0, 1], got {params.top_p}")
    if any(not isinstance(s, str) or not s for s in params.stop):
        raise InvalidInputError(f"stop strings must be non-empty strings, got {params.stop!r}")
