"""Small synthetic data sets with a clear signal, written as JSONL files for the reward tests."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

WORDS = [
    *("river", "garden", "morning", "friend", "coffee", "train", "window", "market", "city"),
    *("light", "music", "quiet", "bread", "walk", "sea", "hill", "road", "rain", "summer"),
    *("autumn", "picture", "smile"),
]
SCALE = (-1.0, -0.5, 0.0, 0.5, 1.0)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def synthetic_ratings(n: int = 60, seed: int = 0) -> list[dict[str, Any]]:
    """Ratings that follow the rubric: more sentences rate higher; a meta note rates -1."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        level = SCALE[i % len(SCALE)]
        if level == -1.0:
            text = "Note: (version 2) here is the diary.\n\n" + sentence(rng, 4)
        else:
            sentences = 1 + int((level + 0.5) * 4) + rng.randint(0, 1)
            text = " ".join(sentence(rng, rng.randint(5, 8)) for _ in range(sentences))
        rows.append({"text": text, "rating": level})
    return rows


def synthetic_pairs(n: int = 60, seed: int = 0) -> list[dict[str, Any]]:
    """Pairs where the chosen reply is plain prose and the rejected one carries meta text
    (brackets, a note, markdown); lengths are random so "shorter wins" is near chance."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        good = " ".join(sentence(rng, rng.randint(4, 9)) for _ in range(rng.randint(1, 4)))
        bad_body = " ".join(sentence(rng, rng.randint(4, 9)) for _ in range(rng.randint(1, 4)))
        bad = f"**Draft** (version {rng.randint(1, 3)})\n\nNote: {bad_body}"
        rows.append(
            {
                "prompt": f"Question {i}: tell me about {rng.choice(WORDS)}?",
                "chosen": good,
                "rejected": bad,
            }
        )
    return rows


@pytest.fixture
def ratings_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "ratings.jsonl", synthetic_ratings())


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs())
