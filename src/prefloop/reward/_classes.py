"""Reward-model classes by name: the registry that loads a saved folder's class, and
:func:`make_reward_model`, which makes a fresh model from a ``--model`` spec."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from prefloop.errors import InvalidInputError
from prefloop.reward._data import KINDS, FoldGrouping, Kind
from prefloop.reward._manifest import IncompatibleModelError

if TYPE_CHECKING:
    from prefloop.reward._model import RewardModel

__all__ = ["ModelSpec", "make_reward_model", "model_class", "register_model", "registered_models"]

_BASE_NAME = "reward-model"
"""``RewardModel.name``: a subclass that keeps it has not named itself."""
_REGISTRY: dict[str, type[RewardModel]] = {}
# Built-in classes by registry name, imported on first use so that loading a folder does not
# need the caller to have imported the module that defines its class.
_BUILTIN_MODULES: dict[str, str] = {
    "sklearn-rating": "prefloop.reward.rating",
    "bradley-terry": "prefloop.reward.pairwise",
    "finetuned-transformer": "prefloop.reward.finetune",
    "llm-judge": "prefloop.reward.judge",
    "lm-scalar": "prefloop.reward.lm_scalar",
}

M = TypeVar("M", bound="type[RewardModel]")


def register_model(cls: M) -> M:
    """Class decorator: make ``cls`` loadable from folders by its ``name``."""
    name = cls.name
    if not name or name == _BASE_NAME:
        raise TypeError(f"{cls.__qualname__} needs its own class attribute `name`")
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
        raise TypeError(f"reward model name {name!r} is taken by {existing.__qualname__}")
    _REGISTRY[name] = cls
    return cls


def registered_models() -> dict[str, type[RewardModel]]:
    """Registry name → class: every built-in class and any other registered so far. (Importing
    the built-in modules is cheap: torch and transformers load only when a model trains or
    loads.)"""
    for module in _BUILTIN_MODULES.values():
        importlib.import_module(module)
    return dict(_REGISTRY)


def model_class(name: str) -> type[RewardModel]:
    """The class registered as ``name``, importing its built-in module if needed."""
    return _model_class(name, _BUILTIN_MODULES.get(name, ""), Path("."))


def _model_class(name: str, module: str, folder: Path) -> type[RewardModel]:
    if name not in _REGISTRY:
        candidate = _BUILTIN_MODULES.get(name) or module
        # Only prefloop's own modules are imported from a manifest.
        if candidate.startswith("prefloop."):
            try:
                importlib.import_module(candidate)
            except ImportError as exc:
                raise IncompatibleModelError(
                    f"{folder} holds a {name!r} reward model whose code ({candidate}) cannot be "
                    f"imported: {exc}. Install the extra it needs (e.g. pip install "
                    "'prefloop[local]')"
                ) from exc
    cls = _REGISTRY.get(name)
    if cls is None:
        known = ", ".join(sorted(set(registered_models()) | set(_BUILTIN_MODULES)))
        raise IncompatibleModelError(
            f"{folder} holds a reward model of class {name!r}, which this prefloop does not "
            f"know (known: {known}); it was probably saved by a newer prefloop"
            if folder != Path(".")
            else f"no reward model class {name!r}; known: {known}"
        )
    return cls


@dataclass(frozen=True)
class ModelSpec:
    """What reward model to make: ``model`` names it and the other fields are the options every
    maker understands (the ``--model`` option of ``prefloop reward fit|cv`` and its companions).

    ``model`` is ``auto``; for ratings ``REGRESSOR[:FEATURES]`` (``ridge:stats``,
    ``stack:stats+style``); for pairs ``bradley-terry[:FEATURES]`` (``bt`` for short); or any
    registered name (``llm-judge``, ``finetuned-transformer``), made with that class's defaults.
    """

    kind: Kind
    model: str = "auto"
    seed: int = 0
    """The one seed of everything random in the model (folds, regressors, initial weights)."""
    balance_levels: bool = False
    """Rating models: up-weight rare rating levels."""
    candidates: tuple[str, ...] | None = None
    """``auto`` on ratings: what it chooses from (default: its own list)."""
    group_by: FoldGrouping = "text"
    """``input``: a rating model chooses its candidate on folds that hold out whole inputs
    (``text``: the model's own default, ``auto``)."""
    rubric: str = ""
    """The task's rubric and description, for a model that reads them (an LLM judge)."""
    description: str = ""


def make_reward_model(spec: ModelSpec) -> RewardModel:
    """A fresh, unfitted reward model as ``spec`` says (like :func:`prefloop.bandit.make_policy`
    for policies). Bad specs fail here, before any data is read or any model trained."""
    from prefloop.reward.pairwise import BradleyTerryConfig, BradleyTerryModel
    from prefloop.reward.rating import (
        REGRESSORS,
        RatingModelConfig,
        SklearnRatingModel,
        parse_candidate,
    )

    if spec.kind not in KINDS:
        raise InvalidInputError(f"a reward model's kind is rating or pairwise, not {spec.kind!r}")
    name, _, features = spec.model.partition(":")
    if spec.kind == "rating" and (spec.model == "auto" or name in REGRESSORS):
        if spec.model != "auto":
            parse_candidate(spec.model)
        rating = RatingModelConfig(
            model=spec.model, seed=spec.seed, balance_levels=spec.balance_levels
        )
        if spec.group_by == "input":
            rating = replace(rating, group_by="input")
        if spec.candidates is not None:
            for candidate in spec.candidates:
                parse_candidate(candidate)
            rating = replace(rating, candidates=spec.candidates)
        return SklearnRatingModel(rating)
    if spec.kind == "pairwise" and name in ("auto", "bradley-terry", "bt"):
        from prefloop.reward.featurizers import build_featurizer

        pairwise = BradleyTerryConfig(
            features=features or BradleyTerryConfig().features, seed=spec.seed
        )
        build_featurizer(pairwise.features)
        return BradleyTerryModel(pairwise)
    if name in REGRESSORS:
        raise InvalidInputError(
            f"--model {spec.model} is a rating regressor; a pairwise model is auto, "
            "bradley-terry[:FEATURES] or a registered pairwise model (finetuned-transformer)"
        )
    cls = model_class(name)
    if cls.kind != spec.kind:
        raise InvalidInputError(
            f"--model {spec.model} is a {cls.kind} model, not a {spec.kind} one"
        )
    if features:
        raise InvalidInputError(
            f"--model {spec.model}: {name} takes no :FEATURES; give just {name}"
        )
    return cls(cls.config_for(spec))
