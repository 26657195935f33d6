"""Importing JSONL files into the store: one transaction per file, all or nothing.

Each function streams its file through a reader of :mod:`prefloop.io.readers`, checks every
record against the task as it goes and inserts in batches. Run it inside one
``store.session()``: a malformed line raises :class:`ImportFileError` (``FILE:LINE: …``) and the
transaction rolls back, the task too if the import created it.

Importing a file twice stores its records twice (files carry no ids prefloop could trust).
The rows of one import get consecutive microsecond timestamps from the time of the import, so
ordering by ``created_at`` follows the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, Generic, Literal, Protocol, TypeVar

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from prefloop.errors import ImportFileError, InvalidInputError
from prefloop.feedback import (
    SOURCES,
    RewardRules,
    check_rating,
    derive_reward,
    reward_rules_for,
)
from prefloop.io.readers import iter_pairs, iter_rankings, iter_ratings
from prefloop.io.records import PairRecord, RankingRecord, RatingRecord
from prefloop.store.models import DEFAULT_SCALE, Feedback, Generation, Task, new_id, utcnow
from prefloop.store.repo import get_or_create_task, validate_scale

Progress = Callable[[int], None]
"""Called with the number of the line just imported (for a progress bar)."""

_BATCH = 1000


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import stored. ``imported`` counts the records (lines) of the file."""

    kind: Literal["ratings", "pairs", "rankings"]
    task: str
    file: str
    imported: int
    generations: int
    feedback: int
    created_task: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Rating:
    """A rating not stored yet, in the shape :func:`derive_reward` reads."""

    kind: str
    source: str
    author: str
    value: float
    created_at: datetime
    id: int | None = None


class _BulkWriter:
    """Collects rows and inserts them in batches, generations before the feedback on them."""

    def __init__(self, session: Session, task: Task, *, source: str, author: str) -> None:
        if source not in SOURCES:
            raise InvalidInputError(f"unknown feedback source {source!r}; use one of {SOURCES}")
        if not author.strip():
            raise InvalidInputError("the author of imported feedback must be a non-empty name")
        self.session, self.task, self.source, self.author = session, task, source, author
        self.started = utcnow()
        self.rows = 0
        self.generations: list[dict[str, Any]] = []
        self.feedback: list[dict[str, Any]] = []
        self.total_generations = self.total_feedback = 0

    @cached_property
    def rules(self) -> RewardRules:
        """The task's reward rules, read when the first rating needs them."""
        return reward_rules_for(self.task)

    def now(self) -> datetime:
        """The import's start plus one microsecond per row so far (keeps the file order)."""
        self.rows += 1
        return self.started + timedelta(microseconds=self.rows)

    def generation(
        self,
        output: str,
        *,
        prompt: str | None,
        input: dict[str, Any] | None = None,
        context: dict[str, Any] | None = None,
        reward: float | None = None,
    ) -> str:
        generation_id = new_id("gen")
        self.generations.append(
            {
                "id": generation_id,
                "task_id": self.task.id,
                "status": "ok",
                "output": output,
                "prompt": prompt,
                "input": dict(input or {}),
                "context": dict(context or {}),
                "reward": reward,
                "created_at": self.now(),
            }
        )
        return generation_id

    def add_feedback(
        self,
        kind: str,
        *,
        generation_id: str | None = None,
        other_generation_id: str | None = None,
        value: float | None = None,
        payload: dict[str, Any] | None = None,
        author: str | None = None,
    ) -> None:
        self.feedback.append(
            {
                "task_id": self.task.id,
                "kind": kind,
                "source": self.source,
                "author": author or self.author,
                "generation_id": generation_id,
                "other_generation_id": other_generation_id,
                "value": value,
                "payload": dict(payload or {}),
                "created_at": self.now(),
            }
        )
        if len(self.feedback) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        if self.generations:
            self.session.execute(insert(Generation), self.generations)
            self.total_generations += len(self.generations)
            self.generations = []
        if self.feedback:
            self.session.execute(insert(Feedback), self.feedback)
            self.total_feedback += len(self.feedback)
            self.feedback = []


def _task(session: Session, name: str, scale: Sequence[float] | None) -> tuple[Task, bool]:
    existing = session.scalar(select(Task).where(Task.name == name))
    if existing is None:
        levels = DEFAULT_SCALE if scale is None else scale
        return get_or_create_task(session, name, scale=levels), True
    if scale is not None and validate_scale(scale) != [float(v) for v in existing.scale]:
        raise InvalidInputError(
            f"task {name!r} already exists with scale {existing.scale}, not {list(scale)}; "
            "leave --scale out or import into a new task"
        )
    return existing, False


class _Record(Protocol):
    """What every reader yields: a record that knows its line in the file."""

    @property
    def line(self) -> int: ...


R = TypeVar("R", bound=_Record)


@dataclass(frozen=True)
class _Import(Generic[R]):
    """One kind of import: how its file is read and what one record stores."""

    kind: Literal["ratings", "pairs", "rankings"]
    read: Callable[[str | Path], Iterable[R]]
    store: Callable[[_BulkWriter, R], None]
    """Adds one record's rows to the writer; raises InvalidInputError for a bad record."""

    def run(
        self,
        session: Session,
        path: str | Path,
        task_name: str,
        *,
        author: str,
        source: str,
        scale: Sequence[float] | None = None,
        progress: Progress | None = None,
    ) -> ImportResult:
        """The one import path: the task, then every record of the file, in batches; a record
        :attr:`store` rejects becomes an :class:`ImportFileError` naming its line."""
        task, created = _task(session, task_name, scale)
        writer = _BulkWriter(session, task, source=source, author=author)
        records = 0
        for record in self.read(path):
            try:
                self.store(writer, record)
            except InvalidInputError as exc:
                raise ImportFileError(str(path), record.line, str(exc)) from None
            records += 1
            if progress is not None:
                progress(record.line)
        writer.flush()
        return ImportResult(
            kind=self.kind,
            task=task.name,
            file=str(path),
            imported=records,
            generations=writer.total_generations,
            feedback=writer.total_feedback,
            created_task=created,
        )


def _store_rating(writer: _BulkWriter, record: RatingRecord) -> None:
    """One generation with its reward, and its one rating."""
    value = check_rating(record.rating, writer.task.scale)
    author = record.author or writer.author
    rating = _Rating("rating", writer.source, author, value, writer.started)
    generation_id = writer.generation(
        record.text,
        prompt=record.prompt,
        input=record.input,
        context={"source_id": record.id} if record.id is not None else None,
        reward=derive_reward([rating], writer.rules),
    )
    writer.add_feedback("rating", generation_id=generation_id, value=value, author=author)


def _store_pair(writer: _BulkWriter, record: PairRecord) -> None:
    """Two generations and one pairwise event, chosen winning."""
    chosen = writer.generation(record.chosen, prompt=record.prompt)
    rejected = writer.generation(record.rejected, prompt=record.prompt)
    writer.add_feedback(
        "pairwise",
        generation_id=chosen,
        other_generation_id=rejected,
        value=1.0,
        payload={} if record.margin is None else {"margin": record.margin},
    )


def _store_ranking(writer: _BulkWriter, record: RankingRecord) -> None:
    """K generations and one ranking event."""
    ids = [writer.generation(text, prompt=record.prompt) for text in record.responses]
    writer.add_feedback("ranking", payload={"generation_ids": ids, "ranks": list(record.ranking)})


_RATINGS = _Import("ratings", iter_ratings, _store_rating)
_PAIRS = _Import("pairs", iter_pairs, _store_pair)
_RANKINGS = _Import("rankings", iter_rankings, _store_ranking)


def import_ratings(
    session: Session,
    path: str | Path,
    task_name: str,
    *,
    author: str = "import",
    source: str = "labeler",
    scale: Sequence[float] | None = None,
    progress: Progress | None = None,
) -> ImportResult:
    """One generation (the text as output, with its prompt and input) and one rating per line.

    The task is created if missing (with ``scale``, default five levels); each rating must be a
    level of the task's scale. A line's ``author`` wins over ``author``. The generations get
    their reward at once (:func:`~prefloop.feedback.derive_reward` of their one rating).
    """
    return _RATINGS.run(
        session, path, task_name, author=author, source=source, scale=scale, progress=progress
    )


def import_pairs(
    session: Session,
    path: str | Path,
    task_name: str,
    *,
    author: str = "import",
    source: str = "labeler",
    progress: Progress | None = None,
) -> ImportResult:
    """Two generations (same prompt) and one pairwise event (chosen wins) per line.

    Both formats of :func:`~prefloop.io.iter_pairs`; a line's ``margin`` is kept in the event's
    payload and comes back in the preference export.
    """
    return _PAIRS.run(session, path, task_name, author=author, source=source, progress=progress)


def import_rankings(
    session: Session,
    path: str | Path,
    task_name: str,
    *,
    author: str = "import",
    source: str = "labeler",
    progress: Progress | None = None,
) -> ImportResult:
    """K generations (same prompt) and one ranking event per line."""
    return _RANKINGS.run(session, path, task_name, author=author, source=source, progress=progress)
