"""A reward model that is a language model with a scalar head (InstructGPT's reward model).

``prefloop train reward`` trains it with TRL's ``RewardTrainer`` on preference pairs (the
Bradley–Terry loss, with margins from rating gaps and reward centring) and saves it as an
ordinary prefloop reward-model folder, so ``prefloop reward eval`` and ``reward list`` work on
it, the baselines sit next to it, and the online trainers can use it as a reward function.
Its raw score is the head's output (a Bradley–Terry logit); :meth:`score_unit` gives σ(score)
in [0, 1].

The folder holds ``prefloop-reward.json`` and ``model/``: a LoRA adapter (with the trained head)
over the base named in the config, or a whole model.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from prefloop.io.readers import hh_messages
from prefloop.reward._classes import register_model
from prefloop.reward._data import Array, PairData
from prefloop.reward._manifest import TrainSummary, write_manifest
from prefloop.reward._model import ProgressCallback, RewardModel

__all__ = ["ScalarHeadConfig", "ScalarHeadRewardModel", "save_scalar_reward_model"]

_MODEL_DIR = "model"


@dataclass(frozen=True)
class ScalarHeadConfig:
    """How the model was built and how it reads text."""

    base: str = "smollm2"
    """The language model under the head (``smollm2`` or a folder)."""
    lora: bool = True
    """Whether ``model/`` is a LoRA adapter over ``base`` (else a whole model)."""
    max_length: int = 256
    """Tokens of prompt and reply read per text (longer ones are cut)."""
    batch_size: int = 8
    """Texts scored per forward pass."""
    epochs: float = 1.0
    """Training passes when fitted through :meth:`fit` (``prefloop train reward`` sets its own)."""
    learning_rate: float = 1e-4
    """Training learning rate when fitted through :meth:`fit`."""
    seed: int = 0
    """Training seed when fitted through :meth:`fit`."""


@register_model
class ScalarHeadRewardModel(RewardModel):
    """Bradley–Terry reward from a language model with a scalar head."""

    name: ClassVar[str] = "lm-scalar"
    kind = "pairwise"
    config_type: ClassVar[type[Any]] = ScalarHeadConfig
    extra_versions: ClassVar[tuple[str, ...]] = ("torch", "transformers", "peft", "trl")

    config: ScalarHeadConfig

    def __init__(self, config: ScalarHeadConfig | None = None) -> None:
        super().__init__(config)
        self.model_: Any = None
        self.tokenizer_: Any = None

    def _fit(self, data: Any, progress: ProgressCallback | None) -> None:
        from prefloop.train._run import run_training
        from prefloop.train.config import RewardConfig
        from prefloop.train.data import TrainingData, _pair_row

        assert isinstance(data, PairData)
        rows = [
            _pair_row(p, c, r, float(m) if m else None)
            for p, c, r, m in zip(
                data.prompts, data.chosen, data.rejected, data.margins, strict=True
            )
        ]
        config = RewardConfig(
            base=self.config.base,
            lora=self.config.lora,
            max_length=self.config.max_length,
            epochs=self.config.epochs,
            learning_rate=self.config.learning_rate,
            seed=self.config.seed,
        )
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "model"
            run_training(TrainingData("reward", rows, data.source), config, out)
            self._load_files(out)

    def _score(self, texts: list[str], prompts: list[str | None]) -> Array:
        import torch

        tokenizer, model = self.tokenizer_, self.model_
        conversations = [
            [*(hh_messages(p) if p else []), {"role": "assistant", "content": t}]
            for t, p in zip(texts, prompts, strict=True)
        ]
        rendered = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
        scores: list[float] = []
        size = self.config.batch_size
        tokenizer.truncation_side = "left"  # a long text loses its oldest turns, not the reply
        device = next(model.parameters()).device
        for start in range(0, len(rendered), size):
            batch = tokenizer(
                rendered[start : start + size],
                add_special_tokens=False,
                truncation=True,
                max_length=self.config.max_length,
                padding=True,
                return_tensors="pt",
            ).to(device)
            with torch.inference_mode():
                logits = model(**batch).logits  # (batch, 1)
            scores.extend(float(v) for v in logits[:, 0].float().cpu())
        return np.asarray(scores, dtype=np.float64)

    def _save_files(self, folder: Path) -> None:
        target = folder / _MODEL_DIR
        self.model_.save_pretrained(target)
        self.tokenizer_.save_pretrained(target)

    def _load_files(self, folder: Path) -> None:
        from prefloop.train.models import load_scalar_model, load_tokenizer

        source = folder / _MODEL_DIR if (folder / _MODEL_DIR).is_dir() else folder
        tokenizer = load_tokenizer(source)
        if self.config.lora:
            from peft import PeftModel

            model = PeftModel.from_pretrained(
                load_scalar_model(self.config.base, tokenizer), source
            )
        else:
            from transformers import AutoModelForSequenceClassification

            model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
        model.eval()
        self.model_, self.tokenizer_ = model, tokenizer

    def details(self) -> dict[str, Any]:
        return {"base": self.config.base, "adapter": self.config.lora}


def save_scalar_reward_model(
    model: Any, tokenizer: Any, folder: Path, config: Any, data: Any, result: Any
) -> None:
    """Write a trained scalar-head model into ``folder`` (empty) as a reward-model folder."""
    from prefloop.train.models import base_name

    reward = ScalarHeadRewardModel(
        ScalarHeadConfig(
            base=base_name(config.base),
            lora=bool(config.lora),
            max_length=int(config.max_length),
            epochs=float(config.epochs),
            learning_rate=float(config.learning_rate),
            seed=int(config.seed),
        )
    )
    reward.model_, reward.tokenizer_ = model, tokenizer
    reward.train_ = TrainSummary(n=len(data), fingerprint=data.fingerprint(), source=data.source)
    reward.metrics = {
        "training": {
            "steps": result.steps,
            "loss_first": result.loss_first,
            "loss_last": result.loss_last,
            **result.eval,
        }
    }
    reward._save_files(folder)
    write_manifest(folder, reward.info())
