"""Reward models learned from feedback.

* :func:`make_reward_model` — a fresh model from a :class:`ModelSpec` (``auto``,
  ``ridge:stats``, ``bradley-terry:use``, a registered name), seeded by its one ``seed``;
* :class:`SklearnRatingModel` — featurizers + a scikit-learn regressor for ratings;
* :class:`BradleyTerryModel` — a pairwise Bradley–Terry model on frozen features;
* :class:`FinetunedRewardModel` — a transformer with a scalar head trained on pairs (torch and
  transformers load only when it trains or loads);
* :class:`LLMJudge` — an LLM that rates text on the task's scale (NaN, never 0, when it fails);
* :func:`distill_ratings` / :func:`distill_pairs` — a cheap student learns an expensive
  teacher's labels;
* :mod:`prefloop.reward.evaluate` — metrics with bootstrap intervals next to baselines, and
  cross-validation on folds shared by every model compared; the reports are typed
  (:class:`RatingReport`, :class:`PairReport`, each with ``to_json()``);
* :func:`evaluate_model` / :func:`cross_validate_spec` — what ``prefloop reward eval`` and
  ``cv`` run: a fitted model on a data set, a spec next to ``auto``'s candidates;
* :mod:`prefloop.reward.registry` — the store's ``reward_models`` table and saved folders.

Every model saves to a folder with a ``prefloop-reward.json`` manifest and loads back with
:func:`load_reward_model`.
"""

from prefloop.reward._classes import (
    ModelSpec,
    make_reward_model,
    model_class,
    register_model,
    registered_models,
)
from prefloop.reward._data import FoldGrouping, Kind, PairData, RatingData
from prefloop.reward._featurizer import Featurizer, TruncationWarning
from prefloop.reward._loaders import data_kind, load_pair_data, load_rating_data
from prefloop.reward._manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    IncompatibleModelError,
    ModelInfo,
    TrainSummary,
    check_model_target,
    library_versions,
    read_model_info,
)
from prefloop.reward._model import ProgressCallback, RewardModel, load_reward_model
from prefloop.reward._reports import PairReport, RatingReport
from prefloop.reward._runs import (
    Evaluation,
    SpecCrossValidation,
    cross_validate_spec,
    evaluate_model,
    score_in_chunks,
)
from prefloop.reward._store_data import pair_data_from_store, rating_data_from_store
from prefloop.reward.distill import (
    Agreement,
    DistillConfig,
    DistillReport,
    distill_from_files,
    distill_pairs,
    distill_ratings,
)
from prefloop.reward.evaluate import (
    CVResult,
    cross_validate,
    evaluate_pairs,
    evaluate_ratings,
    make_folds,
)
from prefloop.reward.featurizers import Concat, SentenceEmbedding, TextStats, build_featurizer
from prefloop.reward.finetune import FinetuneConfig, FinetunedRewardModel, TrainingLog
from prefloop.reward.judge import JudgeConfig, JudgeExample, JudgeFailure, JudgeStats, LLMJudge
from prefloop.reward.pairwise import BradleyTerryConfig, BradleyTerryModel
from prefloop.reward.rating import RatingModelConfig, SklearnRatingModel

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "Agreement",
    "BradleyTerryConfig",
    "BradleyTerryModel",
    "CVResult",
    "Concat",
    "DistillConfig",
    "DistillReport",
    "Evaluation",
    "Featurizer",
    "FinetuneConfig",
    "FinetunedRewardModel",
    "FoldGrouping",
    "IncompatibleModelError",
    "JudgeConfig",
    "JudgeExample",
    "JudgeFailure",
    "JudgeStats",
    "Kind",
    "LLMJudge",
    "ModelInfo",
    "ModelSpec",
    "PairData",
    "PairReport",
    "ProgressCallback",
    "RatingData",
    "RatingModelConfig",
    "RatingReport",
    "RewardModel",
    "SentenceEmbedding",
    "SklearnRatingModel",
    "SpecCrossValidation",
    "TextStats",
    "TrainSummary",
    "TrainingLog",
    "TruncationWarning",
    "build_featurizer",
    "check_model_target",
    "cross_validate",
    "cross_validate_spec",
    "data_kind",
    "distill_from_files",
    "distill_pairs",
    "distill_ratings",
    "evaluate_model",
    "evaluate_pairs",
    "evaluate_ratings",
    "library_versions",
    "load_pair_data",
    "load_rating_data",
    "load_reward_model",
    "make_folds",
    "make_reward_model",
    "model_class",
    "pair_data_from_store",
    "rating_data_from_store",
    "read_model_info",
    "register_model",
    "registered_models",
    "score_in_chunks",
]
