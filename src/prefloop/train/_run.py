"""One training run, whatever the method: check, load, train with checkpoints, save, record.

The order matters for "nothing half-written": every check that can fail on bad input (the
data, the base model, the output folder) runs before the run is recorded or a file is written.
Checkpoints go to ``OUT.checkpoints`` beside the output folder (``--resume`` continues from the
last one; Ctrl-C leaves it usable). The model is written into a temporary folder beside
``OUT`` that is renamed into place at the end, and ``OUT.checkpoints`` is then removed.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefloop._files import publish_folder, staging_folder
from prefloop.errors import InvalidInputError, PrefloopError, TruncationWarning
from prefloop.store import Store
from prefloop.train.config import DPOConfig, KTOConfig, RewardConfig, RRHFConfig, TrainConfig
from prefloop.train.data import TrainingData
from prefloop.train.models import (
    MANIFEST,
    TrainedManifest,
    base_name,
    load_base,
    load_tokenizer,
    resolve_base,
    write_manifest,
)

__all__ = ["TrainResult", "TrainingInterrupted", "TruncationWarning", "run_training"]

REWARD_MANIFEST = "prefloop-reward.json"


class TrainingDiverged(PrefloopError):
    """The loss stopped being a finite number."""


class TrainingInterrupted(PrefloopError):
    """The run was stopped (Ctrl-C); its last checkpoint can be resumed."""

    def __init__(self, message: str, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint


@dataclass(frozen=True)
class TrainResult:
    """What a run did: the ``--json`` object of ``prefloop train``."""

    method: str
    base: str
    out: str
    examples: int
    steps: int
    seconds: float
    loss_first: float | None
    loss_last: float | None
    eval: dict[str, float | None] = field(default_factory=dict)
    """The method's own metrics at the last logged step (None where not a number)."""
    run_id: int | None = None
    truncated: int = 0
    reference_cache: str | None = None
    """``hit`` or ``miss`` for a DPO run that caches its reference log-probs, else None."""
    resumed_from: int | None = None
    """The step of the checkpoint a ``--resume`` run continued from."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Checks that run before anything is written
# --------------------------------------------------------------------------------------------


def checkpoints_folder(out: Path) -> Path:
    return out.with_name(f"{out.name}.checkpoints")


def _check_out(out: Path, *, force: bool, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"{out} is a file; give a folder for the trained model")
    if out.is_dir() and any(out.iterdir()):
        ours = (out / MANIFEST).exists() or (out / REWARD_MANIFEST).exists()
        if not ours:
            raise InvalidInputError(
                f"{out} exists and does not hold a model prefloop trained; give a new or empty "
                "folder so nothing of yours is overwritten"
            )
        if not force:
            raise InvalidInputError(
                f"{out} already holds a trained model; give another folder or --force to replace it"
            )
    if resume and _last_checkpoint(checkpoints_folder(out)) is None:
        raise InvalidInputError(
            f"nothing to resume: {checkpoints_folder(out)} holds no checkpoint; run without "
            "--resume to start"
        )


def _last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint: ``trainer_state.json`` is the last file a checkpoint
    gets, so a folder without it was cut off (e.g. by Ctrl-C while saving) and is skipped."""
    if not folder.is_dir():
        return None
    steps = []
    for child in folder.glob("checkpoint-*"):
        suffix = child.name.removeprefix("checkpoint-")
        if suffix.isdigit() and (child / "trainer_state.json").exists():
            steps.append((int(suffix), child))
    return max(steps)[1] if steps else None


_RUN_FILE = "prefloop-run.json"


def _checkpoint_identity(data: TrainingData, config: TrainConfig) -> dict[str, Any]:
    """What a checkpoint must share with the run that resumes it."""
    return {
        "method": config.method,
        "base": base_name(config.base),
        "data_fingerprint": data.fingerprint(),
        "lora": config.lora,
        "lora_r": config.lora_r,
    }


def _check_checkpoints(
    checkpoints: Path, data: TrainingData, config: TrainConfig, *, resume: bool, force: bool
) -> None:
    """``--resume`` needs checkpoints of the same method, base and data; a fresh start never
    deletes an interrupted run's checkpoints unless ``--force``."""
    if not checkpoints.exists():
        return
    if resume:
        import json

        saved = checkpoints / _RUN_FILE
        identity = json.loads(saved.read_text(encoding="utf-8")) if saved.exists() else {}
        expected = _checkpoint_identity(data, config)
        different = sorted(k for k, v in expected.items() if identity.get(k) != v)
        if different:
            raise InvalidInputError(
                f"the checkpoints in {checkpoints} come from another run ({', '.join(different)} "
                "differ); resume with the same method, base and data, or start over with --force"
            )
    elif not force and _last_checkpoint(checkpoints) is not None:
        raise InvalidInputError(
            f"{checkpoints} holds the checkpoints of an interrupted run; continue it with "
            "--resume, or start over with --force (which deletes them)"
        )


def _chat_ids(tokenizer: Any, messages: list[dict[str, str]], *, generation: bool) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _replies(row: dict[str, Any]) -> list[list[dict[str, str]]]:
    for key in ("completion", "chosen"):
        if key in row:
            return [row[key]] + ([row["rejected"]] if key == "chosen" else [])
    return list(row.get("responses", []))


def count_truncated(data: TrainingData, tokenizer: Any, max_length: int) -> tuple[int, int]:
    """``(too_long, prompt_fills_all)``: examples longer than ``max_length`` tokens, and those
    whose prompt alone reaches it (their reply is cut away entirely)."""
    too_long = fills = 0
    for row in data.rows:
        prompt_len = len(_chat_ids(tokenizer, row["prompt"], generation=True))
        longest = max(
            len(_chat_ids(tokenizer, row["prompt"] + reply, generation=False))
            for reply in _replies(row)
        )
        too_long += longest > max_length
        fills += prompt_len >= max_length
    return too_long, fills


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


class _Log:
    """Collects what the trainer logs (a ``TrainerCallback``, built lazily)."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []

    def callback(self, progress: Callable[[int, int], None] | None) -> Any:
        from transformers import TrainerCallback

        log = self

        class Collect(TrainerCallback):
            def on_log(
                self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any
            ) -> None:
                if logs:
                    log.history.append({k: float(v) for k, v in logs.items() if _number(v)})

            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if progress is not None:
                    progress(int(state.global_step), int(state.max_steps))

        return Collect()

    def losses(self) -> list[float]:
        return [h["loss"] for h in self.history if "loss" in h]

    def last_metrics(self) -> dict[str, float]:
        skip = {"loss", "learning_rate", "grad_norm", "epoch", "num_tokens", "step"}
        latest: dict[str, float] = {}
        for entry in self.history:
            if "loss" not in entry:
                continue  # the final summary (train_runtime, …) is not a metric of the model
            latest.update({k: v for k, v in entry.items() if k not in skip})
        return latest


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _device_settings() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "use_cpu": not cuda,
        "bf16": bool(cuda and torch.cuda.is_bf16_supported()),
        "fp16": False,
        "activation_checkpointing": False,  # small models: memory is not the limit, time is
    }


def _common_args(config: TrainConfig, checkpoints: Path) -> dict[str, Any]:
    return {
        "output_dir": str(checkpoints),
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps if config.max_steps is not None else -1,
        "learning_rate": config.learning_rate,
        "logging_steps": config.logging_steps,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": 2,
        "report_to": [],
        "seed": config.seed,
        "data_seed": config.seed,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        **_device_settings(),
    }


def _lora(config: TrainConfig, task_type: str) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules="all-linear",
        task_type=task_type,
    )


def run_training(
    data: TrainingData,
    config: TrainConfig,
    out: str | Path,
    *,
    store: Store | None = None,
    resume: bool = False,
    force: bool = False,
    keep_checkpoints: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train ``config.method`` on ``data`` and save the model in ``out`` (module docstring).

    With a ``store`` the run is recorded in its ``training_runs`` table (status ``running``,
    then ``done``, ``failed`` or ``stopped``). ``progress(step, total)`` is called each step.
    """
    from accelerate import PartialState

    out = Path(out).expanduser()
    method = config.method
    if data.method != method:
        raise InvalidInputError(f"data for {data.method} given to a {method} run")
    if not data.rows:
        raise InvalidInputError(f"no examples in {data.source}; {method} needs at least one")
    _check_out(out, force=force, resume=resume)
    if (out.exists() or out.is_symlink()) and _same_folder(out, config.base):
        raise InvalidInputError(
            f"--out {out} is the base model itself; write the trained model to another folder"
        )
    _check_checkpoints(checkpoints_folder(out), data, config, resume=resume, force=force)
    base_folder = resolve_base(config.base)
    tokenizer = load_tokenizer(base_folder)
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidInputError(
            f"the tokenizer of {base_folder} has no chat template; prefloop trains chat models "
            "(give an instruct model, or set tokenizer.chat_template and save it)"
        )
    too_long, fills = count_truncated(data, tokenizer, config.max_length)
    lost = too_long if method == "reward" else fills
    if lost == len(data):
        raise InvalidInputError(
            f"every example of {data.source} is longer than max_length={config.max_length} "
            "tokens, so none would be trained on; raise --max-length"
        )
    if too_long:
        what = (
            "are left out (TRL's reward trainer drops them)"
            if method == "reward"
            else f"are truncated ({fills} of them are left out: the prompt alone fills it)"
        )
        warnings.warn(
            f"{too_long} of {len(data)} examples are longer than max_length={config.max_length} "
            f"tokens and {what}; raise --max-length to keep them whole",
            TruncationWarning,
            stacklevel=2,
        )
    state = PartialState()
    main = state.is_main_process
    checkpoints = checkpoints_folder(out)
    resume_from = _last_checkpoint(checkpoints) if resume else None
    log = _Log()
    # the model loads and the trainer checks its data before anything is written: bad input
    # leaves no folder and no run row
    built = _build(data, config, base_folder, tokenizer, checkpoints, log, progress)
    from transformers.trainer_callback import PrinterCallback

    built.trainer.remove_callback(PrinterCallback)  # it prints every log line on stdout
    if main:
        if not resume and checkpoints.exists():
            shutil.rmtree(checkpoints)  # --force: a fresh start does not mix with old checkpoints
        checkpoints.mkdir(parents=True, exist_ok=True)
        (checkpoints / _RUN_FILE).write_text(
            json.dumps(_checkpoint_identity(data, config)), encoding="utf-8"
        )
    state.wait_for_everyone()
    run_id = _record_start(store, data, config, out) if main else None
    started = time.perf_counter()
    try:
        built.trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        losses = log.losses()
        if any(not math.isfinite(v) for v in losses):
            raise TrainingDiverged(
                f"the loss became {losses[-1]} at step {built.trainer.state.global_step}: the "
                "run diverged; lower --learning-rate"
            )
    except KeyboardInterrupt:
        last = _last_checkpoint(checkpoints)
        _record_end(store, run_id, "stopped", {"checkpoint": str(last) if last else None})
        where = (
            f"the last checkpoint, {last}, is usable: run the same command with --resume"
            if last
            else f"no checkpoint was written yet (one every {config.save_steps} steps)"
        )
        raise TrainingInterrupted(f"training stopped by Ctrl-C; {where}", last) from None
    except BaseException as exc:
        _record_end(store, run_id, "failed", {"error": f"{type(exc).__name__}: {exc}"})
        raise
    seconds = time.perf_counter() - started
    steps = int(built.trainer.state.global_step)
    losses = log.losses()
    metrics = log.last_metrics()
    result = TrainResult(
        method=method,
        base=base_name(config.base),
        out=str(out),
        examples=len(data),
        steps=steps,
        seconds=round(seconds, 3),
        loss_first=losses[0] if losses else None,
        loss_last=losses[-1] if losses else None,
        eval={k: round(v, 6) if math.isfinite(v) else None for k, v in metrics.items()},
        run_id=run_id,
        truncated=too_long,
        reference_cache=built.reference_cache(),
        resumed_from=_step_of(resume_from),
    )
    try:
        if main:
            try:
                _save(built, data, config, out, result, force=force)
            except BaseException as exc:
                _record_end(store, run_id, "failed", {"error": f"saving: {exc}"})
                raise
            if not keep_checkpoints:
                shutil.rmtree(checkpoints, ignore_errors=True)
            _record_end(store, run_id, "done", _run_metrics(result))
    finally:
        state.wait_for_everyone()  # the other processes never wait for a main that failed
    return result


def _step_of(checkpoint: Path | None) -> int | None:
    return None if checkpoint is None else int(checkpoint.name.removeprefix("checkpoint-"))


def _same_folder(out: Path, base: str) -> bool:
    try:
        return out.resolve() == Path(base).expanduser().resolve()
    except OSError:
        return False


def _run_metrics(result: TrainResult) -> dict[str, Any]:
    return {
        "steps": result.steps,
        "seconds": result.seconds,
        "loss_first": result.loss_first,
        "loss_last": result.loss_last,
        "truncated": result.truncated,
        **result.eval,
    }


# --------------------------------------------------------------------------------------------
# Building the trainer of each method
# --------------------------------------------------------------------------------------------


@dataclass
class _Built:
    trainer: Any
    tokenizer: Any
    kind: str  # "causal" or "scalar"
    cache: Any = None

    def reference_cache(self) -> str | None:
        if self.cache is None or self.cache.hit is None:
            return None
        return "hit" if self.cache.hit else "miss"


def _build(
    data: TrainingData,
    config: TrainConfig,
    base_folder: Path,
    tokenizer: Any,
    checkpoints: Path,
    log: _Log,
    progress: Callable[[int, int], None] | None,
) -> _Built:
    from datasets import Dataset

    callbacks = [log.callback(progress)]
    common = _common_args(config, checkpoints)
    method = config.method
    if method == "reward":
        assert isinstance(config, RewardConfig)
        return _build_reward(data, config, base_folder, tokenizer, common, callbacks)
    model, _ = load_base(base_folder)
    peft_config = _lora(config, "CAUSAL_LM") if config.lora else None
    if method == "sft":
        from trl import SFTConfig as TrlSFTConfig
        from trl import SFTTrainer

        sft_args = TrlSFTConfig(**common, max_length=config.max_length, completion_only_loss=True)
        sft = SFTTrainer(
            model=model,
            args=sft_args,
            train_dataset=Dataset.from_list(data.rows),
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
        return _Built(sft, tokenizer, "causal")
    if method == "dpo":
        assert isinstance(config, DPOConfig)
        return _build_dpo(data, config, base_folder, model, tokenizer, common, callbacks)
    if method == "kto":
        assert isinstance(config, KTOConfig)
        from trl import KTOConfig as TrlKTOConfig
        from trl import KTOTrainer

        labels = {bool(r["label"]) for r in data.rows}
        if len(data) < 2:
            raise InvalidInputError("KTO needs at least 2 examples (it compares within a batch)")
        args = TrlKTOConfig(
            **common,
            max_length=config.max_length,
            beta=config.beta,
            desirable_weight=config.desirable_weight,
            undesirable_weight=config.undesirable_weight,
        )
        trainer = KTOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(data.rows),
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
        if len(labels) < 2:
            warnings.warn(
                f"every example of {data.source} is "
                f"{'desirable' if True in labels else 'undesirable'}; KTO learns best from both",
                stacklevel=3,
            )
        return _Built(trainer, tokenizer, "causal")
    if method == "rrhf":
        assert isinstance(config, RRHFConfig)
        return _build_rrhf(data, config, model, tokenizer, peft_config, common, callbacks)
    raise InvalidInputError(f"unknown training method {method!r}")


def _build_reward(
    data: TrainingData,
    config: RewardConfig,
    base_folder: Path,
    tokenizer: Any,
    common: dict[str, Any],
    callbacks: list[Any],
) -> _Built:
    from datasets import Dataset
    from trl import RewardConfig as TrlRewardConfig
    from trl import RewardTrainer

    from prefloop.train.models import load_scalar_model

    model = load_scalar_model(base_folder, tokenizer)
    rows = [dict(r) for r in data.rows]
    if config.use_margins and any("margin" in r for r in rows):
        for r in rows:
            r["margin"] = float(r.get("margin", 0.0))
    else:
        for r in rows:
            r.pop("margin", None)
    args = TrlRewardConfig(
        **common,
        max_length=config.max_length,
        center_rewards_coefficient=config.center_rewards_coefficient,
    )
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=_lora(config, "SEQ_CLS") if config.lora else None,
        callbacks=callbacks,
    )
    return _Built(trainer, tokenizer, "scalar")


def _dpo_loss_settings(config: DPOConfig) -> dict[str, Any]:
    """TRL's names for the loss: SLiC-HF is the hinge loss plus λ · the chosen reply's NLL."""
    if config.loss == "slic":
        return {"loss_type": ["hinge", "sft"], "loss_weights": [1.0, config.slic_lambda]}
    if config.loss == "robust":
        return {"loss_type": ["robust"], "label_smoothing": config.label_smoothing}
    return {"loss_type": ["sigmoid" if config.loss == "dpo" else config.loss]}


def _build_dpo(
    data: TrainingData,
    config: DPOConfig,
    base_folder: Path,
    model: Any,
    tokenizer: Any,
    common: dict[str, Any],
    callbacks: list[Any],
) -> _Built:
    from datasets import Dataset
    from trl import DPOConfig as TrlDPOConfig

    from prefloop.train._refcache import ReferenceCache, model_fingerprint

    rows = [{k: v for k, v in r.items() if k != "margin"} for r in data.rows]
    args = TrlDPOConfig(
        **common,
        max_length=config.max_length,
        beta=config.beta,
        precompute_ref_log_probs=config.cache_reference,
        **_dpo_loss_settings(config),
    )
    cache = None
    if config.cache_reference:
        from importlib.metadata import version

        cache = ReferenceCache(
            base_fingerprint=model_fingerprint(base_folder),
            data_fingerprint=TrainingData(data.method, rows, data.source).fingerprint(),
            settings={
                "max_length": config.max_length,
                "template": tokenizer.chat_template,
                "bf16": bool(args.bf16),  # the precision the reference runs in
                "trl": version("trl"),
                "transformers": version("transformers"),
            },
        )
    trainer_cls = _cached_dpo_trainer()
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=_lora(config, "CAUSAL_LM") if config.lora else None,
        callbacks=callbacks,
        reference_cache=cache,
    )
    return _Built(trainer, tokenizer, "causal", cache)


def _cached_dpo_trainer() -> Any:
    """TRL's DPOTrainer whose reference pass reads and fills a :class:`ReferenceCache`."""
    import numpy as np
    from trl import DPOTrainer

    from prefloop.train._refcache import COLUMNS

    class CachedReferenceDPOTrainer(DPOTrainer):
        def __init__(self, *args: Any, reference_cache: Any = None, **kwargs: Any) -> None:
            self.reference_cache = reference_cache  # read by the pass below, inside __init__
            super().__init__(*args, **kwargs)

        def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
            from accelerate.utils import broadcast_object_list

            cache = self.reference_cache
            if cache is None or name != "train":
                return super()._precompute_ref_logps(dataset, name, batch_size)
            # the main process decides hit or miss for all: a process that missed alone would
            # wait forever in the reference pass for the others
            columns = cache.load(len(dataset)) if self.accelerator.is_main_process else None
            decision = [columns]
            broadcast_object_list(decision, from_process=0)
            columns = decision[0]
            if columns is not None:
                cache.hit = True
                for column, values in columns.items():
                    dataset = dataset.add_column(column, np.asarray(values).tolist())
                return dataset
            cache.hit = False
            dataset = super()._precompute_ref_logps(dataset, name, batch_size)
            if self.accelerator.is_main_process:
                cache.save({c: np.asarray(dataset[c], dtype=np.float32) for c in COLUMNS})
            return dataset

    return CachedReferenceDPOTrainer


def _build_rrhf(
    data: TrainingData,
    config: RRHFConfig,
    model: Any,
    tokenizer: Any,
    peft_config: Any,
    common: dict[str, Any],
    callbacks: list[Any],
) -> _Built:
    from datasets import Dataset
    from transformers import TrainingArguments

    from prefloop.train.rrhf import RRHFCollator, make_rrhf_trainer

    if peft_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    rows = []
    for row in data.rows:
        prompt_ids = _chat_ids(tokenizer, row["prompt"], generation=True)
        if len(prompt_ids) >= config.max_length:
            continue  # the prompt alone fills max_length: counted and warned as left out
        responses = []
        for reply in row["responses"]:
            full = _chat_ids(tokenizer, row["prompt"] + reply, generation=False)
            if full[: len(prompt_ids)] != prompt_ids:
                raise InvalidInputError(
                    "the chat template renders a prompt differently once a reply follows it, "
                    "so RRHF cannot tell the reply's tokens apart; use a model whose template "
                    "keeps the prompt as a prefix"
                )
            # each response is cut to what fits after the whole prompt
            responses.append(full[len(prompt_ids) : config.max_length])
        rows.append(
            {"prompt_ids": prompt_ids, "response_ids": responses, "rewards": row["rewards"]}
        )
    args = TrainingArguments(**common, remove_unused_columns=False)
    trainer = make_rrhf_trainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        data_collator=RRHFCollator(int(tokenizer.pad_token_id)),
        processing_class=tokenizer,
        callbacks=callbacks,
        sft_weight=config.sft_weight,
    )
    return _Built(trainer, tokenizer, "causal")


# --------------------------------------------------------------------------------------------
# Saving and recording
# --------------------------------------------------------------------------------------------


def _save(
    built: _Built,
    data: TrainingData,
    config: TrainConfig,
    out: Path,
    result: TrainResult,
    *,
    force: bool,
) -> None:
    """Write the model into a temporary folder beside ``out``, then rename it into place."""

    def build(staging: Path) -> None:
        if built.kind == "scalar":
            from prefloop.reward.lm_scalar import save_scalar_reward_model

            model = built.trainer.model
            save_scalar_reward_model(model, built.tokenizer, staging, config, data, result)
            return
        save_policy(
            built.trainer.model,
            built.tokenizer,
            staging,
            config,
            data,
            run_id=result.run_id,
            metrics=_run_metrics(result),
        )

    publish_trained(out, build, force=force)


def save_policy(
    model: Any,
    tokenizer: Any,
    folder: Path,
    config: TrainConfig,
    data: TrainingData,
    *,
    run_id: int | None,
    metrics: dict[str, Any],
) -> None:
    """A trained policy into ``folder``: the adapter (or, with ``merge``, the merged model), the
    tokenizer and the manifest that :func:`prefloop.train.models.load_trained` reads."""
    if config.lora and config.merge:
        model = model.merge_and_unload()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_manifest(
        folder,
        TrainedManifest(
            method=config.method,
            base=base_name(config.base),
            adapter=config.lora and not config.merge,
            run_id=run_id,
            data_fingerprint=data.fingerprint(),
            metrics=metrics,
            config=config.to_json(),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        ),
    )


def publish_trained(out: Path, build: Callable[[Path], None], *, force: bool) -> None:
    """``build(staging)`` fills a folder beside ``out``, which then replaces ``out`` whole; a
    failure leaves ``out`` as it was."""
    with staging_folder(out) as staging:
        build(staging)
        if out.exists() and not force and any(out.iterdir()):
            raise InvalidInputError(f"{out} appeared while training; not replacing it")
        publish_folder(staging, out)


def _record_start(
    store: Store | None, data: TrainingData, config: TrainConfig, out: Path
) -> int | None:
    if store is None:
        return None
    from sqlalchemy import select

    from prefloop.store.models import Task, TrainingRun

    with store.session() as session:
        task_id = None
        if data.task is not None:
            task_id = session.scalar(select(Task.id).where(Task.name == data.task))
        parent = None
        if (Path(config.base) / MANIFEST).exists():
            from prefloop.train.models import read_manifest

            parent = read_manifest(config.base).run_id
        run = TrainingRun(
            task_id=task_id,
            method=config.method,
            base=base_name(config.base),
            config=config.to_json(),
            data_fingerprint=data.fingerprint(),
            examples=len(data),
            output_path=str(out.resolve()),
            status="running",
            parent_id=parent,
        )
        session.add(run)
        session.flush()
        return int(run.id)


def _record_end(
    store: Store | None, run_id: int | None, status: str, metrics: dict[str, Any]
) -> None:
    if store is None or run_id is None:
        return
    from prefloop.store.models import TrainingRun

    with store.session() as session:
        run = session.get(TrainingRun, run_id)
        if run is not None:
            run.status = status
            run.metrics = {
                k: v for k, v in metrics.items() if v is None or _number(v) or isinstance(v, str)
            }
            run.finished_at = datetime.now(UTC)
