"""The featurizer interface: texts (and their prompts) in, a numeric matrix out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Self

from prefloop.errors import TruncationWarning
from prefloop.reward._data import Array

__all__ = ["Featurizer", "TruncationWarning"]


class Featurizer(ABC):
    """Turns texts (and the prompts they answer) into a numeric matrix, one row per text.

    ``fit`` learns anything data-dependent (most featurizers learn nothing); ``transform`` must
    give the same columns for any input once fitted. Featurizers combine with ``+`` into a
    concatenation (:class:`prefloop.reward.featurizers.Concat`). A featurizer is pickled with
    the model that uses it, so heavy objects (an embedding network) must be dropped in
    ``__getstate__`` and reloaded lazily.
    """

    name: ClassVar[str] = "featurizer"

    @property
    def prescaled(self) -> bool:
        """True when the columns already share one scale, as unit-length vectors do: models then
        leave them as they are. Others are standardized column by column, which would blow
        hundreds of small embedding columns up to the size of a few strong ones."""
        return False

    def fit(self, texts: Sequence[str], prompts: Sequence[str | None] | None = None) -> Self:
        return self

    @abstractmethod
    def transform(self, texts: Sequence[str], prompts: Sequence[str | None] | None = None) -> Array:
        """An array of shape (len(texts), n_features)."""

    def fit_transform(
        self, texts: Sequence[str], prompts: Sequence[str | None] | None = None
    ) -> Array:
        return self.fit(texts, prompts).transform(texts, prompts)

    def feature_names(self) -> list[str]:
        """Names of the columns (``name[i]`` when the featurizer has no better names)."""
        return []

    def describe(self) -> dict[str, Any]:
        """A JSON-able description for the model's manifest."""
        return {"name": self.name}

    def __add__(self, other: Featurizer) -> Featurizer:
        from prefloop.reward.featurizers import Concat

        left = list(self.parts) if isinstance(self, Concat) else [self]
        right = list(other.parts) if isinstance(other, Concat) else [other]
        return Concat([*left, *right])
