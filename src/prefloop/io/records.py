"""Records read from files before they touch the store; shared by import and reward fitting."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefloop.feedback.datasets import expand_ranking


@dataclass(frozen=True, slots=True)
class RatingRecord:
    """One rated text. ``prompt`` and ``input`` describe what it was generated from, if known."""

    text: str
    rating: float
    prompt: str | None = None
    input: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    author: str | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class PairRecord:
    """A preference: ``chosen`` over ``rejected`` for the same ``prompt``."""

    prompt: str
    chosen: str
    rejected: str
    margin: float | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class RankingRecord:
    """K responses to one prompt; ``ranking[i]`` is the rank of ``responses[i]`` (1 = best)."""

    prompt: str
    responses: tuple[str, ...]
    ranking: tuple[int, ...]
    line: int = 0

    def pairs(self) -> list[PairRecord]:
        """The K(K-1)/2 preference pairs of this ranking; tied responses give no pair.

        A pair's ``margin`` is the gap between the two ranks (see
        :func:`prefloop.feedback.expand_ranking`, the one place rankings become pairs).
        """
        return [
            PairRecord(
                prompt=self.prompt,
                chosen=pair.better,
                rejected=pair.worse,
                margin=float(pair.rank_gap),
                line=self.line,
            )
            for pair in expand_ranking(self.responses, self.ranking)
        ]
