"""From feedback events to one reward per generation, by explicit and configurable rules.

The rules (:class:`RewardRules`, defaults in brackets):

1. Only ``rating``, ``thumbs`` and ``regenerate`` events give a generation a reward. Pairwise
   preferences and rankings are relative judgements: they train reward models (as pairs) but do
   not move the scalar reward of either generation.
2. Each event becomes a signal: a rating its value (on the task's scale), thumbs up
   ``thumbs_up`` [+1] or down ``thumbs_down`` [-1], a regenerate ``regenerate`` [-0.5, or
   ``None`` to ignore regenerates]. The automatic rating of an edit (:class:`EditRatingCurve`,
   source ``auto``) is a rating like any other.
3. Each rater counts once: for every (source, author) only the latest explicit judgement (rating
   or thumbs; latest by ``created_at``, then by id) is kept, so a changed mind replaces the old
   one. A regenerate counts only for a rater who gave no explicit judgement (asking for another
   output says less than rating this one).
4. The reward is the mean of the raters' signals weighted by their source's weight
   (``source_weights``, [end_user 1, labeler 1, auto 1, judge 0, reward_model 0]). Model-made
   signals (LLM judges, reward models) are left out by default, so a reward model is never
   trained on its own predictions and the bandits learn from people; give them a weight to use
   them (e.g. an LLM judge standing in for people in a simulation).
5. No signal with positive weight: no reward (``None``). A generation whose LLM call failed
   never has a reward; its feedback is refused when recorded (:func:`record_feedback`).

A task may override any rule in ``Task.reward_rules`` (JSON, the keys of
:meth:`RewardRules.to_dict`; missing keys keep the defaults).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from prefloop.errors import InvalidInputError
from prefloop.feedback.events import SOURCES

REWARD_KINDS: tuple[str, ...] = ("rating", "thumbs", "regenerate")
"""The kinds of feedback that give a generation its reward (the others are relative)."""

MODEL_SOURCES: tuple[str, ...] = ("judge", "reward_model")
"""Sources whose signals come from models, not people; weight 0 unless a task says otherwise."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FeedbackLike(Protocol):
    """What :func:`derive_reward` reads of an event; a stored ``Feedback`` row has it all."""

    @property
    def id(self) -> int | None: ...
    @property
    def kind(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def author(self) -> str: ...
    @property
    def value(self) -> float | None: ...
    @property
    def created_at(self) -> datetime | None: ...


CHARACTER_DIFF_LIMIT = 4000
"""Texts longer than this together are compared word by word (see :func:`text_similarity`)."""


def text_similarity(draft: str, final: str) -> float:
    """Similarity of two texts in [0, 1]: difflib's ``SequenceMatcher`` ratio 2·M/T.

    M counts the characters of the matching blocks and T the characters of both texts, so it
    works for any script (Korean included). ``autojunk`` is off: its heuristic would ignore
    frequent characters in texts over 200 characters. The comparison is roughly quadratic, so
    texts longer than :data:`CHARACTER_DIFF_LIMIT` characters together are compared as
    sequences of whitespace-separated words instead (a second rather than a minute for
    100,000 characters).
    """
    if len(draft) + len(final) <= CHARACTER_DIFF_LIMIT:
        return difflib.SequenceMatcher(None, draft, final, autojunk=False).ratio()
    return difflib.SequenceMatcher(None, draft.split(), final.split(), autojunk=False).ratio()


@dataclass(frozen=True, slots=True)
class EditRatingCurve:
    """How much a user changed a draft, turned into an automatic rating of the draft.

    ``levels`` are ``(minimum similarity, rating)`` from the highest threshold down; the first
    threshold the similarity reaches gives the rating, ``otherwise`` applies below them all.
    The default: ≥ 0.9 → 1, ≥ 0.7 → 0.5, ≥ 0.5 → 0, else -0.5 (a draft kept almost as it was is
    a good draft; one mostly rewritten was not, but the user still started from it).
    """

    levels: tuple[tuple[float, float], ...] = ((0.9, 1.0), (0.7, 0.5), (0.5, 0.0))
    otherwise: float = -0.5

    def __post_init__(self) -> None:
        thresholds = [threshold for threshold, _ in self.levels]
        if not all(0.0 < t <= 1.0 for t in thresholds) or thresholds != sorted(
            set(thresholds), reverse=True
        ):
            raise InvalidInputError(
                f"edit curve thresholds must be in (0, 1] and strictly decreasing, got "
                f"{thresholds}; e.g. [[0.9, 1], [0.7, 0.5], [0.5, 0]]"
            )
        if not all(math.isfinite(r) for r in (*self.ratings, self.otherwise)):
            raise InvalidInputError(f"edit curve ratings must be finite numbers: {self}")

    @property
    def ratings(self) -> tuple[float, ...]:
        """Every rating the curve can give, highest threshold first, then ``otherwise``."""
        return (*(rating for _, rating in self.levels), self.otherwise)

    def rate(self, similarity: float) -> float:
        for threshold, rating in self.levels:
            if similarity >= threshold:
                return rating
        return self.otherwise


def _default_weights() -> dict[str, float]:
    return {source: 0.0 if source in MODEL_SOURCES else 1.0 for source in SOURCES}


@dataclass(frozen=True)
class RewardRules:
    """The rules that turn a generation's feedback into its reward (module docstring)."""

    thumbs_up: float = 1.0
    """Signal of a thumbs up."""
    thumbs_down: float = -1.0
    """Signal of a thumbs down."""
    regenerate: float | None = -0.5
    """Signal of a regenerate request; ``None`` ignores regenerates."""
    source_weights: Mapping[str, float] = field(default_factory=_default_weights)
    """Weight of each source's raters in the mean; a source left out keeps its default."""
    edit_curve: EditRatingCurve = field(default_factory=EditRatingCurve)
    """Similarity of draft and final text → automatic rating of the draft."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.source_weights) - set(SOURCES))
        if unknown:
            raise InvalidInputError(
                f"unknown feedback source(s) {unknown} in source_weights; sources are {SOURCES}"
            )
        weights = {**_default_weights(), **self.source_weights}
        if not all(math.isfinite(w) and w >= 0 for w in weights.values()):
            raise InvalidInputError(f"source weights must be finite and ≥ 0, got {weights}")
        object.__setattr__(self, "source_weights", weights)
        signals = [self.thumbs_up, self.thumbs_down]
        if self.regenerate is not None:
            signals.append(self.regenerate)
        if not all(math.isfinite(s) for s in signals):
            raise InvalidInputError("thumbs and regenerate signals must be finite numbers")

    def signal(self, kind: str, value: float | None) -> float | None:
        """The signal of one event, or ``None`` when the event says nothing about the reward."""
        if kind == "rating":
            return value
        if kind == "thumbs":
            return None if value is None else (self.thumbs_up if value > 0 else self.thumbs_down)
        if kind == "regenerate":
            return self.regenerate
        return None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in ``Task.reward_rules``."""
        return {
            "thumbs_up": self.thumbs_up,
            "thumbs_down": self.thumbs_down,
            "regenerate": self.regenerate,
            "source_weights": dict(self.source_weights),
            "edit_curve": {
                "levels": [list(level) for level in self.edit_curve.levels],
                "otherwise": self.edit_curve.otherwise,
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RewardRules:
        """Rules from their JSON form; missing keys keep the defaults, unknown keys fail."""
        if not data:
            return cls()
        allowed = ("thumbs_up", "thumbs_down", "regenerate", "source_weights", "edit_curve")
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise InvalidInputError(f"unknown reward rule(s) {unknown}; the rules are {allowed}")
        try:
            fields: dict[str, Any] = {k: data[k] for k in allowed if k in data}
            for key in ("thumbs_up", "thumbs_down"):
                if key in fields:
                    fields[key] = float(fields[key])
            if fields.get("regenerate") is not None:
                fields["regenerate"] = float(fields["regenerate"])
            if "source_weights" in fields:
                fields["source_weights"] = {
                    str(k): float(v) for k, v in dict(fields["source_weights"]).items()
                }
            if "edit_curve" in fields:
                curve = dict(fields["edit_curve"])
                default = EditRatingCurve()
                fields["edit_curve"] = EditRatingCurve(
                    levels=tuple(
                        (float(t), float(r)) for t, r in curve.get("levels", default.levels)
                    ),
                    otherwise=float(curve.get("otherwise", default.otherwise)),
                )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InvalidInputError):
                raise
            raise InvalidInputError(f"malformed reward rules {dict(data)!r}: {exc}") from None
        return cls(**fields)


def _when(created_at: datetime | None) -> datetime:
    # SQLite returns naive datetimes (stored as UTC); events made in this process are aware.
    if created_at is None:
        return _EPOCH
    return created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)


def latest_by_rater(events: Iterable[FeedbackLike]) -> dict[tuple[str, str], FeedbackLike]:
    """Each rater's deciding event, keyed by (source, author).

    That is the latest rating or thumbs (by ``created_at``, then id), or the latest other event
    for a rater who gave neither.
    """
    ordered = sorted(
        enumerate(events),
        key=lambda item: (
            item[1].kind in ("rating", "thumbs"),
            _when(item[1].created_at),
            item[1].id or 0,
            item[0],
        ),
    )
    return {(event.source, event.author): event for _, event in ordered}


def derive_reward(events: Iterable[FeedbackLike], rules: RewardRules | None = None) -> float | None:
    """The reward of one generation from its feedback events (rules in the module docstring).

    ``events`` are that generation's events; kinds other than :data:`REWARD_KINDS` are ignored.
    Returns the source-weighted mean of each rater's latest signal, or ``None`` when no rater
    with a positive weight said anything.
    """
    rules = rules or RewardRules()
    relevant = [
        e for e in events if e.kind in REWARD_KINDS and rules.signal(e.kind, e.value) is not None
    ]
    weighted: list[tuple[float, float]] = []
    for (source, _author), event in latest_by_rater(relevant).items():
        weight = rules.source_weights.get(source, 0.0)
        signal = rules.signal(event.kind, event.value)
        if weight > 0 and signal is not None:
            weighted.append((weight, signal))
    if not weighted:
        return None
    return sum(w * s for w, s in weighted) / sum(w for w, _ in weighted)


def check_rating(value: float, scale: Sequence[float]) -> float:
    """``value`` as the level of ``scale`` it equals; :class:`InvalidInputError` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"a rating must be a finite number, got {value!r}")
    for level in scale:
        if math.isclose(value, level, rel_tol=0.0, abs_tol=1e-9):
            return float(level)
    levels = ", ".join(f"{float(level):g}" for level in scale)
    raise InvalidInputError(f"rating {value:g} is not on the task's scale; use one of {levels}")
