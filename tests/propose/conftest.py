"""Fixtures of the proposer tests: the local chat server stands in for the LLM."""

from tests.support.chat_server import chat_server

__all__ = ["chat_server"]
