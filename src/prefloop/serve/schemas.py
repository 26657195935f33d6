"""Request and response bodies of the HTTP API (separate from the store's tables)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import JsonValue

from prefloop.feedback.events import FeedbackEvent
from prefloop.llm.generate import template_fields
from prefloop.store import Arm, Generation, Task
from prefloop.store.text import (
    INT32_MAX,
    JSON_INTEGER,
    NO_NUL_PATTERN,
    JsonObject,
    StorableName,
    StorableText,
)

SEED_MAX = 2**53 - 1
"""The largest seed a request may carry (the largest integer every JSON parser holds exactly)."""
TEMPLATE_PATTERN = r"^(?:[^{}\x00]|\{\{|\}\}|\{[^\W\d]\w*\})*$"
"""A prompt template: text with ``{name}`` placeholders; a literal brace is written twice."""
_TEMPLATE = re.compile(TEMPLATE_PATTERN)
SCALE_LIMIT = 1e9
"""The largest magnitude of a rating level."""


def utc(moment: datetime) -> datetime:
    """``moment`` with its time zone: the store keeps UTC times without one (SQLite)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _check_template(template: str | None) -> str | None:
    if template is None:
        return None
    template_fields(template)  # explains a malformed one
    if _TEMPLATE.match(template) is None:
        raise ValueError(
            "placeholders are plain names like {place}, without a conversion (!r) or a format "
            "spec (:>10); a literal brace is written twice: {{ or }}"
        )
    return template


PATH_NAME_PATTERN = r"^[^\x00/]*[^\s\x00/][^\x00/]*$"
"""A task's or arm's name: it is part of URLs, so it has no slash."""
PathName = Annotated[str, Field(min_length=1, max_length=200, pattern=PATH_NAME_PATTERN)]
"""A name that is part of URLs (a task's, an arm's): 1 to 200 characters, not only white
space, no slash and no NUL."""
Seed = Annotated[int, Field(strict=True, ge=0, le=SEED_MAX), JSON_INTEGER]
TokenCount = Annotated[int, Field(strict=True, ge=0, le=INT32_MAX), JSON_INTEGER]
MaxTokens = Annotated[int, Field(strict=True, ge=1, le=32_768), JSON_INTEGER]
Template = Annotated[
    str,
    AfterValidator(_check_template),
    Field(
        json_schema_extra={"pattern": TEMPLATE_PATTERN},
        description="A prompt template: {field} slots of the task's input fields; a literal "
        "brace is written twice ({{ or }}).",
    ),
]


class _In(BaseModel):
    # strict: a value of another JSON type than the schema's is refused, not converted (true
    # is not a temperature of 1, "5" not a token count)
    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorBody(BaseModel):
    """Every error answer: a short machine-readable kind and a message that names the problem."""

    error: str = Field(description="not_found, invalid, conflict, too_large, unauthorized, …")
    detail: str
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="For 422 on a malformed body: each field that is wrong."
    )


# -- tasks and arms ---------------------------------------------------------------------------
class TaskCreate(_In):
    name: PathName
    description: StorableText = ""
    input_fields: list[StorableName] = Field(default_factory=list)
    scale: (
        Annotated[
            list[Annotated[float, Field(ge=-SCALE_LIMIT, le=SCALE_LIMIT)]],
            Field(min_length=2, max_length=100, json_schema_extra={"uniqueItems": True}),
        ]
        | None
    ) = Field(
        default=None,
        description="Rating levels, each once, in any order (kept sorted); default -1, -0.5, "
        "0, 0.5, 1.",
    )
    rubric: StorableText = ""

    @field_validator("scale")
    @classmethod
    def _sorted(cls, scale: list[float] | None) -> list[float] | None:
        if scale is None:
            return None
        if len(set(scale)) != len(scale):
            raise ValueError(f"each rating level may appear once, got {scale}")
        return sorted(scale)


class TaskOut(BaseModel):
    id: int
    name: str
    description: str
    input_fields: list[str]
    scale: list[float]
    rubric: str
    created_at: datetime

    @classmethod
    def of(cls, task: Task) -> TaskOut:
        return cls(
            id=task.id,
            name=task.name,
            description=task.description,
            input_fields=[str(f) for f in task.input_fields or []],
            scale=[float(v) for v in task.scale or []],
            rubric=task.rubric,
            created_at=utc(task.created_at),
        )


_ONE_OF_TEMPLATE_OR_MODEL: list[JsonValue] = [
    {
        "required": ["template"],
        "properties": {"template": {"type": "string"}, "model_ref": {"type": "null"}},
    },
    {
        "required": ["model_ref"],
        "properties": {"model_ref": {"type": "string"}, "template": {"type": "null"}},
    },
]


class ArmCreate(_In):
    """A prompt arm (``template``) or a model arm (``model_ref``): exactly one of the two."""

    model_config = ConfigDict(json_schema_extra={"oneOf": _ONE_OF_TEMPLATE_OR_MODEL})

    name: PathName
    template: Template | None = None
    model_ref: (
        Annotated[str, Field(min_length=1, max_length=500, pattern=NO_NUL_PATTERN)] | None
    ) = Field(default=None, description="A model or adapter reference.")
    params: JsonObject = Field(default_factory=dict)
    labels: list[StorableName] = Field(default_factory=lambda: ["candidate"], max_length=50)
    parent: StorableName | None = Field(
        default=None, description="Name or id of the arm it improves."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> ArmCreate:
        if (self.template is None) == (self.model_ref is None):
            which = "both" if self.template is not None else "neither"
            raise ValueError(f"give either a prompt template or a model reference, not {which}")
        return self


class ArmOut(BaseModel):
    id: int
    task: str
    name: str
    kind: str
    template: str | None
    model_ref: str | None
    params: dict[str, Any]
    labels: list[str]
    retired: bool
    parent_id: int | None
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, arm: Arm, task: Task) -> ArmOut:
        return cls(
            id=arm.id,
            task=task.name,
            name=arm.name,
            kind=arm.kind,
            template=arm.template,
            model_ref=arm.model_ref,
            params=dict(arm.params or {}),
            labels=[str(label) for label in arm.labels or []],
            retired=arm.retired,
            parent_id=arm.parent_id,
            created_by=arm.created_by,
            created_at=utc(arm.created_at),
        )


class LabelsUpdate(_In):
    labels: list[StorableName] = Field(
        max_length=50, description="The arm's new labels (replaces the old ones)."
    )


# -- select, generate, generations ------------------------------------------------------------
class SelectRequest(_In):
    task: StorableName
    inputs: JsonObject = Field(
        default_factory=dict, description="Values for the task's input fields."
    )
    end_user: Annotated[str, Field(max_length=200, pattern=NO_NUL_PATTERN)] | None = Field(
        default=None, description="The end user's pseudonymous id."
    )
    context: JsonObject = Field(default_factory=dict)
    policy: Annotated[StorableName, Field(max_length=100)] | None = Field(
        default=None, description="Default: the server's."
    )
    seed: Seed | None = None


class ParamsIn(_In):
    max_tokens: MaxTokens = 256
    temperature: float = Field(default=0.7, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: Seed | None = None
    stop: list[Annotated[str, Field(min_length=1, pattern=NO_NUL_PATTERN)]] = Field(
        default_factory=list, max_length=8
    )


class GenerateRequest(SelectRequest):
    params: ParamsIn = Field(default_factory=ParamsIn)


class ArmRef(BaseModel):
    id: int
    name: str


class SelectResponse(BaseModel):
    """The chosen arm and the pending generation to complete or send feedback against."""

    decision_id: str
    generation_id: str
    policy: str
    arm: ArmRef
    propensity: float = Field(description="The probability the policy gave this arm.")
    prompt: str | None = Field(description="The rendered prompt (None for a model arm).")
    model_ref: str | None
    params: dict[str, Any]


_ONE_OF_OUTPUT_OR_ERROR: list[JsonValue] = [
    {
        "required": ["output"],
        "properties": {"output": {"type": "string"}, "error": {"type": "null"}},
    },
    {
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "output": {"type": "null"}},
    },
]


class GenerationOutput(_In):
    """What the client's own LLM produced for a selected generation (``output`` or ``error``)."""

    model_config = ConfigDict(json_schema_extra={"oneOf": _ONE_OF_OUTPUT_OR_ERROR})

    output: StorableText | None = None
    error: Annotated[str, Field(min_length=1, pattern=NO_NUL_PATTERN)] | None = None
    model: Annotated[str, Field(max_length=200, pattern=NO_NUL_PATTERN)] | None = None
    latency_ms: float | None = Field(
        default=None, ge=0, description="How long your LLM call took, in milliseconds."
    )
    prompt_tokens: TokenCount | None = None
    completion_tokens: TokenCount | None = None
    cost: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_of(self) -> GenerationOutput:
        if (self.output is None) == (self.error is None):
            raise ValueError(
                "give exactly one of 'output' (the text your LLM produced) or 'error' "
                "(why the call failed)"
            )
        return self


class GenerationOut(BaseModel):
    id: str
    task_id: int
    arm_id: int | None
    status: str = Field(description="pending (selected, no output yet), ok or failed")
    input: dict[str, Any]
    prompt: str | None
    output: str | None
    error: str | None
    model: str | None
    latency_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cost: float | None
    policy: str | None
    propensity: float | None
    decision_id: str | None
    end_user: str | None
    reward: float | None
    created_at: datetime

    @classmethod
    def of(cls, generation: Generation) -> GenerationOut:
        return cls(
            id=generation.id,
            task_id=generation.task_id,
            arm_id=generation.arm_id,
            status=generation.status,
            input=dict(generation.input or {}),
            prompt=generation.prompt,
            output=generation.output,
            error=generation.error,
            model=generation.model,
            latency_ms=generation.latency_ms,
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
            cost=generation.cost,
            policy=generation.policy,
            propensity=generation.propensity,
            decision_id=generation.decision_id,
            end_user=generation.end_user,
            reward=generation.reward,
            created_at=utc(generation.created_at),
        )


class GenerateFailure(ErrorBody):
    """502 from /v1/generate: the LLM call failed; the failed generation is stored."""

    generation_id: str
    decision_id: str


# -- feedback ---------------------------------------------------------------------------------
class FeedbackRequest(_In):
    task: StorableName
    event: FeedbackEvent


class RewardChangeOut(BaseModel):
    generation_id: str
    decision_id: str | None
    arm_id: int | None
    old: float | None
    new: float | None


class FeedbackResponse(BaseModel):
    feedback_id: int
    duplicate: bool = Field(description="True when the idempotency key was seen before.")
    derived_ids: list[int]
    reward_changes: list[RewardChangeOut]


# -- stats ------------------------------------------------------------------------------------
class ArmStatsOut(BaseModel):
    arm_id: int
    arm: str
    count: int = Field(description="Generations of this arm with a reward.")
    mean_reward: float | None = Field(
        description="Posterior mean of the arm's mean reward (Dirichlet(1/2) posterior on the "
        "task's levels): the estimator the interval is for, so it lies inside it; pulled "
        "toward the scale's middle while rewards are few."
    )
    interval: tuple[float, float] | None = Field(
        description="95% credible interval of the mean reward (same posterior)."
    )
    raw_mean_reward: float | None = Field(
        description="The plain average of the rewards received (not the interval's estimator)."
    )
    share: float = Field(description="Fraction of the task's decisions that chose this arm.")
    p_best: float | None = Field(
        description="Posterior probability that this arm is the best active one (None: retired)."
    )
    retired: bool


class StatsResponse(BaseModel):
    task: str
    policy: str | None = Field(description="Shares count this policy's decisions (None: all).")
    arms: list[ArmStatsOut]
    best_arm: str | None
    best_probability: float | None = Field(
        description="Posterior probability that the best arm is really the best."
    )
    decisions: int
    feedbacks: int = Field(description="Rewarded generations of the task's arms.")


class Health(BaseModel):
    status: str
    database: str
