"""Proposing new prompt arms for a task from its rated outputs (see the package docstring)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from prefloop.errors import InvalidInputError
from prefloop.llm.base import ChatBackend, GenerationParams, LLMError
from prefloop.llm.generate import template_fields
from prefloop.propose._meta import (
    ProposalContext,
    ScoredArm,
    ScoredOutput,
    build_meta_prompt,
    parse_templates,
)
from prefloop.propose._similarity import SimilarityKind, similarity
from prefloop.store.db import Store
from prefloop.store.models import Arm, Generation, Task
from prefloop.store.repo import create_arm, get_task


@dataclass(frozen=True)
class ProposerConfig:
    """How the proposer asks for, checks and stores new templates."""

    n: int = 3
    """How many new templates to add."""
    max_llm_calls: int = 3
    """At most this many LLM calls (a call that fails or yields too few valid templates is
    followed by another, until ``n`` are accepted)."""
    n_best_examples: int = 3
    """Highest rated outputs of the best arm shown to the LLM."""
    n_worst_examples: int = 3
    """Lowest rated outputs of the best arm shown to the LLM."""
    max_example_chars: int = 600
    """Each shown output is clipped to this many characters."""
    similarity: SimilarityKind = "token_jaccard"
    """``token_jaccard`` (word sets) or ``char_ngram_cosine`` (character n-grams)."""
    max_similarity: float = 0.8
    """A template at least this similar to an existing arm or an accepted template is
    rejected as a near-duplicate."""
    ngram: int = 3
    """n of ``char_ngram_cosine``."""
    max_template_chars: int = 4000
    """Longer templates are rejected."""
    params: GenerationParams = field(
        default_factory=lambda: GenerationParams(max_tokens=800, temperature=0.9)
    )
    """Sampling settings of the proposer's LLM calls."""
    name_prefix: str = "proposed"
    """New arms are named ``<prefix>-<k>`` with the next free k."""
    labels: tuple[str, ...] = ("candidate",)
    """Labels of the new arms."""
    dry_run: bool = False
    """Check the templates but create no arms."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise InvalidInputError(f"n must be >= 1 new templates, got {self.n}")
        if self.max_llm_calls < 1:
            raise InvalidInputError(f"max_llm_calls must be >= 1, got {self.max_llm_calls}")
        if self.n_best_examples < 0 or self.n_worst_examples < 0:
            raise InvalidInputError("the numbers of examples must be >= 0")
        if not 0.0 < self.max_similarity <= 1.0:
            raise InvalidInputError(
                f"max_similarity must be in (0, 1], got {self.max_similarity}; e.g. 0.8"
            )
        if self.similarity not in ("token_jaccard", "char_ngram_cosine"):
            raise InvalidInputError(
                f"similarity must be token_jaccard or char_ngram_cosine, not {self.similarity!r}"
            )
        if self.ngram < 1 or self.max_template_chars < 1 or self.max_example_chars < 1:
            raise InvalidInputError("ngram, max_template_chars and max_example_chars must be >= 1")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name_prefix):
            raise InvalidInputError(
                f"name_prefix {self.name_prefix!r} must be letters, digits, '_', '.' or '-'"
            )


@dataclass(frozen=True)
class ProposedArm:
    """An accepted template, and the arm made from it (``None`` ids in a dry run)."""

    template: str
    name: str | None = None
    arm_id: int | None = None


@dataclass(frozen=True)
class Rejection:
    template: str
    reason: str


@dataclass
class ProposalReport:
    """What a proposal did: arms added, templates rejected and why, LLM calls and tokens."""

    task: str
    parent: str | None
    parent_mean_reward: float | None
    accepted: list[ProposedArm] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        """Whether at least one template was accepted."""
        return bool(self.accepted)

    def summary(self) -> str:
        made = "would add" if self.dry_run else "added"
        text = (
            f"{made} {len(self.accepted)} arm(s) to task {self.task!r} "
            f"(parent {self.parent or 'none'}); rejected {len(self.rejected)} template(s); "
            f"{self.llm_calls} LLM call(s), {self.prompt_tokens}+{self.completion_tokens} tokens"
        )
        if not self.accepted:
            reasons = [r.reason for r in self.rejected] + self.errors
            text += "; no usable template: " + ("; ".join(dict.fromkeys(reasons)) or "none given")
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "parent": self.parent,
            "parent_mean_reward": self.parent_mean_reward,
            "accepted": [dataclasses.asdict(a) for a in self.accepted],
            "rejected": [{"template": r.template, "reason": r.reason} for r in self.rejected],
            "errors": list(self.errors),
            "llm_calls": self.llm_calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "dry_run": self.dry_run,
            "ok": self.ok,
        }


def propose_arms(
    store: Store, task_name: str, backend: ChatBackend, config: ProposerConfig | None = None
) -> ProposalReport:
    """Ask ``backend`` for ``config.n`` better templates for ``task_name`` and add them as arms.

    The store is read in one short transaction and written in another; the LLM is called in
    between, outside any transaction. A report with no accepted template (``report.ok`` false)
    explains why in ``rejected`` and ``errors``; nothing is added then.
    """
    config = config if config is not None else ProposerConfig()
    with store.session(readonly=True) as session:
        task = get_task(session, task_name)
        context, parent_id = _read_context(session, task, config)
        existing = _existing_templates(session, task)

    best = context.best
    report = ProposalReport(
        task=task_name,
        parent=best.name if best is not None else None,
        parent_mean_reward=best.mean_reward if best is not None else None,
        dry_run=config.dry_run,
    )
    accepted: list[str] = []
    previous_problem: str | None = None
    for _call in range(config.max_llm_calls):
        wanted = config.n - len(accepted)
        if wanted <= 0:
            break
        messages = build_meta_prompt(
            context,
            wanted,
            pending=accepted,
            previous_problem=previous_problem,
            max_example_chars=config.max_example_chars,
        )
        report.llm_calls += 1
        try:
            completion = backend.complete(messages, _call_params(config.params, report.llm_calls))
        except LLMError as exc:
            report.errors.append(f"LLM call {report.llm_calls} failed: {exc}")
            previous_problem = None
            continue
        report.prompt_tokens += completion.prompt_tokens or 0
        report.completion_tokens += completion.completion_tokens or 0
        parsed = parse_templates(completion.text, cut_off=completion.finish_reason == "length")
        for problem in parsed.problems:
            report.rejected.append(Rejection(_clip(completion.text), f"answer: {problem}"))
        added = 0
        for template in parsed.templates:
            if len(accepted) >= config.n:
                break
            reason = _rejection_reason(template, context.fields, existing, accepted, config)
            if reason is not None:
                report.rejected.append(Rejection(template, reason))
            else:
                accepted.append(template)
                added += 1
        previous_problem = (
            None if added else "; ".join(parsed.problems) or "every template was rejected"
        )

    if not accepted:
        return report
    if config.dry_run:
        report.accepted = [ProposedArm(template) for template in accepted]
        return report
    with store.session() as session:
        task = get_task(session, task_name)
        parent = session.get(Arm, parent_id) if parent_id is not None else None
        fresh = _existing_templates(session, task)  # arms added while the LLM was thinking
        for template in accepted:
            clash = _near_duplicate(
                template, {f"arm {name!r}": other for name, other in fresh.items()}, config
            )
            if clash is not None:
                report.rejected.append(Rejection(template, clash))
                continue
            arm = create_arm(
                session,
                task,
                _next_name(session, task, config.name_prefix),
                template=template,
                params=dict(parent.params) if parent is not None else {},
                labels=config.labels,
                parent=parent,
                created_by="proposer",
            )
            fresh[arm.name] = template
            report.accepted.append(ProposedArm(template, arm.name, arm.id))
    return report


def _read_context(
    session: Session, task: Task, config: ProposerConfig
) -> tuple[ProposalContext, int | None]:
    """The task's prompt arms with their mean rewards, the best one and its extreme outputs."""
    rated = select(Generation).where(
        Generation.task_id == task.id,
        Generation.status == "ok",
        Generation.reward.is_not(None),
        Generation.output.is_not(None),
    )
    stats = _arm_stats(session, task)
    prompt_arms = [
        arm
        for arm in session.scalars(select(Arm).where(Arm.task_id == task.id).order_by(Arm.id))
        if arm.template is not None
    ]
    # Retired arms are history worth showing when they were rated; they are never the parent.
    scored = [
        ScoredArm(arm.name, arm.template or "", *stats.get(arm.id, (None, 0)))
        for arm in prompt_arms
        if not arm.retired or arm.id in stats
    ]
    best_arm = _best_arm([arm for arm in prompt_arms if not arm.retired], stats)
    fields = tuple(str(f) for f in task.input_fields or ())
    if not fields and best_arm is not None and best_arm.template is not None:
        fields = tuple(template_fields(best_arm.template))
    scale = [float(v) for v in task.scale or (-1.0, 1.0)]
    best_outputs: tuple[ScoredOutput, ...] = ()
    worst_outputs: tuple[ScoredOutput, ...] = ()
    if best_arm is not None:
        mine = rated.where(Generation.arm_id == best_arm.id)
        top = session.scalars(
            mine.order_by(Generation.reward.desc(), Generation.created_at).limit(
                config.n_best_examples
            )
        ).all()
        shown = {g.id for g in top}
        bottom = [
            g
            for g in session.scalars(
                mine.order_by(Generation.reward.asc(), Generation.created_at).limit(
                    config.n_worst_examples + len(shown)
                )
            )
            if g.id not in shown
        ][: config.n_worst_examples]
        best_outputs = tuple(_scored_output(g) for g in top)
        worst_outputs = tuple(_scored_output(g) for g in bottom)
    best = next((s for s in scored if best_arm is not None and s.name == best_arm.name), None)
    context = ProposalContext(
        task=task.name,
        description=task.description or "",
        rubric=task.rubric or "",
        scale=(min(scale), max(scale)),
        fields=fields,
        arms=tuple(scored),
        best=best,
        best_outputs=best_outputs,
        worst_outputs=worst_outputs,
    )
    return context, best_arm.id if best_arm is not None else None


def _arm_stats(session: Session, task: Task) -> dict[int, tuple[float, int]]:
    """arm id -> (mean reward, number of rewarded generations); failed generations excluded."""
    rows = session.execute(
        select(Generation.arm_id, func.avg(Generation.reward), func.count())
        .where(
            Generation.task_id == task.id,
            Generation.status == "ok",
            Generation.reward.is_not(None),
        )
        .group_by(Generation.arm_id)
    )
    return {arm_id: (float(mean), int(n)) for arm_id, mean, n in rows if arm_id is not None}


def _best_arm(arms: list[Arm], stats: dict[int, tuple[float, int]]) -> Arm | None:
    """The rated arm with the highest mean reward (more ratings break ties); if none is rated,
    the production arm, else the oldest."""
    rated = [arm for arm in arms if arm.id in stats]
    if rated:
        return max(rated, key=lambda arm: (stats[arm.id][0], stats[arm.id][1], -arm.id))
    production = [arm for arm in arms if "production" in (arm.labels or [])]
    candidates = production or arms
    return candidates[0] if candidates else None


def _scored_output(generation: Generation) -> ScoredOutput:
    assert generation.reward is not None and generation.output is not None
    return ScoredOutput(dict(generation.input or {}), generation.output, generation.reward)


def _existing_templates(session: Session, task: Task) -> dict[str, str]:
    """Every prompt arm of the task, retired ones included: arm name -> template."""
    arms = session.scalars(select(Arm).where(Arm.task_id == task.id, Arm.template.is_not(None)))
    return {arm.name: arm.template or "" for arm in arms}


def _rejection_reason(
    template: str,
    fields: tuple[str, ...],
    existing: dict[str, str],
    accepted: list[str],
    config: ProposerConfig,
) -> str | None:
    if len(template) > config.max_template_chars:
        return f"longer than {config.max_template_chars} characters ({len(template)})"
    try:
        used = template_fields(template)
    except InvalidInputError as exc:
        return f"not a valid template: {exc}"
    missing = [f for f in fields if f not in used]
    if missing:
        return "missing placeholder(s) " + ", ".join("{" + f + "}" for f in missing)
    unknown = [f for f in used if f not in fields]
    if unknown:
        known = ", ".join("{" + f + "}" for f in fields) or "none"
        return (
            "unknown placeholder(s) "
            + ", ".join("{" + f + "}" for f in unknown)
            + f" (the task's input fields: {known})"
        )
    others = {f"arm {name!r}": other for name, other in existing.items()}
    others |= {f"proposed template {k + 1}": other for k, other in enumerate(accepted)}
    return _near_duplicate(template, others, config)


def _near_duplicate(template: str, others: dict[str, str], config: ProposerConfig) -> str | None:
    """Why ``template`` is too similar to one of ``others`` (what each is → its text), or None."""
    for what, other in others.items():
        score = similarity(template, other, config.similarity, config.ngram)
        if score >= config.max_similarity:
            return (
                f"near-duplicate of {what} "
                f"({config.similarity} {score:.2f} >= {config.max_similarity:g})"
            )
    return None


def _next_name(session: Session, task: Task, prefix: str) -> str:
    names = session.scalars(select(Arm.name).where(Arm.task_id == task.id)).all()
    pattern = re.compile(rf"{re.escape(prefix)}-(\d+)")
    taken = [int(m.group(1)) for name in names if (m := pattern.fullmatch(name))]
    return f"{prefix}-{max(taken, default=0) + 1}"


def _clip(text: str, limit: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _call_params(params: GenerationParams, call: int) -> GenerationParams:
    """The parameters of the ``call``-th LLM call (1, 2, …): a given seed moves on by one per
    call, so a server that honours seeds answers each retry anew, and a run stays
    reproducible."""
    if params.seed is None:
        return params
    return dataclasses.replace(params, seed=params.seed + call - 1)
