"""The tables of the store: one ORM class per concept of DESIGN.md.

Tables are created and upgraded by the Alembic migrations in ``store/migrations``; a change here
needs a new migration (``make migration m="what changed"``).

Times are stored as timezone-aware UTC. Free-form structures (inputs, contexts, event payloads)
are JSON columns, so SQLite and PostgreSQL hold the same content.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

DEFAULT_SCALE: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """A readable, unique string id such as ``gen_3f2a…`` (32 hex digits of a UUID4)."""
    return f"{prefix}_{uuid.uuid4().hex}"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Task(Base):
    """One generation job, e.g. "write a photo diary from place, company and mood"."""

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    input_fields: Mapped[list[Any]] = mapped_column(JSON, default=list)
    scale: Mapped[list[Any]] = mapped_column(JSON, default=lambda: list(DEFAULT_SCALE))
    rubric: Mapped[str] = mapped_column(Text, default="")
    reward_rules: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    arms: Mapped[list[Arm]] = relationship(back_populates="task", order_by="Arm.id")


class Arm(Base):
    """One candidate for a task: a prompt template version or a model/adapter reference.

    The content (``template``, ``model_ref``, ``params``) never changes once created; a new
    version is a new arm whose ``parent_id`` points at the old one. ``labels`` may change
    (``production``, ``candidate``, ``retired``).
    """

    __tablename__ = "arms"
    __table_args__ = (UniqueConstraint("task_id", "name", name="uq_arms_task_id_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20), default="prompt")  # prompt | model
    template: Mapped[str | None] = mapped_column(Text, nullable=True)
    model_ref: Mapped[str | None] = mapped_column(String(500), nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    labels: Mapped[list[Any]] = mapped_column(JSON, default=list)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("arms.id"), nullable=True)
    created_by: Mapped[str] = mapped_column(String(100), default="human")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    task: Mapped[Task] = relationship(back_populates="arms")

    @property
    def retired(self) -> bool:
        return "retired" in (self.labels or [])


class Generation(Base):
    """An arm applied to an input by an LLM backend (or an output imported from elsewhere).

    ``status`` is ``ok``, ``failed`` or ``pending`` (chosen by ``/v1/select``, waiting for the
    client's own LLM output); a failed generation keeps its ``error`` and never gets a reward.
    ``reward`` caches the value derived from this generation's feedback
    (:func:`prefloop.feedback.derive_reward`); ``None`` means no reward yet.
    """

    __tablename__ = "generations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("gen"))
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    arm_id: Mapped[int | None] = mapped_column(ForeignKey("arms.id"), nullable=True, index=True)
    input: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    output: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="ok")  # ok | failed | pending
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cost: Mapped[float | None] = mapped_column(Float, nullable=True)
    policy: Mapped[str | None] = mapped_column(String(100), nullable=True)
    propensity: Mapped[float | None] = mapped_column(Float, nullable=True)
    decision_id: Mapped[str | None] = mapped_column(
        ForeignKey("bandit_decisions.id"), nullable=True, index=True
    )
    end_user: Mapped[str | None] = mapped_column(String(200), nullable=True)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reward: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        Index("ix_generations_task_arm", "task_id", "arm_id"),
        Index("ix_generations_task_created", "task_id", "created_at"),
    )


class Feedback(Base):
    """One feedback event about one or more generations.

    ``kind`` and the fields it uses:

    ========== ============================================================================
    rating     ``generation_id``, ``value`` on the task's scale
    thumbs     ``generation_id``, ``value`` +1 (up) or -1 (down)
    regenerate ``generation_id`` (the user asked for another output)
    pairwise   ``generation_id`` (a) and ``other_generation_id`` (b), ``value`` +1 a wins,
               -1 b wins, 0 tie
    ranking    ``payload["generation_ids"]`` and ``payload["ranks"]`` (1 = best; ties share)
    edit       ``generation_id`` (the draft), ``payload["final_text"]``
    ========== ============================================================================

    ``derived_from_id`` links events that prefloop made from another one (the auto-rating of an
    edit). ``idempotency_key`` is unique: a repeated key stores nothing new.
    """

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(20), default="end_user")
    author: Mapped[str] = mapped_column(String(200), default="anonymous")
    generation_id: Mapped[str | None] = mapped_column(
        ForeignKey("generations.id", ondelete="CASCADE"), nullable=True, index=True
    )
    other_generation_id: Mapped[str | None] = mapped_column(
        ForeignKey("generations.id", ondelete="CASCADE"), nullable=True, index=True
    )
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True, unique=True)
    derived_from_id: Mapped[int | None] = mapped_column(
        ForeignKey("feedback.id", ondelete="CASCADE"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("ix_feedback_task_kind", "task_id", "kind"),)


class Labeler(Base):
    """A person or service that gives feedback or calls the API."""

    __tablename__ = "labelers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(20), default="labeler")  # admin | labeler | client
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """An API key; only its SHA-256 hash is stored, with a short prefix to recognise it."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    labeler_id: Mapped[int | None] = mapped_column(
        ForeignKey("labelers.id", ondelete="CASCADE"), nullable=True
    )
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(20))  # admin | labeler | client
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class RewardModelRecord(Base):
    """A trained reward model in the registry: where it lives and how well it did."""

    __tablename__ = "reward_models"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_reward_models_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int | None] = mapped_column(
        ForeignKey("tasks.id", ondelete="SET NULL"), nullable=True
    )
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer, default=1)
    kind: Mapped[str] = mapped_column(String(50))
    path: Mapped[str] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    data_fingerprint: Mapped[str] = mapped_column(String(64), default="")
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TrainingRun(Base):
    """One training run (SFT, reward model, DPO family, KTO, RRHF, PPO, RLOO, GRPO): what it
    trained from, with what settings, where its model is, and how it went.

    ``status`` is ``running``, ``done``, ``failed`` or ``stopped`` (Ctrl-C, a KL budget);
    ``parent_id`` points at the run it continued or started from (``--resume``, a base that
    another run trained).
    """

    __tablename__ = "training_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int | None] = mapped_column(
        ForeignKey("tasks.id", ondelete="SET NULL"), nullable=True, index=True
    )
    method: Mapped[str] = mapped_column(String(20))
    base: Mapped[str] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    data_fingerprint: Mapped[str] = mapped_column(String(64), default="")
    examples: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    output_path: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="running")
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("training_runs.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class BanditDecision(Base):
    """One choice of an arm by a policy, with the probability it had (its propensity)."""

    __tablename__ = "bandit_decisions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("dec"))
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    policy: Mapped[str] = mapped_column(String(100))
    arm_id: Mapped[int] = mapped_column(ForeignKey("arms.id"))
    propensity: Mapped[float] = mapped_column(Float)
    probabilities: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    end_user: Mapped[str | None] = mapped_column(String(200), nullable=True)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PolicyState(Base):
    """A policy's sufficient statistics for one task, kept so it need not replay the log.

    ``state`` must always equal what the policy recomputes from the decisions and rewards in the
    store; ``version`` is bumped on each update (optimistic concurrency).
    """

    __tablename__ = "policy_states"
    __table_args__ = (
        UniqueConstraint("task_id", "policy", name="uq_policy_states_task_id_policy"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    policy: Mapped[str] = mapped_column(String(100))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AppSession(Base):
    """A signed-in session of the web app (``/app``): the cookie holds a random token, the store
    only its SHA-256 hash, the CSRF token every form of the session carries, and who it is."""

    __tablename__ = "app_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64))
    """The hash of the API key that signed in: revoking the key ends the session."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class TaskSettings(Base):
    """The web app's settings of one task: overlap ``k``, lease time, next-item strategy, the
    text beside each rating level and the labelers' guidelines (markdown)."""

    __tablename__ = "task_settings"

    task_id: Mapped[int] = mapped_column(
        ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True
    )
    overlap: Mapped[int] = mapped_column(Integer, default=1)
    lease_seconds: Mapped[int] = mapped_column(Integer, default=600)
    strategy: Mapped[str] = mapped_column(String(20), default="decisive")
    rank_size: Mapped[int] = mapped_column(Integer, default=3)
    level_texts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    guidelines: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LabelItem(Base):
    """One thing to label in a queue: a generation (rate, edit) or several outputs of the same
    input (compare: two, rank: K). ``done`` counts the labels given; the item is ``closed``
    when it reaches the task's overlap, ``discarded`` when a labeler found it unusable.
    ``gold`` is an admin's known answer (the same shape as a lease's ``answer``)."""

    __tablename__ = "label_items"
    __table_args__ = (
        UniqueConstraint("task_id", "kind", "group_key", name="uq_label_items_task_kind_group"),
        Index("ix_label_items_queue", "task_id", "kind", "status", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))  # rate | compare | rank | edit
    group_key: Mapped[str] = mapped_column(String(64))
    generation_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    arm_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    arm_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="open")  # open | closed | discarded
    done: Mapped[int] = mapped_column(Integer, default=0)
    gold: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LabelLease(Base):
    """An item handed to one labeler: ``open`` until it expires, then ``done`` (with the
    answer and the feedback it stored), ``skipped`` or ``discarded``. One per labeler and item,
    so nobody sees an item twice."""

    __tablename__ = "label_leases"
    __table_args__ = (
        UniqueConstraint("item_id", "labeler", name="uq_label_leases_item_labeler"),
        Index("ix_label_leases_item_status", "item_id", "status"),
        Index("ix_label_leases_labeler", "task_id", "labeler", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("label_items.id", ondelete="CASCADE"))
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    labeler: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="open")
    order: Mapped[list[Any]] = mapped_column(JSON, default=list)
    """The generation ids in the order they were shown (compare: left, right)."""
    answer: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    feedback_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
