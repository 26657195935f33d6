"""Streaming readers for the JSONL formats prefloop imports.

Each reader yields records one line at a time and raises :class:`ImportFileError`
(``FILE:LINE: what is wrong``) on the first malformed line. Blank lines are skipped.

Ratings
    ``{"text", "rating", "prompt"?, "input"?, "id"?, "author"?}``, or the reference diary project's
    ``{"image_id", "caption", "rate"}``.
Pairs
    ``{"prompt", "chosen", "rejected", "margin"?}``, or Anthropic HH's ``{"chosen", "rejected"}``
    where both hold a whole dialogue (``\\n\\nHuman: … \\n\\nAssistant: …``) that differs only in
    its final Assistant turn: the shared dialogue becomes the prompt.
Rankings
    ``{"prompt", "responses": [...], "ranking": [...]}`` with ``ranking[i]`` the rank of
    ``responses[i]`` (1 = best, equal ranks are ties).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefloop.errors import ImportFileError, InvalidInputError
from prefloop.io.records import PairRecord, RankingRecord, RatingRecord

HH_ASSISTANT = "\n\nAssistant:"
_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line_number, object)`` for each non-blank line; a line that is not a JSON object fails."""
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"{path}: no such file")
    if path.is_dir():
        raise InvalidInputError(f"{path} is a folder; give a .jsonl file")
    with path.open("r", encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ImportFileError(str(path), number, f"not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise ImportFileError(
                    str(path), number, f"expected a JSON object, got {type(obj).__name__}"
                )
            yield number, obj


def _text(obj: dict[str, Any], key: str, path: str, line: int, *, allow_empty: bool = False) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        got = "missing" if key not in obj else f"a {type(value).__name__}"
        raise ImportFileError(path, line, f'"{key}" must be a string, but it is {got}')
    if not allow_empty and not value.strip():
        raise ImportFileError(path, line, f'"{key}" is empty')
    return value


def _number(obj: dict[str, Any], key: str, path: str, line: int) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        got = "missing" if key not in obj else repr(value)
        raise ImportFileError(path, line, f'"{key}" must be a finite number, but it is {got}')
    return float(value)


def iter_ratings(path: str | Path) -> Iterator[RatingRecord]:
    name = str(path)
    for line, obj in iter_json_lines(path):
        if "caption" in obj or "rate" in obj:  # the reference diary project's format
            text = _text(obj, "caption", name, line)
            rating = _number(obj, "rate", name, line)
            inputs = {"image_id": obj["image_id"]} if "image_id" in obj else {}
            yield RatingRecord(text=text, rating=rating, input=inputs, line=line)
            continue
        if "text" not in obj or "rating" not in obj:
            raise ImportFileError(
                name,
                line,
                'a rating needs "text" and "rating" (or the diary format "caption" and "rate"); '
                f"found keys {sorted(obj)}",
            )
        text = _text(obj, "text", name, line)
        rating = _number(obj, "rating", name, line)
        prompt = obj.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise ImportFileError(name, line, '"prompt" must be a string when given')
        inputs = obj.get("input") or {}
        if not isinstance(inputs, dict):
            raise ImportFileError(name, line, '"input" must be a JSON object when given')
        rid = obj.get("id")
        if rid is not None and (isinstance(rid, bool) or not isinstance(rid, str | int)):
            raise ImportFileError(name, line, '"id" must be a string or an integer when given')
        author = obj.get("author")
        if author is not None and (not isinstance(author, str) or not author.strip()):
            raise ImportFileError(name, line, '"author" must be a non-empty string when given')
        yield RatingRecord(
            text=text,
            rating=rating,
            prompt=prompt,
            input=inputs,
            id=None if rid is None else str(rid),
            author=author,
            line=line,
        )


def hh_messages(dialogue: str) -> list[dict[str, str]]:
    """An HH dialogue (``\\n\\nHuman: … \\n\\nAssistant: …``) as chat messages.

    ``Human`` turns become ``user`` messages and ``Assistant`` turns ``assistant`` messages; a
    final empty Assistant turn (the cue for the reply) is dropped. Text that is not an HH
    dialogue becomes one ``user`` message.
    """
    parts = _HH_TURN.split(dialogue)
    if len(parts) < 3 or parts[0].strip():
        return [{"role": "user", "content": dialogue}]
    messages = [
        {"role": "user" if speaker == "Human" else "assistant", "content": text.strip()}
        for speaker, text in zip(parts[1::2], parts[2::2], strict=True)
    ]
    if messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()
    return messages


def count_lines(path: str | Path) -> int:
    """The number of lines of a file (for a progress bar's total), read in binary chunks."""
    lines = 0
    last = b"\n"
    with Path(path).open("rb") as handle:
        while chunk := handle.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")


def split_hh_dialogue(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two HH dialogues into (shared prompt, chosen reply, rejected reply).

    The prompt is the shared dialogue up to and including the last ``\\n\\nAssistant:`` that
    both texts have in common; the replies are what follows, stripped (a reply may itself span
    several Assistant turns). Raises ``ValueError`` when the texts share no Assistant turn.
    """
    common = 0
    for c_char, r_char in zip(chosen, rejected, strict=False):
        if c_char != r_char:
            break
        common += 1
    cut = chosen.rfind(HH_ASSISTANT, 0, common)
    while cut >= 0 and cut + len(HH_ASSISTANT) > common:
        cut = chosen.rfind(HH_ASSISTANT, 0, cut)
    if cut < 0:
        raise ValueError(
            'an HH-style pair needs a shared dialogue ending in "\\n\\nAssistant:"; otherwise '
            'give "prompt", "chosen" and "rejected"'
        )
    end = cut + len(HH_ASSISTANT)
    return chosen[:end], chosen[end:].strip(), rejected[end:].strip()


def iter_pairs(path: str | Path) -> Iterator[PairRecord]:
    name = str(path)
    for line, obj in iter_json_lines(path):
        # An empty reply is a real answer (HH has chosen replies that say nothing at all).
        chosen = _text(obj, "chosen", name, line, allow_empty=True)
        rejected = _text(obj, "rejected", name, line, allow_empty=True)
        if "prompt" in obj:
            prompt = _text(obj, "prompt", name, line)
        else:
            try:
                prompt, chosen, rejected = split_hh_dialogue(chosen, rejected)
            except ValueError as exc:
                raise ImportFileError(name, line, str(exc)) from None
        if chosen == rejected:
            raise ImportFileError(
                name,
                line,
                "chosen and rejected are the same text: a pair needs two different replies",
            )
        margin = obj.get("margin")
        if margin is not None:
            margin = _number(obj, "margin", name, line)
        yield PairRecord(prompt=prompt, chosen=chosen, rejected=rejected, margin=margin, line=line)


def iter_rankings(path: str | Path) -> Iterator[RankingRecord]:
    name = str(path)
    for line, obj in iter_json_lines(path):
        prompt = _text(obj, "prompt", name, line)
        responses = obj.get("responses")
        ranking = obj.get("ranking")
        if not isinstance(responses, list) or not all(
            isinstance(r, str) and r.strip() for r in responses
        ):
            raise ImportFileError(name, line, '"responses" must be a list of non-empty strings')
        if len(responses) < 2:
            raise ImportFileError(name, line, "a ranking needs at least two responses")
        if len(set(responses)) != len(responses):
            raise ImportFileError(name, line, '"responses" has the same text twice')
        if (
            not isinstance(ranking, list)
            or len(ranking) != len(responses)
            or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranking)
        ):
            raise ImportFileError(
                name,
                line,
                f'"ranking" must list one rank (an integer ≥ 1, 1 = best) per response '
                f"({len(responses)} responses), got {ranking!r}",
            )
        yield RankingRecord(
            prompt=prompt, responses=tuple(responses), ranking=tuple(ranking), line=line
        )
