"""Rating reward model: featurize a text (and its prompt), regress its rating with scikit-learn.

``model`` names a candidate ``REGRESSOR[:FEATURES]`` — a regressor (``ridge``,
``random-forest``, ``gradient-boosting``, ``ridge+boosting``, the mean of the two, or ``stack``,
see below) on a feature set (``stats``, ``style``, ``char-lm``, ``use``, ``stats+use``, … see
:func:`prefloop.reward.featurizers.build_featurizer`) — or ``auto``: every candidate of
``candidates`` is scored by cross-validation *on the training data only* (folds that keep every
draft of an input together, when the data name inputs: ``group_by``) and the one with the
lowest MSE is kept (optionally the cheapest within one standard error of it, the
one-standard-error rule of Breiman et al. 1984 / Hastie, Tibshirani & Friedman, ESL §7.10).
Evaluated inside an outer CV this is nested cross-validation: the held-out fold never
influences the choice.

``stack`` is stacked generalization (Wolpert, 1992): a ridge regression on character n-gram
TF-IDF of the text (``char_wb``, 1–4 characters) is fitted on the training data, its
*out-of-fold* predictions there (5 inner folds) become one more column next to the features, and
``ridge+boosting`` is fitted on the lot; new texts get the column from the ridge fitted on all
the training data. Only training labels are ever used, so it nests inside any outer CV.

Featurizers that learn from texts (``char-lm``) are fitted on each training part only.

Ridge picks its penalty by efficient leave-one-out on the training data (RidgeCV); the tree
ensembles use fixed, conservative settings. Predictions are clipped to the scale. Rare rating
levels can be up-weighted (``balance_levels``): that is oversampling done with sample weights
on the training data, so no copy of an item can end up on both sides of a split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import joblib
import numpy as np
from numpy.typing import NDArray

from prefloop.errors import InvalidInputError
from prefloop.reward._classes import register_model
from prefloop.reward._data import Array, FoldGrouping, RatingData
from prefloop.reward._featurizer import Featurizer
from prefloop.reward._model import ProgressCallback, RewardModel
from prefloop.reward.featurizers import Concat, build_featurizer

__all__ = [
    "AUTO_CANDIDATES",
    "REGRESSORS",
    "RatingModelConfig",
    "SklearnRatingModel",
    "parse_candidate",
]

REGRESSORS: tuple[str, ...] = (
    "ridge",
    "random-forest",
    "gradient-boosting",
    "ridge+boosting",
    "stack",
)
DEFAULT_FEATURES = "stats+use"
AUTO_CANDIDATES: tuple[str, ...] = (
    "ridge:stats",
    "ridge+boosting:stats",
    "ridge+boosting:stats+style",
    "stack:stats+style",
    "stack:stats+style+char-lm",
)
"""Candidates of ``model="auto"``, cheapest first (the order breaks ties)."""

RIDGE_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 4, 13))


def parse_candidate(spec: str) -> tuple[str, str]:
    """``"ridge:stats+use"`` → ``("ridge", "stats+use")``; a bare regressor gets the default
    features."""
    regressor, _, features = spec.partition(":")
    regressor = regressor.strip()
    if regressor not in REGRESSORS:
        raise InvalidInputError(
            f"unknown rating model {spec!r}; use auto or one of {', '.join(REGRESSORS)}, "
            "optionally with features, e.g. ridge:stats+use"
        )
    features = features.strip() or DEFAULT_FEATURES
    build_featurizer(features)  # validates the names
    return regressor, features


InnerGrouping = Literal["auto", "text", "input"]
"""What the folds inside a rating model's training data keep together (see ``group_by``)."""


@dataclass(frozen=True)
class RatingModelConfig:
    """Settings of :class:`SklearnRatingModel`."""

    model: str = "auto"
    """``auto`` or ``REGRESSOR[:FEATURES]`` (e.g. ``ridge``, ``random-forest:stats``)."""
    candidates: tuple[str, ...] = AUTO_CANDIDATES
    """What ``auto`` chooses from, cheapest first."""
    inner_folds: int = 5
    """Folds of the model-selection CV inside the training data."""
    one_standard_error: bool = False
    """Choose the cheapest candidate within one standard error of the best inner-CV MSE
    instead of the best one (more conservative; it cost accuracy on the diary data:
    docs/experiments/reward-diary-ratings.md)."""
    balance_levels: bool = False
    """Up-weight rare rating levels (weights ∝ 1 / count of the level) when fitting."""
    group_by: InnerGrouping = "auto"
    """What the folds inside the training data keep together (``auto``'s model selection and
    the out-of-fold column of ``stack``): copies of a text (``text``), every draft of one input
    (``input``; see :func:`prefloop.reward.evaluate.make_folds`), or ``auto``: by input when
    the data name at least :data:`MIN_INPUTS` inputs, else by text. A deployed model mostly
    scores drafts of inputs it has never seen, so it is chosen that way when it can be."""
    seed: int = 0


INNER_GROUPINGS: tuple[InnerGrouping, ...] = ("auto", "text", "input")
MIN_INPUTS = 10
"""Fewest distinct inputs for ``group_by="auto"`` to group the inner folds by input: with fewer,
folds by input would hold out a large share of the data at once."""


def _make_regressor(name: str, seed: int) -> Any:
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor, VotingRegressor
    from sklearn.linear_model import RidgeCV

    def boosting() -> GradientBoostingRegressor:
        return GradientBoostingRegressor(
            n_estimators=200, learning_rate=0.03, max_depth=2, subsample=0.8, random_state=seed
        )

    if name == "ridge":
        return RidgeCV(alphas=RIDGE_ALPHAS)
    if name == "random-forest":
        return RandomForestRegressor(
            n_estimators=200, min_samples_leaf=3, max_features=0.3, random_state=seed, n_jobs=1
        )
    if name in ("ridge+boosting", "stack"):  # the mean of the two predictions
        return VotingRegressor([("ridge", RidgeCV(alphas=RIDGE_ALPHAS)), ("boosting", boosting())])
    return boosting()


def _standardize_mask(featurizer: Featurizer, widths: Sequence[int]) -> Array:
    """Which columns to standardize: all but :attr:`~Featurizer.prescaled` ones (embeddings:
    unit vectors whose scale already matches each other; standardizing 512 small columns would
    drown a few strong ones)."""
    parts = featurizer.parts if isinstance(featurizer, Concat) else [featurizer]
    mask = [np.full(width, not part.prescaled) for part, width in zip(parts, widths, strict=True)]
    return np.concatenate(mask)


STACK_FOLDS = 5
"""Inner folds that give the out-of-fold TF-IDF column of ``stack``."""


class _TextRidge:
    """Ridge regression on character n-gram TF-IDF (``char_wb``, 1–4 characters, sublinear tf):
    the text model whose out-of-fold predictions ``stack`` uses as a column."""

    def __init__(self) -> None:
        self.vectorizer_: Any = None
        self.ridge_: Any = None
        self.constant_: float = 0.0

    def fit(self, texts: Sequence[str], y: Array, weights: Array | None) -> _TextRidge:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import RidgeCV

        self.constant_ = float(np.average(y, weights=weights))
        self.vectorizer_ = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True, min_df=2
        )
        try:
            x = self.vectorizer_.fit_transform(texts)
        except ValueError:  # too few texts for any n-gram to occur twice
            self.vectorizer_ = None
            return self
        self.ridge_ = RidgeCV(alphas=RIDGE_ALPHAS).fit(x, y, sample_weight=weights)
        return self

    def predict(self, texts: Sequence[str]) -> Array:
        if self.vectorizer_ is None:
            return np.full(len(texts), self.constant_)
        return np.asarray(self.ridge_.predict(self.vectorizer_.transform(texts)), dtype=float)

    @classmethod
    def out_of_fold(
        cls,
        texts: Sequence[str],
        y: Array,
        weights: Array | None,
        seed: int,
        groups: NDArray[np.int_] | None = None,
    ) -> Array:
        """Predictions for each training text from a model that did not see it (copies of a
        text share a fold, and so do items with the same ``groups`` label when given)."""
        from sklearn.model_selection import GroupKFold

        if groups is None:
            _, groups = np.unique(np.array(texts, dtype=object), return_inverse=True)
        k = min(STACK_FOLDS, int(groups.max()) + 1)
        out = np.full(len(texts), float(np.average(y, weights=weights)))
        if k < 2:
            return out
        splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
        for train, test in splitter.split(np.arange(len(texts)), groups=groups):
            w = None if weights is None else weights[train]
            model = cls().fit([texts[i] for i in train], y[train], w)
            out[test] = model.predict([texts[i] for i in test])
        return out


class _Candidate:
    """One featurizer + scaler + regressor (+ the TF-IDF text model of ``stack``), fitted
    together on texts."""

    def __init__(self, spec: str, seed: int) -> None:
        self.spec = spec
        self.regressor_name, self.features = parse_candidate(spec)
        self.featurizer = build_featurizer(self.features)
        self.seed = seed
        self._widths: list[int] = []  # columns per featurizer part, set by features_of
        self.mean_: Array | None = None
        self.scale_: Array | None = None
        self.estimator_: Any = None
        self.text_model_: _TextRidge | None = None

    def features_of(self, texts: Sequence[str], prompts: Sequence[str | None]) -> Array:
        parts = self.featurizer.parts if isinstance(self.featurizer, Concat) else [self.featurizer]
        blocks = [part.transform(texts, prompts) for part in parts]
        self._widths = [b.shape[1] for b in blocks]
        return np.hstack(blocks)

    def fit(
        self,
        texts: Sequence[str],
        prompts: Sequence[str | None],
        y: Array,
        weights: Array | None,
        groups: NDArray[np.int_] | None = None,
    ) -> _Candidate:
        """Fit the featurizer on the texts, then standardize and regress (``groups``: what the
        out-of-fold column of ``stack`` keeps in one fold; by default copies of a text)."""
        self.featurizer.fit(texts, prompts)
        x = self.features_of(texts, prompts)
        mask = _standardize_mask(self.featurizer, self._widths)
        self.text_model_ = None
        if self.regressor_name == "stack":
            column = _TextRidge.out_of_fold(texts, y, weights, self.seed, groups)
            self.text_model_ = _TextRidge().fit(texts, y, weights)
            x = np.hstack([x, column[:, None]])
            mask = np.r_[mask, True]
        mean = np.where(mask, x.mean(axis=0), 0.0)
        scale = np.where(mask, x.std(axis=0), 1.0)
        self.mean_, self.scale_ = mean, np.where(scale > 0, scale, 1.0)
        self.estimator_ = _make_regressor(self.regressor_name, self.seed)
        self.estimator_.fit((x - self.mean_) / self.scale_, y, sample_weight=weights)
        return self

    def predict(self, texts: Sequence[str], prompts: Sequence[str | None]) -> Array:
        assert self.mean_ is not None and self.scale_ is not None
        x = self.features_of(texts, prompts)
        text_model = getattr(self, "text_model_", None)  # absent in models saved before `stack`
        if text_model is not None:
            x = np.hstack([x, text_model.predict(texts)[:, None]])
        return np.asarray(self.estimator_.predict((x - self.mean_) / self.scale_), dtype=float)


def _level_weights(y: Array) -> Array:
    """Weights ∝ 1 / (count of the item's level), normalised to mean 1."""
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse]
    return np.asarray(weights / weights.mean(), dtype=np.float64)


@register_model
class SklearnRatingModel(RewardModel):
    """Featurizer + scikit-learn regressor for ratings; see the module docstring."""

    name: ClassVar[str] = "sklearn-rating"
    kind = "rating"
    config_type = RatingModelConfig

    def __init__(self, config: RatingModelConfig | None = None) -> None:
        super().__init__(config)
        self.config: RatingModelConfig
        self.candidate_: _Candidate | None = None
        self.selection_: dict[str, Any] = {}
        self.scale_bounds_: tuple[float, float] = (0.0, 1.0)

    # ---- fitting -----------------------------------------------------------------------------
    def _fit(self, data: RatingData, progress: ProgressCallback | None) -> None:
        from prefloop.reward.evaluate import fold_groups

        cfg = self.config
        self.selection_ = {}
        specs = list(cfg.candidates) if cfg.model == "auto" else [cfg.model]
        if not specs:
            raise InvalidInputError("model='auto' needs at least one candidate")
        for spec in specs:
            parse_candidate(spec)
        # The inner folds' groups: None for copies of a text (make_folds' default), else the
        # drafts of one input together.
        by = self._grouping(data)
        groups = None if by == "text" else fold_groups(data, by="input")
        chosen = specs[0]
        if len(specs) > 1:
            chosen = self._select(specs, data, by, groups, progress)
        weights = _level_weights(data.ratings) if cfg.balance_levels else None
        candidate = _Candidate(chosen, cfg.seed)
        self.candidate_ = candidate.fit(data.texts, data.prompts, data.ratings, weights, groups)
        self.scale_bounds_ = (data.scale[0], data.scale[-1])
        if not self.selection_:
            self.selection_ = {"chosen": chosen}

    def _grouping(self, data: RatingData) -> FoldGrouping:
        """``text`` or ``input``: what ``group_by`` means for these data."""
        by = self.config.group_by
        if by not in INNER_GROUPINGS:
            raise InvalidInputError(
                f"unknown fold grouping {by!r} for the rating model: use one of "
                f"{', '.join(INNER_GROUPINGS)}"
            )
        if by == "auto":
            known = {key for key in data.inputs if key is not None}
            return "input" if len(known) >= MIN_INPUTS else "text"
        return by

    def _select(
        self,
        specs: list[str],
        data: RatingData,
        by: FoldGrouping,
        groups: NDArray[np.int_] | None,
        progress: ProgressCallback | None,
    ) -> str:
        """Inner CV on the training data, folds grouped ``by`` (``groups``: their labels, None
        for copies of a text): the spec with the best MSE, or the cheapest within one SE."""
        from prefloop.reward.evaluate import make_folds

        cfg = self.config
        n_groups = len(set(data.texts)) if groups is None else int(groups.max()) + 1
        k = max(2, min(cfg.inner_folds, n_groups))
        folds = make_folds(data, k, seed=cfg.seed, by=by)
        lo, hi = data.scale[0], data.scale[-1]
        results: dict[str, dict[str, float]] = {}
        total = len(specs) * len(folds)
        for s, spec in enumerate(specs):
            candidate = _Candidate(spec, cfg.seed)
            fold_mse = []
            for f, (train, test) in enumerate(folds):
                if progress is not None:
                    progress("choosing a model", s * len(folds) + f, total)
                part, held_out = data.subset(train), data.subset(test)
                weights = _level_weights(part.ratings) if cfg.balance_levels else None
                part_groups = None if groups is None else groups[train]
                candidate.fit(part.texts, part.prompts, part.ratings, weights, part_groups)
                pred = np.clip(candidate.predict(held_out.texts, held_out.prompts), lo, hi)
                fold_mse.append(float(np.mean((pred - data.ratings[test]) ** 2)))
            values = np.array(fold_mse)
            results[spec] = {
                "mse": float(values.mean()),
                "se": float(values.std(ddof=1) / np.sqrt(values.size)),
            }
        if progress is not None:
            progress("choosing a model", total, total)
        best = min(results, key=lambda s: results[s]["mse"])  # ties go to the cheaper one
        chosen = best
        if cfg.one_standard_error:
            threshold = results[best]["mse"] + results[best]["se"]
            chosen = next(s for s in specs if results[s]["mse"] <= threshold)
        self.selection_ = {
            "inner_folds": k,
            "group_by": by,
            "candidates": results,
            "best": best,
            "chosen": chosen,
        }
        return chosen

    # ---- scoring -----------------------------------------------------------------------------
    def _score(self, texts: list[str], prompts: list[str | None]) -> Array:
        if self.candidate_ is None:
            raise InvalidInputError("this rating model is not fitted; call fit first")
        lo, hi = self._bounds()
        return np.clip(self.candidate_.predict(texts, prompts), lo, hi)

    def _bounds(self) -> tuple[float, float]:
        if self.train_ is not None and self.train_.scale is not None:
            return self.train_.scale[0], self.train_.scale[-1]
        return self.scale_bounds_

    @property
    def chosen(self) -> str | None:
        """The ``REGRESSOR:FEATURES`` spec that was fitted."""
        return None if self.candidate_ is None else self.candidate_.spec

    def details(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "selection": self.selection_}

    # ---- files -------------------------------------------------------------------------------
    def _save_files(self, folder: Path) -> None:
        joblib.dump(
            {"candidate": self.candidate_, "selection": self.selection_},
            folder / "model.joblib",
        )

    def _load_files(self, folder: Path) -> None:
        path = folder / "model.joblib"
        if not path.exists():
            raise InvalidInputError(f"{folder} has no model.joblib; the folder is incomplete")
        saved = joblib.load(path)
        self.candidate_ = saved["candidate"]
        self.selection_ = saved.get("selection", {})
