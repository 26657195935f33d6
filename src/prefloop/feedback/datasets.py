"""Every training view of a task, from the store: the one place training data comes from.

Reward-model training, the JSONL exports and the trainers all read a task's feedback through
this module, so they see the same examples built by the same rules:

- **preference pairs** (:func:`preference_pairs`): each pairwise event gives its pair (a tie
  gives none; an edit's automatic final-over-draft event is one, with origin ``edit``); a
  ranking of K generations gives K(K-1)/2 pairs (:func:`expand_ranking`; tied generations give
  none, ``ties="tie"`` keeps them for agreement); optionally two generations of the same prompt
  and input with different rewards give a pair whose ``margin`` is the reward difference
  (:func:`rating_pairs`). Pairs whose two texts are identical say nothing and are left out.
- **rated examples** (:func:`rated_examples`): every successful generation with a reward, and
  (:func:`rated_groups`) those of each request that has at least two different rewards.
- **unpaired examples** (:func:`unpaired_examples`): desirable / undesirable outputs for KTO,
  from the reward (thumbs and ratings) against thresholds.
- **SFT examples** (:func:`sft_examples`): the final texts of users' edits and the top-rated
  outputs (best-of-n / rejection sampling).
- **prompts** (:func:`task_prompts`): each distinct request of the task once, for generation.

One renderer (:func:`prompt_text`) gives every example its prompt. Feedback made by people
(:data:`HUMAN_SOURCES`: ``end_user``, ``labeler`` and ``auto``, derived from their edits) is
used by default; model-made feedback (``judge``, ``reward_model``) only when asked through
``sources``. Rewards are the store's cached ones, derived by the task's reward rules, which
weigh model-made signals 0 unless the task says otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Generic, Literal, TypeVar

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, aliased

from prefloop.errors import InvalidInputError
from prefloop.feedback.record import EDIT_MODEL
from prefloop.store.models import Feedback, Generation, Task

T = TypeVar("T")
PairOrigin = Literal["pairwise", "edit", "ranking", "ratings"]
HUMAN_SOURCES: tuple[str, ...] = ("end_user", "labeler", "auto")
"""Feedback made by people (``auto`` is derived from their edits); the default for exports."""

_CHUNK = 500


@dataclass(frozen=True, slots=True)
class RankedPair(Generic[T]):
    """Two items of a ranking: ``better`` ranked above ``worse`` (or level with it: ``tie``)."""

    better: T
    worse: T
    rank_gap: int
    tie: bool = False


def expand_ranking(
    items: Sequence[T], ranks: Sequence[int], *, ties: Literal["skip", "tie"] = "skip"
) -> list[RankedPair[T]]:
    """The K(K-1)/2 pairs of a ranking of K items (``ranks[i]`` of ``items[i]``, 1 = best).

    Tied items give no pair with ``ties="skip"`` and a pair with ``tie=True`` (in list order)
    with ``ties="tie"``, so the latter always returns exactly K(K-1)/2 pairs.
    """
    if len(items) != len(ranks):
        raise ValueError(f"{len(items)} items but {len(ranks)} ranks")
    pairs: list[RankedPair[T]] = []
    for i, j in combinations(range(len(items)), 2):
        if ranks[i] == ranks[j]:
            if ties == "tie":
                pairs.append(RankedPair(items[i], items[j], 0, tie=True))
            continue
        better, worse = (i, j) if ranks[i] < ranks[j] else (j, i)
        pairs.append(RankedPair(items[better], items[worse], abs(ranks[i] - ranks[j])))
    return pairs


def prompt_text(generation: Generation) -> str:
    """The prompt of a generation for training data: its rendered prompt, else its input.

    A generation imported without a prompt (e.g. a rated text with only ``{"image_id": …}``)
    gets its input as compact, key-sorted JSON, so outputs of the same input share a prompt.
    """
    if generation.prompt is not None:
        return generation.prompt
    if generation.input:
        return json.dumps(generation.input, ensure_ascii=False, sort_keys=True)
    return ""


@dataclass(frozen=True, slots=True)
class PreferencePair:
    """``chosen`` preferred to ``rejected`` (generation ids, with their prompt and texts)."""

    prompt: str
    chosen: str
    rejected: str
    chosen_id: str
    rejected_id: str
    origin: PairOrigin
    margin: float | None = None
    feedback_id: int | None = None


def _pair(
    chosen: Generation,
    rejected: Generation,
    origin: PairOrigin,
    *,
    margin: float | None = None,
    feedback_id: int | None = None,
) -> PreferencePair:
    return PreferencePair(
        prompt=prompt_text(chosen),
        chosen=chosen.output or "",
        rejected=rejected.output or "",
        chosen_id=chosen.id,
        rejected_id=rejected.id,
        origin=origin,
        margin=margin,
        feedback_id=feedback_id,
    )


def pairwise_pairs(
    session: Session, task: Task, *, sources: Sequence[str] = HUMAN_SOURCES
) -> Iterator[PreferencePair]:
    """The pairs of the task's pairwise events from ``sources``, oldest first; ties left out.

    A ``margin`` stored with the event (``payload["margin"]``, e.g. from an imported file) is
    carried over.
    """
    first, second = aliased(Generation), aliased(Generation)
    rows = session.execute(
        select(Feedback, first, second)
        .join(first, Feedback.generation_id == first.id)
        .join(second, Feedback.other_generation_id == second.id)
        .where(
            Feedback.task_id == task.id,
            Feedback.kind == "pairwise",
            Feedback.source.in_(sources),
            Feedback.value != 0,
        )
        .order_by(Feedback.id)
        .execution_options(yield_per=_CHUNK)
    )
    for event, a, b in rows:
        chosen, rejected = (a, b) if (event.value or 0) > 0 else (b, a)
        margin = (event.payload or {}).get("margin")
        edited = event.source == "auto" and chosen.model == EDIT_MODEL
        yield _pair(
            chosen,
            rejected,
            "edit" if edited else "pairwise",
            margin=None if margin is None else float(margin),
            feedback_id=event.id,
        )


def _generations(session: Session, ids: Iterable[str]) -> dict[str, Generation]:
    wanted = list(dict.fromkeys(ids))
    found: dict[str, Generation] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        found.update(
            (g.id, g) for g in session.scalars(select(Generation).where(Generation.id.in_(chunk)))
        )
    return found


def ranking_pairs(
    session: Session, task: Task, *, sources: Sequence[str] = HUMAN_SOURCES
) -> Iterator[PreferencePair]:
    """The K(K-1)/2 pairs of each of the task's rankings from ``sources``; ties give none.

    Each pair's ``margin`` is its rank gap, as for a ranking read from a file."""
    query = (
        select(Feedback)
        .where(
            Feedback.task_id == task.id,
            Feedback.kind == "ranking",
            Feedback.source.in_(sources),
        )
        .order_by(Feedback.id)
    )
    batch: list[Feedback] = []
    for event in session.scalars(query.execution_options(yield_per=_CHUNK)):
        batch.append(event)
        if len(batch) == _CHUNK:
            yield from _expand_rankings(session, batch)
            batch = []
    yield from _expand_rankings(session, batch)


def _expand_rankings(session: Session, events: list[Feedback]) -> Iterator[PreferencePair]:
    by_id = _generations(session, (g for e in events for g in e.payload["generation_ids"]))
    for event in events:
        ids, ranks = event.payload["generation_ids"], event.payload["ranks"]
        for pair in expand_ranking(ids, ranks):
            if pair.better in by_id and pair.worse in by_id:  # payload ids are not foreign keys
                yield _pair(
                    by_id[pair.better],
                    by_id[pair.worse],
                    "ranking",
                    margin=float(pair.rank_gap),
                    feedback_id=event.id,
                )


def rating_pairs(session: Session, task: Task) -> Iterator[PreferencePair]:
    """Pairs of generations with the same prompt and input and different rewards.

    The pair's ``margin`` is the reward difference (chosen minus rejected), so it is on the
    task's rating scale. Generations with neither a prompt nor an input are left out (nothing
    says they answer the same request). Uses the cached rewards (:mod:`.rewards`).
    """
    query = (
        select(Generation)
        .where(
            Generation.task_id == task.id,
            Generation.status == "ok",
            Generation.reward.is_not(None),
        )
        .order_by(Generation.created_at, Generation.id)
    )
    groups: dict[str, list[Generation]] = {}
    for generation in session.scalars(query):
        if generation.prompt is None and not generation.input:
            continue
        key = json.dumps([generation.prompt, generation.input], sort_keys=True)
        groups.setdefault(key, []).append(generation)
    for members in groups.values():
        for first, second in combinations(members, 2):
            assert first.reward is not None and second.reward is not None
            if first.reward == second.reward:
                continue
            chosen, rejected = (first, second) if first.reward > second.reward else (second, first)
            yield _pair(chosen, rejected, "ratings", margin=abs(first.reward - second.reward))


def preference_pairs(
    session: Session,
    task: Task,
    *,
    sources: Sequence[str] = HUMAN_SOURCES,
    from_ratings: bool = False,
) -> Iterator[PreferencePair]:
    """All of a task's preference pairs: pairwise events (edits included), then rankings, then
    (if asked) the pairs implied by different rewards for the same prompt and input.

    A pair whose chosen and rejected texts are identical is left out: it says nothing.
    """
    pairs = pairwise_pairs(session, task, sources=sources)
    rankings = ranking_pairs(session, task, sources=sources)
    for pair in _chain(pairs, rankings, rating_pairs(session, task) if from_ratings else ()):
        if pair.chosen != pair.rejected:
            yield pair


def _chain(*parts: Iterable[T]) -> Iterator[T]:
    for part in parts:
        yield from part


# --------------------------------------------------------------------------------------------
# Rated, unpaired and SFT examples, and prompts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RatedExample:
    """A successful generation with its reward (on the task's scale)."""

    prompt: str
    text: str
    reward: float
    generation_id: str
    input: dict[str, object]


@dataclass(frozen=True, slots=True)
class UnpairedExample:
    """An output judged on its own: ``desirable`` (KTO's label) from its reward."""

    prompt: str
    completion: str
    desirable: bool
    reward: float
    generation_id: str


SFTOrigin = Literal["edit", "top_rated"]


@dataclass(frozen=True, slots=True)
class SFTExample:
    """A completion worth imitating: a user's edited final text or a top-rated output."""

    prompt: str
    completion: str
    origin: SFTOrigin
    generation_id: str


@dataclass(frozen=True, slots=True)
class PromptExample:
    """One distinct request of a task: its prompt and input fields."""

    prompt: str
    input: dict[str, object]


def _rewarded(task: Task) -> Any:
    return (
        select(Generation)
        .where(
            Generation.task_id == task.id,
            Generation.status == "ok",
            Generation.reward.is_not(None),
            Generation.output.is_not(None),
        )
        .order_by(Generation.created_at, Generation.id)
        .execution_options(yield_per=_CHUNK)
    )


def rated_examples(session: Session, task: Task) -> Iterator[RatedExample]:
    """Every successful generation of ``task`` with a reward, oldest first."""
    for generation in session.scalars(_rewarded(task)):
        assert generation.reward is not None
        yield RatedExample(
            prompt=prompt_text(generation),
            text=generation.output or "",
            reward=float(generation.reward),
            generation_id=generation.id,
            input=dict(generation.input or {}),
        )


def rated_groups(session: Session, task: Task) -> Iterator[list[RatedExample]]:
    """The rated outputs of each request (same prompt and input) that has at least two
    different rewards: what ranks outputs against each other (RRHF, best-of-n)."""
    groups: dict[str, list[RatedExample]] = {}
    for example in rated_examples(session, task):
        key = json.dumps([example.prompt, example.input], sort_keys=True, default=str)
        groups.setdefault(key, []).append(example)
    for members in groups.values():
        if len({m.reward for m in members}) >= 2:
            yield members


def unpaired_examples(
    session: Session,
    task: Task,
    *,
    desirable_above: float = 0.0,
    undesirable_below: float = 0.0,
) -> Iterator[UnpairedExample]:
    """Outputs labelled desirable (reward above ``desirable_above``) or undesirable (reward
    below ``undesirable_below``); rewards in between say neither and are left out.

    With the defaults a thumbs-up or a positive rating is desirable, a thumbs-down or a
    negative rating undesirable, and a reward of exactly 0 is left out.
    """
    if undesirable_below > desirable_above:
        raise InvalidInputError(
            f"undesirable_below ({undesirable_below:g}) is above desirable_above "
            f"({desirable_above:g}): an output would be both; lower it or raise desirable_above"
        )
    for example in rated_examples(session, task):
        if example.reward > desirable_above:
            desirable = True
        elif example.reward < undesirable_below:
            desirable = False
        else:
            continue
        yield UnpairedExample(
            prompt=example.prompt,
            completion=example.text,
            desirable=desirable,
            reward=example.reward,
            generation_id=example.generation_id,
        )


def default_min_reward(task: Task) -> float:
    """The second-highest level of the task's scale (0.5 on the default -1 … 1 scale)."""
    return float(sorted(task.scale)[-2])


def sft_examples(
    session: Session,
    task: Task,
    *,
    min_reward: float | None = None,
    include_edits: bool = True,
) -> Iterator[SFTExample]:
    """Users' edited final texts and outputs whose reward is at least ``min_reward`` (default
    :func:`default_min_reward`), oldest first."""
    threshold = default_min_reward(task) if min_reward is None else min_reward
    chosen = Generation.reward >= threshold
    if include_edits:
        chosen = or_(chosen, Generation.model == EDIT_MODEL)
    query = (
        select(Generation)
        .where(Generation.task_id == task.id, Generation.status == "ok", chosen)
        .order_by(Generation.created_at, Generation.id)
        .execution_options(yield_per=_CHUNK)
    )
    for generation in session.scalars(query):
        yield SFTExample(
            prompt=prompt_text(generation),
            completion=generation.output or "",
            origin="edit" if generation.model == EDIT_MODEL else "top_rated",
            generation_id=generation.id,
        )


def task_prompts(session: Session, task: Task) -> Iterator[PromptExample]:
    """Each distinct prompt of the task's generations once, in order of first use."""
    seen: set[str] = set()
    query = (
        select(Generation)
        .where(
            Generation.task_id == task.id,
            or_(Generation.model.is_(None), Generation.model != EDIT_MODEL),
        )
        .order_by(Generation.created_at, Generation.id)
        .execution_options(yield_per=_CHUNK)
    )
    for generation in session.scalars(query):
        prompt = prompt_text(generation)
        if prompt and prompt not in seen:
            seen.add(prompt)
            yield PromptExample(prompt=prompt, input=dict(generation.input or {}))
