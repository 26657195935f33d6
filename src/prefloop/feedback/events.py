"""Feedback events as they arrive (from the API, the CLI or an import), validated.

One pydantic model per kind; :data:`FeedbackEvent` is their union, told apart by ``kind``.
Values that depend on the task (a rating on the task's scale, generations of the task) are
checked when the event is recorded (:func:`prefloop.feedback.record_feedback`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Source = Literal["end_user", "labeler", "judge", "reward_model", "auto"]
SOURCES: tuple[str, ...] = ("end_user", "labeler", "judge", "reward_model", "auto")
KINDS: tuple[str, ...] = ("rating", "thumbs", "regenerate", "pairwise", "ranking", "edit")
MAX_EDIT_CHARS = 100_000
"""The longest final text an edit may carry (its similarity to the draft is computed inline)."""


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Source = "end_user"
    author: str = Field(default="anonymous", min_length=1, max_length=200)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    created_at: datetime | None = None


class RatingEvent(_Event):
    """A value on the task's rating scale (default -1, -0.5, 0, 0.5, 1) for one generation."""

    kind: Literal["rating"] = "rating"
    generation_id: str
    value: float


class ThumbsEvent(_Event):
    """Thumbs up (``up=True``) or down for one generation."""

    kind: Literal["thumbs"] = "thumbs"
    generation_id: str
    up: bool


class RegenerateEvent(_Event):
    """The user asked for another output instead of this one."""

    kind: Literal["regenerate"] = "regenerate"
    generation_id: str


class PairwiseEvent(_Event):
    """A preference between two generations of the same task: ``a``, ``b`` or a ``tie``."""

    kind: Literal["pairwise"] = "pairwise"
    a: str
    b: str
    winner: Literal["a", "b", "tie"]

    @model_validator(mode="after")
    def _distinct(self) -> PairwiseEvent:
        if self.a == self.b:
            raise ValueError("a pairwise preference needs two different generations (a == b)")
        return self


class RankingEvent(_Event):
    """A ranking of K generations: ``ranks[i]`` is the rank of ``generation_ids[i]``.

    1 is best; equal ranks are ties. It is stored once and expands to K(K-1)/2 pairs.
    """

    kind: Literal["ranking"] = "ranking"
    generation_ids: list[str] = Field(min_length=2)
    ranks: list[int] = Field(min_length=2)

    @model_validator(mode="after")
    def _consistent(self) -> RankingEvent:
        if len(self.generation_ids) != len(self.ranks):
            raise ValueError(
                f"a ranking needs one rank per generation: {len(self.generation_ids)} "
                f"generation_ids but {len(self.ranks)} ranks"
            )
        if len(set(self.generation_ids)) != len(self.generation_ids):
            raise ValueError("a ranking lists each generation once")
        if any(rank < 1 for rank in self.ranks):
            raise ValueError(f"ranks start at 1 (best), got {self.ranks}")
        return self


class EditEvent(_Event):
    """The user's final text for a draft; becomes an auto-rating and an edited-over-draft pair."""

    kind: Literal["edit"] = "edit"
    generation_id: str
    final_text: str = Field(min_length=1, max_length=MAX_EDIT_CHARS)


FeedbackEvent = Annotated[
    RatingEvent | ThumbsEvent | RegenerateEvent | PairwiseEvent | RankingEvent | EditEvent,
    Field(discriminator="kind"),
]
