"""A saved reward-model folder: its ``prefloop-reward.json`` manifest (what the model is, how
it was trained, its metrics and the library versions) and the checks made before writing one
or after reading one."""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from prefloop.errors import InvalidInputError, PrefloopError
from prefloop.reward._data import KINDS, Kind

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "IncompatibleModelError",
    "ModelInfo",
    "TrainSummary",
    "check_model_target",
    "library_versions",
    "read_model_info",
    "to_jsonable",
    "write_manifest",
]

MANIFEST_NAME = "prefloop-reward.json"
FORMAT_VERSION = 1
"""Version of the saved-folder layout; a folder with another version is refused on load."""


class IncompatibleModelError(PrefloopError):
    """A model folder holds another kind of model, another format version, or no model."""


@dataclass(frozen=True)
class TrainSummary:
    """What a model was trained on: enough to compute baselines on new data later."""

    n: int
    fingerprint: str
    source: str = ""
    mean: float | None = None  # training mean of the ratings (rating models)
    scale: tuple[float, ...] | None = None  # the rating scale (rating models)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["scale"] = None if self.scale is None else list(self.scale)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> TrainSummary:
        scale = obj.get("scale")
        return cls(
            n=int(obj["n"]),
            fingerprint=str(obj["fingerprint"]),
            source=str(obj.get("source", "")),
            mean=None if obj.get("mean") is None else float(obj["mean"]),
            scale=None if scale is None else tuple(float(v) for v in scale),
        )


@dataclass(frozen=True)
class ModelInfo:
    """The content of a saved folder's ``prefloop-reward.json``."""

    kind: Kind
    model_class: str  # registry name
    module: str
    config: dict[str, Any]
    train: TrainSummary | None
    metrics: dict[str, Any]
    versions: dict[str, str]
    created_at: str
    format: int = FORMAT_VERSION
    details: dict[str, Any] = field(default_factory=dict)
    """What the model says about itself (e.g. which candidate ``auto`` chose)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "kind": self.kind,
            "class": self.model_class,
            "module": self.module,
            "config": self.config,
            "train": None if self.train is None else self.train.to_json(),
            "data_fingerprint": None if self.train is None else self.train.fingerprint,
            "metrics": self.metrics,
            "versions": self.versions,
            "created_at": self.created_at,
            "details": self.details,
        }


def library_versions(extra: Sequence[str] = ()) -> dict[str, str]:
    """Versions of python, prefloop, numpy, scikit-learn and ``extra`` distributions."""
    out = {"python": platform.python_version()}
    for dist in ("prefloop", "numpy", "scikit-learn", "joblib", *extra):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def to_jsonable(value: Any) -> Any:
    """``value`` with dataclasses, tuples and numpy scalars made plain and NaN/inf as None."""
    if is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def check_model_target(target: Path, *, overwrite: bool) -> None:
    """Raise unless a model may be saved to ``target``: new, empty, or (with ``overwrite``) a
    reward-model folder."""
    if target.exists() and not target.is_dir():
        raise InvalidInputError(f"{target} is a file; give a folder for the model")
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not (target / MANIFEST_NAME).exists():
        raise InvalidInputError(
            f"{target} exists and is not a prefloop reward-model folder; give a new or empty "
            "folder so nothing of yours is overwritten"
        )
    if not overwrite:
        raise InvalidInputError(
            f"{target} already holds a reward model; give another folder, or allow replacing "
            "it (--force on the command line, overwrite=True in Python)"
        )


def read_model_info(folder: str | Path) -> ModelInfo:
    """Read and check a folder's ``prefloop-reward.json`` (without loading the model)."""
    folder = Path(folder)
    manifest = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise IncompatibleModelError(f"{folder} is not a folder; give a saved reward-model folder")
    if not manifest.exists():
        raise IncompatibleModelError(
            f"{folder} is not a prefloop reward model: it has no {MANIFEST_NAME} "
            "(make one with `prefloop reward fit ... --out DIR`)"
        )
    try:
        raw = json.loads(manifest.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IncompatibleModelError(f"{manifest} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or "format" not in raw:
        raise IncompatibleModelError(f"{manifest} is not a prefloop reward-model manifest")
    if raw["format"] != FORMAT_VERSION:
        raise IncompatibleModelError(
            f"{folder} was saved in reward-model format {raw['format']!r}, but this prefloop "
            f"reads format {FORMAT_VERSION}; retrain it with this prefloop (prefloop reward fit) "
            "or use the prefloop version that saved it "
            f"({raw.get('versions', {}).get('prefloop', 'unknown')})"
        )
    kind = raw.get("kind")
    if kind not in KINDS:
        raise IncompatibleModelError(f"{manifest}: unknown kind {kind!r}, expected rating/pairwise")
    train = raw.get("train")
    return ModelInfo(
        kind=kind,
        model_class=str(raw.get("class", "")),
        module=str(raw.get("module", "")),
        config=dict(raw.get("config") or {}),
        train=None if train is None else TrainSummary.from_json(train),
        metrics=dict(raw.get("metrics") or {}),
        versions=dict(raw.get("versions") or {}),
        created_at=str(raw.get("created_at", "")),
        format=int(raw["format"]),
        details=dict(raw.get("details") or {}),
    )


def write_manifest(folder: Path, info: ModelInfo) -> None:
    """Write ``info`` as ``folder``'s manifest (the folder is a staging folder, renamed into
    place as a whole once complete)."""
    (folder / MANIFEST_NAME).write_text(
        json.dumps(info.to_json(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
