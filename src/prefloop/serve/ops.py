"""The service's work as plain functions: what each route does, usable without HTTP.

Each function takes an open session (one transaction; the caller commits or rolls back) and
raises prefloop's own errors (:class:`NotFoundError`, :class:`InvalidInputError`,
:class:`ConflictError`); the HTTP layer maps them to 404/422/409. The one exception is
:func:`generate`, which takes the store: it must not hold a transaction open while the LLM
answers (on SQLite that would hold the write lock for seconds), so it decides in one
transaction, calls the backend with none open, and stores the generation in a second.

The select → complete → feedback loop without HTTP::

    with store.session() as s:
        chosen = select_arm(s, "diary", inputs={"place": "Jeju"}, end_user="u1")
    text = my_llm(chosen.prompt)
    with store.session() as s:
        complete_generation(s, chosen.generation_id, output=text)
    with store.session() as s:
        submit_feedback(s, "diary", RatingEvent(generation_id=chosen.generation_id, value=1))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from prefloop import bandit, feedback, loop
from prefloop.bandit.online import PolicyCache
from prefloop.errors import ConflictError, InvalidInputError
from prefloop.feedback.events import FeedbackEvent, PairwiseEvent, RankingEvent
from prefloop.llm import ModelArms, check_model_folder
from prefloop.llm.base import ChatBackend, GenerationParams
from prefloop.llm.generate import generate_for_arm, render_template
from prefloop.serve.catalog import Catalog
from prefloop.store import Arm, BanditDecision, Generation, Store, Task, repo, statements
from prefloop.store.models import DEFAULT_SCALE, new_id, utcnow
from prefloop.store.statements import PENDING

__all__ = [
    "PENDING",
    "Generated",
    "Selection",
    "check_inputs",
    "complete_generation",
    "create_arm",
    "create_task",
    "generate",
    "get_arm",
    "get_generation",
    "get_task",
    "list_arms",
    "list_tasks",
    "retire_arm",
    "select_arm",
    "set_arm_labels",
    "submit_feedback",
    "task_stats",
]


@dataclass(frozen=True, slots=True)
class Selection:
    """What :func:`select_arm` chose: the decision, its arm and the pending generation."""

    task: Task
    arm: Arm
    decision: BanditDecision
    generation: Generation
    prompt: str | None

    @property
    def generation_id(self) -> str:
        return self.generation.id


@dataclass(frozen=True, slots=True)
class Generated:
    """What :func:`generate` did; ``generation.status`` is ``ok`` or ``failed``."""

    task: Task
    arm: Arm
    decision: BanditDecision
    generation: Generation

    @property
    def failed(self) -> bool:
        return self.generation.status == "failed"


# -- tasks and arms ---------------------------------------------------------------------------
def create_task(
    session: Session,
    name: str,
    *,
    description: str = "",
    input_fields: Sequence[str] = (),
    scale: Sequence[float] | None = None,
    rubric: str = "",
) -> Task:
    """A new task; :class:`ConflictError` if the name is taken."""
    if session.scalar(select(Task.id).where(Task.name == name)) is not None:
        raise ConflictError(f"a task named {name!r} already exists; choose another name")
    return repo.get_or_create_task(
        session,
        name,
        description=description,
        input_fields=input_fields,
        scale=DEFAULT_SCALE if scale is None else scale,
        rubric=rubric,
    )


def get_task(session: Session, name: str) -> Task:
    return repo.get_task(session, name)


def list_tasks(session: Session) -> list[Task]:
    return list(session.scalars(select(Task).order_by(Task.id)).all())


def create_arm(
    session: Session,
    task_name: str,
    name: str,
    *,
    template: str | None = None,
    model_ref: str | None = None,
    params: Mapping[str, Any] | None = None,
    labels: Sequence[str] = ("candidate",),
    parent: str | int | None = None,
) -> Arm:
    task = repo.get_task(session, task_name)
    parent_arm = repo.get_arm(session, task, parent) if parent is not None else None
    return repo.create_arm(
        session,
        task,
        name,
        template=template,
        model_ref=model_ref,
        params=dict(params or {}),
        labels=labels,
        parent=parent_arm,
    )


def list_arms(session: Session, task_name: str) -> list[Arm]:
    task = repo.get_task(session, task_name)
    return list(session.scalars(select(Arm).where(Arm.task_id == task.id).order_by(Arm.id)).all())


def get_arm(session: Session, task_name: str, arm: str | int) -> Arm:
    return repo.get_arm(session, repo.get_task(session, task_name), arm)


def set_arm_labels(session: Session, task_name: str, arm: str | int, labels: Sequence[str]) -> Arm:
    """Replace an arm's labels (``production``, ``candidate``, ``retired`` or your own)."""
    return repo.set_labels(get_arm(session, task_name, arm), labels)


def retire_arm(session: Session, task_name: str, arm: str | int) -> Arm:
    """Label the arm ``retired`` (the policy stops choosing it); its history stays."""
    chosen = get_arm(session, task_name, arm)
    kept = [label for label in chosen.labels or [] if label not in ("production", "candidate")]
    return repo.set_labels(chosen, [*kept, "retired"])


# -- select, complete, generate ---------------------------------------------------------------
def _decide(
    session: Session,
    task: Task,
    *,
    policy: str,
    end_user: str | None,
    context: Mapping[str, Any] | None,
    seed: int | None,
    active_arms: Sequence[Arm] | None = None,
    cache: PolicyCache | None = None,
) -> tuple[BanditDecision, Arm]:
    decision = bandit.decide(
        session,
        task,
        policy=policy,
        end_user=end_user,
        context=dict(context or {}),
        seed=seed,
        active_arms=active_arms,
        cache=cache,
    )
    known = {arm.id: arm for arm in active_arms or ()}
    arm = known.get(decision.arm_id) or session.get(Arm, decision.arm_id)
    assert arm is not None, "a decision always names an arm of the store"
    return decision, arm


def check_inputs(task: Task, inputs: Mapping[str, Any]) -> None:
    missing = [f for f in task.input_fields or [] if f not in inputs]
    if missing:
        raise InvalidInputError(
            f"task {task.name!r} needs inputs {', '.join(map(repr, missing))}; "
            f"got {sorted(inputs) or 'none'}"
        )


def _render(arm: Arm, inputs: Mapping[str, Any]) -> str | None:
    """The arm's prompt for ``inputs`` (a model arm without ``params['template']`` has none)."""
    template = arm.template if arm.template is not None else arm.params.get("template")
    if not isinstance(template, str):
        return None
    return render_template(template, inputs, arm_name=arm.name)


def select_arm(
    session: Session,
    task_name: str,
    *,
    inputs: Mapping[str, Any] | None = None,
    end_user: str | None = None,
    context: Mapping[str, Any] | None = None,
    policy: str = "default",
    seed: int | None = None,
    catalog: Catalog | None = None,
    policies: PolicyCache | None = None,
) -> Selection:
    """Choose an arm, render its prompt, and log the decision and a pending generation.

    The client calls its own LLM with ``prompt`` and reports the result with
    :func:`complete_generation` (its output, or the error); feedback about the generation is
    accepted once it has an output. A selection never completed stays pending: no reward.
    ``catalog`` (a service's cache) supplies the task and its active arms without queries;
    ``policies`` keeps live policies and Thompson's probabilities between requests
    (:class:`~prefloop.bandit.online.PolicyCache`).
    """
    if catalog is None:
        task, arms = repo.get_task(session, task_name), None
    else:
        entry = catalog.entry(session, task_name)
        task, arms = entry.task, entry.active_arms
    values = dict(inputs or {})
    check_inputs(task, values)
    decision, arm = _decide(
        session,
        task,
        policy=policy,
        end_user=end_user,
        context=context,
        seed=seed,
        active_arms=arms,
        cache=policies,
    )
    prompt = _render(arm, values)
    generation = Generation(
        id=new_id("gen"),
        task_id=task.id,
        arm_id=arm.id,
        input=values,
        prompt=prompt,
        output=None,
        status=PENDING,
        error=None,
        model=None,
        latency_ms=None,
        prompt_tokens=None,
        completion_tokens=None,
        cost=None,
        policy=decision.policy,
        propensity=decision.propensity,
        decision_id=decision.id,
        end_user=end_user,
        context=dict(context or {}),
        reward=None,
        created_at=utcnow(),
    )
    repo.insert_row(session, generation)  # one INSERT, no unit-of-work flush
    return Selection(task=task, arm=arm, decision=decision, generation=generation, prompt=prompt)


def get_generation(session: Session, generation_id: str) -> Generation:
    return repo.get_generation(session, generation_id)


def complete_generation(
    session: Session,
    generation_id: str,
    *,
    output: str | None = None,
    error: str | None = None,
    model: str | None = None,
    latency_ms: float | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    cost: float | None = None,
) -> Generation:
    """Record what the client's LLM produced for a selected generation (once).

    ``error`` instead of ``output`` stores it as failed: it never gets a reward. One
    ``UPDATE … WHERE status = 'pending' RETURNING`` does it; only a refusal reads more.
    """
    if (output is None) == (error is None):
        repo.get_generation(session, generation_id)  # an unknown id is a 404 first
        raise InvalidInputError("give exactly one of output (the text) or error (why it failed)")
    session.flush()
    values = {
        "generation_id": generation_id,
        "status": "ok" if error is None else "failed",
        "output": output,
        "error": error,
        "model": model,
        "latency_ms": latency_ms,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "cost": cost,
    }
    completed = session.connection().execute(statements.COMPLETE_GENERATION, values).first()
    if completed is None:
        generation = repo.get_generation(session, generation_id)
        raise ConflictError(
            f"generation {generation_id!r} is already {generation.status}; its output is "
            "recorded once (select again for a new generation)"
        )
    return repo.attach_loaded(session, Generation, completed._mapping)


def generate(
    store: Store,
    task_name: str,
    backend: ChatBackend,
    *,
    inputs: Mapping[str, Any] | None = None,
    params: GenerationParams | None = None,
    end_user: str | None = None,
    context: Mapping[str, Any] | None = None,
    policy: str = "default",
    seed: int | None = None,
    model_arms: ModelArms | None = None,
) -> Generated:
    """Choose an arm, call its LLM and store the generation (``failed`` if the call failed).

    A prompt arm goes to ``backend``; a model arm to its own model, served by ``model_arms``
    (the service keeps one, so each model loads once). Two transactions, none open during the
    LLM call: the decision is committed first, then the generation. A crash in between leaves a
    decision without a generation, as an abandoned :func:`select_arm` does.
    """
    values = dict(inputs or {})
    with store.session() as session:
        task = repo.get_task(session, task_name)
        check_inputs(task, values)
        decision, arm = _decide(
            session, task, policy=policy, end_user=end_user, context=context, seed=seed
        )
        if _render(arm, values) is None:  # bad input is refused before the decision is kept
            raise InvalidInputError(
                f"arm {arm.name!r} has no prompt template; a model arm needs params['template'] "
                "for /v1/generate (or use /v1/select and call the model yourself)"
            )
        if arm.kind == "model" and arm.model_ref:  # a folder gone since the arm was added
            check_model_folder(arm.model_ref)  # is refused before the decision is kept
    with store.session() as session:
        generation = generate_for_arm(
            session,
            task,
            arm,
            values,
            backend,
            params or GenerationParams(),
            model_arms=model_arms,
            decision=decision,
            end_user=end_user,
            context=dict(context or {}),
        )
    return Generated(task=task, arm=arm, decision=decision, generation=generation)


# -- feedback and stats -----------------------------------------------------------------------
def submit_feedback(
    session: Session,
    task_name: str,
    event: FeedbackEvent,
    *,
    catalog: Catalog | None = None,
    policies: PolicyCache | None = None,
) -> feedback.RecordResult:
    """Record ``event`` and move the bandit's state by each reward it changed, in one go
    (:func:`prefloop.loop.submit_feedback` for the task named ``task_name``).

    A repeated idempotency key returns the first result (``duplicate=True``) and changes nothing.
    ``catalog`` (a service's cache) supplies the task without a query; ``policies`` keeps the
    live policies between requests.
    """
    task = (
        repo.get_task(session, task_name) if catalog is None else catalog.task(session, task_name)
    )
    try:
        return loop.submit_feedback(session, task, event, policies=policies)
    except InvalidInputError:
        for generation_id in _named_generations(event):  # say why, when it is a pending one
            named = session.get(Generation, generation_id)
            if named is not None and named.status == PENDING:
                raise InvalidInputError(
                    f"generation {generation_id!r} is still pending: report what your LLM "
                    f"produced first (POST /v1/generations/{generation_id}/output, or "
                    "complete_generation), then send feedback about it"
                ) from None
        raise


def _named_generations(event: FeedbackEvent) -> list[str]:
    if isinstance(event, PairwiseEvent):
        return [event.a, event.b]
    if isinstance(event, RankingEvent):
        return list(event.generation_ids)
    return [event.generation_id]


def task_stats(session: Session, task_name: str, policy: str | None = None) -> bandit.TaskStats:
    """Per arm: rewarded count, mean reward, interval, share of decisions (of ``policy`` only,
    when given); the best active arm and its probability of being best."""
    return bandit.arm_stats(session, repo.get_task(session, task_name), policy=policy)
