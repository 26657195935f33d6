"""Exporting a task's feedback as training data in TRL's dataset formats (JSONL).

``plain`` rows hold strings; ``conversational`` rows hold lists of ``{"role", "content"}``
messages (a prompt that is an HH dialogue becomes its user and assistant turns).

preferences
    ``{"prompt", "chosen", "rejected"}`` (+ ``"margin"`` when the pair has one): pairwise
    events, the K(K-1)/2 pairs of each ranking, and with ``from_ratings`` the pairs of
    generations of the same prompt and input with different rewards (margin = the reward
    difference). Ties give no row.
sft
    ``{"prompt", "completion"}`` or ``{"messages"}``: generations whose reward is at least
    ``min_reward`` (default: the second-highest level of the task's scale), and the final texts
    of users' edits.
unpaired
    ``{"prompt", "completion", "label"}``: every rewarded generation; ``label`` is True for a
    reward above 0, False below 0 (a reward of exactly 0 says neither and is left out).
ratings
    ``{"text", "rating", "prompt"?, "input"?, "id", "author"}``: one row per rating event, the
    format :func:`~prefloop.io.iter_ratings` reads back (``id`` is the generation's id).

Every row generator streams from the store; :func:`write_jsonl` writes rows to a file that
appears only when complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from prefloop._files import atomic_path
from prefloop.errors import InvalidInputError
from prefloop.feedback import (
    HUMAN_SOURCES,
    preference_pairs,
    sft_examples,
    unpaired_examples,
)
from prefloop.io.readers import hh_messages
from prefloop.store.models import Feedback, Generation, Task

ExportFormat = Literal["plain", "conversational"]
FORMATS: tuple[str, ...] = ("plain", "conversational")
_CHUNK = 500


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise InvalidInputError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")


def _reply(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def preference_rows(
    session: Session,
    task: Task,
    *,
    format: ExportFormat = "plain",
    from_ratings: bool = False,
    sources: Sequence[str] = HUMAN_SOURCES,
) -> Iterator[dict[str, Any]]:
    """Rows of TRL's preference format (module docstring), oldest feedback first."""
    _check_format(format)
    for pair in preference_pairs(session, task, sources=sources, from_ratings=from_ratings):
        row: dict[str, Any]
        if format == "plain":
            row = {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected}
        else:
            row = {
                "prompt": hh_messages(pair.prompt),
                "chosen": _reply(pair.chosen),
                "rejected": _reply(pair.rejected),
            }
        if pair.margin is not None:
            row["margin"] = pair.margin
        yield row


def sft_rows(
    session: Session,
    task: Task,
    *,
    format: ExportFormat = "plain",
    min_reward: float | None = None,
    include_edits: bool = True,
) -> Iterator[dict[str, Any]]:
    """Rows of TRL's SFT format: well-rewarded generations and users' edited final texts."""
    _check_format(format)
    for example in sft_examples(session, task, min_reward=min_reward, include_edits=include_edits):
        if format == "plain":
            yield {"prompt": example.prompt, "completion": example.completion}
        else:
            yield {"messages": [*hh_messages(example.prompt), *_reply(example.completion)]}


def unpaired_rows(
    session: Session, task: Task, *, format: ExportFormat = "plain"
) -> Iterator[dict[str, Any]]:
    """Rows of TRL's unpaired preference format (KTO): label from the sign of the reward."""
    _check_format(format)
    for example in unpaired_examples(session, task):
        prompt, completion, label = example.prompt, example.completion, example.desirable
        if format == "plain":
            yield {"prompt": prompt, "completion": completion, "label": label}
        else:
            yield {"prompt": hh_messages(prompt), "completion": _reply(completion), "label": label}


def rating_rows(
    session: Session, task: Task, *, sources: Sequence[str] = HUMAN_SOURCES
) -> Iterator[dict[str, Any]]:
    """One row per rating event from ``sources``, in the ratings import format."""
    query = (
        select(Feedback, Generation)
        .join(Generation, Feedback.generation_id == Generation.id)
        .where(
            Feedback.task_id == task.id,
            Feedback.kind == "rating",
            Feedback.source.in_(sources),
        )
        .order_by(Feedback.id)
        .execution_options(yield_per=_CHUNK)
    )
    for event, generation in session.execute(query):
        row: dict[str, Any] = {"text": generation.output or "", "rating": event.value}
        if generation.prompt is not None:
            row["prompt"] = generation.prompt
        if generation.input:
            row["input"] = generation.input
        row["id"] = generation.id
        row["author"] = event.author
        yield row


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write ``rows`` as JSON lines (UTF-8, not ASCII-escaped); returns how many.

    The rows go to a temporary file beside ``path`` that replaces it only once all are
    written, so a failed export never leaves a partial file.
    """
    path = Path(path)
    if path.is_dir():
        raise InvalidInputError(f"{path} is a folder; give a file name such as out.jsonl")
    if not path.parent.exists():
        raise InvalidInputError(f"cannot write {path}: folder {path.parent} does not exist")
    count = 0
    with atomic_path(path) as temporary, temporary.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count
