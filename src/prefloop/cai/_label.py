"""AI feedback: the judge's verdicts stored as pairwise feedback, and its agreement with people.

:func:`label_task` takes pairs of a task's outputs for the same input (the same prompt and
input fields, as :func:`prefloop.feedback.rating_pairs` pairs them), has the judge compare each
pair under a principle drawn at random (:mod:`prefloop.cai._compare`) and records every verdict
as a pairwise event with source ``judge`` through the service's feedback path
(:func:`prefloop.serve.ops.submit_feedback`), all in one transaction once the judge has
finished: a run that fails or is interrupted stores nothing. Model-made feedback stays out of
the human exports and of reward-model training unless they are asked for it
(:data:`prefloop.feedback.HUMAN_SOURCES`).

:func:`judge_agreement` measures the judge as a pairwise reward model on pairs that people
labeled (a pairs file such as the HH pairs, or a task's human pairs): the same report as
``prefloop reward eval`` gives any pairwise model (:func:`prefloop.reward.evaluate.pair_report`:
accuracy with a percentile-bootstrap interval over prompts, next to the length baselines).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select

from prefloop.cai._compare import (
    CompareConfig,
    CompareFailure,
    CompareStats,
    Progress,
    compare_pairs,
    no_verdict_message,
)
from prefloop.cai._constitution import Constitution
from prefloop.errors import InvalidInputError
from prefloop.llm.base import ChatBackend, LLMError
from prefloop.store import Store

if TYPE_CHECKING:
    from prefloop.reward import PairData

DEFAULT_AUTHOR = "cai"
"""The default prefix of a verdict's author: ``cai:<constitution>:<principle>``."""


@dataclass(frozen=True)
class LabelConfig:
    """Settings of :func:`label_task`."""

    limit: int | None = None
    """Most pairs to judge in this run (None: every pair not judged yet)."""
    principle: str | None = None
    """Judge every pair under this principle (its id) instead of drawing one per pair."""
    author: str = DEFAULT_AUTHOR
    """Prefix of the verdicts' author, ``<author>:<constitution>:<principle>``; pairs that
    already have a verdict from this prefix and constitution are skipped."""
    compare: CompareConfig = field(default_factory=CompareConfig)

    def check(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise InvalidInputError(f"limit={self.limit}: judge at least 1 pair, or give no limit")
        if not self.author.strip() or ":" in self.author:
            raise InvalidInputError(
                f"author {self.author!r} must be a non-empty name without ':', e.g. cai"
            )
        self.compare.check()


@dataclass(frozen=True)
class JudgedPair:
    """A stored verdict: generation ``a`` against ``b`` under ``principle``."""

    a: str
    b: str
    principle: str
    winner: str
    feedback_id: int
    duplicate: bool


@dataclass(frozen=True)
class LabelResult:
    """What :func:`label_task` asked and stored."""

    task: str
    candidates: int
    """Pairs of outputs of one input without a verdict from this judge before the run."""
    judged: list[JudgedPair]
    failures: list[CompareFailure]
    stats: CompareStats
    constitution: str
    backend: str
    author_prefix: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        winners = {"a": 0, "b": 0, "tie": 0}
        principles: dict[str, int] = {}
        for pair in self.judged:
            winners[pair.winner] += 1
            principles[pair.principle] = principles.get(pair.principle, 0) + 1
        return {
            "task": self.task,
            "candidates": self.candidates,
            "asked": self.stats.pairs,
            "stored": sum(not p.duplicate for p in self.judged),
            "failed": len(self.failures),
            "winners": winners,
            "principles": principles,
            "source": "judge",
            "author_prefix": f"{self.author_prefix}:{self.constitution}:",
            "constitution": self.constitution,
            "backend": self.backend,
            "seconds": round(self.seconds, 3),
            "stats": self.stats.to_json(),
            "failures": [f.to_json() for f in self.failures],
        }


@dataclass(frozen=True)
class _Candidate:
    prompt: str
    a: str
    b: str
    text_a: str
    text_b: str


def _author(prefix: str, constitution: str, principle: str) -> str:
    return f"{prefix}:{constitution}:{principle}"[:200]


def _idempotency_key(author: str, a: str, b: str) -> str:
    digest = hashlib.sha256(f"{author}\n{a}\n{b}".encode()).hexdigest()[:40]
    return f"cai-label-{digest}"


def _candidates(store: Store, task_name: str, prefix: str) -> list[_Candidate]:
    """Pairs of successful outputs of the same prompt and input, with different texts, that
    have no verdict whose author starts with ``prefix``: the first pair of each input, then
    the second of each, and so on (so a limit covers many inputs)."""
    from prefloop.feedback import EDIT_MODEL, prompt_text
    from prefloop.store.models import Feedback, Generation
    from prefloop.store.repo import get_task

    with store.session(readonly=True) as session:
        task = get_task(session, task_name)
        judged = {
            frozenset((a, b))
            for a, b in session.execute(
                select(Feedback.generation_id, Feedback.other_generation_id).where(
                    Feedback.task_id == task.id,
                    Feedback.kind == "pairwise",
                    Feedback.source == "judge",
                    Feedback.author.startswith(prefix, autoescape=True),
                )
            )
        }
        groups: dict[str, list[Any]] = {}
        rows = session.scalars(
            select(Generation)
            .where(
                Generation.task_id == task.id,
                Generation.status == "ok",
                Generation.output.is_not(None),
                func.coalesce(Generation.model, "") != EDIT_MODEL,
            )
            .order_by(Generation.created_at, Generation.id)
        )
        for generation in rows:
            if generation.prompt is None and not generation.input:
                continue  # nothing says what it answers
            key = json.dumps([generation.prompt, generation.input], sort_keys=True, default=str)
            groups.setdefault(key, []).append(
                (generation.id, generation.output or "", prompt_text(generation))
            )
    per_group = [
        [
            _Candidate(first[2], first[0], second[0], first[1], second[1])
            for first, second in combinations(members, 2)
            if first[1].strip() != second[1].strip()
            and frozenset((first[0], second[0])) not in judged
        ]
        for members in groups.values()
    ]
    ordered: list[_Candidate] = []
    for depth in range(max((len(g) for g in per_group), default=0)):
        ordered.extend(group[depth] for group in per_group if depth < len(group))
    return ordered


def label_task(
    store: Store,
    task: str,
    backend: ChatBackend,
    constitution: Constitution,
    config: LabelConfig | None = None,
    *,
    progress: Progress | None = None,
) -> LabelResult:
    """Judge pairs of ``task``'s outputs under the constitution and store the verdicts as
    pairwise feedback with source ``judge`` (module docstring).

    Errors: a task with no two different outputs of one input (:class:`InvalidInputError`);
    a judge that gave no verdict at all — every call failed, or no answer named (A) or (B) —
    (:class:`~prefloop.llm.LLMError`, nothing stored). Pairs the judge could not decide are
    left out and listed in :attr:`LabelResult.failures`.
    """
    cfg = config or LabelConfig()
    cfg.check()
    if cfg.principle is not None:
        constitution.principle(cfg.principle)  # an unknown id fails before any call
    prefix = f"{cfg.author}:{constitution.name}:"
    started = time.perf_counter()
    candidates = _candidates(store, task, prefix)
    if not candidates:
        raise InvalidInputError(
            f"task {task!r} has no pair of different outputs for one input without a verdict "
            f"from {prefix}*: generate at least two outputs per input first (e.g. `prefloop "
            "llm generate` with two arms, or import them), or use another --author to judge "
            "the pairs again"
        )
    chosen = candidates[: cfg.limit] if cfg.limit is not None else candidates
    principles = constitution.draw(len(chosen), cfg.compare.seed, only=cfg.principle)
    comparisons = compare_pairs(
        backend,
        [c.prompt for c in chosen],
        [c.text_a for c in chosen],
        [c.text_b for c in chosen],
        principles,
        cfg.compare,
        progress=progress,
    )
    if comparisons.stats.judged == 0:
        raise LLMError(no_verdict_message(comparisons.stats, backend.name, stored=True))
    from prefloop.feedback import PairwiseEvent
    from prefloop.serve.ops import submit_feedback

    judged: list[JudgedPair] = []
    with store.session() as session:  # every verdict, or none
        for candidate, principle, verdict in zip(
            chosen, principles, comparisons.verdicts, strict=True
        ):
            if verdict is None:
                continue
            author = _author(cfg.author, constitution.name, principle.id)
            recorded = submit_feedback(
                session,
                task,
                PairwiseEvent(
                    a=candidate.a,
                    b=candidate.b,
                    winner=verdict,
                    source="judge",
                    author=author,
                    idempotency_key=_idempotency_key(author, candidate.a, candidate.b),
                ),
            )
            judged.append(
                JudgedPair(
                    candidate.a,
                    candidate.b,
                    principle.id,
                    verdict,
                    recorded.feedback_id,
                    recorded.duplicate,
                )
            )
    return LabelResult(
        task=task,
        candidates=len(candidates),
        judged=judged,
        failures=comparisons.failures,
        stats=comparisons.stats,
        constitution=constitution.name,
        backend=backend.name,
        author_prefix=cfg.author,
        seconds=time.perf_counter() - started,
    )


# -- agreement with people --------------------------------------------------------------------
@dataclass(frozen=True)
class AgreementConfig:
    """Settings of :func:`judge_agreement`."""

    limit: int | None = None
    """Judge a random sample of this many pairs (drawn with ``compare.seed``); None: all."""
    principle: str | None = None
    """Judge every pair under this principle (its id) instead of drawing one per pair."""
    samples: int = 1000
    """Bootstrap resamples of the interval."""
    folds: int = 5
    """Folds of the cross-fitted length baseline."""
    compare: CompareConfig = field(default_factory=CompareConfig)

    def check(self) -> None:
        problems = []
        if self.limit is not None and self.limit < 1:
            problems.append(f"limit={self.limit} (judge at least 1 pair, or give no limit)")
        if self.samples < 100:
            problems.append(f"samples={self.samples} (use 100 or more, e.g. 1000)")
        if self.folds < 2:
            problems.append(f"folds={self.folds} (use 2 or more)")
        if problems:
            raise InvalidInputError("bad agreement settings: " + "; ".join(problems))
        self.compare.check()


@dataclass(frozen=True)
class JudgeAgreement:
    """How often the judge picks the reply people chose, as a pairwise reward model's report.

    ``report`` is :func:`prefloop.reward.evaluate.pair_report`'s, as JSON: ``accuracy`` (a tie
    counts half), its bootstrap interval ``ci["accuracy"]``, the length baselines and the
    paired gain over the better one. Pairs without a verdict are left out and counted in
    ``unscored``.
    """

    source: str
    pairs: int
    report: dict[str, Any]
    by_principle: dict[str, dict[str, float]]
    """Per principle: the pairs judged under it and the share agreeing with people."""
    stats: CompareStats
    failures: list[CompareFailure]
    constitution: str
    backend: str
    seconds: float

    @property
    def accuracy(self) -> float:
        return float(self.report["accuracy"])

    @property
    def interval(self) -> tuple[float, float]:
        low, high = self.report["ci"]["accuracy"]
        return float(low), float(high)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "pairs": self.pairs,
            "accuracy": self.accuracy,
            "accuracy_ci": list(self.interval),
            "report": self.report,
            "by_principle": self.by_principle,
            "constitution": self.constitution,
            "backend": self.backend,
            "seconds": round(self.seconds, 3),
            "stats": self.stats.to_json(),
            "failures": [f.to_json() for f in self.failures],
        }


def judge_agreement(
    backend: ChatBackend,
    data: PairData,
    constitution: Constitution,
    config: AgreementConfig | None = None,
    *,
    progress: Progress | None = None,
) -> JudgeAgreement:
    """The judge's agreement with people on ``data`` (a :class:`prefloop.reward.PairData`:
    ``chosen[i]`` is the reply people preferred), with a bootstrap interval.

    Each pair is shown with ``chosen`` first and asked in both orders, so the order in the
    file cannot help the judge. An :class:`~prefloop.llm.LLMError` when it decided no pair.
    """
    from prefloop.reward.evaluate import (
        cross_fitted_length_probabilities,
        pair_accuracy,
        pair_report,
        resampling_clusters,
        shorter_wins_probabilities,
    )

    cfg = config or AgreementConfig()
    cfg.check()
    if cfg.principle is not None:
        constitution.principle(cfg.principle)
    if len(data) == 0:
        raise InvalidInputError(f"no pairs to judge in {data.source or 'the data'}")
    started = time.perf_counter()
    if cfg.limit is not None and cfg.limit < len(data):
        rng = np.random.default_rng(cfg.compare.seed)
        data = data.subset(np.sort(rng.choice(len(data), size=cfg.limit, replace=False)))
    principles = constitution.draw(len(data), cfg.compare.seed, only=cfg.principle)
    comparisons = compare_pairs(
        backend,
        data.prompts,
        data.chosen,
        data.rejected,
        principles,
        cfg.compare,
        progress=progress,
    )
    if comparisons.stats.judged == 0:
        raise LLMError(no_verdict_message(comparisons.stats, backend.name, stored=False))
    p_chosen = comparisons.first_wins()
    measured: Any = pair_report(
        p_chosen,
        shorter_wins_probabilities(data),
        cross_fitted_length_probabilities(data, cfg.folds, cfg.compare.seed),
        samples=cfg.samples,
        seed=cfg.compare.seed,
        clusters=resampling_clusters(data),
    )
    # the report as `prefloop reward eval --json` prints it (a typed report's to_json())
    as_json = getattr(measured, "to_json", None)
    report: dict[str, Any] = as_json() if callable(as_json) else dict(measured)
    by_principle: dict[str, dict[str, float]] = {}
    ids = np.array(comparisons.principles)
    for principle in sorted(set(comparisons.principles)):
        mask = (ids == principle) & np.isfinite(p_chosen)
        if mask.any():
            by_principle[principle] = {
                "pairs": int(mask.sum()),
                "accuracy": pair_accuracy(p_chosen[mask]),
            }
    return JudgeAgreement(
        source=str(data.source),
        pairs=len(data),
        report=report,
        by_principle=by_principle,
        stats=comparisons.stats,
        failures=comparisons.failures,
        constitution=constitution.name,
        backend=backend.name,
        seconds=time.perf_counter() - started,
    )
