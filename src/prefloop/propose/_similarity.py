"""How alike two prompt templates are, for rejecting near-duplicates."""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from typing import Literal

SimilarityKind = Literal["token_jaccard", "char_ngram_cosine"]

_TOKEN = re.compile(r"\{\w+\}|\w+")


def normalize(text: str) -> str:
    """NFKC, lower case, whitespace collapsed: spelling and layout do not make a new prompt."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def token_jaccard(a: str, b: str) -> float:
    """|A ∩ B| / |A ∪ B| over the sets of word tokens (placeholders count as words)."""
    tokens_a, tokens_b = set(_TOKEN.findall(normalize(a))), set(_TOKEN.findall(normalize(b)))
    if not tokens_a and not tokens_b:
        return 1.0
    return len(tokens_a & tokens_b) / len(tokens_a | tokens_b)


def char_ngram_cosine(a: str, b: str, n: int = 3) -> float:
    """Cosine of the character n-gram count vectors of the normalized texts."""
    grams_a, grams_b = _ngrams(normalize(a), n), _ngrams(normalize(b), n)
    dot = sum(count * grams_b[gram] for gram, count in grams_a.items())
    norms = math.sqrt(sum(c * c for c in grams_a.values()) * sum(c * c for c in grams_b.values()))
    return dot / norms if norms else float(grams_a == grams_b)


def _ngrams(text: str, n: int) -> Counter[str]:
    if len(text) < n:
        return Counter([text]) if text else Counter()
    return Counter(text[i : i + n] for i in range(len(text) - n + 1))


def similarity(a: str, b: str, kind: SimilarityKind, ngram: int = 3) -> float:
    if kind == "token_jaccard":
        return token_jaccard(a, b)
    return char_ngram_cosine(a, b, ngram)
