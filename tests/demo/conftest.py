"""Fixtures of the demo tests: a tiny local chat model and a scripted OpenAI-compatible server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from prefloop.demo import DIARY
from prefloop.llm import LocalChatBackend
from tests.llm.tiny_model import build_tiny_chat_model
from tests.support.chat_server import ChatServer

BEST_MARK = "vivid"
"""Prompts containing this word get perfect diaries from :func:`diary_writer`."""

PROPOSALS = (
    "<PROMPT>Write a vivid diary entry about my day at {place} {company}; I felt {mood}.</PROMPT>\n"
    "<PROMPT>Write a diary entry about {place} and {company}.</PROMPT>\n"
    "<PROMPT>Write a short diary entry in the first person about my day. I went to {place} "
    "{company} and I felt {mood}. Mention the place, who I was with and how I felt. Write four "
    "or five sentences. Reply with the diary entry only.</PROMPT>"
)
"""The server's answer to the proposer: one usable template, one without {mood}, one copy of
the hand-written prompt (a near-duplicate)."""


def _value(field: str, prompt: str) -> str:
    found = [v for v in DIARY.values[field] if v in prompt]
    assert found, f"no {field} in the prompt {prompt!r}"
    return max(found, key=len)


def diary_writer(messages: list[dict[str, Any]]) -> str:
    """A deterministic 'LLM': how good its diary is depends on the prompt it was given.

    vivid prompts → a clean diary (+1); cheerful → forgets the mood (+0.5); a child's diary →
    too short and forgets the company and mood (-1); everything else → meta text (-1).
    """
    prompt = str(messages[-1]["content"])
    if "<PROMPT>" in prompt or "prompt engineer" in str(messages[0]["content"]):
        return PROPOSALS
    place, company, mood = (_value(f, prompt) for f in ("place", "company", "mood"))
    body = (
        f"Today I went to {place} {company}. We walked for a long time and stopped for lunch at "
        "a small place by the road. The weather was mild and the light in the afternoon was "
        "soft and golden. We talked about old times and made plans for the summer. In the "
        "evening we took the slow train home and watched the fields go by."
    )
    if BEST_MARK in prompt:
        return f"{body} I felt {mood} all day."
    if "cheerful" in prompt:
        return body
    if "child" in prompt:
        return f"I went to {place}. It was fun."
    return "Here is your diary entry:\n\n" + body


@pytest.fixture(scope="session")
def tiny_backend(tmp_path_factory: pytest.TempPathFactory) -> LocalChatBackend:
    """A tiny randomly initialised chat model (random words, 128-token context), batched."""
    folder: Path = tmp_path_factory.mktemp("tiny-chat-model")
    build_tiny_chat_model(folder)
    return LocalChatBackend.from_pretrained(folder, batch_size=8)


@pytest.fixture
def diary_server() -> Iterator[ChatServer]:
    with ChatServer.start(responder=diary_writer, model="diary-writer") as server:
        yield server


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z']+", text)
