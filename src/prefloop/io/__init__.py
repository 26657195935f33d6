"""Import and export of feedback data as JSONL."""

from prefloop.io.exporting import (
    FORMATS,
    ExportFormat,
    preference_rows,
    rating_rows,
    sft_rows,
    unpaired_rows,
    write_jsonl,
)
from prefloop.io.importing import ImportResult, import_pairs, import_rankings, import_ratings
from prefloop.io.readers import (
    count_lines,
    hh_messages,
    iter_pairs,
    iter_rankings,
    iter_ratings,
    split_hh_dialogue,
)
from prefloop.io.records import PairRecord, RankingRecord, RatingRecord

__all__ = [
    "FORMATS",
    "ExportFormat",
    "ImportResult",
    "PairRecord",
    "RankingRecord",
    "RatingRecord",
    "count_lines",
    "hh_messages",
    "import_pairs",
    "import_rankings",
    "import_ratings",
    "iter_pairs",
    "iter_rankings",
    "iter_ratings",
    "preference_rows",
    "rating_rows",
    "sft_rows",
    "split_hh_dialogue",
    "unpaired_rows",
    "write_jsonl",
]
