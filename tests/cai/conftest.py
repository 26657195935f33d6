"""Fixtures of the Constitutional-AI tests: the local chat server playing a scripted model."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from prefloop.llm import OpenAIChatBackend, RetryPolicy
from tests.support.chat_server import Behaviour, ChatServer, chat_server

__all__ = ["chat_server"]

_OPTIONS = re.compile(r"\nOptions:\n\(A\) (?P<a>.*)\n\n\(B\) (?P<b>.*)\n\nAnswer with", re.S)
NO_RETRY = RetryPolicy(max_retries=0)


def options(messages: list[dict[str, Any]]) -> tuple[str, str] | None:
    """The two replies of a judge question, or None when the request is not one."""
    found = _OPTIONS.search(str(messages[1]["content"])) if len(messages) > 1 else None
    return (found["a"], found["b"]) if found else None


def prefers(word: str) -> Callable[[str, str], str]:
    """A judge that picks the reply containing ``word`` (and (B) when neither does)."""
    return lambda a, b: "(A)" if word in a and word not in b else "(B)"


def scripted_model(
    judge: Callable[[str, str], Behaviour] = prefers("polite"),
) -> Callable[[list[dict[str, Any]]], Behaviour]:
    """A responder that plays the model for ``cai revise`` and the judge for ``cai label``.

    The answer to prompt P is ``answer to P``; a critique of answer X is ``critique of [X]``;
    the revision of X is ``Revision: better [X]`` (the label ``Revision:`` is for revise to
    strip); a judge question gets ``judge(reply A, reply B)``.
    """

    def respond(messages: list[dict[str, Any]]) -> Behaviour:
        pair = options(messages)
        if pair is not None:
            return judge(*pair)
        last = str(messages[-1]["content"])
        answers = [m["content"] for m in messages if m["role"] == "assistant"]
        if last.endswith("Answer with a short critique of a few sentences."):
            return f"critique of [{answers[-1]}]"
        if last.endswith("Reply with the rewritten answer only, with no title or preamble."):
            return f"Revision: better [{answers[-2]}]"
        return f"answer to {last}"

    return respond


def backend_for(server: ChatServer) -> OpenAIChatBackend:
    """The OpenAI-compatible backend on the test server, without retries (fast failures)."""
    return OpenAIChatBackend(
        base_url=server.url, api_key="test", model=server.model, timeout=10.0, retry=NO_RETRY
    )


@pytest.fixture
def model_server(chat_server: ChatServer) -> ChatServer:
    """The chat server playing :func:`scripted_model`."""
    chat_server.responder = scripted_model()
    return chat_server
