"""Training data of reward models: rated texts (:class:`RatingData`) and preference pairs
(:class:`PairData`), checked when they are made, with a content fingerprint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from prefloop.errors import InvalidInputError
from prefloop.io import PairRecord, RatingRecord
from prefloop.store.models import DEFAULT_SCALE

__all__ = [
    "FOLD_GROUPINGS",
    "KINDS",
    "Array",
    "FoldGrouping",
    "Kind",
    "PairData",
    "RatingData",
    "infer_scale",
    "input_key",
]

Kind = Literal["rating", "pairwise"]
"""``rating``: learns a number on the task's scale; ``pairwise``: learns from preferences."""
KINDS: tuple[Kind, ...] = ("rating", "pairwise")

Array = NDArray[np.float64]

FoldGrouping = Literal["text", "input"]
"""What folds keep together of rated texts: copies of a text, or every draft of one input."""
FOLD_GROUPINGS: tuple[FoldGrouping, ...] = ("text", "input")


def _sha256(payload: Any) -> str:
    blob = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RatingData:
    """Texts with a rating on ``scale``; ``prompts[i]`` is what text i answered (or None).

    ``scale`` lists the allowed levels in increasing order (the task's scale); ratings must lie
    within ``[scale[0], scale[-1]]``.

    ``inputs[i]`` names the input text i was drafted from (a photo, a request), or None when
    unknown (an empty list: all unknown). Texts that share one are alternatives for the same
    input: evaluation reports how well a model orders them (what choosing the best of n drafts
    needs), and folds can keep them together (:func:`prefloop.reward.evaluate.make_folds`). It
    is not part of the fingerprint.
    """

    texts: list[str]
    ratings: Array
    prompts: list[str | None]
    scale: tuple[float, ...] = DEFAULT_SCALE
    source: str = ""
    inputs: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        ratings = np.asarray(self.ratings, dtype=np.float64).reshape(-1)
        object.__setattr__(self, "ratings", ratings)
        object.__setattr__(self, "scale", tuple(float(v) for v in self.scale))
        inputs = list(self.inputs) if self.inputs else [None] * len(ratings)
        object.__setattr__(self, "inputs", inputs)
        where = f" in {self.source}" if self.source else ""
        if len(self.texts) != len(ratings) or len(self.prompts) != len(ratings):
            raise InvalidInputError(
                f"rating data{where}: {len(self.texts)} texts, {len(ratings)} ratings and "
                f"{len(self.prompts)} prompts; they must have the same length"
            )
        if len(inputs) != len(ratings):
            raise InvalidInputError(
                f"rating data{where}: {len(inputs)} input keys for {len(ratings)} ratings; give "
                "one per text (None where unknown)"
            )
        if len(self.scale) < 2 or list(self.scale) != sorted(set(self.scale)):
            raise InvalidInputError(
                f"a rating scale needs at least two increasing levels, got {list(self.scale)}"
            )
        if not np.all(np.isfinite(ratings)):
            raise InvalidInputError(f"rating data{where} holds a rating that is not a number")
        lo, hi = self.scale[0], self.scale[-1]
        outside = np.flatnonzero((ratings < lo) | (ratings > hi))
        if outside.size:
            i = int(outside[0])
            raise InvalidInputError(
                f"rating {ratings[i]:g} of item {i + 1}{where} is outside the scale "
                f"{list(self.scale)}; give the task's scale (e.g. --scale) or fix the rating"
            )

    @classmethod
    def from_records(
        cls,
        records: Iterable[RatingRecord],
        *,
        scale: Sequence[float] | None = None,
        source: str = "",
    ) -> RatingData:
        """From :func:`prefloop.io.iter_ratings` records. ``scale=None`` infers it (see
        :func:`infer_scale`)."""
        items = list(records)
        ratings = np.array([r.rating for r in items], dtype=np.float64)
        chosen_scale = tuple(scale) if scale is not None else infer_scale(ratings)
        return cls(
            texts=[r.text for r in items],
            ratings=ratings,
            prompts=[r.prompt for r in items],
            scale=chosen_scale,
            source=source,
            inputs=[input_key(r.input, r.prompt) for r in items],
        )

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: Sequence[int] | NDArray[np.int_]) -> RatingData:
        idx = [int(i) for i in index]
        return RatingData(
            texts=[self.texts[i] for i in idx],
            ratings=self.ratings[idx],
            prompts=[self.prompts[i] for i in idx],
            scale=self.scale,
            source=self.source,
            inputs=[self.inputs[i] for i in idx],
        )

    def fingerprint(self) -> str:
        """sha256 of the content (texts, prompts, ratings, scale), independent of the source."""
        return _sha256(
            {
                "kind": "rating",
                "texts": self.texts,
                "prompts": self.prompts,
                "ratings": [float(v) for v in self.ratings],
                "scale": list(self.scale),
            }
        )

    def check_trainable(self) -> None:
        """Raise a clear error when a model cannot learn from this data."""
        where = f" in {self.source}" if self.source else ""
        if len(self) == 0:
            raise InvalidInputError(f"no ratings{where}: a rating model needs rated texts")
        levels = np.unique(self.ratings)
        if levels.size < 2:
            raise InvalidInputError(
                f"every rating{where} is {levels[0]:g}: a rating model needs at least two "
                "different rating levels to learn what makes a text better"
            )
        if len(self) < 4:
            raise InvalidInputError(
                f"only {len(self)} ratings{where}: a rating model needs at least 4"
            )


def input_key(inputs: dict[str, Any] | None, prompt: str | None = None) -> str | None:
    """What a text was drafted from, as one comparable string: its input fields (as JSON with
    sorted keys; e.g. ``{"image_id": "001.jpg"}``), else its prompt, else None."""
    if inputs:
        return json.dumps(inputs, ensure_ascii=False, sort_keys=True, default=str)
    return prompt


def infer_scale(ratings: NDArray[np.float64]) -> tuple[float, ...]:
    """The default scale (-1 … 1 in halves) when every rating lies on it, else the distinct
    values seen (at least two; a single value v gives (v, v + 1) so that errors read well)."""
    values = sorted({float(v) for v in ratings})
    if all(v in DEFAULT_SCALE for v in values):
        return DEFAULT_SCALE
    if len(values) >= 2:
        return tuple(values)
    if values:
        return (values[0], values[0] + 1.0)
    return DEFAULT_SCALE


@dataclass(frozen=True)
class PairData:
    """Preferences: ``chosen[i]`` was preferred to ``rejected[i]`` as a reply to ``prompts[i]``.

    ``margins[i]`` says by how much (rank difference for a ranking, 1 when unknown).
    """

    prompts: list[str]
    chosen: list[str]
    rejected: list[str]
    margins: Array = field(default_factory=lambda: np.zeros(0))
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.chosen)
        margins = np.asarray(self.margins, dtype=np.float64).reshape(-1)
        if margins.size == 0 and n:
            margins = np.ones(n)
        object.__setattr__(self, "margins", margins)
        where = f" in {self.source}" if self.source else ""
        if not (len(self.prompts) == len(self.rejected) == len(margins) == n):
            raise InvalidInputError(
                f"pair data{where}: {len(self.prompts)} prompts, {n} chosen, "
                f"{len(self.rejected)} rejected and {len(margins)} margins; they must match"
            )
        for i, (c, r) in enumerate(zip(self.chosen, self.rejected, strict=True)):
            if c == r:
                raise InvalidInputError(
                    f"pair {i + 1}{where}: chosen and rejected are the same text; a preference "
                    "needs two different replies (drop the pair or fix it)"
                )

    @classmethod
    def from_records(cls, records: Iterable[PairRecord], *, source: str = "") -> PairData:
        items = list(records)
        return cls(
            prompts=[r.prompt for r in items],
            chosen=[r.chosen for r in items],
            rejected=[r.rejected for r in items],
            margins=np.array([1.0 if r.margin is None else r.margin for r in items]),
            source=source,
        )

    def __len__(self) -> int:
        return len(self.chosen)

    def subset(self, index: Sequence[int] | NDArray[np.int_]) -> PairData:
        idx = [int(i) for i in index]
        return PairData(
            prompts=[self.prompts[i] for i in idx],
            chosen=[self.chosen[i] for i in idx],
            rejected=[self.rejected[i] for i in idx],
            margins=self.margins[idx],
            source=self.source,
        )

    def fingerprint(self) -> str:
        return _sha256(
            {
                "kind": "pairwise",
                "prompts": self.prompts,
                "chosen": self.chosen,
                "rejected": self.rejected,
                "margins": [float(v) for v in self.margins],
            }
        )

    def check_trainable(self) -> None:
        where = f" in {self.source}" if self.source else ""
        if len(self) == 0:
            raise InvalidInputError(
                f"no preference pairs{where}: a pairwise model needs chosen/rejected pairs"
            )
        if len(self) < 4:
            raise InvalidInputError(
                f"only {len(self)} pairs{where}: a pairwise model needs at least 4"
            )
