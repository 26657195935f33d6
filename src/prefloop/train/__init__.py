"""Training the model from feedback: SFT, a reward model with a scalar head, the DPO family,
KTO and RRHF offline; PPO, RLOO and GRPO online against a reward function; each with one typed
config; trained models load back as arms.

    from prefloop.train import DPOConfig, from_task, run_training
    from prefloop.train import PPOConfig, run_online
"""

from prefloop.train._run import TrainingInterrupted, TrainResult, TruncationWarning, run_training
from prefloop.train.config import (
    DPOConfig,
    GRPOConfig,
    KTOConfig,
    PPOConfig,
    RewardConfig,
    RLOOConfig,
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
from prefloop.train.online import OnlineResult, run_online

__all__ = [
    "DEFAULT_BASE",
    "DPOConfig",
    "GRPOConfig",
    "KTOConfig",
    "OnlineResult",
    "PPOConfig",
    "RLOOConfig",
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
    "run_online",
    "run_training",
]
