"""Online training runs: ``ppo`` (prefloop's own, :mod:`prefloop.train.ppo`), ``rloo`` and
``grpo`` (TRL's trainers), all fed the same reward functions and watched the same way.

Every step is recorded (:class:`StepRecord`): the training reward, the KL to the reference and
β, the policy's entropy, the reply length and the share of replies that ended, the toxicity rate,
and a **held-out reward** from a scorer the run does not train on. The guards against reward
hacking are the KL target (adaptive β), a hard KL budget that stops the run and keeps the last
policy within it, a length penalty and a penalty for replies that never end, reward clipping,
and ensembles (``min(A,B)`` in the reward SPEC). The run report (``report/`` in the output
folder: ``steps.jsonl``, ``curves.png``, ``report.html``) plots the curves and, in words, flags
the signature of hacking: the training reward rising while the held-out reward falls or the
length runs away (:func:`hacking_signs`).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefloop._files import staging_folder
from prefloop.errors import InvalidInputError
from prefloop.store import Store
from prefloop.train._run import (
    TrainingInterrupted,
    _chat_ids,
    _check_out,
    _record_end,
    _record_start,
    publish_trained,
    save_policy,
)
from prefloop.train.config import GRPOConfig, OnlineConfig, PPOConfig
from prefloop.train.data import TrainingData
from prefloop.train.models import base_name, load_base
from prefloop.train.ppo import NO_SCORE, _end_ids, shaped_score

__all__ = ["OnlineResult", "StepRecord", "hacking_signs", "run_online"]

Scorer = Callable[..., Sequence[float | None]]
"""``scorer(prompts, completions, **columns) -> scores``; ``None`` where it could not score."""

REPORT = "report"
MIN_STEPS_FOR_SIGNS = 6
"""Runs shorter than this are not judged for reward hacking (two steps differ by noise)."""
TOXIC_AT = 0.5
"""A reply counts as toxic when the classifier's P(toxic) is at least this."""


@dataclass(frozen=True)
class StepRecord:
    """What one step measured on its replies."""

    step: int
    reward: float | None
    """Mean training score of the scored replies (before penalties and clipping)."""
    scored: int
    failed: int
    """Replies the reward function could not score (left out of the update)."""
    kl: float | None
    """KL to the reference (ppo, rloo: per reply; grpo: per token, as TRL measures it)."""
    beta: float
    entropy: float | None
    length: float
    """Mean reply length in tokens."""
    ended: float | None
    """Share of replies that ended before max_new_tokens."""
    toxicity: float | None
    """Share of replies the toxicity classifier calls toxic (``None``: classifier missing)."""
    heldout: float | None
    """Mean held-out score of the step's replies (``None``: no held-out scorer that step)."""
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OnlineResult:
    """What an online run did: the ``--json`` object of ``prefloop train ppo|rloo|grpo``."""

    method: str
    base: str
    out: str
    reward: str
    heldout_scorer: str | None
    prompts: int
    too_long: int
    steps: int
    seconds: float
    stopped: str
    """``max_steps``, ``kl_budget`` (the KL of a step exceeded the budget; the last policy
    within it was saved) or ``interrupted``."""
    reward_mean_first: float | None
    reward_mean_last: float | None
    kl_last: float | None
    beta_last: float
    heldout_first: float | None
    heldout_last: float | None
    hacking_flag: bool
    hacking_signs: list[str]
    report: str
    run_id: int | None = None
    history: list[StepRecord] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["history"] = [r.to_json() for r in self.history]
        return data


# -- the signature of reward hacking -----------------------------------------------------------
def _thirds(values: list[float]) -> tuple[float, float] | None:
    if len(values) < 2:
        return None
    k = max(1, len(values) // 3)
    return sum(values[:k]) / k, sum(values[-k:]) / k


def _spread(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def hacking_signs(history: Sequence[StepRecord], max_new_tokens: int) -> list[str]:
    """The signature of reward hacking in a run's records, in plain words; empty when none.

    Compares the first third of the steps with the last third, once there are at least
    :data:`MIN_STEPS_FOR_SIGNS` steps (fewer are noise). It is flagged when the training reward
    rose (by more than a quarter of its step-to-step spread) **and** either the held-out reward
    fell (by more than a quarter of its spread) or the length ran away (the mean reply grew by
    half and by 5 tokens or more, or most replies stopped ending)."""
    if len(history) < MIN_STEPS_FOR_SIGNS:
        return []
    rewards = [r.reward for r in history if r.reward is not None]
    reward = _thirds(rewards)
    if reward is None or reward[1] - reward[0] <= 0.25 * _spread(rewards) or reward[1] <= reward[0]:
        return []
    rose = f"the training reward rose from {reward[0]:.3f} to {reward[1]:.3f}"
    signs: list[str] = []
    held = [r.heldout for r in history if r.heldout is not None]
    heldout = _thirds(held)
    if heldout is not None and heldout[0] - heldout[1] > 0.25 * _spread(held) > 0:
        signs.append(
            f"{rose} while the held-out reward fell from {heldout[0]:.3f} to {heldout[1]:.3f}: "
            "the policy learns what the reward function pays for, not what it stands for"
        )
    length = _thirds([r.length for r in history])
    ended = _thirds([r.ended for r in history if r.ended is not None])
    if length is not None and length[1] >= 1.5 * length[0] and length[1] - length[0] >= 5:
        signs.append(
            f"{rose} while the replies grew from {length[0]:.1f} to {length[1]:.1f} tokens "
            f"(max {max_new_tokens}): the reward may pay for length; add a length penalty "
            "or a held-out scorer that does not"
        )
    elif ended is not None and ended[0] >= 0.5 > ended[1]:
        signs.append(
            f"{rose} while the share of replies that end fell from {ended[0]:.0%} to "
            f"{ended[1]:.0%}: replies run to the token limit"
        )
    return signs


# -- watching a step ---------------------------------------------------------------------------
class _Watch:
    """Computes a step's toxicity rate and held-out reward, and keeps the records."""

    def __init__(self, heldout: Scorer | None, every: int) -> None:
        self.heldout = heldout
        self.every = every
        self.history: list[StepRecord] = []
        self._toxicity: Any = None
        self._toxicity_missing = False

    def toxicity(self, texts: list[str]) -> float | None:
        if self._toxicity_missing or not texts:
            return None
        if self._toxicity is None:
            try:
                from prefloop.reward._toxicity import load_toxicity_classifier

                self._toxicity = load_toxicity_classifier()
            except (ImportError, OSError, InvalidInputError) as exc:
                warnings.warn(f"no toxicity rate: {exc}", UserWarning, stacklevel=2)
                self._toxicity_missing = True
                return None
        from prefloop.reward._toxicity import LABELS

        probabilities = self._toxicity.predict(texts)[:, LABELS.index("toxic")]
        return float((probabilities >= TOXIC_AT).mean())

    def heldout_mean(
        self, step: int, prompts: list[str], completions: list[str], inputs: list[dict[str, Any]]
    ) -> float | None:
        if self.heldout is None or (step - 1) % self.every:
            return None
        scores = [s for s in self.heldout(prompts, completions, inputs=inputs) if s is not None]
        finite = [float(s) for s in scores if math.isfinite(float(s))]
        return sum(finite) / len(finite) if finite else None


# -- the run -----------------------------------------------------------------------------------
def run_online(
    data: TrainingData,
    config: OnlineConfig,
    out: str | Path,
    reward: Scorer,
    *,
    heldout: Scorer | None = None,
    reward_name: str | None = None,
    heldout_name: str | None = None,
    store: Store | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> OnlineResult:
    """Train ``config.method`` (ppo, rloo or grpo) on the prompts of ``data`` against
    ``reward`` and save the policy, its manifest and the run report in ``out`` (module
    docstring). ``heldout`` scores the same replies for the report only.

    A KeyboardInterrupt saves the policy of the last step within the KL budget and raises
    :class:`TrainingInterrupted`.
    """
    import torch

    out = Path(out)
    if not isinstance(config, OnlineConfig):
        raise InvalidInputError(f"{config.method} is not an online method; use ppo, rloo or grpo")
    if not data.rows:
        raise InvalidInputError("no prompts to train on; give a task with prompts or --prompts")
    _check_out(out, force=force, resume=False)
    torch.manual_seed(config.seed)
    model, tokenizer = load_base(config.base)
    encoded, texts, inputs, kept = [], [], [], []
    for row in data.rows:
        ids = _chat_ids(tokenizer, row["prompt"], generation=True)
        if len(ids) <= config.max_length:
            kept.append(row)
            encoded.append(ids)
            texts.append(str(row.get("text") or row["prompt"][-1]["content"]))
            inputs.append(dict(row.get("inputs") or {}))
    too_long = len(data.rows) - len(encoded)
    if not encoded:
        raise InvalidInputError(
            f"every prompt is longer than max_length={config.max_length} tokens; raise "
            "--max-length or shorten the prompts"
        )
    name = reward_name or str(
        getattr(reward, "name", None) or getattr(reward, "__name__", "reward")
    )
    held_name = None
    if heldout is not None:
        held_name = heldout_name or str(
            getattr(heldout, "name", None) or getattr(heldout, "__name__", "heldout")
        )
    watch = _Watch(heldout, config.heldout_every)
    run_id = _record_start(store, data, config, out)
    started = time.perf_counter()
    stopped = "max_steps"
    try:
        if config.lora:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(
                model,
                LoraConfig(
                    r=config.lora_r,
                    lora_alpha=config.lora_alpha,
                    lora_dropout=config.lora_dropout,
                    target_modules="all-linear",
                    task_type="CAUSAL_LM",
                ),
            )
        if isinstance(config, PPOConfig):
            policy, stopped = _run_ppo(
                model, tokenizer, config, encoded, texts, inputs, reward, watch, progress
            )
        else:
            assert isinstance(config, GRPOConfig)
            policy, stopped = _run_trl(model, tokenizer, config, kept, reward, watch, progress, out)
    except BaseException as exc:
        status = "stopped" if isinstance(exc, KeyboardInterrupt) else "failed"
        _record_end(store, run_id, status, {"error": str(exc) or type(exc).__name__})
        raise
    history = watch.history
    seconds = time.perf_counter() - started
    signs = hacking_signs(history, config.max_new_tokens)

    def first(key: str) -> float | None:
        values = [getattr(r, key) for r in history if getattr(r, key) is not None]
        return values[0] if values else None

    def last(key: str) -> float | None:
        values = [getattr(r, key) for r in history if getattr(r, key) is not None]
        return values[-1] if values else None

    result = OnlineResult(
        method=config.method,
        base=base_name(config.base),
        out=str(out),
        reward=name,
        heldout_scorer=held_name,
        prompts=len(encoded),
        too_long=too_long,
        steps=len(history),
        seconds=round(seconds, 3),
        stopped=stopped,
        reward_mean_first=first("reward"),
        reward_mean_last=last("reward"),
        kl_last=last("kl"),
        beta_last=history[-1].beta if history else config.kl_coef,
        heldout_first=first("heldout"),
        heldout_last=last("heldout"),
        hacking_flag=bool(signs),
        hacking_signs=signs,
        report=str(out / REPORT / "report.html"),
        run_id=run_id,
        history=history,
    )
    _save(policy, tokenizer, data, config, out, result, force=force)
    metrics = {k: v for k, v in result.to_json().items() if k not in ("history", "hacking_signs")}
    _record_end(store, run_id, "stopped" if stopped == "interrupted" else "done", metrics)
    if stopped == "interrupted":
        raise TrainingInterrupted(
            f"interrupted after {len(history)} steps; the policy of the last step within the "
            f"KL budget is saved in {out}",
            None,
        )
    return result


def _run_ppo(
    model: Any,
    tokenizer: Any,
    config: PPOConfig,
    encoded: list[list[int]],
    texts: list[str],
    inputs: list[dict[str, Any]],
    reward: Scorer,
    watch: _Watch,
    progress: Callable[[int, int], None] | None,
) -> tuple[Any, str]:
    import random

    from prefloop.train.ppo import PPO

    ppo = PPO(model, tokenizer, config)
    order = list(range(len(encoded)))
    random.Random(config.seed).shuffle(order)
    total = int(config.max_steps or 1)
    last_good: dict[str, Any] | None = None  # the newest policy measured within the KL budget
    cursor = 0
    for step in range(1, total + 1):
        began = time.perf_counter()
        batch = [order[(cursor + k) % len(order)] for k in range(config.batch_size)]
        cursor += config.batch_size
        before = ppo.trainable_state()  # the policy this step's rollouts come from
        try:
            done = ppo.step(
                [encoded[i] for i in batch],
                [texts[i] for i in batch],
                [inputs[i] for i in batch],
                reward,
                seed=config.seed * 100_003 + step,
            )
        except KeyboardInterrupt:
            ppo.load_trainable_state(last_good or before)
            return ppo.lm, "interrupted"
        scored = [s for s in done.scores if s is not None]
        watch.history.append(
            StepRecord(
                step=step,
                reward=sum(scored) / len(scored),
                scored=len(scored),
                failed=len(done.scores) - len(scored),
                kl=done.kl,
                beta=done.beta,
                entropy=done.entropy,
                length=sum(done.lengths) / len(done.lengths),
                ended=sum(done.ended) / len(done.ended),
                toxicity=watch.toxicity(done.completions),
                heldout=watch.heldout_mean(step, done.prompts, done.completions, done.inputs),
                seconds=round(time.perf_counter() - began, 3),
            )
        )
        if progress is not None:
            progress(step, total)
        if config.kl_budget is not None and done.kl > config.kl_budget:
            # This step's rollouts came from a policy outside the budget: keep the newest one
            # that was measured inside it.
            ppo.load_trainable_state(last_good or before)
            return ppo.lm, "kl_budget"
        last_good = before
    return ppo.lm, "max_steps"


def _run_trl(
    model: Any,
    tokenizer: Any,
    config: GRPOConfig,
    kept: list[dict[str, Any]],
    reward: Scorer,
    watch: _Watch,
    progress: Callable[[int, int], None] | None,
    out: Path,
) -> tuple[Any, str]:
    """RLOO or GRPO through TRL, with prefloop's records, KL controller and budget added."""
    from datasets import Dataset
    from transformers import TrainerCallback

    from prefloop.train._run import _device_settings
    from prefloop.train.ppo import AdaptiveKLController

    if config.method == "rloo":
        from trl import RLOOConfig as TrlConfig
        from trl import RLOOTrainer as TrlTrainer
    else:
        from trl import GRPOConfig as TrlConfig  # type: ignore[assignment]
        from trl import GRPOTrainer as TrlTrainer  # type: ignore[assignment]

    end_ids = _end_ids(model, tokenizer)
    pending: dict[str, Any] = {}

    def scored(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
        ids = columns.pop("completion_ids", None) or [[] for _ in completions]
        given = columns.get("inputs")
        cols = {"inputs": [json.loads(x) for x in given]} if given is not None else {}
        texts_in = [_text(p) for p in prompts]
        texts_out = [_text(c) for c in completions]
        raw = list(reward(texts_in, texts_out, **cols))
        ended = [bool(x) and int(x[-1]) in end_ids for x in ids]
        lengths = [len(x) - (1 if e else 0) for x, e in zip(ids, ended, strict=True)]
        shaped: list[float | None] = [
            None
            if score is None or not math.isfinite(float(score))
            else shaped_score(float(score), length, end, config)
            for score, length, end in zip(raw, lengths, ended, strict=True)
        ]
        if all(s is None for s in shaped):
            raise InvalidInputError(NO_SCORE)
        pending.update(
            prompts=texts_in,
            completions=texts_out,
            inputs=cols.get("inputs") or [{} for _ in texts_out],
            raw=raw,
            lengths=lengths,
            ended=ended,
            began=pending.get("began", time.perf_counter()),
        )
        return shaped

    scored.__name__ = "reward"
    beta_control = AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_adapt_rate)
    shared: dict[str, Any] = {"stopped": "max_steps", "good": None, "trainer": None}

    def snapshot(policy: Any) -> dict[str, Any]:
        return {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}

    class Records(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            policy = kw.get("model")
            if policy is not None and config.kl_budget is not None:
                shared["before"] = snapshot(policy)  # the policy this step's rollouts come from

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if not logs or "reward" not in logs or not pending:
                return
            step = len(watch.history) + 1
            raw = pending["raw"]
            scores = [float(x) for x in raw if x is not None and math.isfinite(float(x))]
            kl = logs.get("kl")
            trainer = shared["trainer"]
            beta = float(trainer.beta) if trainer is not None else config.kl_coef
            watch.history.append(
                StepRecord(
                    step=step,
                    reward=sum(scores) / len(scores) if scores else None,
                    scored=len(scores),
                    failed=len(raw) - len(scores),
                    kl=float(kl) if kl is not None else None,
                    beta=beta,
                    entropy=float(logs["entropy"]) if "entropy" in logs else None,
                    length=sum(pending["lengths"]) / max(len(pending["lengths"]), 1),
                    ended=sum(pending["ended"]) / max(len(pending["ended"]), 1),
                    toxicity=watch.toxicity(pending["completions"]),
                    heldout=watch.heldout_mean(
                        step, pending["prompts"], pending["completions"], pending["inputs"]
                    ),
                    seconds=round(time.perf_counter() - pending["began"], 3),
                )
            )
            pending.clear()
            pending["began"] = time.perf_counter()
            if progress is not None:
                progress(step, int(config.max_steps or 1))
            if kl is not None and config.kl_budget is not None and float(kl) > config.kl_budget:
                shared["stopped"] = "kl_budget"
                control.should_training_stop = True
                return
            shared["good"] = shared.get("before")  # measured inside the budget
            if trainer is not None and kl is not None and config.target_kl is not None:
                trainer.beta = beta_control.update(float(kl))

    # Inputs travel as JSON text: Arrow cannot hold mappings whose keys differ from row to row.
    rows = [{"prompt": r["prompt"], "inputs": json.dumps(r.get("inputs") or {})} for r in kept]
    generations = config.num_generations
    with staging_folder(out, suffix=".trl") as checkpoints:  # TRL's scratch folder, removed after
        args = TrlConfig(
            output_dir=str(checkpoints),
            max_steps=int(config.max_steps or 1),
            learning_rate=config.learning_rate,
            per_device_train_batch_size=config.batch_size * generations,
            num_generations=generations,
            max_completion_length=config.max_new_tokens,
            temperature=config.temperature,
            top_k=0,
            beta=config.kl_coef,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            seed=config.seed,
            gradient_checkpointing=False,
            disable_tqdm=True,
            **_device_settings(),
        )
        trainer = TrlTrainer(
            model=model,
            reward_funcs=[scored],
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=[Records()],
        )
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # it prints every log to stdout (breaks --json)
        shared["trainer"] = trainer
        try:
            trainer.train()
        except KeyboardInterrupt:
            shared["stopped"] = "interrupted"
        policy: Any = trainer.model
        if shared["stopped"] in ("kl_budget", "interrupted") and shared["good"] is not None:
            import torch

            with torch.no_grad():
                for n, p in policy.named_parameters():
                    if n in shared["good"]:
                        p.copy_(shared["good"][n])
        return policy, str(shared["stopped"])


def _text(value: Any) -> str:
    """A prompt or completion as text: TRL passes chat messages for conversational data."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        return str(value[-1].get("content", ""))
    return str(value)


# -- saving ------------------------------------------------------------------------------------
def _save(
    policy: Any,
    tokenizer: Any,
    data: TrainingData,
    config: OnlineConfig,
    out: Path,
    result: OnlineResult,
    *,
    force: bool,
) -> None:
    """The policy (adapter, or merged with ``merge``), its manifest and the report, written
    into a temporary folder beside ``out`` and renamed into place."""
    from prefloop.train._rl_report import write_report

    def build(staging: Path) -> None:
        metrics = {k: v for k, v in result.to_json().items() if k != "history"}
        save_policy(policy, tokenizer, staging, config, data, run_id=result.run_id, metrics=metrics)
        write_report(staging / REPORT, result, config)
        (staging / REPORT / "result.json").write_text(
            json.dumps(result.to_json(), indent=2), encoding="utf-8"
        )

    publish_trained(out, build, force=force)
