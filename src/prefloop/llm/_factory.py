"""Choosing a backend by name: what the CLI, the service and the demo call."""

from __future__ import annotations

from typing import Literal, get_args

from prefloop.errors import InvalidInputError
from prefloop.llm._local import LocalChatBackend
from prefloop.llm.base import ChatBackend
from prefloop.llm.settings import load_local_settings

BackendKind = Literal["local", "openai"]
BACKEND_KINDS: tuple[str, ...] = get_args(BackendKind)


def make_backend(kind: str) -> ChatBackend:
    """A backend configured from the environment.

    ``"openai"``: :class:`OpenAIChatBackend` from ``PREFLOOP_LLM_*`` (base URL, key, model).
    ``"local"``: :class:`LocalChatBackend` with ``PREFLOOP_LLM_LOCAL_MODEL`` (a model folder)
    or, unset, the packaged SmolLM2-135M-Instruct.
    """
    if kind == "openai":
        from prefloop.llm._openai import OpenAIChatBackend

        return OpenAIChatBackend.from_settings()
    if kind == "local":
        settings = load_local_settings()
        if settings.model is not None:
            return LocalChatBackend.from_pretrained(
                settings.model, batch_size=settings.batch_size, num_threads=settings.threads
            )
        return LocalChatBackend.smollm2(
            batch_size=settings.batch_size, num_threads=settings.threads
        )
    raise InvalidInputError(
        f"unknown LLM backend {kind!r}; choose one of {', '.join(BACKEND_KINDS)}"
    )
