"""The reward-model base class: ``fit`` on data, ``score`` texts, ``save`` to a folder and
``load`` it back.

Two kinds of reward model exist:

``rating``
    learns from :class:`RatingData` (texts with a number on the task's scale) and predicts that
    number for new text; :meth:`RewardModel.score_unit` maps it linearly from the scale to [0, 1].
``pairwise``
    learns from :class:`PairData` (a prompt with a chosen and a rejected reply) and gives each
    text a real-valued reward r such that P(a ≻ b) = σ(r(a) − r(b)) (Bradley & Terry, 1952);
    :meth:`RewardModel.score_unit` squashes r with a sigmoid.

A model is saved as a folder holding ``prefloop-reward.json`` (see
:mod:`prefloop.reward._manifest`) next to the model's own files (joblib, safetensors, …).
:meth:`RewardModel.save` writes a temporary folder and renames it at the end, so a failed save
leaves nothing half-written; :func:`load_reward_model` finds the class through a registry of
names filled by :func:`register_model`.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import fields, is_dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

import numpy as np

from prefloop._files import publish_folder, staging_folder
from prefloop.errors import InvalidInputError
from prefloop.reward._classes import _BASE_NAME, ModelSpec, _model_class
from prefloop.reward._data import Array, Kind, PairData, RatingData
from prefloop.reward._manifest import (
    IncompatibleModelError,
    ModelInfo,
    TrainSummary,
    check_model_target,
    library_versions,
    read_model_info,
    to_jsonable,
    write_manifest,
)

__all__ = ["ModelConfig", "ProgressCallback", "RewardModel", "load_reward_model"]

ProgressCallback = Callable[[str, int, int], None]
"""``progress(what, done, total)``: called during long work (embedding, CV folds)."""


class ModelConfig(Protocol):
    """What every reward model's settings are: a frozen dataclass whose ``seed`` is the one
    seed of everything random in the model (:func:`make_reward_model` sets it)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def seed(self) -> int: ...


class RewardModel(ABC):
    """A learned reward: ``fit`` on data, then ``score`` new texts.

    Subclasses set ``name`` (the registry name) and ``kind``, keep their settings in a typed
    dataclass ``config`` (class attribute ``config_type``), and implement four hooks:
    ``_fit``, ``_score``, ``_save_files`` and ``_load_files``. The public methods here check the
    input and keep the bookkeeping (training summary, metrics, manifest).
    """

    name: ClassVar[str] = _BASE_NAME
    kind: ClassVar[Kind]
    config_type: ClassVar[type[Any]]
    """The class of ``config``: a :class:`ModelConfig`."""
    extra_versions: ClassVar[tuple[str, ...]] = ()
    """Distributions whose versions go into the manifest besides the defaults (e.g. torch)."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        self.config: ModelConfig = config if config is not None else self.config_type()
        self.train_: TrainSummary | None = None
        self.metrics: dict[str, Any] = {}

    # ---- hooks -------------------------------------------------------------------------------
    @abstractmethod
    def _fit(self, data: Any, progress: ProgressCallback | None) -> None:
        """Learn from ``data`` (RatingData or PairData, already checked)."""

    @abstractmethod
    def _score(self, texts: list[str], prompts: list[str | None]) -> Array:
        """Raw rewards for ``texts``, shape (n,)."""

    @abstractmethod
    def _save_files(self, folder: Path) -> None:
        """Write the model's own files into ``folder`` (which exists and is empty)."""

    @abstractmethod
    def _load_files(self, folder: Path) -> None:
        """Read what ``_save_files`` wrote; ``self.config`` is already set."""

    @classmethod
    def config_for(cls, spec: ModelSpec) -> ModelConfig:
        """The settings :func:`make_reward_model` gives this class for ``spec`` (a registered
        name): the defaults with ``spec.seed``. A class that reads more of the spec (a judge:
        the task's rubric) extends it."""
        config: ModelConfig = replace(cls.config_type(), seed=spec.seed)
        return config

    # ---- public API --------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self.train_ is not None

    def fit(self, data: RatingData | PairData, progress: ProgressCallback | None = None) -> Self:
        expected = RatingData if self.kind == "rating" else PairData
        if not isinstance(data, expected):
            raise InvalidInputError(
                f"a {self.kind} reward model ({self.name}) trains on {expected.__name__}, "
                f"not {type(data).__name__}"
            )
        data.check_trainable()
        self._fit(data, progress)
        if isinstance(data, RatingData):
            self.train_ = TrainSummary(
                n=len(data),
                fingerprint=data.fingerprint(),
                source=data.source,
                mean=float(np.mean(data.ratings)),
                scale=data.scale,
            )
        else:
            self.train_ = TrainSummary(
                n=len(data), fingerprint=data.fingerprint(), source=data.source
            )
        return self

    def score(self, texts: Sequence[str], prompts: Sequence[str | None] | None = None) -> Array:
        """The raw reward of each text (on the rating scale, or a Bradley–Terry logit)."""
        if not self.is_fitted:
            raise InvalidInputError(f"this {self.name} reward model is not fitted; call fit first")
        if isinstance(texts, str):
            raise InvalidInputError("score takes a list of texts, not one string")
        text_list = list(texts)
        prompt_list: list[str | None] = (
            [None] * len(text_list) if prompts is None else list(prompts)
        )
        if len(prompt_list) != len(text_list):
            raise InvalidInputError(
                f"{len(text_list)} texts but {len(prompt_list)} prompts; give one prompt per "
                "text (or None)"
            )
        if not text_list:
            return np.zeros(0)
        return np.asarray(self._score(text_list, prompt_list), dtype=np.float64).reshape(-1)

    def score_unit(
        self, texts: Sequence[str], prompts: Sequence[str | None] | None = None
    ) -> Array:
        """Rewards in [0, 1]: the scale mapped linearly (rating) or σ(reward) (pairwise)."""
        return self.to_unit(self.score(texts, prompts))

    def to_unit(self, raw: Sequence[float] | Array) -> Array:
        """Raw rewards (from :meth:`score`) mapped to [0, 1] as :meth:`score_unit` does, without
        scoring again; NaN (no score) stays NaN."""
        values = np.asarray(raw, dtype=np.float64)
        if self.kind == "pairwise":
            return np.asarray(1.0 / (1.0 + np.exp(-values)), dtype=np.float64)
        if self.train_ is None or self.train_.scale is None:
            raise InvalidInputError(f"this {self.name} reward model is not fitted; call fit first")
        lo, hi = self.train_.scale[0], self.train_.scale[-1]
        return np.clip((values - lo) / (hi - lo), 0.0, 1.0)

    def preference_probability(self, data: PairData) -> Array:
        """P(chosen ≻ rejected) = σ(r(chosen) − r(rejected)) for each pair (Bradley–Terry)."""
        diff = self.score(data.chosen, data.prompts) - self.score(data.rejected, data.prompts)
        return np.asarray(1.0 / (1.0 + np.exp(-diff)), dtype=np.float64)

    def config_dict(self) -> dict[str, Any]:
        return dict(to_jsonable(self.config))

    def details(self) -> dict[str, Any]:
        """Anything worth recording in the manifest besides the config (JSON-able)."""
        return {}

    def info(self) -> ModelInfo:
        return ModelInfo(
            kind=self.kind,
            model_class=self.name,
            module=type(self).__module__,
            config=self.config_dict(),
            train=self.train_,
            metrics=to_jsonable(self.metrics),
            versions=library_versions(self.extra_versions),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            details=to_jsonable(self.details()),
        )

    def save(self, folder: str | Path, *, overwrite: bool = True) -> Path:
        """Save into ``folder`` (created if needed).

        An existing reward-model folder there is replaced, unless ``overwrite=False`` (then it
        is an error); a non-empty folder that is not a reward model is never touched. Files go
        to a temporary folder beside the target that is renamed at the end, so an error leaves
        the old folder (or nothing) in place.
        """
        if not self.is_fitted:
            raise InvalidInputError(f"cannot save an unfitted {self.name} model; fit it first")
        target = Path(folder)
        check_model_target(target, overwrite=overwrite)
        with staging_folder(target) as staging:
            self._save_files(staging)
            write_manifest(staging, self.info())
            publish_folder(staging, target)
        return target

    @classmethod
    def load(cls, folder: str | Path) -> Self:
        """Load a folder saved by :meth:`save`; called on a subclass, the folder must hold that
        class (or, on RewardModel itself, any registered class)."""
        folder = Path(folder)
        info = read_model_info(folder)
        model_cls = _model_class(info.model_class, info.module, folder)
        if cls is not RewardModel and not issubclass(model_cls, cls):
            raise IncompatibleModelError(
                f"{folder} holds a {info.kind} reward model of class {info.model_class!r}; "
                f"expected {cls.name!r} ({cls.__name__})"
            )
        config = _build_config(model_cls, info.config, folder)
        model = model_cls(config)
        model._load_files(folder)
        model.train_ = info.train
        model.metrics = dict(info.metrics)
        return model  # type: ignore[return-value]


def _build_config(model_cls: type[RewardModel], raw: dict[str, Any], folder: Path) -> Any:
    config_type = model_cls.config_type
    if not is_dataclass(config_type):
        return config_type(**raw)
    known = {f.name for f in fields(config_type)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise IncompatibleModelError(
            f"{folder}: the saved config of {model_cls.name!r} has settings this prefloop does "
            f"not know ({', '.join(unknown)}); it was saved by a newer prefloop"
        )
    values = {}
    for f in fields(config_type):
        if f.name in raw:
            value = raw[f.name]
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return config_type(**values)


def load_reward_model(folder: str | Path, kind: Kind | None = None) -> RewardModel:
    """Load any saved reward model; with ``kind``, refuse a folder holding the other kind."""
    folder = Path(folder)
    info = read_model_info(folder)
    if kind is not None and info.kind != kind:
        raise IncompatibleModelError(
            f"{folder} holds a {info.kind} reward model ({info.model_class}), but a {kind} "
            f"model is needed here; train one with `prefloop reward fit --kind {kind}`"
        )
    saved = info.versions.get("scikit-learn")
    current = library_versions().get("scikit-learn")
    if saved and current and saved.split(".")[:2] != current.split(".")[:2]:
        warnings.warn(
            f"{folder} was saved with scikit-learn {saved}, this is {current}; its predictions "
            "may differ. Retrain it to be sure.",
            stacklevel=2,
        )
    return RewardModel.load(folder)
