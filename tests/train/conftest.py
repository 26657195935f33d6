"""Fixtures of the training tests: one tiny base model (2 layers over SmolLM2's tokenizer) and
small, fixed training sets with an obvious preference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.tiny_lm import build_tiny_llama

PROMPTS = ("Write about Busan.", "Write about Seoul.", "Write about Jeju.", "Write about Daegu.")
GOOD = "We walked by the sea and laughed all day."
BAD = "no"


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-base") / "base")


def pair_rows() -> list[dict[str, Any]]:
    return [{"prompt": p, "chosen": f"{GOOD} ({p[10:-1]})", "rejected": BAD} for p in PROMPTS]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
