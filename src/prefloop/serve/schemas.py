"""Request and response bodies of the HTTP API (separate from the store's tables)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from prefloop.feedback.events import FeedbackEvent
from prefloop.store import Arm, Generation, Task

_NAME = Field(min_length=1, max_length=200, pattern=r"\S")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """Every error answer: a short machine-readable kind and a message that names the problem."""

    error: str = Field(description="not_found, invalid, conflict, too_large, unauthorized, …")
    detail: str
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="For 422 on a malformed body: each field that is wrong."
    )


# -- tasks and arms ---------------------------------------------------------------------------
class TaskCreate(_In):
    name: str = _NAME
    description: str = ""
    input_fields: list[str] = Field(default_factory=list)
    scale: list[float] | None = Field(
        default=None, description="Rating levels, increasing; default -1, -0.5, 0, 0.5, 1."
    )
    rubric: str = ""


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
            created_at=task.created_at,
        )


class ArmCreate(_In):
    name: str = _NAME
    template: str | None = Field(default=None, description="A prompt template ({field} slots).")
    model_ref: str | None = Field(default=None, description="A model or adapter reference.")
    params: dict[str, Any] = Field(default_factory=dict)
    labels: list[str] = Field(default_factory=lambda: ["candidate"])
    parent: str | None = Field(default=None, description="Name or id of the arm it improves.")


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
            created_at=arm.created_at,
        )


class LabelsUpdate(_In):
    labels: list[str] = Field(description="The arm's new labels (replaces the old ones).")


# -- select, generate, generations ------------------------------------------------------------
class SelectRequest(_In):
    task: str = _NAME
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="Values for the task's input fields."
    )
    end_user: str | None = Field(
        default=None, max_length=200, description="The end user's pseudonymous id."
    )
    context: dict[str, Any] = Field(default_factory=dict)
    policy: str | None = Field(
        default=None, min_length=1, max_length=100, description="Default: the server's."
    )
    seed: int | None = None


class ParamsIn(_In):
    max_tokens: int = Field(default=256, ge=1, le=32_768)
    temperature: float = Field(default=0.7, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    seed: int | None = None
    stop: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list, max_length=8)


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


class GenerationOutput(_In):
    """What the client's own LLM produced for a selected generation (``output`` or ``error``)."""

    output: str | None = None
    error: str | None = Field(default=None, min_length=1)
    model: str | None = Field(default=None, max_length=200)
    latency_ms: float | None = Field(default=None, ge=0)
    prompt_tokens: int | None = Field(default=None, ge=0)
    completion_tokens: int | None = Field(default=None, ge=0)
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
            created_at=generation.created_at,
        )


class GenerateFailure(ErrorBody):
    """502 from /v1/generate: the LLM call failed; the failed generation is stored."""

    generation_id: str
    decision_id: str


# -- feedback ---------------------------------------------------------------------------------
class FeedbackRequest(_In):
    task: str = _NAME
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
    mean_reward: float | None
    interval: tuple[float, float] | None = Field(description="Confidence interval of the mean.")
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
