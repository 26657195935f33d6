"""The store: tasks, arms, generations, feedback, reward models and bandit state in SQL.

The ORM classes of the service's own tables (API keys, sessions, labelling queue) live in
:mod:`prefloop.store.models`; the loop's shared statements in :mod:`prefloop.store.statements`;
reading and writing tasks, arms and generations in :mod:`prefloop.store.repo`.
"""

from prefloop.store.db import DEFAULT_DATABASE_URL, Store, database_url
from prefloop.store.models import (
    DEFAULT_SCALE,
    Arm,
    BanditDecision,
    Feedback,
    Generation,
    PolicyState,
    RewardModelRecord,
    Task,
    TrainingRun,
)

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DEFAULT_SCALE",
    "Arm",
    "BanditDecision",
    "Feedback",
    "Generation",
    "PolicyState",
    "RewardModelRecord",
    "Store",
    "Task",
    "TrainingRun",
    "database_url",
]
