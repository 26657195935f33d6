"""RRHF: rank responses to align language models with human feedback (Yuan et al. 2023).

For one prompt x with responses y_1 … y_k and rewards r_1 … r_k, the model's score of a
response is its length-normalised log-likelihood

    p_i = (1 / |y_i|) · Σ_t log π(y_i,t | x, y_i,<t)

and the loss asks the scores to follow the rewards, plus imitation of the best response:

    L = Σ_{r_i < r_j} max(0, p_i − p_j)  +  λ · (−(1 / |y_b|) Σ_t log π(y_b,t | x, y_b,<t)),
    b = argmax_i r_i.

No reference model and no value model: one forward over the k responses per prompt. TRL has no
RRHF; this module is the whole method: the loss (checked against a hand computation in the
tests), a collator that lays a prompt's responses out as rows, and a ``transformers.Trainer``
that applies the loss, so checkpoints, resuming and ``accelerate launch`` work as for the others.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["RRHFCollator", "make_rrhf_trainer", "rrhf_loss", "sequence_scores"]


def sequence_scores(logits: Tensor, input_ids: Tensor, response_mask: Tensor) -> Tensor:
    """Length-normalised log-likelihood of each row's response tokens.

    logits: (rows, T, V); input_ids, response_mask: (rows, T), the mask 1 on response tokens.
    Returns p: (rows,).
    """
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (rows, T-1, V) predicts t+1
    targets = input_ids[:, 1:]  # (rows, T-1)
    token_logps = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (rows, T-1)
    mask = response_mask[:, 1:].to(token_logps.dtype)  # (rows, T-1)
    return (token_logps * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # (rows,)


def rrhf_loss(
    scores: Tensor, rewards: Tensor, groups: Tensor, *, sft_weight: float = 1.0
) -> tuple[Tensor, dict[str, float]]:
    """The RRHF loss of a batch of prompts (module docstring).

    scores: (rows,) p_i from :func:`sequence_scores`; rewards: (rows,); groups: (rows,) the
    prompt each row answers (0 … G−1). The ranking term is summed over each prompt's mis-ordered
    pairs, the imitation term is the best response's mean token NLL (−p_b), and both are
    averaged over the G prompts. Returns the loss and (ranking loss, share of pairs in order).
    """
    ranking = scores.new_zeros(())
    imitation = scores.new_zeros(())
    ordered, pairs = 0, 0
    count = int(groups.max().item()) + 1
    for g in range(count):
        p = scores[groups == g]  # (k,)
        r = rewards[groups == g]  # (k,)
        worse = r.unsqueeze(1) < r.unsqueeze(0)  # worse[i, j]: r_i < r_j
        gaps = p.unsqueeze(1) - p.unsqueeze(0)  # gaps[i, j] = p_i − p_j
        ranking = ranking + torch.relu(gaps)[worse].sum()
        imitation = imitation - p[torch.argmax(r)]
        ordered += int((gaps[worse] < 0).sum().item())
        pairs += int(worse.sum().item())
    loss = (ranking + sft_weight * imitation) / count
    return loss, {
        "rank_loss": float(ranking.item()) / count,
        "rank_accuracy": ordered / pairs if pairs else float("nan"),
    }


class RRHFCollator:
    """Rows of ``{"prompt_ids", "response_ids": [[…], …], "rewards": [...]}`` → one padded
    batch with every response of every prompt as a row, and the prompt each row belongs to."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Tensor]:
        sequences: list[list[int]] = []
        masks: list[list[int]] = []
        rewards: list[float] = []
        groups: list[int] = []
        for g, example in enumerate(examples):
            prompt = list(example["prompt_ids"])
            for response, reward in zip(example["response_ids"], example["rewards"], strict=True):
                sequences.append(prompt + list(response))
                masks.append([0] * len(prompt) + [1] * len(response))
                rewards.append(float(reward))
                groups.append(g)
        width = max(len(s) for s in sequences)
        return {
            "input_ids": torch.tensor(
                [s + [self.pad_token_id] * (width - len(s)) for s in sequences]
            ),
            "attention_mask": torch.tensor(
                [[1] * len(s) + [0] * (width - len(s)) for s in sequences]
            ),
            "response_mask": torch.tensor([m + [0] * (width - len(m)) for m in masks]),
            "rewards": torch.tensor(rewards),
            "groups": torch.tensor(groups),
        }


def make_rrhf_trainer(**kwargs: Any) -> Any:
    """A ``transformers.Trainer`` whose loss is RRHF; ``sft_weight`` is taken from kwargs."""
    from transformers import Trainer

    sft_weight = float(kwargs.pop("sft_weight"))

    class RRHFTrainer(Trainer):
        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Tensor],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            scores = sequence_scores(outputs.logits, inputs["input_ids"], inputs["response_mask"])
            loss, metrics = rrhf_loss(
                scores, inputs["rewards"], inputs["groups"], sft_weight=sft_weight
            )
            self._rrhf_metrics = metrics
            return (loss, outputs) if return_outputs else loss

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            metrics = getattr(self, "_rrhf_metrics", None)
            if metrics and "loss" in logs:
                logs = {**logs, **metrics}
            super().log(logs, start_time)

    return RRHFTrainer(**kwargs)
