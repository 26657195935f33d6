"""RRHF's loss and the slic (SLiC-HF) loss against computations by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from prefloop.train._run import _build, _dpo_loss_settings, _Log
from prefloop.train.config import DPOConfig
from prefloop.train.data import TrainingData, _pair_row
from prefloop.train.models import load_tokenizer
from prefloop.train.rrhf import RRHFCollator, rrhf_loss, sequence_scores
from tests.train.conftest import pair_rows


def test_rrhf_loss_by_hand() -> None:
    # prompt 0: three responses, rewards 1 > 0 > -1, scores out of order for (b, c)
    # prompt 1: two responses with rewards 0.5 > -0.5, in order
    scores = torch.tensor([-1.0, -2.0, -1.5, -0.5, -3.0])
    rewards = torch.tensor([1.0, 0.0, -1.0, 0.5, -0.5])
    groups = torch.tensor([0, 0, 0, 1, 1])
    loss, metrics = rrhf_loss(scores, rewards, groups, sft_weight=0.5)
    # mis-ordered pairs (worse scored above better): c (-1.5) above b (-2.0): 0.5
    rank_0 = max(0, -2.0 - (-1.0)) + max(0, -1.5 - (-1.0)) + max(0, -1.5 - (-2.0))
    rank_1 = max(0, -3.0 - (-0.5))
    imitation = 1.0 + 0.5  # −p of the best response of each prompt: a (−1.0), then d (−0.5)
    assert loss.item() == pytest.approx((rank_0 + rank_1 + 0.5 * imitation) / 2)
    assert metrics["rank_loss"] == pytest.approx((rank_0 + rank_1) / 2)
    assert metrics["rank_accuracy"] == pytest.approx(3 / 4)  # (a,b) (a,c) (d,e) in order


def test_sequence_scores_are_mean_token_log_likelihoods() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    ids = torch.randint(0, 7, (2, 5))
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]])
    got = sequence_scores(logits, ids, mask)
    logp = torch.log_softmax(logits, -1)
    row0 = sum(logp[0, t - 1, ids[0, t]].item() for t in (2, 3, 4)) / 3
    row1 = sum(logp[1, t - 1, ids[1, t]].item() for t in (1, 2)) / 2
    assert got.tolist() == pytest.approx([row0, row1], abs=1e-5)


def test_the_rrhf_collator_lays_out_each_response_as_a_row() -> None:
    batch = RRHFCollator(pad_token_id=0)(
        [
            {"prompt_ids": [5, 6], "response_ids": [[7], [8, 9]], "rewards": [1.0, 0.0]},
            {"prompt_ids": [4], "response_ids": [[3, 2, 1], [9]], "rewards": [0.0, 1.0]},
        ]
    )
    assert batch["input_ids"].tolist() == [
        [5, 6, 7, 0],
        [5, 6, 8, 9],
        [4, 3, 2, 1],
        [4, 9, 0, 0],
    ]
    assert batch["response_mask"].tolist()[1] == [0, 0, 1, 1]
    assert batch["groups"].tolist() == [0, 0, 1, 1]


def test_the_dpo_family_maps_to_trl_losses() -> None:
    assert _dpo_loss_settings(DPOConfig(loss="dpo")) == {"loss_type": ["sigmoid"]}
    assert _dpo_loss_settings(DPOConfig(loss="slic", slic_lambda=0.3)) == {
        "loss_type": ["hinge", "sft"],
        "loss_weights": [1.0, 0.3],
    }
    assert _dpo_loss_settings(DPOConfig(loss="robust"))["label_smoothing"] == 0.1


def _completion_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-token log-probs of the completion tokens, masked: (2B, T-1)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    token = logp.gather(-1, batch["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)
    return token * batch["completion_mask"][:, 1:]


def test_slic_is_the_hinge_on_reference_log_ratios_plus_lambda_nll(
    tiny_base: Path, tmp_path: Path
) -> None:
    """SLiC-HF (Zhao et al. 2023): max(0, 1 − β·Δ) + λ · NLL(chosen), with Δ the chosen-minus-
    rejected log-likelihood gap measured against the reference (TRL's hinge)."""
    beta, lam = 0.5, 0.3
    config = DPOConfig(base=str(tiny_base), loss="slic", beta=beta, slic_lambda=lam, batch_size=4)
    rows = [_pair_row(r["prompt"], r["chosen"], r["rejected"], None) for r in pair_rows()]
    tokenizer = load_tokenizer(tiny_base)
    built = _build(
        TrainingData("dpo", rows, "test"),
        config,
        tiny_base,
        tokenizer,
        tmp_path / "checkpoints",
        _Log(),
        None,
    )
    trainer = built.trainer
    model = trainer.model
    with torch.no_grad():  # move the adapter off zero, so policy and reference differ
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    batch = next(iter(trainer.get_train_dataloader()))
    model.eval()
    with torch.no_grad():
        got = trainer.compute_loss(model, batch).item()
        token = _completion_logps(model, batch)
        logps = token.sum(-1)
        chosen, rejected = logps.chunk(2)
        delta = (chosen - batch["ref_chosen_logps"]) - (rejected - batch["ref_rejected_logps"])
        hinge = torch.relu(1 - beta * delta).mean().item()
        chosen_mask = batch["completion_mask"][:, 1:].chunk(2)[0].bool()
        nll = -token.chunk(2)[0][chosen_mask].mean().item()
    assert math.isfinite(got)
    assert delta.abs().max().item() > 1e-3  # a real gap, not the trivial policy = reference
    assert got == pytest.approx(hinge + lam * nll, rel=1e-4)
