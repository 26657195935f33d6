"""The store: tasks, arms, generations, feedback, reward models and bandit state in SQL."""

from prefloop.store.db import DEFAULT_DATABASE_URL, Store, database_url
from prefloop.store.models import (
    DEFAULT_SCALE,
    ApiKey,
    AppSession,
    Arm,
    BanditDecision,
    Base,
    Feedback,
    Generation,
    Labeler,
    LabelItem,
    LabelLease,
    PolicyState,
    RewardModelRecord,
    Task,
    TaskSettings,
    TrainingRun,
)

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DEFAULT_SCALE",
    "ApiKey",
    "AppSession",
    "Arm",
    "BanditDecision",
    "Base",
    "Feedback",
    "Generation",
    "LabelItem",
    "LabelLease",
    "Labeler",
    "PolicyState",
    "RewardModelRecord",
    "Store",
    "Task",
    "TaskSettings",
    "TrainingRun",
    "database_url",
]
