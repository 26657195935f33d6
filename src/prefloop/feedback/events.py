"""Feedback events as they arrive (from the API, the CLI or an import), validated.

One pydantic model per kind; :data:`FeedbackEvent` is their union, told apart by ``kind``.
Values that depend on the task (a rating on the task's scale, generations of the task) are
checked when the event is recorded (:func:`prefloop.feedback.record_feedback`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from prefloop.store.text import JSON_INTEGER, NO_NUL_PATTERN

Source = Literal["end_user", "labeler", "judge", "reward_model", "auto"]
SOURCES: tuple[str, ...] = ("end_user", "labeler", "judge", "reward_model", "auto")
KINDS: tuple[str, ...] = ("rating", "thumbs", "regenerate", "pairwise", "ranking", "edit")
MAX_EDIT_CHARS = 100_000
"""The longest final text an edit may carry (its similarity to the draft is computed inline)."""


Rank = Annotated[int, Field(strict=True, ge=1, le=1000), JSON_INTEGER]
CONFLICTING_FIELDS = "conflicting_fields"
"""The error type of a rule between two fields that a JSON schema cannot state (a pairwise
event's ``a`` and ``b`` differ; a ranking has one rank per generation): the service answers it
409, not 422, since the body is valid by its schema."""
GenerationId = Annotated[str, Field(min_length=1, max_length=64, pattern=NO_NUL_PATTERN)]
"""A generation's id as an event names it (the store's ids are at most 64 characters)."""


def _kind_required(schema: dict[str, Any]) -> None:
    # ``kind`` tells the union's members apart, so a body must carry it (the Python classes
    # default it, for code that builds one event of a known kind)
    if "kind" in schema.get("properties", {}):
        schema["required"] = ["kind", *(f for f in schema.get("required", []) if f != "kind")]


class _Event(BaseModel):
    # strict: a JSON true is not a rating of 1, nor "5" a rank (what the schema says); times
    # may still come as ISO strings
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, json_schema_extra=_kind_required
    )

    source: Source = "end_user"
    author: str = Field(default="anonymous", min_length=1, max_length=200, pattern=NO_NUL_PATTERN)
    idempotency_key: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=NO_NUL_PATTERN
    )
    created_at: datetime | None = Field(default=None, strict=False)


class RatingEvent(_Event):
    """A value on the task's rating scale (default -1, -0.5, 0, 0.5, 1) for one generation."""

    kind: Literal["rating"] = "rating"
    generation_id: GenerationId
    value: float


class ThumbsEvent(_Event):
    """Thumbs up (``up=True``) or down for one generation."""

    kind: Literal["thumbs"] = "thumbs"
    generation_id: GenerationId
    up: bool


class RegenerateEvent(_Event):
    """The user asked for another output instead of this one."""

    kind: Literal["regenerate"] = "regenerate"
    generation_id: GenerationId


class PairwiseEvent(_Event):
    """A preference between two generations of the same task: ``a``, ``b`` or a ``tie``."""

    kind: Literal["pairwise"] = "pairwise"
    a: GenerationId
    b: GenerationId
    winner: Literal["a", "b", "tie"]

    @model_validator(mode="after")
    def _distinct(self) -> PairwiseEvent:
        if self.a == self.b:
            raise PydanticCustomError(
                CONFLICTING_FIELDS, "a pairwise preference needs two different generations (a == b)"
            )
        return self


class RankingEvent(_Event):
    """A ranking of K generations: ``ranks[i]`` is the rank of ``generation_ids[i]``.

    1 is best; equal ranks are ties. It is stored once and expands to K(K-1)/2 pairs.
    """

    kind: Literal["ranking"] = "ranking"
    generation_ids: list[GenerationId] = Field(
        min_length=2, max_length=100, json_schema_extra={"uniqueItems": True}
    )
    ranks: list[Rank] = Field(min_length=2, max_length=100)

    @model_validator(mode="after")
    def _consistent(self) -> RankingEvent:
        if len(self.generation_ids) != len(self.ranks):
            raise PydanticCustomError(
                CONFLICTING_FIELDS,
                f"a ranking needs one rank per generation: {len(self.generation_ids)} "
                f"generation_ids but {len(self.ranks)} ranks",
            )
        if len(set(self.generation_ids)) != len(self.generation_ids):
            raise ValueError("a ranking lists each generation once")
        if any(rank < 1 for rank in self.ranks):
            raise ValueError(f"ranks start at 1 (best), got {self.ranks}")
        return self


class EditEvent(_Event):
    """The user's final text for a draft; becomes an auto-rating and an edited-over-draft pair."""

    kind: Literal["edit"] = "edit"
    generation_id: GenerationId
    final_text: str = Field(min_length=1, max_length=MAX_EDIT_CHARS, pattern=NO_NUL_PATTERN)


FeedbackEvent = Annotated[
    RatingEvent | ThumbsEvent | RegenerateEvent | PairwiseEvent | RankingEvent | EditEvent,
    Field(discriminator="kind"),
]
