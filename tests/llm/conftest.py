"""Fixtures of the LLM tests: the local chat server and a tiny random chat model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.llm.tiny_model import build_tiny_chat_model
from tests.support.chat_server import chat_server

__all__ = ["chat_server"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a tiny randomly initialised Llama chat model and its tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-chat-model")
    build_tiny_chat_model(folder)
    return folder
