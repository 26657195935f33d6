"""Import and export of feedback data as JSONL."""

from prefloop.io.readers import iter_pairs, iter_rankings, iter_ratings, split_hh_dialogue
from prefloop.io.records import PairRecord, RankingRecord, RatingRecord

__all__ = [
    "PairRecord",
    "RankingRecord",
    "RatingRecord",
    "iter_pairs",
    "iter_rankings",
    "iter_ratings",
    "split_hh_dialogue",
]
