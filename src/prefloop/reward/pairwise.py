"""Pairwise reward model, the fast kind: Bradley–Terry on frozen features.

Bradley & Terry (1952), as used for RLHF reward models (Ouyang et al., 2022): each reply x to a
prompt p gets a reward r(p, x) = w·φ(p, x), and

    P(chosen ≻ rejected) = σ(r(p, chosen) − r(p, rejected)) = σ(w·(φ(p, chosen) − φ(p, rejected)))

so fitting w is a logistic regression without intercept on feature differences. Each pair is
used in both orders ((c − r, 1) and (r − c, 0)), which keeps the model symmetric. φ comes from
frozen featurizers; the default, ``use-prompt``, is the multilingual USE embedding of the reply,
its elementwise product with the embedding of the prompt's last request, and their cosine;
the L2 penalty is chosen by cross-validation inside the training pairs, with folds grouped by
prompt. Rewards are centred so that the average training reply scores 0; ``score_unit`` gives
σ(r), which is 0.5 for a reply with the average training reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import joblib
import numpy as np

from prefloop.errors import InvalidInputError
from prefloop.reward._classes import register_model
from prefloop.reward._data import Array, PairData
from prefloop.reward._featurizer import Featurizer
from prefloop.reward._model import ProgressCallback, RewardModel
from prefloop.reward.featurizers import Concat, build_featurizer

__all__ = ["BradleyTerryConfig", "BradleyTerryModel"]

C_GRID: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


@dataclass(frozen=True)
class BradleyTerryConfig:
    """Settings of :class:`BradleyTerryModel`."""

    features: str = "use-prompt"
    """Feature sets joined by '+', see :func:`prefloop.reward.featurizers.build_featurizer`."""
    inner_folds: int = 5
    """Folds (grouped by prompt) used to choose the L2 penalty inside the training pairs."""
    c_grid: tuple[float, ...] = C_GRID
    """Inverse L2 penalties tried (scikit-learn's C)."""
    use_margins: bool = False
    """Weight each pair by its margin (e.g. the rank difference of a ranking)."""
    seed: int = 0


def _blocks(featurizer: Featurizer) -> list[Featurizer]:
    return list(featurizer.parts) if isinstance(featurizer, Concat) else [featurizer]


@register_model
class BradleyTerryModel(RewardModel):
    """Logistic regression on φ(chosen) − φ(rejected); see the module docstring."""

    name: ClassVar[str] = "bradley-terry"
    kind = "pairwise"
    config_type = BradleyTerryConfig

    def __init__(self, config: BradleyTerryConfig | None = None) -> None:
        super().__init__(config)
        self.config: BradleyTerryConfig
        self.featurizer_: Featurizer | None = None
        self.scale_: Array | None = None
        self.weights_: Array | None = None
        self.offset_: float = 0.0
        self.chosen_c_: float | None = None
        self.selection_: dict[str, Any] = {}
        self._widths: list[int] = []

    def _features(self, texts: Sequence[str], prompts: Sequence[str | None]) -> Array:
        assert self.featurizer_ is not None
        blocks = [part.transform(texts, prompts) for part in _blocks(self.featurizer_)]
        self._widths = [block.shape[1] for block in blocks]
        return np.hstack(blocks)

    def _fit(self, data: PairData, progress: ProgressCallback | None) -> None:
        from sklearn.linear_model import LogisticRegression

        cfg = self.config
        if not cfg.c_grid:
            raise InvalidInputError("c_grid needs at least one value")
        self.featurizer_ = build_featurizer(cfg.features)
        prompts: list[str | None] = list(data.prompts)
        if progress is not None:
            progress("featurizing", 0, 2)
        phi_c = self._features(data.chosen, prompts)
        if progress is not None:
            progress("featurizing", 1, 2)
        phi_r = self._features(data.rejected, prompts)
        if progress is not None:
            progress("featurizing", 2, 2)
        # Scale the columns that are not prescaled (embeddings are) to unit spread over the
        # training replies (no centring: a shift of φ cancels in φ(c) − φ(r)).
        replies = np.vstack([phi_c, phi_r])
        prescaled = np.concatenate(
            [
                np.full(width, part.prescaled)
                for part, width in zip(_blocks(self.featurizer_), self._widths, strict=True)
            ]
        )
        spread = replies.std(axis=0)
        self.scale_ = np.where(prescaled | (spread == 0), 1.0, spread)
        diff = (phi_c - phi_r) / self.scale_
        weights = data.margins if cfg.use_margins else np.ones(len(data))

        c_value = cfg.c_grid[0]
        if len(cfg.c_grid) > 1:
            c_value = self._choose_c(data, diff, weights, progress)
        model = LogisticRegression(C=c_value, fit_intercept=False, max_iter=5000)
        x = np.vstack([diff, -diff])
        y = np.r_[np.ones(len(diff)), np.zeros(len(diff))]
        model.fit(x, y, sample_weight=np.r_[weights, weights])
        self.weights_ = np.asarray(model.coef_[0], dtype=np.float64)
        self.chosen_c_ = c_value
        self.offset_ = float(np.mean(replies / self.scale_ @ self.weights_))

    def _choose_c(
        self,
        data: PairData,
        diff: Array,
        weights: Array,
        progress: ProgressCallback | None,
    ) -> float:
        """The C with the best held-out log-likelihood over prompt-grouped inner folds."""
        from sklearn.linear_model import LogisticRegression

        from prefloop.reward.evaluate import fold_groups, make_folds

        cfg = self.config
        n_groups = int(fold_groups(data).max()) + 1
        k = max(2, min(cfg.inner_folds, n_groups))
        if n_groups < 2:
            return cfg.c_grid[len(cfg.c_grid) // 2]
        folds = make_folds(data, k, seed=cfg.seed)
        loss = np.zeros(len(cfg.c_grid))
        total = len(cfg.c_grid) * len(folds)
        for f, (train, test) in enumerate(folds):
            x = np.vstack([diff[train], -diff[train]])
            y = np.r_[np.ones(len(train)), np.zeros(len(train))]
            w = np.r_[weights[train], weights[train]]
            for j, c_value in enumerate(cfg.c_grid):
                if progress is not None:
                    progress("choosing the penalty", f * len(cfg.c_grid) + j, total)
                model = LogisticRegression(C=c_value, fit_intercept=False, max_iter=5000)
                model.fit(x, y, sample_weight=w)
                p = np.clip(model.predict_proba(diff[test])[:, 1], 1e-9, 1.0)
                loss[j] += float(-np.sum(np.log(p)))
        if progress is not None:
            progress("choosing the penalty", total, total)
        best = int(np.argmin(loss))
        self.selection_ = {
            "inner_folds": k,
            "log_loss_by_c": {
                f"{c:g}": float(v / len(data)) for c, v in zip(cfg.c_grid, loss, strict=True)
            },
        }
        return float(cfg.c_grid[best])

    def _score(self, texts: list[str], prompts: list[str | None]) -> Array:
        if self.weights_ is None or self.scale_ is None:
            raise InvalidInputError("this Bradley–Terry model is not fitted; call fit first")
        return np.asarray(
            self._features(texts, prompts) / self.scale_ @ self.weights_ - self.offset_,
            dtype=np.float64,
        )

    def details(self) -> dict[str, Any]:
        return {"C": self.chosen_c_, "selection": self.selection_}

    def _save_files(self, folder: Path) -> None:
        joblib.dump(
            {
                "featurizer": self.featurizer_,
                "scale": self.scale_,
                "weights": self.weights_,
                "offset": self.offset_,
                "C": self.chosen_c_,
                "selection": self.selection_,
            },
            folder / "model.joblib",
        )

    def _load_files(self, folder: Path) -> None:
        path = folder / "model.joblib"
        if not path.exists():
            raise InvalidInputError(f"{folder} has no model.joblib; the folder is incomplete")
        saved = joblib.load(path)
        self.featurizer_ = saved["featurizer"]
        self.scale_ = saved["scale"]
        self.weights_ = saved["weights"]
        self.offset_ = float(saved["offset"])
        self.chosen_c_ = saved.get("C")
        self.selection_ = saved.get("selection", {})
