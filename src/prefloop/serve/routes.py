"""The HTTP routes. Each one authenticates, runs one :mod:`prefloop.serve.ops` function in one
transaction, and turns the result into a response schema; errors become HTTP statuses only here
(and in the handlers :func:`prefloop.serve.app.create_app` installs)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, cast

from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    Header,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
)
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.orm import Session

from prefloop.errors import InvalidInputError
from prefloop.feedback import RecordResult
from prefloop.feedback.events import FeedbackEvent
from prefloop.llm.base import GenerationParams
from prefloop.serve import ops
from prefloop.serve.app import ServiceContext
from prefloop.serve.auth import Permission, Principal
from prefloop.serve.hotpath import Fallback, Job, Picked
from prefloop.serve.metrics import CONTENT_TYPE
from prefloop.serve.schemas import (
    ArmCreate,
    ArmOut,
    ArmRef,
    ArmStatsOut,
    ErrorBody,
    FeedbackRequest,
    FeedbackResponse,
    GenerateFailure,
    GenerateRequest,
    GenerationOut,
    GenerationOutput,
    Health,
    LabelsUpdate,
    RewardChangeOut,
    SelectRequest,
    SelectResponse,
    StatsResponse,
    TaskCreate,
    TaskOut,
)
from prefloop.store.text import NO_NUL_PATTERN

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="<API key>")

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No API key, or an unknown or revoked one."},
    403: {"model": ErrorBody, "description": "The key's role may not do this."},
    422: {
        "model": ErrorBody,
        "description": "A value breaks this document's schema; the message names it.",
    },
    503: {
        "model": ErrorBody,
        "description": "The database does not answer, is read-only or its disk is full "
        "(Retry-After says when to try again); nothing was stored.",
    },
}
_BODY: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body is not JSON (or not UTF-8)."},
    413: {"model": ErrorBody, "description": "The body is over PREFLOOP_MAX_BODY_BYTES."},
    415: {
        "model": ErrorBody,
        "description": "The body was sent with another Content-Type than application/json.",
    },
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "An unknown task, arm or generation."}
}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorBody,
        "description": "Valid by the schema, but contradicts what the store holds (e.g. an "
        "input field the task needs, a rating off its scale, a name already taken) or "
        "another part of the request; the message names it.",
    }
}
_WRITE = {**_ERRORS, **_BODY, **_NOT_FOUND, **_CONFLICT}
TaskName = Annotated[str, Path(pattern=NO_NUL_PATTERN, description="The task's name.")]
ArmName = Annotated[str, Path(pattern=NO_NUL_PATTERN, description="The arm's name or id.")]
GenerationIdPath = Annotated[str, Path(pattern=NO_NUL_PATTERN, max_length=64)]

router = APIRouter()


def _json(model: BaseModel, *, status: int = 200) -> Response:
    """``model`` as a JSON response, serialised once. The hot routes return this instead of the
    model: FastAPI would dump the model, validate the dump against the response model again and
    re-encode it, in the thread pool (their ``response_model`` still documents the schema)."""
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


async def _context(request: Request) -> ServiceContext:
    # async (like the auth dependency below): a sync dependency would cost a trip through the
    # thread pool on every request
    context: ServiceContext = request.app.state.prefloop
    return context


Ctx = Annotated[ServiceContext, Depends(_context)]


SECURITY: list[dict[str, list[str]]] = [{"HTTPBearer": []}, {"APIKeyHeader": []}]
"""The security requirement of every key-protected route (either header)."""
SECURITY_SCHEMES = {
    "HTTPBearer": _bearer.model.model_dump(mode="json", by_alias=True, exclude_none=True),
    "APIKeyHeader": _api_key_header.model.model_dump(mode="json", by_alias=True, exclude_none=True),
}


def _presented_key(request: Request) -> str | None:
    """The key of ``Authorization: Bearer <key>``, else of ``X-API-Key`` (as FastAPI's
    ``HTTPBearer`` and ``APIKeyHeader`` read them, without two dependencies to solve)."""
    return presented_key(request.headers.get("Authorization"), request.headers.get(_KEY_HEADER))


_KEY_HEADER = _api_key_header.model.name


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key of an ``Authorization`` header's bearer credentials, else ``X-API-Key``'s."""
    scheme, credentials = get_authorization_scheme_param(authorization)
    if scheme and credentials and scheme.lower() == "bearer":
        return credentials
    return api_key or None


async def principal_for(context: ServiceContext, key: str | None) -> Principal | None:
    """The principal of ``key`` (every request is admin with ``--insecure-no-auth``): a
    remembered key is answered on the event loop, a store look-up goes to the thread pool;
    None for no key or an unknown or revoked one."""
    if context.settings.insecure_no_auth:
        return _INSECURE
    if not key:
        return None
    known, principal = context.authenticator.remembered(key)
    if not known:
        principal = await run_in_threadpool(context.authenticator.authenticate, key)
    return principal


_INSECURE = Principal(name="insecure-no-auth", role="admin", key_prefix="none")
IDEMPOTENCY_KEY_MAX_LENGTH = 200


def _require(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    # one dependency reading the headers itself: FastAPI solving the two security schemes as
    # sub-dependencies cost a tenth of a hot request's CPU; the OpenAPI document still lists
    # them (document_security)
    async def dependency(request: Request) -> Principal:
        context: ServiceContext = request.app.state.prefloop
        key = _presented_key(request)
        principal = await principal_for(context, key)
        if principal is None:
            if not key:
                raise HTTPException(
                    401,
                    "no API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            raise HTTPException(
                401,
                f"unknown or revoked API key {key[:12]!r}…",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not principal.may(permission):
            raise HTTPException(
                403,
                f"a {principal.role} key may not {permission.value}; ask an admin for a key "
                "with the right role",
            )
        return principal

    dependency.prefloop_permission = permission  # type: ignore[attr-defined]
    return dependency


def document_security(app: FastAPI) -> None:
    """List the key headers in the OpenAPI document: as security schemes, and as the security
    of every route that depends on a key (FastAPI finds them only as dependencies)."""
    for route in router.routes:  # the app holds the router itself, not copies of its routes
        if isinstance(route, APIRoute) and any(
            hasattr(dependency.call, "prefloop_permission")
            for dependency in route.dependant.dependencies
        ):
            route.openapi_extra = {**(route.openapi_extra or {}), "security": SECURITY}
    build = app.openapi

    def openapi() -> dict[str, Any]:
        spec = build()
        spec.setdefault("components", {}).setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
        _add_links(spec)
        _close_pattern_properties(spec)
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


_TASK_NAME = "$response.body#/name"
_ARM_TASK = "$response.body#/task"
_ASKED_TASK = "$request.body#/task"
_LINKS: list[tuple[str, str, str, str, dict[str, Any]]] = [
    # (source operation, status, link name, target operation, parameters and requestBody)
    ("POST /v1/tasks", "201", "GetTask", "GET /v1/tasks/{task}", {"task": _TASK_NAME}),
    ("POST /v1/tasks", "201", "AddArm", "POST /v1/tasks/{task}/arms", {"task": _TASK_NAME}),
    ("POST /v1/tasks", "201", "ListArms", "GET /v1/tasks/{task}/arms", {"task": _TASK_NAME}),
    ("POST /v1/tasks", "201", "Stats", "GET /v1/stats", {"query.task": _TASK_NAME}),
    ("POST /v1/tasks/{task}/arms", "201", "Select", "POST /v1/select", {"body": _ARM_TASK}),
    ("POST /v1/tasks/{task}/arms", "201", "Generate", "POST /v1/generate", {"body": _ARM_TASK}),
    (
        "POST /v1/tasks/{task}/arms",
        "201",
        "SetLabels",
        "PUT /v1/tasks/{task}/arms/{arm}/labels",
        {"task": _ARM_TASK, "arm": "$response.body#/name"},
    ),
    (
        "POST /v1/tasks/{task}/arms",
        "201",
        "Retire",
        "POST /v1/tasks/{task}/arms/{arm}/retire",
        {"task": _ARM_TASK, "arm": "$response.body#/name"},
    ),
    (
        "POST /v1/select",
        "200",
        "GetGeneration",
        "GET /v1/generations/{generation_id}",
        {"generation_id": "$response.body#/generation_id"},
    ),
    (
        "POST /v1/select",
        "200",
        "ReportOutput",
        "POST /v1/generations/{generation_id}/output",
        {"generation_id": "$response.body#/generation_id"},
    ),
    (
        "POST /v1/generate",
        "200",
        "GetGeneration",
        "GET /v1/generations/{generation_id}",
        {"generation_id": "$response.body#/id"},
    ),
    ("POST /v1/generate", "200", "Rate", "POST /v1/feedback", {"body": "$response.body#/id"}),
    (
        "POST /v1/generations/{generation_id}/output",
        "200",
        "GetGeneration",
        "GET /v1/generations/{generation_id}",
        {"generation_id": "$response.body#/id"},
    ),
]
"""OpenAPI links: which answer's values the next requests take (a client, or a fuzzer's
stateful phase, follows them from a new task to its arms, decisions, generations, feedback)."""


def _close_pattern_properties(node: Any) -> None:
    """Say that an object's keys must match its ``patternProperties`` (pydantic's schema of a
    dict with constrained keys, e.g. text without NUL, leaves other keys allowed; its
    validation refuses them)."""
    if isinstance(node, dict):
        if "patternProperties" in node and "properties" not in node:
            node.setdefault("additionalProperties", False)
        for value in node.values():
            _close_pattern_properties(value)
    elif isinstance(node, list):
        for value in node:
            _close_pattern_properties(value)


def _add_links(spec: dict[str, Any]) -> None:
    def operation(label: str) -> dict[str, Any]:
        method, path = label.split(" ", 1)
        found: dict[str, Any] = spec["paths"][path][method.lower()]
        return found

    for source, status, name, target, values in _LINKS:
        link: dict[str, Any] = {"operationId": operation(target)["operationId"]}
        if "body" in values:  # the new request's body names the task (and the generation)
            if target == "POST /v1/feedback":
                link["requestBody"] = {
                    "task": _ASKED_TASK,
                    "event": {"kind": "thumbs", "up": True, "generation_id": values["body"]},
                }
            else:
                link["requestBody"] = {"task": values["body"]}
        else:
            link["parameters"] = values
        answer = operation(source)["responses"][status]
        answer.setdefault("links", {})[name] = link


Admin = Annotated[Principal, Depends(_require(Permission.ADMIN))]
Reader = Annotated[Principal, Depends(_require(Permission.READ))]
Selector = Annotated[Principal, Depends(_require(Permission.SELECT))]
FeedbackSender = Annotated[Principal, Depends(_require(Permission.FEEDBACK))]


# -- select, generate, generations ------------------------------------------------------------
# (the loop's routes come first: the router tries routes in the order they were added)
def select_job(ctx: ServiceContext, body: SelectRequest) -> Job:
    """``POST /v1/select`` as a hot-path job (:class:`Fallback` when it does not apply); its
    result is the response and the chosen arm's name."""
    if body.seed is not None:  # a seeded decision loads the policy afresh: the ORM path
        raise Fallback("a seeded decision")

    def answer(picked: Picked) -> tuple[SelectResponse, str]:
        response = SelectResponse(
            decision_id=picked.decision_id,
            generation_id=picked.generation_id,
            policy=picked.policy,
            arm=ArmRef(id=picked.arm.id, name=picked.arm.name),
            propensity=picked.propensity,
            prompt=picked.prompt,
            model_ref=picked.arm.model_ref,
            params=dict(picked.arm.params or {}),
        )
        return response, picked.arm.name

    return ctx.hot.select_job(
        ctx.catalog,
        ctx.policies,
        body.task,
        inputs=dict(body.inputs or {}),
        end_user=body.end_user,
        context=dict(body.context or {}),
        policy=body.policy or ctx.settings.default_policy,
        check=lambda task: ops.check_inputs(task, body.inputs or {}),
        then=answer,
    )


def select_raw(ctx: ServiceContext, body: SelectRequest) -> tuple[SelectResponse, str]:
    """``POST /v1/select`` on the raw hot path, in a transaction of its own."""
    return cast("tuple[SelectResponse, str]", ctx.hot.run(select_job(ctx, body)))


@router.post(
    "/v1/select",
    tags=["loop"],
    response_model=SelectResponse,
    responses=_WRITE,
)
async def select_arm(body: SelectRequest, request: Request, _who: Selector) -> Response:
    """Choose an arm for an end user and return its rendered prompt, for clients that call
    their own LLM. The decision and a *pending* generation are logged: complete it with
    ``POST /v1/generations/{id}/output`` and/or send feedback against ``generation_id``."""
    ctx: ServiceContext = request.app.state.prefloop  # (the hot routes skip the dependency)

    def work(session: Session) -> tuple[SelectResponse, str]:
        chosen = ops.select_arm(
            session,
            body.task,
            inputs=body.inputs,
            end_user=body.end_user,
            context=body.context,
            policy=body.policy or ctx.settings.default_policy,
            seed=body.seed,
            catalog=ctx.catalog,
            policies=ctx.policies,
        )
        response = SelectResponse(
            decision_id=chosen.decision.id,
            generation_id=chosen.generation.id,
            policy=chosen.decision.policy,
            arm=ArmRef(id=chosen.arm.id, name=chosen.arm.name),
            propensity=chosen.decision.propensity,
            prompt=chosen.prompt,
            model_ref=chosen.arm.model_ref,
            params=dict(chosen.arm.params or {}),
        )
        return response, chosen.arm.name

    response, arm_name = await ctx.hot_write(lambda: select_raw(ctx, body), work)
    ctx.metrics.count_decision(body.task, arm_name)
    return _json(response)


@router.post(
    "/v1/generate",
    tags=["loop"],
    responses={
        **_WRITE,
        502: {"model": GenerateFailure, "description": "The LLM call failed (stored as failed)."},
        503: {"model": ErrorBody, "description": "No LLM backend is configured."},
    },
)
def generate(body: GenerateRequest, ctx: Ctx, _who: Selector) -> Any:
    """Choose an arm, call the server's LLM backend and log the generation. A failed LLM call
    answers 502 with the error and the id of the stored failed generation (it gets no reward)."""
    backend = ctx.backend()
    params = GenerationParams(
        max_tokens=body.params.max_tokens,
        temperature=body.params.temperature,
        top_p=body.params.top_p,
        seed=body.params.seed,
        stop=tuple(body.params.stop),
    )
    result = ops.generate(
        ctx.store,
        body.task,
        backend,
        inputs=body.inputs,
        params=params,
        end_user=body.end_user,
        context=body.context,
        policy=body.policy or ctx.settings.default_policy,
        seed=body.seed,
        model_arms=ctx.model_arms,
    )
    ctx.metrics.count_decision(body.task, result.arm.name)
    generation = result.generation
    if result.failed:
        ctx.metrics.count_llm_failure(body.task, (generation.error or "").split(":", 1)[0])
        failure = GenerateFailure(
            error="llm_failed",
            detail=f"the LLM call failed: {generation.error}",
            generation_id=generation.id,
            decision_id=result.decision.id,
        )
        return JSONResponse(status_code=502, content=failure.model_dump())
    return GenerationOut.of(generation)


@router.get("/v1/generations/{generation_id}", tags=["loop"], responses={**_ERRORS, **_NOT_FOUND})
def get_generation(generation_id: GenerationIdPath, ctx: Ctx, _who: Reader) -> GenerationOut:
    return ctx.read(lambda s: GenerationOut.of(ops.get_generation(s, generation_id)))


@router.post(
    "/v1/generations/{generation_id}/output",
    tags=["loop"],
    response_model=GenerationOut,
    responses=_WRITE,
)
async def complete_generation(
    generation_id: GenerationIdPath, body: GenerationOutput, request: Request, _who: Selector
) -> Response:
    """Record what your LLM produced for a selected generation (once), or that it failed."""
    ctx: ServiceContext = request.app.state.prefloop

    def work(session: Session) -> GenerationOut:
        generation = ops.complete_generation(
            session, generation_id, **body.model_dump(exclude_none=True)
        )
        return GenerationOut.of(generation)

    return _json(await ctx.hot_write(lambda: output_raw(ctx, generation_id, body), work))


def output_job(ctx: ServiceContext, generation_id: str, body: GenerationOutput) -> Job:
    """``POST /v1/generations/{id}/output`` as a hot-path job (or :class:`Fallback`)."""
    values = body.model_dump(exclude_none=True)
    return ctx.hot.complete_job(generation_id, values, then=GenerationOut.of)


def output_raw(ctx: ServiceContext, generation_id: str, body: GenerationOutput) -> GenerationOut:
    """``POST /v1/generations/{id}/output`` on the raw hot path, in a transaction of its own."""
    return cast(GenerationOut, ctx.hot.run(output_job(ctx, generation_id, body)))


# -- feedback -----------------------------------------------------------------------------------
@router.post(
    "/v1/feedback",
    status_code=201,
    tags=["loop"],
    response_model=FeedbackResponse,
    responses={
        **_WRITE,
        200: {"model": FeedbackResponse, "description": "A repeated idempotency key."},
    },
)
async def send_feedback(
    body: FeedbackRequest,
    request: Request,
    who: FeedbackSender,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=IDEMPOTENCY_KEY_MAX_LENGTH,
            description="Same as the event's idempotency_key; a repeat stores nothing new.",
        ),
    ] = None,
) -> Response:
    """Record one feedback event of any kind (rating, thumbs, regenerate, pairwise, ranking,
    edit). Idempotent by the ``Idempotency-Key`` header or the event's ``idempotency_key``: a
    repeat answers 200 with the first result and ``duplicate: true``; a new event answers 201."""
    ctx: ServiceContext = request.app.state.prefloop
    event = feedback_event(body, who, idempotency_key)

    def work(session: Session) -> FeedbackResponse:
        return _feedback_answer(
            ops.submit_feedback(
                session, body.task, event, catalog=ctx.catalog, policies=ctx.policies
            )
        )

    answer = await ctx.hot_write(lambda: feedback_raw(ctx, body.task, event), work)
    ctx.metrics.count_feedback(body.task, event.kind, duplicate=answer.duplicate)
    return _json(answer, status=200 if answer.duplicate else 201)


def feedback_event(
    body: FeedbackRequest, who: Principal, idempotency_key: str | None
) -> FeedbackEvent:
    """The event to record: the ``Idempotency-Key`` header's key, a labeler's defaults."""
    event = body.event
    if idempotency_key is not None:
        if event.idempotency_key not in (None, idempotency_key):
            raise InvalidInputError(
                f"the Idempotency-Key header ({idempotency_key!r}) and the event's "
                f"idempotency_key ({event.idempotency_key!r}) differ; send one of them"
            )
        event = event.model_copy(update={"idempotency_key": idempotency_key})
    if who.role == "labeler":
        defaults = {"author": who.name, "source": "labeler"}
        event = event.model_copy(
            update={k: v for k, v in defaults.items() if k not in event.model_fields_set}
        )
    return event


def feedback_job(ctx: ServiceContext, task: str, event: FeedbackEvent) -> Job:
    """``POST /v1/feedback`` as a hot-path job (or :class:`Fallback`)."""
    return ctx.hot.feedback_job(ctx.catalog, ctx.policies, task, event, then=_feedback_answer)


def feedback_raw(ctx: ServiceContext, task: str, event: FeedbackEvent) -> FeedbackResponse:
    """``POST /v1/feedback`` on the raw hot path, in a transaction of its own."""
    return cast(FeedbackResponse, ctx.hot.run(feedback_job(ctx, task, event)))


def _feedback_answer(result: RecordResult) -> FeedbackResponse:
    return FeedbackResponse(
        feedback_id=result.feedback_id,
        duplicate=result.duplicate,
        derived_ids=list(result.derived_ids),
        reward_changes=[
            RewardChangeOut(
                generation_id=c.generation_id,
                decision_id=c.decision_id,
                arm_id=c.arm_id,
                old=c.old,
                new=c.new,
            )
            for c in result.reward_changes
        ],
    )


# -- stats --------------------------------------------------------------------------------------
@router.get("/v1/stats", tags=["loop"], responses={**_ERRORS, **_NOT_FOUND, **_CONFLICT})
def stats(
    ctx: Ctx,
    _who: Reader,
    task: Annotated[
        str, Query(min_length=1, pattern=NO_NUL_PATTERN, description="The task's name.")
    ],
    policy: Annotated[
        str | None,
        Query(
            min_length=1,
            pattern=NO_NUL_PATTERN,
            description="Count only this policy's decisions.",
        ),
    ] = None,
) -> StatsResponse:
    """Per arm: rewarded count, mean reward and its 95% interval, share of decisions, the
    probability of being best; the current best arm and that probability."""

    def work(session: Session) -> StatsResponse:
        summary = ops.task_stats(session, task, policy)
        return StatsResponse(
            task=summary.task,
            policy=policy,
            arms=[
                ArmStatsOut(
                    arm_id=arm.arm_id,
                    arm=arm.arm,
                    count=arm.count,
                    mean_reward=arm.mean_reward,
                    interval=arm.interval,
                    raw_mean_reward=arm.raw_mean_reward,
                    share=arm.share,
                    p_best=arm.p_best,
                    retired=arm.retired,
                )
                for arm in summary.arms
            ],
            best_arm=summary.best_arm,
            best_probability=summary.best_probability,
            decisions=summary.decisions,
            feedbacks=summary.feedbacks,
        )

    return ctx.read(work)


# -- service ----------------------------------------------------------------------------------
@router.get("/healthz", tags=["service"], responses={503: {"model": ErrorBody}})
def healthz(ctx: Ctx) -> Any:
    """Liveness and database reachability (no key needed)."""
    try:
        ctx.read(lambda s: s.execute(text("SELECT 1")).scalar_one())
    except Exception as exc:
        return JSONResponse(
            status_code=503,
            content={"error": "unavailable", "detail": f"the database does not answer: {exc}"},
        )
    return Health(status="ok", database=ctx.store.dialect)


@router.get(
    "/metrics",
    tags=["service"],
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {}}},
        401: {"model": ErrorBody, "description": "PREFLOOP_METRICS_REQUIRE_KEY and no key."},
        403: {"model": ErrorBody, "description": "PREFLOOP_METRICS_REQUIRE_KEY: a key may not."},
    },
)
async def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text format: requests, latency, feedback events, decisions. No key needed
    unless ``PREFLOOP_METRICS_REQUIRE_KEY`` (then any key that may read): the series name
    tasks and arms."""
    ctx: ServiceContext = request.app.state.prefloop
    if ctx.settings.metrics_require_key:
        await _METRICS_READER(request)
    return PlainTextResponse(ctx.metrics.render(), media_type=CONTENT_TYPE)


_METRICS_READER = _require(Permission.READ)


# -- tasks and arms ---------------------------------------------------------------------------
@router.post("/v1/tasks", status_code=201, tags=["tasks"], responses=_WRITE)
def create_task(body: TaskCreate, ctx: Ctx, _who: Admin) -> TaskOut:
    def work(session: Session) -> TaskOut:
        task = ops.create_task(
            session,
            body.name,
            description=body.description,
            input_fields=body.input_fields,
            scale=body.scale,
            rubric=body.rubric,
        )
        return TaskOut.of(task)

    return ctx.changing_catalog(work)


@router.get("/v1/tasks", tags=["tasks"], responses=_ERRORS)
def list_tasks(ctx: Ctx, _who: Reader) -> list[TaskOut]:
    return ctx.read(lambda s: [TaskOut.of(t) for t in ops.list_tasks(s)])


@router.get("/v1/tasks/{task}", tags=["tasks"], responses={**_ERRORS, **_NOT_FOUND})
def get_task(task: TaskName, ctx: Ctx, _who: Reader) -> TaskOut:
    return ctx.read(lambda s: TaskOut.of(ops.get_task(s, task)))


@router.post(
    "/v1/tasks/{task}/arms",
    status_code=201,
    tags=["tasks"],
    responses=_WRITE,
)
def create_arm(task: TaskName, body: ArmCreate, ctx: Ctx, _who: Admin) -> ArmOut:
    def work(session: Session) -> ArmOut:
        arm = ops.create_arm(
            session,
            task,
            body.name,
            template=body.template,
            model_ref=body.model_ref,
            params=body.params,
            labels=body.labels,
            parent=body.parent,
        )
        return ArmOut.of(arm, ops.get_task(session, task))

    return ctx.changing_catalog(work)


@router.get("/v1/tasks/{task}/arms", tags=["tasks"], responses={**_ERRORS, **_NOT_FOUND})
def list_arms(task: TaskName, ctx: Ctx, _who: Reader) -> list[ArmOut]:
    def work(session: Session) -> list[ArmOut]:
        owner = ops.get_task(session, task)
        return [ArmOut.of(arm, owner) for arm in ops.list_arms(session, task)]

    return ctx.read(work)


@router.put("/v1/tasks/{task}/arms/{arm}/labels", tags=["tasks"], responses=_WRITE)
def set_labels(task: TaskName, arm: ArmName, body: LabelsUpdate, ctx: Ctx, _who: Admin) -> ArmOut:
    """Replace an arm's labels (e.g. promote a candidate to ``production``)."""

    def work(session: Session) -> ArmOut:
        changed = ops.set_arm_labels(session, task, arm, body.labels)
        return ArmOut.of(changed, ops.get_task(session, task))

    return ctx.changing_catalog(work)


@router.post("/v1/tasks/{task}/arms/{arm}/retire", tags=["tasks"], responses=_WRITE)
def retire_arm(task: TaskName, arm: ArmName, ctx: Ctx, _who: Admin) -> ArmOut:
    """Stop choosing this arm; its generations and feedback stay."""

    def work(session: Session) -> ArmOut:
        return ArmOut.of(ops.retire_arm(session, task, arm), ops.get_task(session, task))

    return ctx.changing_catalog(work)
