"""``prefloop demo --train``: the model loop closed live.

After the bandit has served the prompts, the demo trains a LoRA adapter on the ratings it
collected (KTO: the rubric's ratings are judgements of one output each, which KTO uses as they
are, with no pairs to build), adds the adapter as a model arm of the task, and serves more
requests: the bandit now tests the trained model against the prompts. The report compares the
trained arm's mean rubric reward with the best prompt's, with a bootstrap interval of the
difference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from prefloop.errors import InvalidInputError
from prefloop.store import Store
from prefloop.store.models import Arm, Generation
from prefloop.store.repo import get_task

__all__ = ["TrainedArmResult", "compare_arms", "local_base", "train_model_arm"]

TRAINED_ARM = "trained-kto"
_BOOTSTRAP = 2000


@dataclass(frozen=True)
class TrainedArmResult:
    """The trained arm: how it was trained, and how it did against the best prompt."""

    arm: str
    method: str
    path: str
    examples: int
    steps: int
    seconds: float
    loss_first: float | None
    loss_last: float | None
    rated: int = 0
    """Outputs of the trained arm rated after it was added."""
    mean: float | None = None
    best_prompt: str | None = None
    best_prompt_mean: float | None = None
    difference: float | None = None
    """Trained arm's mean reward minus the best prompt's."""
    interval: tuple[float, float] | None = None
    """95% bootstrap interval of ``difference``."""

    @property
    def verdict(self) -> str:
        if self.difference is None or self.interval is None:
            return (
                f"the trained arm has {self.rated} rated output(s); too few to compare it with "
                "the prompts"
            )
        lo, hi = self.interval
        against = f"the best prompt ({self.best_prompt})"
        if lo > 0:
            return f"the trained arm beats {against}: {self.difference:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        if hi < 0:
            return (
                f"the trained arm is worse than {against}: {self.difference:+.3f} "
                f"[{lo:+.3f}, {hi:+.3f}]"
            )
        return (
            f"no clear difference between the trained arm and {against}: "
            f"{self.difference:+.3f} [{lo:+.3f}, {hi:+.3f}]"
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def local_base(backend: Any) -> str:
    """The base model to train: the local backend's own model (``smollm2`` when it is the
    packaged one); any other backend is an error, since the demo trains what it serves."""
    from prefloop.llm import LocalChatBackend

    if not isinstance(backend, LocalChatBackend):
        raise InvalidInputError(
            "demo --train fine-tunes the model that writes the outputs, so it needs the local "
            "backend (-b local); a remote model cannot be trained here"
        )
    folder = Path(str(getattr(backend.model.config, "_name_or_path", "") or ""))
    if not (folder / "config.json").exists():
        raise InvalidInputError(
            f"cannot tell which folder the local model {backend.model_name!r} was loaded from; "
            "demo --train needs a model loaded from a folder"
        )
    from prefloop.llm import smollm2_folder

    try:
        if folder.resolve() == smollm2_folder().resolve():
            return "smollm2"
    except InvalidInputError:
        pass
    return str(folder)


def train_model_arm(
    store: Store,
    task: str,
    base: str,
    folder: Path,
    *,
    steps: int,
    seed: int,
    max_length: int = 192,
) -> TrainedArmResult:
    """Train a KTO adapter on the task's ratings into ``folder/<arm name>`` and add it as a
    model arm (``trained-kto``, then ``trained-kto-2`` … when the store already has one)."""
    from prefloop.llm import add_model_arm
    from prefloop.train import KTOConfig, from_task, run_training

    config = KTOConfig(
        base=base,
        max_steps=steps,
        batch_size=4,
        max_length=max_length,
        learning_rate=1e-4,
        seed=seed,
        save_steps=max(steps, 1),
    )
    data = from_task(store, task, config)
    with store.session(readonly=True) as session:
        task_row = get_task(session, task)
        taken = set(session.scalars(select(Arm.name).where(Arm.task_id == task_row.id)))
    name, version = TRAINED_ARM, 1
    while name in taken:  # arms are immutable: a new run adds a new arm, in its own folder
        version += 1
        name = f"{TRAINED_ARM}-{version}"
    folder = folder / name
    result = run_training(data, config, folder, store=store, force=True)
    with store.session() as session:
        add_model_arm(session, get_task(session, task), name, folder, created_by="trainer")
    return TrainedArmResult(
        arm=name,
        method="kto",
        path=str(folder),
        examples=result.examples,
        steps=result.steps,
        seconds=result.seconds,
        loss_first=result.loss_first,
        loss_last=result.loss_last,
    )


def compare_arms(store: Store, task: str, trained: TrainedArmResult, seed: int) -> TrainedArmResult:
    """The trained arm's mean reward against the best prompt arm's, with a bootstrap interval
    of the difference (each arm's rewards resampled on their own)."""
    with store.session(readonly=True) as session:
        task_row = get_task(session, task)
        rows = session.execute(
            select(Arm.name, Arm.kind, Generation.reward)
            .join(Generation, Generation.arm_id == Arm.id)
            .where(
                Arm.task_id == task_row.id,
                Generation.status == "ok",
                Generation.reward.is_not(None),
            )
        ).all()
    rewards: dict[str, list[float]] = {}
    kinds: dict[str, str] = {}
    for name, kind, reward in rows:
        if reward is None:
            continue
        rewards.setdefault(str(name), []).append(float(reward))
        kinds[str(name)] = str(kind)
    mine = np.asarray(rewards.get(trained.arm, []))
    prompts = {n: np.asarray(v) for n, v in rewards.items() if kinds[n] == "prompt"}
    if not prompts:
        return trained
    best = max(prompts, key=lambda n: float(prompts[n].mean()))
    theirs = prompts[best]
    changes: dict[str, Any] = {
        "rated": int(mine.size),
        "best_prompt": best,
        "best_prompt_mean": float(theirs.mean()),
        "mean": float(mine.mean()) if mine.size else None,
    }
    if mine.size >= 2 and theirs.size >= 2:
        rng = np.random.default_rng(seed)
        a = rng.choice(mine, size=(_BOOTSTRAP, mine.size)).mean(axis=1)
        b = rng.choice(theirs, size=(_BOOTSTRAP, theirs.size)).mean(axis=1)
        lo, hi = np.quantile(a - b, [0.025, 0.975])
        changes["difference"] = float(mine.mean() - theirs.mean())
        changes["interval"] = (float(lo), float(hi))
    return TrainedArmResult(**{**asdict(trained), **changes})
