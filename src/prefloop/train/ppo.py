"""PPO with a KL penalty to the reference, written out to be read top to bottom.

The objective (Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al. 2022, InstructGPT)::

    maximise  E_{x ~ D, y ~ π_θ(·|x)} [ r(x, y) ]  −  β · KL( π_θ(·|x) ‖ π_SFT(·|x) )

One step of :class:`PPO`:

1. **Rollouts.** The policy samples a reply to each of B prompts (left-padded batch). Shapes:
   prompts ``(B, P)``, replies ``(B, R)``; a reply ends at its first end-of-text token, and
   ``mask (B, R)`` is 1 on its tokens up to and including that one.
2. **Scores.** The reward function scores each reply's text: ``scores (B,)``. A reply it could
   not score (``None``) leaves the batch: it is never given 0. A reply that never ended loses
   ``missing_eos_penalty``; ``length_penalty`` and ``reward_clip`` guard against length runs
   and outliers.
3. **Per-token rewards.** ``r_t = −β · (log π_θ(y_t) − log π_ref(y_t))`` on every token, plus the
   score on the reply's last token (:func:`token_rewards`). Their sum over a reply is the
   objective's sample estimate.
4. **Advantages.** A value head on the policy's last hidden state predicts ``V_t``; generalised
   advantage estimation (Schulman et al. 2016) gives ``A_t`` and the returns ``A_t + V_t``
   (:func:`gae`); advantages are whitened over the batch's tokens.
5. **Updates.** ``ppo_epochs`` passes over minibatches: the clipped surrogate
   ``max(−A·ρ, −A·clip(ρ, 1 − ε, 1 + ε))`` with ``ρ = π_θ / π_old`` (:func:`policy_loss`) plus
   ``vf_coef`` × the clipped value loss (:func:`value_loss`).
6. **β.** With ``target_kl`` set, the adaptive controller of Ziegler et al. moves β so the KL
   per reply stays near the target (:class:`AdaptiveKLController`).

The policy is a peft model with a LoRA adapter (the reference is the same model with the adapter
disabled, so no second copy) or a whole model (the reference is then a frozen copy).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prefloop.errors import InvalidInputError
from prefloop.train.config import OnlineConfig, PPOConfig

__all__ = [
    "PPO",
    "AdaptiveKLController",
    "PPOStep",
    "gae",
    "masked_mean",
    "policy_loss",
    "token_rewards",
    "value_loss",
    "whiten",
]

Tensor = Any  # torch.Tensor; torch is imported lazily so `prefloop --help` stays fast


# -- the math, on tensors ----------------------------------------------------------------------
def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask`` is 1 (any shape, same for both)."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def whiten(values: Tensor, mask: Tensor, *, shift_mean: bool = True) -> Tensor:
    """``values`` scaled to unit variance over the masked entries (and centred unless
    ``shift_mean`` is false); unmasked entries come back as 0."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    whitened = (values - mean) * (variance + 1e-8).rsqrt()
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def token_rewards(
    log_probs: Tensor, ref_log_probs: Tensor, scores: Tensor, mask: Tensor, beta: float
) -> tuple[Tensor, Tensor]:
    """``(rewards (B, R), kl (B, R))``: the KL penalty ``−β·(log π − log π_ref)`` on every token
    of a reply and its score added on its last token; 0 after the reply ends."""
    import torch

    kl = (log_probs - ref_log_probs) * mask  # (B, R)
    rewards = -beta * kl
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)  # (B,) index of each reply's last token
    rewards = rewards.clone()
    rewards[torch.arange(rewards.shape[0]), last] += scores
    return rewards * mask, kl


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016): ``(advantages, returns)``,
    both ``(B, R)``.

    ``δ_t = r_t + γ·V_{t+1} − V_t`` and ``A_t = δ_t + γλ·A_{t+1}``, with ``V`` and ``A`` taken as
    0 after a reply's last token; ``returns = A + V`` is the value head's target.
    """
    import torch

    values = values * mask
    length = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])  # (B,)
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def policy_loss(
    log_probs: Tensor, old_log_probs: Tensor, advantages: Tensor, mask: Tensor, clip: float
) -> tuple[Tensor, Tensor]:
    """The clipped surrogate (Schulman et al. 2017), to minimise: ``(loss, clipped share)``.

    ``ρ = exp(log π_θ − log π_old)``; per token ``max(−A·ρ, −A·clip(ρ, 1 − ε, 1 + ε))``, averaged
    over the replies' tokens."""
    import torch

    ratio = torch.exp(log_probs - old_log_probs)  # (B, R)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    share = masked_mean((clipped > unclipped).float(), mask)
    return loss, share


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip: float
) -> Tensor:
    """The clipped value loss: ``½·max((V − G)², (V_clip − G)²)`` with
    ``V_clip = V_old + clip(V − V_old, −c, c)``, averaged over the replies' tokens."""
    import torch

    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (clipped - returns) ** 2), mask)


NO_SCORE = (
    "the reward function could not score any reply of this step (every score was None): "
    "check the scorer (a judge server that is down, a reward model that fails) and try again"
)


def shaped_score(score: float, length: int, ended: bool, config: OnlineConfig) -> float:
    """A reply's score after the guards against length runs and outliers: minus
    ``missing_eos_penalty`` when it never ended, minus ``length_penalty × length /
    max_new_tokens``, clipped to ``±reward_clip``."""
    value = score - (0.0 if ended else config.missing_eos_penalty)
    value -= config.length_penalty * length / config.max_new_tokens
    if config.reward_clip is not None:
        value = min(max(value, -config.reward_clip), config.reward_clip)
    return value


@dataclass
class AdaptiveKLController:
    """β that holds a target KL (Ziegler et al. 2019, section 2.2)::

        e = clip((KL − target) / target, −0.2, 0.2);    β ← β · (1 + K_β · e)

    KL above the target raises β (a stronger pull back), below lowers it."""

    beta: float
    target: float | None
    rate: float = 0.1

    def update(self, kl: float) -> float:
        """Move β after a step whose measured KL was ``kl``; returns the new β."""
        if self.target is None or not math.isfinite(kl):
            return self.beta
        error = min(max((kl - self.target) / self.target, -0.2), 0.2)
        self.beta *= 1.0 + self.rate * error
        return self.beta


# -- the trainer -------------------------------------------------------------------------------
Scorer = Callable[..., Sequence[float | None]]
"""``scorer(prompts, completions, **columns) -> scores`` (``None``: could not score)."""


@dataclass(frozen=True)
class PPOStep:
    """What one step measured on its rollouts (before its update) and did."""

    prompts: list[str]
    completions: list[str]
    inputs: list[dict[str, Any]]
    scores: list[float | None]
    """The reward function's raw scores (before penalties and clipping)."""
    lengths: list[int]
    """Reply tokens (without the end-of-text token)."""
    ended: list[bool]
    kl: float
    """Mean over the scored replies of Σ_t (log π − log π_ref): the KL per reply, in nats."""
    entropy: float
    """Mean entropy of the policy per reply token, in nats."""
    beta: float
    """β the step's rewards used."""
    policy_loss: float
    value_loss: float
    clipped: float
    """Share of tokens whose ratio the surrogate clipped."""


class PPO:
    """The policy (LoRA or whole), its value head, its reference and optimiser; :meth:`step`
    runs one round of rollouts and updates (module docstring)."""

    def __init__(self, model: Any, tokenizer: Any, config: PPOConfig) -> None:
        import torch

        self.config = config
        self.tokenizer = tokenizer
        self.lm = model
        hidden = int(model.config.hidden_size)
        self.value_head = torch.nn.Linear(hidden, 1)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)
        # A LoRA policy's reference is itself with the adapter disabled; a whole model's is a
        # frozen copy taken before training.
        adapter = hasattr(model, "disable_adapter") and hasattr(model, "peft_config")
        self.reference = None if adapter else copy.deepcopy(model).eval()
        if self.reference is not None:
            self.reference.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        params += list(self.value_head.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
        self.kl_control = AdaptiveKLController(
            config.kl_coef, config.target_kl, config.kl_adapt_rate
        )
        self.end_ids = _end_ids(model, tokenizer)
        self.pad_id = (
            int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else min(self.end_ids)
        )

    # -- state a run keeps: what training changes -------------------------------------------
    def trainable_state(self) -> dict[str, Any]:
        """A copy of the trained weights (adapter or whole model, value head) and β."""
        state = {
            name: p.detach().clone() for name, p in self.lm.named_parameters() if p.requires_grad
        }
        state.update(
            {f"value_head.{k}": v.detach().clone() for k, v in self.value_head.state_dict().items()}
        )
        return {"weights": state, "beta": self.kl_control.beta}

    def load_trainable_state(self, state: dict[str, Any]) -> None:
        import torch

        weights = state["weights"]
        with torch.no_grad():
            for name, p in self.lm.named_parameters():
                if name in weights:
                    p.copy_(weights[name])
            self.value_head.load_state_dict(
                {k.removeprefix("value_head."): v for k, v in weights.items() if "value_head." in k}
            )
        self.kl_control.beta = float(state["beta"])

    # -- one step ---------------------------------------------------------------------------
    def step(
        self,
        prompts: list[list[int]],
        texts: list[str],
        inputs: list[dict[str, Any]],
        scorer: Scorer,
        *,
        seed: int,
    ) -> PPOStep:
        """Rollouts for ``prompts`` (token ids of the chat-formatted prompts; ``texts`` the
        prompts as the scorer sees them; ``inputs`` each prompt's task inputs), scoring, and
        the PPO updates. Raises :class:`InvalidInputError` when the scorer scored no reply."""
        import torch

        config = self.config
        query, query_mask = self._left_pad(prompts)  # (B, P)
        response = self._generate(query, query_mask, seed)  # (B, R)
        mask, ended_rows = _reply_mask(response, self.end_ids)  # (B, R) float, (B,) bool
        ended = [bool(x) for x in ended_rows.tolist()]
        lengths = [int(n) - int(e) for n, e in zip(mask.sum(dim=1).tolist(), ended, strict=True)]
        completions = [
            self.tokenizer.decode(row[:n], skip_special_tokens=True)
            for row, n in zip(response.tolist(), lengths, strict=True)
        ]
        raw = list(scorer(texts, completions, inputs=inputs))
        if len(raw) != len(completions):
            raise InvalidInputError(
                f"the reward function gave {len(raw)} scores for {len(completions)} replies"
            )
        raw_scores = [None if s is None or not math.isfinite(float(s)) else float(s) for s in raw]
        keep = [i for i, s in enumerate(raw_scores) if s is not None]
        if not keep:
            raise InvalidInputError(NO_SCORE)
        rows = torch.tensor(keep)
        query, query_mask, response, mask = (
            query[rows],
            query_mask[rows],
            response[rows],
            mask[rows],
        )
        scores = torch.tensor(
            [shaped_score(float(raw_scores[i] or 0.0), lengths[i], ended[i], config) for i in keep]
        )
        if config.whiten_rewards and len(keep) > 1:
            scores = (scores - scores.mean()) / (scores.std() + 1e-8)

        beta = self.kl_control.beta
        with torch.no_grad():
            self.lm.eval()
            old_log_probs, old_values, entropy = self._forward(query, query_mask, response, mask)
            ref_log_probs = self._reference_log_probs(query, query_mask, response, mask)
            rewards, kl = token_rewards(old_log_probs, ref_log_probs, scores, mask, beta)
            advantages, returns = gae(rewards, old_values, mask, config.gamma, config.lam)
            advantages = whiten(advantages, mask)
        kl_per_reply = float(kl.sum(dim=1).mean())
        mean_entropy = float(masked_mean(entropy, mask))

        self.lm.train()
        losses: list[tuple[float, float, float]] = []
        generator = torch.Generator().manual_seed(seed)
        for _ in range(config.ppo_epochs):
            order = torch.randperm(len(keep), generator=generator)
            for start in range(0, len(keep), config.mini_batch_size):
                b = order[start : start + config.mini_batch_size]
                log_probs, values, _ = self._forward(query[b], query_mask[b], response[b], mask[b])
                pg, clipped = policy_loss(
                    log_probs, old_log_probs[b], advantages[b], mask[b], config.clip_range
                )
                vf = value_loss(values, old_values[b], returns[b], mask[b], config.clip_range_value)
                loss = pg + config.vf_coef * vf
                self.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(
                    [p for g in self.optimizer.param_groups for p in g["params"]], 1.0
                )
                self.optimizer.step()
                losses.append((pg.item(), vf.item(), clipped.item()))
        self.lm.eval()
        self.kl_control.update(kl_per_reply)
        n = max(len(losses), 1)
        return PPOStep(
            prompts=texts,
            completions=completions,
            inputs=inputs,
            scores=raw_scores,
            lengths=lengths,
            ended=ended,
            kl=kl_per_reply,
            entropy=mean_entropy,
            beta=beta,
            policy_loss=sum(x[0] for x in losses) / n,
            value_loss=sum(x[1] for x in losses) / n,
            clipped=sum(x[2] for x in losses) / n,
        )

    # -- tensors in and out of the model ------------------------------------------------------
    def _left_pad(self, prompts: list[list[int]]) -> tuple[Tensor, Tensor]:
        import torch

        width = max(len(p) for p in prompts)
        ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        return ids, mask

    def _generate(self, query: Tensor, query_mask: Tensor, seed: int) -> Tensor:
        import torch

        torch.manual_seed(seed)
        self.lm.eval()
        # A LoRA policy generates from a merged copy: the same weights, without the adapter's
        # extra small matrix products at every token (about 1.5× faster on a CPU).
        generator = self.lm
        if self.reference is None:
            generator = copy.deepcopy(self.lm).merge_and_unload().eval()
        with torch.no_grad():
            output = generator.generate(
                input_ids=query,
                attention_mask=query_mask,
                do_sample=True,
                temperature=self.config.temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=self.config.max_new_tokens,
                pad_token_id=self.pad_id,
                eos_token_id=sorted(self.end_ids),
            )
        return output[:, query.shape[1] :]

    def _forward(
        self, query: Tensor, query_mask: Tensor, response: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(log_probs, values, entropy)`` of the reply tokens, each ``(B, R)``."""
        import torch

        ids = torch.cat([query, response], dim=1)  # (B, P + R)
        attention = torch.cat([query_mask, mask.long()], dim=1)
        positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
        width = response.shape[1]
        out = self.lm(
            input_ids=ids,
            attention_mask=attention,
            position_ids=positions,
            output_hidden_states=True,
            logits_to_keep=width + 1,
        )
        logits = out.logits[:, :-1].float() / self.config.temperature  # (B, R, V)
        log_dist = torch.log_softmax(logits, dim=-1)
        log_probs = log_dist.gather(-1, response.unsqueeze(-1)).squeeze(-1)  # (B, R)
        entropy = -(log_dist.exp() * log_dist).sum(dim=-1)  # (B, R)
        hidden = out.hidden_states[-1][:, query.shape[1] - 1 : -1]  # (B, R, H)
        values = self.value_head(hidden.float()).squeeze(-1)  # (B, R)
        return log_probs, values, entropy

    def _reference_log_probs(
        self, query: Tensor, query_mask: Tensor, response: Tensor, mask: Tensor
    ) -> Tensor:
        if self.reference is None:
            with self.lm.disable_adapter():
                return self._forward(query, query_mask, response, mask)[0]
        lm, self.lm = self.lm, self.reference
        try:
            return self._forward(query, query_mask, response, mask)[0]
        finally:
            self.lm = lm


def _end_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    config = getattr(model, "generation_config", None)
    for source in (getattr(config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, list | tuple):
            ids.update(int(x) for x in source)
    if not ids:
        raise InvalidInputError("the tokenizer has no end-of-text token; give a chat model")
    return ids


def _reply_mask(response: Tensor, end_ids: set[int]) -> tuple[Tensor, Tensor]:
    """``(mask (B, R), ended (B,))``: 1 on each reply's tokens up to and including its first
    end token; whether the reply has one."""
    import torch

    is_end = torch.zeros_like(response, dtype=torch.bool)
    for token in end_ids:
        is_end |= response == token
    seen_before = (is_end.long().cumsum(dim=1) - is_end.long()) > 0  # an end token came earlier
    return (~seen_before).float(), is_end.any(dim=1)
