"""The shared parts of every reward model: training data, the model interface, saved folders.

Two kinds of reward model exist:

``rating``
    learns from :class:`RatingData` (texts with a number on the task's scale) and predicts that
    number for new text; :meth:`RewardModel.score_unit` maps it linearly from the scale to [0, 1].
``pairwise``
    learns from :class:`PairData` (a prompt with a chosen and a rejected reply) and gives each
    text a real-valued reward r such that P(a ≻ b) = σ(r(a) − r(b)) (Bradley & Terry, 1952);
    :meth:`RewardModel.score_unit` squashes r with a sigmoid.

A model is saved as a folder holding ``prefloop-reward.json`` (what it is, how it was trained,
its metrics and the library versions) next to the model's own files (joblib, safetensors, …).
:meth:`RewardModel.save` writes a temporary folder and renames it at the end, so a failed save
leaves nothing half-written; :func:`load_reward_model` finds the class through a registry of
names filled by :func:`register_model`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import platform
import shutil
import tempfile
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, TypeVar

import numpy as np
from numpy.typing import NDArray

from prefloop._files import as_if_created, publish_folder
from prefloop.errors import ImportFileError, InvalidInputError, PrefloopError
from prefloop.io import PairRecord, RatingRecord, iter_pairs, iter_rankings, iter_ratings
from prefloop.io.readers import iter_json_lines
from prefloop.store.models import DEFAULT_SCALE

if TYPE_CHECKING:
    from prefloop.store import Store

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "Featurizer",
    "IncompatibleModelError",
    "Kind",
    "ModelInfo",
    "PairData",
    "ProgressCallback",
    "RatingData",
    "RewardModel",
    "TrainSummary",
    "TruncationWarning",
    "check_model_target",
    "library_versions",
    "load_pair_data",
    "load_rating_data",
    "load_reward_model",
    "model_class",
    "pair_data_from_store",
    "rating_data_from_store",
    "read_model_info",
    "register_model",
    "registered_models",
    "to_jsonable",
]

Kind = Literal["rating", "pairwise"]
KINDS: tuple[Kind, ...] = ("rating", "pairwise")
MANIFEST_NAME = "prefloop-reward.json"
FORMAT_VERSION = 1
"""Version of the saved-folder layout; a folder with another version is refused on load."""

ProgressCallback = Callable[[str, int, int], None]
"""``progress(what, done, total)``: called during long work (embedding, CV folds)."""

Array = NDArray[np.float64]


class IncompatibleModelError(PrefloopError):
    """A model folder holds another kind of model, another format version, or no model."""


class TruncationWarning(UserWarning):
    """Some texts were longer than a featurizer or model takes and were cut."""


# --------------------------------------------------------------------------------------------
# Training data
# --------------------------------------------------------------------------------------------


def _sha256(payload: Any) -> str:
    blob = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RatingData:
    """Texts with a rating on ``scale``; ``prompts[i]`` is what text i answered (or None).

    ``scale`` lists the allowed levels in increasing order (the task's scale); ratings must lie
    within ``[scale[0], scale[-1]]``.

    ``inputs[i]`` names the input text i was drafted from (a photo, a request), or None when
    unknown (an empty list: all unknown). Texts that share one are alternatives for the same
    input: evaluation reports how well a model orders them (what choosing the best of n drafts
    needs), and folds can keep them together (:func:`prefloop.reward.evaluate.make_folds`). It
    is not part of the fingerprint.
    """

    texts: list[str]
    ratings: Array
    prompts: list[str | None]
    scale: tuple[float, ...] = DEFAULT_SCALE
    source: str = ""
    inputs: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        ratings = np.asarray(self.ratings, dtype=np.float64).reshape(-1)
        object.__setattr__(self, "ratings", ratings)
        object.__setattr__(self, "scale", tuple(float(v) for v in self.scale))
        inputs = list(self.inputs) if self.inputs else [None] * len(ratings)
        object.__setattr__(self, "inputs", inputs)
        where = f" in {self.source}" if self.source else ""
        if len(self.texts) != len(ratings) or len(self.prompts) != len(ratings):
            raise InvalidInputError(
                f"rating data{where}: {len(self.texts)} texts, {len(ratings)} ratings and "
                f"{len(self.prompts)} prompts; they must have the same length"
            )
        if len(inputs) != len(ratings):
            raise InvalidInputError(
                f"rating data{where}: {len(inputs)} input keys for {len(ratings)} ratings; give "
                "one per text (None where unknown)"
            )
        if len(self.scale) < 2 or list(self.scale) != sorted(set(self.scale)):
            raise InvalidInputError(
                f"a rating scale needs at least two increasing levels, got {list(self.scale)}"
            )
        if not np.all(np.isfinite(ratings)):
            raise InvalidInputError(f"rating data{where} holds a rating that is not a number")
        lo, hi = self.scale[0], self.scale[-1]
        outside = np.flatnonzero((ratings < lo) | (ratings > hi))
        if outside.size:
            i = int(outside[0])
            raise InvalidInputError(
                f"rating {ratings[i]:g} of item {i + 1}{where} is outside the scale "
                f"{list(self.scale)}; give the task's scale (e.g. --scale) or fix the rating"
            )

    @classmethod
    def from_records(
        cls,
        records: Iterable[RatingRecord],
        *,
        scale: Sequence[float] | None = None,
        source: str = "",
    ) -> RatingData:
        """From :func:`prefloop.io.iter_ratings` records. ``scale=None`` infers it (see
        :func:`infer_scale`)."""
        items = list(records)
        ratings = np.array([r.rating for r in items], dtype=np.float64)
        chosen_scale = tuple(scale) if scale is not None else infer_scale(ratings)
        return cls(
            texts=[r.text for r in items],
            ratings=ratings,
            prompts=[r.prompt for r in items],
            scale=chosen_scale,
            source=source,
            inputs=[input_key(r.input, r.prompt) for r in items],
        )

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: Sequence[int] | NDArray[np.int_]) -> RatingData:
        idx = [int(i) for i in index]
        return RatingData(
            texts=[self.texts[i] for i in idx],
            ratings=self.ratings[idx],
            prompts=[self.prompts[i] for i in idx],
            scale=self.scale,
            source=self.source,
            inputs=[self.inputs[i] for i in idx],
        )

    def fingerprint(self) -> str:
        """sha256 of the content (texts, prompts, ratings, scale), independent of the source."""
        return _sha256(
            {
                "kind": "rating",
                "texts": self.texts,
                "prompts": self.prompts,
                "ratings": [float(v) for v in self.ratings],
                "scale": list(self.scale),
            }
        )

    def check_trainable(self) -> None:
        """Raise a clear error when a model cannot learn from this data."""
        where = f" in {self.source}" if self.source else ""
        if len(self) == 0:
            raise InvalidInputError(f"no ratings{where}: a rating model needs rated texts")
        levels = np.unique(self.ratings)
        if levels.size < 2:
            raise InvalidInputError(
                f"every rating{where} is {levels[0]:g}: a rating model needs at least two "
                "different rating levels to learn what makes a text better"
            )
        if len(self) < 4:
            raise InvalidInputError(
                f"only {len(self)} ratings{where}: a rating model needs at least 4"
            )


def input_key(inputs: dict[str, Any] | None, prompt: str | None = None) -> str | None:
    """What a text was drafted from, as one comparable string: its input fields (as JSON with
    sorted keys; e.g. ``{"image_id": "001.jpg"}``), else its prompt, else None."""
    if inputs:
        return json.dumps(inputs, ensure_ascii=False, sort_keys=True, default=str)
    return prompt


def infer_scale(ratings: NDArray[np.float64]) -> tuple[float, ...]:
    """The default scale (-1 … 1 in halves) when every rating lies on it, else the distinct
    values seen (at least two; a single value v gives (v, v + 1) so that errors read well)."""
    values = sorted({float(v) for v in ratings})
    if all(v in DEFAULT_SCALE for v in values):
        return DEFAULT_SCALE
    if len(values) >= 2:
        return tuple(values)
    if values:
        return (values[0], values[0] + 1.0)
    return DEFAULT_SCALE


@dataclass(frozen=True)
class PairData:
    """Preferences: ``chosen[i]`` was preferred to ``rejected[i]`` as a reply to ``prompts[i]``.

    ``margins[i]`` says by how much (rank difference for a ranking, 1 when unknown).
    """

    prompts: list[str]
    chosen: list[str]
    rejected: list[str]
    margins: Array = field(default_factory=lambda: np.zeros(0))
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.chosen)
        margins = np.asarray(self.margins, dtype=np.float64).reshape(-1)
        if margins.size == 0 and n:
            margins = np.ones(n)
        object.__setattr__(self, "margins", margins)
        where = f" in {self.source}" if self.source else ""
        if not (len(self.prompts) == len(self.rejected) == len(margins) == n):
            raise InvalidInputError(
                f"pair data{where}: {len(self.prompts)} prompts, {n} chosen, "
                f"{len(self.rejected)} rejected and {len(margins)} margins; they must match"
            )
        for i, (c, r) in enumerate(zip(self.chosen, self.rejected, strict=True)):
            if c == r:
                raise InvalidInputError(
                    f"pair {i + 1}{where}: chosen and rejected are the same text; a preference "
                    "needs two different replies (drop the pair or fix it)"
                )

    @classmethod
    def from_records(cls, records: Iterable[PairRecord], *, source: str = "") -> PairData:
        items = list(records)
        return cls(
            prompts=[r.prompt for r in items],
            chosen=[r.chosen for r in items],
            rejected=[r.rejected for r in items],
            margins=np.array([1.0 if r.margin is None else r.margin for r in items]),
            source=source,
        )

    def __len__(self) -> int:
        return len(self.chosen)

    def subset(self, index: Sequence[int] | NDArray[np.int_]) -> PairData:
        idx = [int(i) for i in index]
        return PairData(
            prompts=[self.prompts[i] for i in idx],
            chosen=[self.chosen[i] for i in idx],
            rejected=[self.rejected[i] for i in idx],
            margins=self.margins[idx],
            source=self.source,
        )

    def fingerprint(self) -> str:
        return _sha256(
            {
                "kind": "pairwise",
                "prompts": self.prompts,
                "chosen": self.chosen,
                "rejected": self.rejected,
                "margins": [float(v) for v in self.margins],
            }
        )

    def check_trainable(self) -> None:
        where = f" in {self.source}" if self.source else ""
        if len(self) == 0:
            raise InvalidInputError(
                f"no preference pairs{where}: a pairwise model needs chosen/rejected pairs"
            )
        if len(self) < 4:
            raise InvalidInputError(
                f"only {len(self)} pairs{where}: a pairwise model needs at least 4"
            )


def _detect_format(path: Path) -> str:
    """``ratings``, ``pairs`` or ``rankings``, from the keys of the first non-blank line."""
    for line, obj in iter_json_lines(path):
        keys = set(obj)
        if {"chosen", "rejected"} <= keys:
            return "pairs"
        if {"responses", "ranking"} <= keys:
            return "rankings"
        if {"text", "rating"} <= keys or {"caption", "rate"} <= keys:
            return "ratings"
        raise ImportFileError(
            str(path),
            line,
            f"cannot tell what this file holds from its keys {sorted(keys)}: ratings need "
            '"text"+"rating" (or "caption"+"rate"), pairs "chosen"+"rejected", rankings '
            '"responses"+"ranking"',
        )
    raise InvalidInputError(f"{path} is empty: it holds no ratings, pairs or rankings")


def load_rating_data(path: str | Path, scale: Sequence[float] | None = None) -> RatingData:
    """Ratings from a JSONL file in any format :func:`prefloop.io.iter_ratings` reads."""
    path = Path(path)
    found = _detect_format(path)
    if found != "ratings":
        raise InvalidInputError(
            f"{path} holds {found}, not ratings: a rating model needs rated texts; pairs and "
            "rankings train and evaluate a pairwise model (reward fit/cv: --kind pairwise)"
        )
    return RatingData.from_records(iter_ratings(path), scale=scale, source=str(path))


def load_pair_data(path: str | Path) -> PairData:
    """Pairs from a pairs file, or every K(K−1)/2 pair of each ranking in a rankings file."""
    path = Path(path)
    found = _detect_format(path)
    if found == "pairs":
        return PairData.from_records(iter_pairs(path), source=str(path))
    if found == "rankings":
        pairs = [pair for ranking in iter_rankings(path) for pair in ranking.pairs()]
        return PairData.from_records(pairs, source=str(path))
    raise InvalidInputError(
        f"{path} holds ratings, not pairs or rankings: a pairwise model needs pairs or "
        "rankings; rated texts train and evaluate a rating model (reward fit/cv: --kind rating)"
    )


def rating_data_from_store(store: Store, task: str) -> RatingData:
    """Every successful generation of ``task`` with a reward (the value derived from its
    feedback, cached in ``Generation.reward``), on the task's scale: the rated examples of
    :func:`prefloop.feedback.rated_examples`, with their prompts."""
    from prefloop.feedback import rated_examples
    from prefloop.store.repo import get_task

    with store.session(readonly=True) as session:
        task_row = get_task(session, task)
        scale = tuple(float(v) for v in task_row.scale)
        examples = list(rated_examples(session, task_row))
    return RatingData(
        texts=[e.text for e in examples],
        ratings=np.array([e.reward for e in examples], dtype=np.float64),
        prompts=[e.prompt or None for e in examples],
        scale=scale,
        source=f"task {task!r}",
        inputs=[input_key(e.input, e.prompt) for e in examples],
    )


def pair_data_from_store(
    store: Store, task: str, *, sources: Sequence[str] | None = None
) -> PairData:
    """The preference pairs of ``task`` (:func:`prefloop.feedback.preference_pairs`: pairwise
    feedback and edits, every pair of each ranking; ties and identical texts left out), from
    people's feedback unless ``sources`` names others — the pairs the preference export
    writes."""
    from prefloop.feedback import HUMAN_SOURCES, preference_pairs
    from prefloop.store.repo import get_task

    with store.session(readonly=True) as session:
        task_row = get_task(session, task)
        pairs = [
            PairRecord(prompt=p.prompt, chosen=p.chosen, rejected=p.rejected, margin=p.margin)
            for p in preference_pairs(
                session, task_row, sources=HUMAN_SOURCES if sources is None else sources
            )
        ]
    return PairData.from_records(pairs, source=f"task {task!r}")


# --------------------------------------------------------------------------------------------
# Featurizers
# --------------------------------------------------------------------------------------------


class Featurizer(ABC):
    """Turns texts (and the prompts they answer) into a numeric matrix, one row per text.

    ``fit`` learns anything data-dependent (most featurizers learn nothing); ``transform`` must
    give the same columns for any input once fitted. Featurizers combine with ``+`` into a
    concatenation (:class:`prefloop.reward.featurizers.Concat`). A featurizer is pickled with
    the model that uses it, so heavy objects (an embedding network) must be dropped in
    ``__getstate__`` and reloaded lazily.
    """

    name: ClassVar[str] = "featurizer"

    @property
    def prescaled(self) -> bool:
        """True when the columns already share one scale, as unit-length vectors do: models then
        leave them as they are. Others are standardized column by column, which would blow
        hundreds of small embedding columns up to the size of a few strong ones."""
        return False

    def fit(self, texts: Sequence[str], prompts: Sequence[str | None] | None = None) -> Self:
        return self

    @abstractmethod
    def transform(self, texts: Sequence[str], prompts: Sequence[str | None] | None = None) -> Array:
        """An array of shape (len(texts), n_features)."""

    def fit_transform(
        self, texts: Sequence[str], prompts: Sequence[str | None] | None = None
    ) -> Array:
        return self.fit(texts, prompts).transform(texts, prompts)

    def feature_names(self) -> list[str]:
        """Names of the columns (``name[i]`` when the featurizer has no better names)."""
        return []

    def describe(self) -> dict[str, Any]:
        """A JSON-able description for the model's manifest."""
        return {"name": self.name}

    def __add__(self, other: Featurizer) -> Featurizer:
        from prefloop.reward.featurizers import Concat

        left = list(self.parts) if isinstance(self, Concat) else [self]
        right = list(other.parts) if isinstance(other, Concat) else [other]
        return Concat([*left, *right])


# --------------------------------------------------------------------------------------------
# Reward models and their saved folders
# --------------------------------------------------------------------------------------------


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
    if not name or name == RewardModel.name:
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


class RewardModel(ABC):
    """A learned reward: ``fit`` on data, then ``score`` new texts.

    Subclasses set ``name`` (the registry name) and ``kind``, keep their settings in a typed
    dataclass ``config`` (class attribute ``config_type``), and implement four hooks:
    ``_fit``, ``_score``, ``_save_files`` and ``_load_files``. The public methods here check the
    input and keep the bookkeeping (training summary, metrics, manifest).
    """

    name: ClassVar[str] = "reward-model"
    kind: ClassVar[Kind]
    config_type: ClassVar[type[Any]]
    extra_versions: ClassVar[tuple[str, ...]] = ()
    """Distributions whose versions go into the manifest besides the defaults (e.g. torch)."""

    def __init__(self, config: Any | None = None) -> None:
        self.config = config if config is not None else self.config_type()
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
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = as_if_created(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            self._save_files(staging)
            manifest = self.info().to_json()
            (staging / MANIFEST_NAME).write_text(
                json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
            )
            publish_folder(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
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
