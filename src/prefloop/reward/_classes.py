"""Reward-model classes by name: the registry that loads a saved folder's class, and
:func:`make_reward_model`, which makes a fresh model from a ``--model`` spec."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from prefloop.reward._manifest import IncompatibleModelError

if TYPE_CHECKING:
    from prefloop.reward._model import RewardModel

__all__ = ["model_class", "register_model", "registered_models"]

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
_LIGHT_MODULES = ("prefloop.reward.rating", "prefloop.reward.pairwise")

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
    """Registry name → class, for the classes imported so far and the light built-ins (the
    scikit-learn models; the torch-based ones appear once imported, see :func:`model_class`)."""
    for module in _LIGHT_MODULES:
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
