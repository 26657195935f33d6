"""prefloop's PPO: its math against hand computations, the adaptive KL controller, and steps on a
tiny model that move the policy towards a reward while the KL term pulls it back."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from prefloop.errors import InvalidInputError
from prefloop.train.config import PPOConfig
from prefloop.train.ppo import (
    PPO,
    AdaptiveKLController,
    gae,
    policy_loss,
    token_rewards,
    value_loss,
    whiten,
)

torch = pytest.importorskip("torch")


def test_gae_matches_a_hand_computation() -> None:
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, 0.4, 9.0]])  # the last token lies after the reply's end
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    gamma, lam = 0.9, 0.8
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    # By hand, with V = 0 after the last token:
    d2 = 1.0 + gamma * 0.0 - 0.4
    d1 = 0.0 + gamma * 0.4 - 0.2
    d0 = 0.0 + gamma * 0.2 - 0.5
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    assert advantages[0].tolist() == pytest.approx([a0, a1, a2, 0.0])
    assert returns[0].tolist() == pytest.approx([a0 + 0.5, a1 + 0.2, a2 + 0.4, 0.0])


def test_token_rewards_put_the_score_on_the_last_token_and_the_kl_on_every_token() -> None:
    log_probs = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-1.0, -2.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    rewards, kl = token_rewards(log_probs, ref, torch.tensor([2.0, -1.0]), mask, beta=0.1)
    assert kl.flatten().tolist() == pytest.approx([0.5, 0.0, -1.0, 0.0, 0.0, 0.0])
    assert rewards.flatten().tolist() == pytest.approx([-0.05, 0.0, 0.1 + 2.0, -1.0, 0.0, 0.0])


def test_the_clipped_losses_match_hand_computations() -> None:
    old = torch.tensor([[0.0, 0.0]])
    new = torch.tensor([[math.log(1.5), math.log(0.5)]])  # ratios 1.5 and 0.5
    advantages = torch.tensor([[1.0, -1.0]])
    mask = torch.ones(1, 2)
    loss, share = policy_loss(new, old, advantages, mask, clip=0.2)
    # token 1: max(-1·1.5, -1·1.2) = -1.2 (clipped); token 2: max(1·0.5, 1·0.8) = 0.8 (clipped)
    assert float(loss) == pytest.approx((-1.2 + 0.8) / 2)
    assert float(share) == pytest.approx(1.0)
    values, old_values, returns = (
        torch.tensor([[1.0]]),
        torch.tensor([[0.0]]),
        torch.tensor([[2.0]]),
    )
    # unclipped (1 - 2)² = 1; clipped value 0.2: (0.2 - 2)² = 3.24; ½·max = 1.62
    assert float(value_loss(values, old_values, returns, torch.ones(1, 1), 0.2)) == pytest.approx(
        1.62
    )


def test_whiten_gives_unit_variance_over_the_mask() -> None:
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    out = whiten(values, mask)
    kept = out[0, :3]
    assert float(kept.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(kept.pow(2).mean()) == pytest.approx(1.0, abs=1e-4)
    assert float(out[0, 3]) == 0.0


def test_the_adaptive_controller_raises_beta_above_target_and_lowers_it_below() -> None:
    control = AdaptiveKLController(beta=0.1, target=2.0, rate=0.1)
    assert control.update(3.0) == pytest.approx(0.1 * (1 + 0.1 * 0.2))  # error 0.5, clipped to 0.2
    control = AdaptiveKLController(beta=0.1, target=2.0, rate=0.1)
    assert control.update(1.9) == pytest.approx(0.1 * (1 + 0.1 * -0.05))
    fixed = AdaptiveKLController(beta=0.1, target=None)
    assert fixed.update(50.0) == 0.1


def test_a_negative_beta_and_a_target_without_beta_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="kl_coef"):
        PPOConfig(kl_coef=-0.1)
    with pytest.raises(InvalidInputError, match="--kl-coef above 0"):
        PPOConfig(kl_coef=0.0, target_kl=1.0)
    with pytest.raises(InvalidInputError, match="clip_range"):
        PPOConfig(clip_range=1.5)


# -- steps on the tiny model -------------------------------------------------------------------
PROMPT = [{"role": "user", "content": "Say a word."}]


@pytest.fixture(scope="module")
def peaked_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose next-token distribution is peaked (a few likely tokens)."""
    from tests.support.tiny_lm import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("peaked") / "base", init_std=1.0)


def _prompt_ids(tokenizer: Any) -> list[int]:
    encoded = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_dict=True)
    return list(encoded["input_ids"])


def _first_token_probability(ppo: PPO, ids: list[int], token: int) -> float:
    """Exact probability that the policy's reply starts with ``token``."""
    with torch.no_grad():
        logits = ppo.lm(input_ids=torch.tensor([ids])).logits[0, -1].float()
    return float(torch.softmax(logits, dim=-1)[token])


def _train(base: Path, beta: float, steps: int = 5) -> tuple[float, float]:
    """Train on a reward that pays for one token (the second most likely first token of the
    reply); its probability before and after."""
    from peft import LoraConfig, get_peft_model

    from prefloop.train.models import load_base

    torch.manual_seed(0)
    model, tokenizer = load_base(str(base))
    model = get_peft_model(
        model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    config = PPOConfig(
        base=str(base),
        learning_rate=3e-3,
        kl_coef=beta,
        batch_size=8,
        mini_batch_size=4,
        max_new_tokens=2,
        missing_eos_penalty=0.0,
    )
    ppo = PPO(model, tokenizer, config)
    ids = _prompt_ids(tokenizer)
    with torch.no_grad():
        first = torch.softmax(ppo.lm(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
    token = int(torch.topk(first, 2).indices[1])
    word = tokenizer.decode([token])

    def reward(prompts: list[str], completions: list[str], **_: Any) -> list[float | None]:
        return [1.0 if c.startswith(word) else 0.0 for c in completions]

    before = _first_token_probability(ppo, ids, token)
    for step in range(steps):
        ppo.step([ids] * 8, ["Say a word."] * 8, [{}] * 8, reward, seed=step)
    return before, _first_token_probability(ppo, ids, token)


def test_ppo_moves_towards_the_reward_and_beta_holds_it_back(peaked_base: Path) -> None:
    free_before, free_after = _train(peaked_base, beta=0.0)
    held_before, held_after = _train(peaked_base, beta=2.0)
    assert free_before == pytest.approx(held_before) and free_before < 0.2  # the same start
    assert free_after > 0.5  # β = 0: the preferred token becomes the likely one
    assert held_after < free_after - 0.3  # a large β keeps the policy near its reference


def test_a_sample_the_scorer_cannot_score_leaves_the_update(tiny_base: Path) -> None:
    from prefloop.train.models import load_base

    model, tokenizer = load_base(str(tiny_base))
    ppo = PPO(
        model,
        tokenizer,
        PPOConfig(base=str(tiny_base), batch_size=4, mini_batch_size=2, max_new_tokens=3),
    )
    ids = list(
        tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]
    )
    calls: list[int] = []

    def flaky(prompts: list[str], completions: list[str], **_: Any) -> list[float | None]:
        calls.append(len(completions))
        return [None, 1.0, None, 0.5]

    done = ppo.step([ids] * 4, ["p"] * 4, [{}] * 4, flaky, seed=0)
    assert done.scores == [None, 1.0, None, 0.5]  # never 0 for a failed sample

    def broken(prompts: list[str], completions: list[str], **_: Any) -> list[float | None]:
        return [None] * len(completions)

    with pytest.raises(InvalidInputError, match="could not score any reply"):
        ppo.step([ids] * 4, ["p"] * 4, [{}] * 4, broken, seed=1)
