"""Training data from JSONL files: ratings, pairs, or every pair of each ranking."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prefloop.errors import ImportFileError, InvalidInputError
from prefloop.io import iter_pairs, iter_rankings, iter_ratings
from prefloop.io.readers import iter_json_lines
from prefloop.reward._data import Kind, PairData, RatingData

__all__ = ["data_kind", "load_pair_data", "load_rating_data"]


def _detect_format(path: Path) -> str:
    """``ratings``, ``pairs`` or ``rankings``, from the keys of the first non-blank line."""
    for line, obj in iter_json_lines(path):
        keys = set(obj)
        if {"chosen", "rejected"} <= keys:
            return "pairs"
        if {"responses", "ranking"} <= keys:
            return "rankings"
        if {"text", "rating"} <= keys or {"caption", "rate"} <= keys:
            return "ratings"
        raise ImportFileError(
            str(path),
            line,
            f"cannot tell what this file holds from its keys {sorted(keys)}: ratings need "
            '"text"+"rating" (or "caption"+"rate"), pairs "chosen"+"rejected", rankings '
            '"responses"+"ranking"',
        )
    raise InvalidInputError(f"{path} is empty: it holds no ratings, pairs or rankings")


def data_kind(path: str | Path) -> Kind:
    """The kind of model a JSONL file trains, from its first line's keys: ``pairwise`` for pairs
    or rankings, ``rating`` for rated texts."""
    return "rating" if _detect_format(Path(path)) == "ratings" else "pairwise"


def load_rating_data(path: str | Path, scale: Sequence[float] | None = None) -> RatingData:
    """Ratings from a JSONL file in any format :func:`prefloop.io.iter_ratings` reads."""
    path = Path(path)
    found = _detect_format(path)
    if found != "ratings":
        raise InvalidInputError(
            f"{path} holds {found}, not ratings: a rating model needs rated texts; pairs and "
            "rankings train and evaluate a pairwise model (reward fit/cv: --kind pairwise)"
        )
    return RatingData.from_records(iter_ratings(path), scale=scale, source=str(path))


def load_pair_data(path: str | Path) -> PairData:
    """Pairs from a pairs file, or every K(K−1)/2 pair of each ranking in a rankings file."""
    path = Path(path)
    found = _detect_format(path)
    if found == "pairs":
        return PairData.from_records(iter_pairs(path), source=str(path))
    if found == "rankings":
        pairs = [pair for ranking in iter_rankings(path) for pair in ranking.pairs()]
        return PairData.from_records(pairs, source=str(path))
    raise InvalidInputError(
        f"{path} holds ratings, not pairs or rankings: a pairwise model needs pairs or "
        "rankings; rated texts train and evaluate a rating model (reward fit/cv: --kind rating)"
    )
