"""The rubric scorer: the demo's transparent stand-in for the people who would rate outputs.

Each output starts at +1 and loses points for what a reader of a photo diary would object to;
the total is clipped to [-1, 1] and snapped to the nearest level of the task's scale:

==========  ===================================================================  ==========
rule        what it checks                                                       deduction
==========  ===================================================================  ==========
meta        text about the text ("Here is your diary", "Note:", "As an AI",      whole text
            "Version 2", placeholders like "[Your Name]"): it breaks the format  is -1
facts       each given fact (place, company, mood) that the text never mentions  0.5 each
repetition  a sentence said twice, or a text looping over the same word          0.5, or 1
            triples                                                              when heavy
length      fewer words than ``min_words`` (half that: 1), more than             0.5 each,
            ``max_words``, or a last sentence cut off mid-way                    at most 1
==========  ===================================================================  ==========

Every deduction comes with a reason in words, so a verdict can be read and argued with. The
rules echo the rubric of the people who rated the reference project's diaries (meta text or
several versions: -1; short: -0.5) but they only see surface features; they are not a model of
taste, which is what real ratings (``prefloop serve``) are for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from prefloop.errors import InvalidInputError
from prefloop.store.models import DEFAULT_SCALE

__all__ = ["META_PATTERNS", "RubricConfig", "RubricScorer", "RubricVerdict"]

META_PATTERNS: tuple[str, ...] = (
    r"^\W*(?:sure|certainly|of course|absolutely|okay)\b[,!.]",
    r"\bhere(?:'s| is| are)\s+(?:a|an|the|your|my)?\s*(?:short\s+|photo\s+|new\s+)?"
    r"(?:diary|journal|entry|entries|draft|version|story|text|poem|prompt)",
    r"\bnote\s*:",
    r"\bas an ai\b",
    r"\blanguage model\b",
    r"\b(?:diary|journal) entry\s*:",
    r"^\s*(?:title|word count)\s*:",
    r"\b(?:version|option|draft|variation)\s*#?\d",
    r"\bi hope (?:this|you (?:like|enjoy))",
    r"\blet me know\b",
    r"\bfeel free to\b",
    r"\[[^\]]*(?:name|date|insert|place|your)[^\]]*\]",
    r"\{\s*(?:place|company|mood)\s*\}",
)
"""Regular expressions (case-insensitive, multi-line) that mark text about the text."""

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[A-Za-z0-9']+")
_ENDS_SENTENCE = re.compile(r"[.!?…][\"')\]»”’]*\s*$|[\U0001F300-\U0001FAFF\u2600-\u27BF]\s*$")


@dataclass(frozen=True, slots=True)
class RubricConfig:
    """The rubric's thresholds and deductions (points out of the range [-1, 1])."""

    min_words: int = 40
    """Fewer words than this loses ``length_penalty``; fewer than half of it loses twice that."""
    max_words: int = 160
    """More words than this loses ``length_penalty``."""
    fact_penalty: float = 0.5
    """Lost for each given fact the text does not mention."""
    repeat_penalty: float = 0.5
    """Lost for one repeated sentence; twice this for more, or for looping word triples."""
    length_penalty: float = 0.5
    """Lost for a text outside the length band, and for a last sentence cut off mid-way."""
    max_repeated_trigram_share: float = 0.3
    """A text whose word triples repeat more often than this share is looping."""
    meta_patterns: tuple[str, ...] = META_PATTERNS
    """Patterns of text about the text; any match makes the verdict the lowest level."""

    def __post_init__(self) -> None:
        if self.min_words < 1 or self.max_words <= self.min_words:
            raise InvalidInputError(
                f"rubric length band [{self.min_words}, {self.max_words}] words is empty; "
                "give 1 <= min_words < max_words"
            )
        for name in ("fact_penalty", "repeat_penalty", "length_penalty"):
            if getattr(self, name) < 0:
                raise InvalidInputError(f"rubric {name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.max_repeated_trigram_share < 1:
            raise InvalidInputError(
                "rubric max_repeated_trigram_share must lie in (0, 1), got "
                f"{self.max_repeated_trigram_share}"
            )


@dataclass(frozen=True, slots=True)
class RubricVerdict:
    """What the rubric made of one text: the rating, the raw points and the reasons."""

    value: float
    """The rating: the nearest level of the scale."""
    points: float
    """+1 minus the deductions, clipped to [-1, 1] (before mapping onto the scale)."""
    deductions: dict[str, float] = field(default_factory=dict)
    """Points lost per rule (``meta``, ``facts``, ``repetition``, ``length``)."""
    reasons: tuple[str, ...] = ()
    """One sentence per deduction; empty for a text that broke no rule."""
    words: int = 0


class RubricScorer:
    """Rates diary texts by the rules above.

    >>> scorer = RubricScorer()
    >>> facts = {"place": ["Busan"], "company": ["friend"], "mood": ["happy"]}
    >>> scorer.score("Here is your diary: ...", facts).value
    -1.0
    """

    def __init__(
        self, config: RubricConfig | None = None, *, scale: Sequence[float] = DEFAULT_SCALE
    ) -> None:
        self.config = config or RubricConfig()
        levels = [float(v) for v in scale]
        if len(levels) < 2 or levels != sorted(set(levels)):
            raise InvalidInputError(
                f"a rating scale needs at least two increasing levels, got {levels}"
            )
        self.scale: tuple[float, ...] = tuple(levels)
        self._meta = [
            re.compile(p, re.IGNORECASE | re.MULTILINE) for p in self.config.meta_patterns
        ]

    def score(self, text: str, facts: Mapping[str, Sequence[str]]) -> RubricVerdict:
        """Rate ``text``; ``facts`` maps each given fact's name to the words that mention it."""
        cfg = self.config
        words = _WORD.findall(text)
        meta = next((m.group(0) for p in self._meta if (m := p.search(text))), None)
        if meta is not None:
            reason = f"meta text {meta.strip()!r}: the output talks about itself, not the day"
            return RubricVerdict(
                value=self.scale[0],
                points=-1.0,
                deductions={"meta": 2.0},
                reasons=(reason,),
                words=len(words),
            )

        deductions: dict[str, float] = {}
        reasons: list[str] = []

        missing = [name for name, cues in facts.items() if not _mentions(text, cues)]
        if missing:
            deductions["facts"] = cfg.fact_penalty * len(missing)
            reasons.extend(
                f"does not mention the {name} ({' / '.join(facts[name][:3])})" for name in missing
            )

        repeated, trigram_share = _repetition(text, words)
        if repeated or trigram_share > cfg.max_repeated_trigram_share:
            heavy = repeated > 1 or trigram_share > cfg.max_repeated_trigram_share
            deductions["repetition"] = cfg.repeat_penalty * (2 if heavy else 1)
            if repeated:
                reasons.append(f"repeats {repeated} sentence{'s' if repeated > 1 else ''}")
            if trigram_share > cfg.max_repeated_trigram_share:
                reasons.append(f"loops: {trigram_share:.0%} of its word triples are repeats")

        length_loss = 0.0
        if len(words) < cfg.min_words:
            length_loss += cfg.length_penalty * (2 if len(words) < cfg.min_words / 2 else 1)
            reasons.append(f"too short: {len(words)} words (the band is {cfg.min_words}+)")
        elif len(words) > cfg.max_words:
            length_loss += cfg.length_penalty
            reasons.append(f"too long: {len(words)} words (the band ends at {cfg.max_words})")
        if words and not _ENDS_SENTENCE.search(text):
            length_loss += cfg.length_penalty
            reasons.append("the last sentence is cut off")
        if length_loss:
            deductions["length"] = min(length_loss, 2 * cfg.length_penalty)

        points = max(-1.0, min(1.0, 1.0 - sum(deductions.values())))
        return RubricVerdict(
            value=self._to_scale(points),
            points=points,
            deductions=deductions,
            reasons=tuple(reasons),
            words=len(words),
        )

    def _to_scale(self, points: float) -> float:
        """Map points in [-1, 1] linearly onto the scale's range, then to the nearest level."""
        lo, hi = self.scale[0], self.scale[-1]
        target = lo + (points + 1.0) / 2.0 * (hi - lo)
        return min(self.scale, key=lambda level: (abs(level - target), -level))


def _mentions(text: str, cues: Sequence[str]) -> bool:
    """Whether any cue starts a word of ``text`` ("friend" matches "friends")."""
    return any(re.search(r"\b" + re.escape(cue), text, re.IGNORECASE) for cue in cues)


def _repetition(text: str, words: list[str]) -> tuple[int, float]:
    """(sentences said again, share of word triples that repeat an earlier triple)."""
    seen: set[str] = set()
    repeated = 0
    for sentence in _SENTENCE_SPLIT.split(text):
        key = " ".join(w.lower() for w in _WORD.findall(sentence))
        if key.count(" ") < 2:  # fewer than three words: "Yes." twice is no repetition
            continue
        if key in seen:
            repeated += 1
        seen.add(key)
    lowered = [w.lower() for w in words]
    trigrams = [tuple(lowered[i : i + 3]) for i in range(len(lowered) - 2)]
    if len(trigrams) < 10:
        return repeated, 0.0
    share = 1.0 - len(set(trigrams)) / len(trigrams)
    return repeated, share
