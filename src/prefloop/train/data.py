"""Training rows for each method, from a task in the store or from a JSONL file.

From a task, every row comes from :mod:`prefloop.feedback.datasets` (the one place training
data comes from), so the trainers see the pairs the reward model and the export see. Rows are
in TRL's conversational format: ``prompt`` is a list of chat messages (an HH dialogue becomes
its turns, any other prompt one user message) and replies are one assistant message, so the
model's chat template is applied exactly as when it serves.

=========  ==============================================  =========================================
method     from a task                                     from a file (one JSON object a line)
=========  ==============================================  =========================================
sft        edited finals and top-rated outputs             ``{"prompt", "completion"}``
reward     preference pairs (+ rating gaps, with margins)  ``{"prompt", "chosen", "rejected"}``
dpo        preference pairs (+ rating gaps)                ``{"prompt", "chosen", "rejected"}``
kto        outputs above / below reward thresholds         ``{"prompt", "completion", "label"}``
rrhf       the rated outputs of each prompt (≥ 2 levels)   ``{"prompt", "responses", "ranking"}``
ppo, rloo, the task's distinct prompts and their inputs    ``{"prompt", "inputs"?}`` (``--prompts``)
grpo
=========  ==============================================  =========================================

The online methods (ppo, rloo, grpo) only need prompts: their rows are ``{"prompt": messages,
"text": the prompt as a scorer reads it, "inputs": the task's input fields}`` (``inputs`` lets
the rubric scorer check the facts a reply should mention).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefloop.errors import ImportFileError, InvalidInputError
from prefloop.feedback import (
    HUMAN_SOURCES,
    preference_pairs,
    rated_groups,
    sft_examples,
    task_prompts,
    unpaired_examples,
)
from prefloop.io import iter_pairs, iter_rankings
from prefloop.io.readers import hh_messages, iter_json_lines
from prefloop.store import Store
from prefloop.store.repo import get_task
from prefloop.train.config import ONLINE_METHODS, KTOConfig, SFTConfig, TrainConfig

__all__ = ["TrainingData", "from_file", "from_task"]

Row = dict[str, Any]


@dataclass(frozen=True)
class TrainingData:
    """The rows one method trains on, where they came from, and their fingerprint."""

    method: str
    rows: list[Row]
    source: str
    task: str | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def fingerprint(self) -> str:
        """sha256 of the rows (their content and order), independent of where they came from."""
        blob = json.dumps(self.rows, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _user(prompt: str) -> list[dict[str, str]]:
    return hh_messages(prompt)


def _reply(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _pair_row(prompt: str, chosen: str, rejected: str, margin: float | None) -> Row:
    row: Row = {"prompt": _user(prompt), "chosen": _reply(chosen), "rejected": _reply(rejected)}
    if margin is not None:
        row["margin"] = float(margin)
    return row


def _unpaired_row(prompt: str, completion: str, desirable: bool) -> Row:
    return {"prompt": _user(prompt), "completion": _reply(completion), "label": desirable}


def _rrhf_row(prompt: str, responses: Sequence[str], rewards: Sequence[float]) -> Row:
    return {
        "prompt": _user(prompt),
        "responses": [_reply(r) for r in responses],
        "rewards": [float(r) for r in rewards],
    }


# --------------------------------------------------------------------------------------------
# From the store
# --------------------------------------------------------------------------------------------


def from_task(
    store: Store,
    task: str,
    config: TrainConfig,
    *,
    sources: Sequence[str] = HUMAN_SOURCES,
) -> TrainingData:
    """The rows ``config.method`` trains on, built from the task's feedback; an error that
    says what feedback the method needs when the task has none of it.

    ``sources`` selects the feedback events that give pairs; the rated views (SFT, KTO, RRHF)
    use the rewards the task's reward rules derive, which count model-made ratings only where
    the task gives them weight.
    """
    method = config.method
    with store.session(readonly=True) as session:
        task_row = get_task(session, task)
        scale = [float(v) for v in task_row.scale]
        if method == "sft":
            min_reward = config.min_reward if isinstance(config, SFTConfig) else None
            rows = [
                {"prompt": _user(e.prompt), "completion": _reply(e.completion)}
                for e in sft_examples(session, task_row, min_reward=min_reward)
            ]
            need = "users' edits or outputs rated at the top of the scale"
        elif method in ("reward", "dpo"):
            from_ratings = bool(getattr(config, "from_ratings", True))
            rows = [
                _pair_row(p.prompt, p.chosen, p.rejected, p.margin)
                for p in preference_pairs(
                    session, task_row, sources=sources, from_ratings=from_ratings
                )
            ]
            need = (
                "preferences: pairwise or ranking feedback, edits, or two outputs of one input "
                "with different ratings"
            )
        elif method == "kto":
            assert isinstance(config, KTOConfig)
            middle = (scale[0] + scale[-1]) / 2  # 0 on the default -1 … 1 scale
            above = middle if config.desirable_above is None else config.desirable_above
            below = middle if config.undesirable_below is None else config.undesirable_below
            rows = [
                _unpaired_row(e.prompt, e.completion, e.desirable)
                for e in unpaired_examples(
                    session, task_row, desirable_above=above, undesirable_below=below
                )
            ]
            need = "outputs rated or thumbed on their own (KTO does not use pairs; try dpo)"
        elif method == "rrhf":
            rows = [
                _rrhf_row(group[0].prompt, [e.text for e in group], [e.reward for e in group])
                for group in rated_groups(session, task_row)
            ]
            need = "at least two outputs of one prompt with different ratings"
        elif method in ONLINE_METHODS:
            rows = [_prompt_row(e.prompt, e.input) for e in task_prompts(session, task_row)]
            need = "prompts: generations whose prompt was stored (or give --prompts FILE)"
        else:
            raise InvalidInputError(f"unknown training method {method!r}")
    data = TrainingData(method=method, rows=rows, source=f"task {task!r}", task=task)
    if not rows:
        raise InvalidInputError(
            f"task {task!r} has no training data for {method}: it needs {need}. Collect that "
            "feedback, or give a file with --data"
        )
    return data


# --------------------------------------------------------------------------------------------
# From a file
# --------------------------------------------------------------------------------------------


def from_file(path: str | Path, method: str) -> TrainingData:
    """The rows of a JSONL file in the method's format (module docstring); the first malformed
    line is an error naming it."""
    file = Path(path)
    name = str(file)
    rows: list[Row]
    if method in ("reward", "dpo"):
        rows = [_pair_row(p.prompt, p.chosen, p.rejected, p.margin) for p in iter_pairs(file)]
    elif method == "rrhf":
        rows = [
            _rrhf_row(r.prompt, r.responses, [-float(rank) for rank in r.ranking])
            for r in iter_rankings(file)
        ]
    elif method == "sft":
        rows = list(_sft_rows(file))
    elif method == "kto":
        rows = list(_unpaired_rows(file))
    elif method in ONLINE_METHODS:
        rows = list(_prompt_rows(file))
    else:
        raise InvalidInputError(f"unknown training method {method!r}")
    if not rows and method in ONLINE_METHODS:
        raise InvalidInputError(
            f'{name} holds no prompts; give one {{"prompt": "..."}} object per line'
        )
    if not rows:
        raise InvalidInputError(f"{name} holds no examples; {method} needs at least one")
    return TrainingData(method=method, rows=rows, source=name)


def _string(obj: dict[str, Any], key: str, path: str, line: int) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        got = "missing" if key not in obj else "empty" if value == "" else type(value).__name__
        raise ImportFileError(path, line, f'"{key}" must be a non-empty string, but it is {got}')
    return value


def _sft_rows(file: Path) -> Iterable[Row]:
    name = str(file)
    for line, obj in iter_json_lines(file):
        if "messages" in obj:
            messages = obj["messages"]
            if (
                not isinstance(messages, list)
                or len(messages) < 2
                or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages)
                or messages[-1]["role"] != "assistant"
            ):
                raise ImportFileError(
                    name,
                    line,
                    '"messages" must be a list of {"role", "content"} ending with the '
                    "assistant's reply",
                )
            yield {"prompt": messages[:-1], "completion": messages[-1:]}
        else:
            prompt = _string(obj, "prompt", name, line)
            completion = _string(obj, "completion", name, line)
            yield {"prompt": _user(prompt), "completion": _reply(completion)}


def _prompt_row(prompt: str, inputs: dict[str, Any] | None) -> Row:
    return {"prompt": _user(prompt), "text": prompt, "inputs": dict(inputs or {})}


def _prompt_rows(file: Path) -> Iterable[Row]:
    name = str(file)
    for line, obj in iter_json_lines(file):
        prompt = _string(obj, "prompt", name, line)
        inputs = obj.get("inputs", {})
        if not isinstance(inputs, dict):
            raise ImportFileError(
                name, line, '"inputs" must be an object of the task\'s input fields, or absent'
            )
        yield _prompt_row(prompt, inputs)


def _unpaired_rows(file: Path) -> Iterable[Row]:
    name = str(file)
    for line, obj in iter_json_lines(file):
        prompt = _string(obj, "prompt", name, line)
        completion = _string(obj, "completion", name, line)
        label = obj.get("label")
        if not isinstance(label, bool):
            raise ImportFileError(
                name, line, '"label" must be true (desirable) or false (undesirable)'
            )
        yield _unpaired_row(prompt, completion, label)
