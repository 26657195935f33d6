"""Training the model from feedback: SFT, a reward model with a scalar head, the DPO family,
KTO and RRHF, each with one typed config; trained models load back as arms.

    from prefloop.train import DPOConfig, from_task, run_training
"""

from prefloop.train._run import TrainingInterrupted, TrainResult, TruncationWarning, run_training
from prefloop.train.config import (
    DPOConfig,
    KTOConfig,
    RewardConfig,
    RRHFConfig,
    SFTConfig,
    TrainConfig,
    config_for,
)
from prefloop.train.data import TrainingData, from_file, from_task
from prefloop.train.models import (
    DEFAULT_BASE,
    TrainedManifest,
    load_base,
    load_trained,
    read_manifest,
    resolve_base,
)

__all__ = [
    "DEFAULT_BASE",
    "DPOConfig",
    "KTOConfig",
    "RRHFConfig",
    "RewardConfig",
    "SFTConfig",
    "TrainConfig",
    "TrainResult",
    "TrainedManifest",
    "TrainingData",
    "TrainingInterrupted",
    "TruncationWarning",
    "config_for",
    "from_file",
    "from_task",
    "load_base",
    "load_trained",
    "read_manifest",
    "resolve_base",
    "run_training",
]
