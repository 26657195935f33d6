"""Generating with an arm and storing the result: what the service and the demo call.

An arm's ``template`` is rendered with the request's input fields (``str.format`` style:
``"Write a diary about {place} with {company}"``), sent to a :class:`ChatBackend` as the user
message (after ``arm.params["system"]`` as the system message, if set) and stored as a
:class:`~prefloop.store.models.Generation`. An LLM failure is stored as a failed generation
with its error and no output; it never gets a reward.

``arm.params`` may also override the caller's sampling settings: ``max_tokens``,
``temperature``, ``top_p``, ``seed``, ``stop``.

This is the one place an arm meets its LLM: a prompt arm goes to the ``backend`` the caller
gives; a model arm (``arm.kind == "model"``) goes to its own model on this machine, served by
``model_arms`` (:class:`~prefloop.llm.ModelArms`: one base in memory, adapters switched per
batch) and renders ``arm.params["template"]``. The generation's ``model`` names the arm's model
(``local:<folder name>``).
"""

from __future__ import annotations

import dataclasses
import string
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from prefloop.errors import InvalidInputError
from prefloop.llm._arms import ModelArms
from prefloop.llm._messages import check_params
from prefloop.llm.base import (
    ChatBackend,
    Completion,
    GenerationParams,
    LLMError,
    LLMServerError,
    Message,
    model_name,
)
from prefloop.store.models import Arm, BanditDecision, Generation, Task
from prefloop.store.repo import add_generation

_PARAM_OVERRIDES = ("max_tokens", "temperature", "top_p", "seed", "stop")
_FORMATTER = string.Formatter()


def template_fields(template: str) -> list[str]:
    """The placeholder names of a template, in order of first use.

    Raises :class:`InvalidInputError` for a malformed template (unbalanced braces) or a
    placeholder that is not a plain name (``{a.b}``, ``{a[0]}`` and ``{}`` are refused).
    """
    names: list[str] = []
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise InvalidInputError(
            f"the template is malformed ({exc}); placeholders look like {{place}} and a literal "
            "brace is written twice: {{ or }}"
        ) from None
    for _literal, name, spec, _conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise InvalidInputError(
                f"placeholder {{{name}}} is not a plain field name; use names like {{place}} "
                "(no attributes, indexes or empty braces)"
            )
        if spec and "{" in spec:
            raise InvalidInputError(f"placeholder {{{name}:{spec}}} nests another placeholder")
        if name not in names:
            names.append(name)
    return names


def render_template(template: str, inputs: Mapping[str, Any], *, arm_name: str = "") -> str:
    """``template`` with each ``{field}`` replaced by ``str(inputs[field])``."""
    where = f" of arm {arm_name!r}" if arm_name else ""
    missing = [name for name in template_fields(template) if name not in inputs]
    if missing:
        given = ", ".join(sorted(inputs)) or "none"
        raise InvalidInputError(
            f"the template{where} needs input field(s) {', '.join(missing)}, which the input "
            f"lacks (given: {given}); add them to the input"
        )
    values = {name: str(value) for name, value in inputs.items()}
    try:
        return template.format_map(values)
    except (ValueError, TypeError) as exc:  # e.g. a format spec that does not fit a string
        raise InvalidInputError(f"the template{where} could not be rendered: {exc}") from None


@dataclass(frozen=True)
class GenerationRequest:
    """One arm applied to one input, with how the arm was chosen (for the batch helper)."""

    arm: Arm
    inputs: Mapping[str, Any]
    decision: BanditDecision | None = None
    policy: str | None = None
    propensity: float | None = None
    end_user: str | None = None
    context: Mapping[str, Any] | None = field(default=None)


def generate_for_arm(
    session: Session,
    task: Task,
    arm: Arm,
    inputs: Mapping[str, Any],
    backend: ChatBackend | None,
    params: GenerationParams,
    *,
    model_arms: ModelArms | None = None,
    decision: BanditDecision | None = None,
    policy: str | None = None,
    propensity: float | None = None,
    end_user: str | None = None,
    context: Mapping[str, Any] | None = None,
) -> Generation:
    """Render ``arm`` with ``inputs``, call ``backend`` and store the generation.

    Bad input (a field the template needs is missing, an arm of another task) raises
    :class:`InvalidInputError` and stores nothing. An :class:`LLMError` is stored as
    ``status='failed'`` with the error and no reward. ``policy`` and ``propensity`` default to
    the decision's. ``backend`` serves prompt arms (``None`` will do for a model arm);
    ``model_arms`` serves model arms (a short-lived one is made when it is not given).
    """
    request = GenerationRequest(arm, inputs, decision, policy, propensity, end_user, context)
    messages, call_params, fields = _prepare(task, request, params)
    chat = _route(arm, backend, model_arms or ModelArms())
    started = time.perf_counter()
    try:
        result: Completion | LLMError = chat.complete(messages, call_params)
    except LLMError as exc:
        result = exc
    return _store(session, task, chat, fields, result, time.perf_counter() - started)


def generate_batch(
    session: Session,
    task: Task,
    requests: Sequence[GenerationRequest],
    backend: ChatBackend | None,
    params: GenerationParams,
    *,
    model_arms: ModelArms | None = None,
) -> list[Generation]:
    """:func:`generate_for_arm` for many requests with one ``complete_batch`` per backend and
    setting: the prompt arms together, each model arm on its own adapter.

    All requests are checked (and model arms loaded) before any LLM call, so bad input stores
    nothing. Requests whose arms override sampling settings are batched separately.
    Generations come back in order.
    """
    prepared = [_prepare(task, request, params) for request in requests]
    arms = model_arms or ModelArms()
    chats = [_route(request.arm, backend, arms) for request in requests]
    groups: dict[tuple[int, GenerationParams], list[int]] = {}
    for i, (_messages, call_params, _fields) in enumerate(prepared):
        groups.setdefault((id(chats[i]), call_params), []).append(i)
    results: dict[int, tuple[Completion | LLMError, float]] = {}
    for (_chat, call_params), indexes in groups.items():
        chat = chats[indexes[0]]
        started = time.perf_counter()
        answers = chat.complete_batch([prepared[i][0] for i in indexes], call_params)
        elapsed = time.perf_counter() - started
        if len(answers) != len(indexes):
            raise LLMServerError(
                f"backend {chat.name!r} returned {len(answers)} results for "
                f"{len(indexes)} conversations; complete_batch must return one per conversation"
            )
        for i, answer in zip(indexes, answers, strict=True):
            results[i] = (answer, elapsed)
    return [
        _store(session, task, chats[i], fields, result, elapsed)
        for i, (_messages, _params, fields) in enumerate(prepared)
        for result, elapsed in [results[i]]
    ]


def _route(arm: Arm, backend: ChatBackend | None, model_arms: ModelArms) -> ChatBackend:
    """The backend that serves ``arm``: its own model for a model arm, else ``backend``."""
    if arm.kind == "model":
        if not arm.model_ref:
            raise InvalidInputError(
                f"model arm {arm.name!r} has no model_ref; add it again with "
                "`prefloop arms add --model DIR`"
            )
        return model_arms.backend(arm.model_ref)
    if backend is None:
        raise InvalidInputError(
            f"arm {arm.name!r} is a prompt arm and needs an LLM backend; none was given"
        )
    return backend


def _prepare(
    task: Task, request: GenerationRequest, params: GenerationParams
) -> tuple[list[Message], GenerationParams, dict[str, Any]]:
    arm = request.arm
    if arm.task_id != task.id:
        raise InvalidInputError(f"arm {arm.name!r} belongs to another task than {task.name!r}")
    if not isinstance(request.inputs, Mapping):
        raise InvalidInputError(
            "inputs must be a mapping of field names to values, got "
            f"{type(request.inputs).__name__}"
        )
    template = arm.template if arm.template is not None else arm.params.get("template")
    if not isinstance(template, str):
        raise InvalidInputError(
            f"arm {arm.name!r} has no prompt template; a model arm needs params['template'] "
            "(`prefloop arms add --model DIR` sets it)"
        )
    prompt = render_template(template, request.inputs, arm_name=arm.name)
    messages: list[Message] = []
    system = arm.params.get("system")
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": prompt})

    decision = request.decision
    if decision is not None and decision.arm_id != arm.id:
        raise InvalidInputError(
            f"decision {decision.id!r} chose arm id {decision.arm_id}, not arm {arm.name!r} "
            f"(id {arm.id})"
        )
    propensity = request.propensity
    if propensity is None and decision is not None:
        propensity = decision.propensity
    if propensity is not None and not 0.0 < propensity <= 1.0:
        raise InvalidInputError(f"propensity must be in (0, 1], got {propensity}")
    fields: dict[str, Any] = {
        "arm_id": arm.id,
        "input": {str(k): v for k, v in request.inputs.items()},
        "prompt": prompt,
        "decision_id": decision.id if decision is not None else None,
        "policy": request.policy or (decision.policy if decision is not None else None),
        "propensity": propensity,
        "end_user": request.end_user,
        "context": dict(request.context or {}),
    }
    return messages, _arm_params(arm, params), fields


def _arm_params(arm: Arm, params: GenerationParams) -> GenerationParams:
    overrides = {key: arm.params[key] for key in _PARAM_OVERRIDES if key in arm.params}
    if "stop" in overrides:
        overrides["stop"] = tuple(overrides["stop"])
    if not overrides:
        return params
    try:
        merged = dataclasses.replace(params, **overrides)
        check_params(merged)
    except (TypeError, InvalidInputError) as exc:
        raise InvalidInputError(
            f"arm {arm.name!r} has bad sampling params {overrides}: {exc}"
        ) from None
    return merged


def _store(
    session: Session,
    task: Task,
    backend: ChatBackend,
    fields: dict[str, Any],
    result: Completion | LLMError,
    elapsed_s: float,
) -> Generation:
    if isinstance(result, LLMError):
        return add_generation(
            session,
            task,
            **fields,
            status="failed",
            error=f"{type(result).__name__}: {result}",
            output=None,
            model=model_name(backend),
            latency_ms=elapsed_s * 1000.0,
            reward=None,
        )
    return add_generation(
        session,
        task,
        **fields,
        status="ok",
        output=result.text,
        model=result.model,
        latency_ms=result.latency_ms if result.latency_ms is not None else elapsed_s * 1000.0,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        cost=result.cost,
    )
