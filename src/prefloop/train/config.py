"""One typed config per training method; every field says what it does.

The defaults work on a laptop CPU with the packaged SmolLM2-135M-Instruct and LoRA. A YAML file
(``--config FILE.yaml``) sets any field by name; options on the command line win over it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Self, get_args, get_origin, get_type_hints

from prefloop.errors import InvalidInputError

__all__ = [
    "DPO_LOSSES",
    "METHODS",
    "ONLINE_METHODS",
    "DPOConfig",
    "GRPOConfig",
    "KTOConfig",
    "OnlineConfig",
    "PPOConfig",
    "RLOOConfig",
    "RRHFConfig",
    "RewardConfig",
    "SFTConfig",
    "TrainConfig",
    "config_for",
]

Method = Literal["sft", "reward", "dpo", "kto", "rrhf", "ppo", "rloo", "grpo"]
ONLINE_METHODS: tuple[str, ...] = ("ppo", "rloo", "grpo")
METHODS: tuple[str, ...] = ("sft", "reward", "dpo", "kto", "rrhf", *ONLINE_METHODS)
DPOLoss = Literal["dpo", "ipo", "hinge", "slic", "robust"]
DPO_LOSSES: tuple[str, ...] = ("dpo", "ipo", "hinge", "slic", "robust")


@dataclass(frozen=True)
class TrainConfig:
    """What every method shares."""

    method: ClassVar[str] = ""

    base: str = "smollm2"
    """The model to start from: ``smollm2`` (packaged) or a Hugging Face / trained folder."""
    lora: bool = True
    """Train a LoRA adapter (the reference is the base with the adapter disabled)."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by lora_alpha / lora_r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input."""
    merge: bool = False
    """Save the adapter merged into the base (a whole model) instead of the adapter alone."""
    epochs: float = 1.0
    """Passes over the data (ignored when max_steps is set)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps."""
    learning_rate: float = 5e-5
    """Peak learning rate (linear decay)."""
    batch_size: int = 4
    """Examples per device per step (pairs for DPO and reward, groups for RRHF)."""
    gradient_accumulation_steps: int = 1
    """Steps whose gradients are summed before one optimizer step."""
    max_length: int = 256
    """Tokens of prompt and reply together; longer examples are truncated (and counted)."""
    seed: int = 0
    """Seed of the data order, the adapter's initialisation and dropout."""
    save_steps: int = 50
    """Write a checkpoint every this many steps (resume with --resume)."""
    logging_steps: int = 1
    """Record the loss every this many steps."""

    def __post_init__(self) -> None:
        positive = {
            "lora_r": self.lora_r,
            "lora_alpha": self.lora_alpha,
            "batch_size": self.batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "max_length": self.max_length,
            "save_steps": self.save_steps,
            "logging_steps": self.logging_steps,
        }
        for name, value in positive.items():
            if value < 1:
                raise InvalidInputError(f"{name} must be at least 1, got {value}")
        if self.max_steps is not None and self.max_steps < 1:
            raise InvalidInputError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.epochs <= 0:
            raise InvalidInputError(f"epochs must be above 0, got {self.epochs}")
        if not self.learning_rate > 0:
            raise InvalidInputError(f"learning_rate must be above 0, got {self.learning_rate}")
        if not 0 <= self.lora_dropout < 1:
            raise InvalidInputError(f"lora_dropout must lie in [0, 1), got {self.lora_dropout}")

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, **asdict(self)}

    def updated(self, **changes: Any) -> Self:
        """A copy with ``changes`` (``None`` values are ignored: not given on the command line)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_yaml(cls, path: str | Path) -> Self:
        """Read the fields of a YAML mapping; an unknown key is an error that lists the known."""
        import yaml

        file = Path(path)
        if not file.exists():
            raise InvalidInputError(f"config file {file} does not exist")
        try:
            raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise InvalidInputError(f"{file} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise InvalidInputError(f"{file} must hold a mapping of settings, e.g. `beta: 0.1`")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(map(str, raw)) - known)
        if unknown:
            raise InvalidInputError(
                f"{file}: unknown setting(s) {', '.join(unknown)} for {cls.method}; known: "
                f"{', '.join(sorted(known))}"
            )
        hints = get_type_hints(cls)
        for key, value in raw.items():
            _check_type(file, str(key), value, hints[str(key)])
        return cls(**raw)


@dataclass(frozen=True)
class SFTConfig(TrainConfig):
    """Supervised fine-tuning on prompt/completion pairs; loss on the completion only."""

    method: ClassVar[str] = "sft"
    learning_rate: float = 1e-4
    min_reward: float | None = None
    """From a task: outputs with at least this reward (default: the scale's second level)."""


@dataclass(frozen=True)
class RewardConfig(TrainConfig):
    """A reward model: the language model with a scalar head, trained on preference pairs with
    the Bradley–Terry loss −log σ(r(chosen) − r(rejected) − margin)."""

    method: ClassVar[str] = "reward"
    learning_rate: float = 1e-4
    center_rewards_coefficient: float | None = 0.01
    """Weight of the mean squared reward, which keeps rewards centred on 0 (Eisenstein et al.
    2023); ``None`` turns it off."""
    use_margins: bool = True
    """Subtract each pair's margin (rating gap or rank gap) inside the loss (Llama 2)."""
    from_ratings: bool = True
    """From a task: also pair outputs of one request whose ratings differ (margin = the gap;
    ``prefloop export preferences --from-ratings`` writes the same pairs)."""


@dataclass(frozen=True)
class DPOConfig(TrainConfig):
    """Direct preference optimisation and its relatives on preference pairs."""

    method: ClassVar[str] = "dpo"
    loss: DPOLoss = "dpo"
    """``dpo`` (Rafailov et al. 2023), ``ipo`` (Azar et al. 2023), ``hinge``, ``slic`` (SLiC-HF,
    Zhao et al. 2023: hinge plus slic_lambda · NLL of the chosen reply), ``robust`` (Chowdhury et
    al. 2024, for noisy labels; uses label_smoothing)."""
    beta: float = 0.1
    """Strength of the pull towards the reference (for hinge/slic: 1 / the margin δ)."""
    slic_lambda: float = 0.1
    """Weight of the chosen reply's negative log-likelihood in the slic loss."""
    label_smoothing: float = 0.1
    """Assumed share of flipped labels, for the robust loss."""
    from_ratings: bool = True
    """From a task: also pair outputs of one request whose ratings differ."""
    cache_reference: bool = True
    """Compute the reference log-probs once, keep them on disk keyed by the base model's and
    the data's fingerprints, and reuse them in later runs on the same data."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss not in DPO_LOSSES:
            raise InvalidInputError(
                f"unknown loss {self.loss!r}; use one of {', '.join(DPO_LOSSES)}"
            )
        if self.beta < 0:
            raise InvalidInputError(f"beta must be ≥ 0, got {self.beta}")
        if self.slic_lambda < 0:
            raise InvalidInputError(f"slic_lambda must be ≥ 0, got {self.slic_lambda}")
        if not 0 <= self.label_smoothing < 0.5:
            raise InvalidInputError(
                f"label_smoothing must lie in [0, 0.5), got {self.label_smoothing}"
            )


@dataclass(frozen=True)
class KTOConfig(TrainConfig):
    """Kahneman–Tversky optimisation (Ethayarajh et al. 2024) on outputs labelled desirable or
    undesirable on their own: ratings and thumbs, no pairs needed."""

    method: ClassVar[str] = "kto"
    beta: float = 0.1
    """Strength of the pull towards the reference."""
    desirable_weight: float = 1.0
    """Loss weight of desirable outputs (raise it when they are rarer than undesirable ones)."""
    undesirable_weight: float = 1.0
    """Loss weight of undesirable outputs."""
    desirable_above: float | None = None
    """From a task: rewards above this are desirable (default: the middle of its scale)."""
    undesirable_below: float | None = None
    """From a task: rewards below this are undesirable (default: the middle of its scale)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta < 0:
            raise InvalidInputError(f"beta must be ≥ 0, got {self.beta}")
        if self.batch_size < 2:
            raise InvalidInputError(
                "KTO estimates its reference point from mismatched pairs inside a batch; "
                f"batch_size must be at least 2, got {self.batch_size}"
            )


@dataclass(frozen=True)
class RRHFConfig(TrainConfig):
    """RRHF (Yuan et al. 2023): rank the responses of one prompt by their length-normalised
    log-likelihood in the order of their rewards, plus cross-entropy on the best response."""

    method: ClassVar[str] = "rrhf"
    learning_rate: float = 1e-4
    batch_size: int = 1
    sft_weight: float = 1.0
    """Weight of the cross-entropy on the best response of each prompt."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sft_weight < 0:
            raise InvalidInputError(f"sft_weight must be ≥ 0, got {self.sft_weight}")


@dataclass(frozen=True)
class OnlineConfig(TrainConfig):
    """What the online methods share: the policy generates replies to prompts, a reward
    function scores them, and the policy moves towards higher reward while a KL penalty keeps it
    near its reference, maximising E[r(x, y)] − β·KL(π_θ(·|x) ‖ π_ref(·|x))."""

    learning_rate: float = 1e-5
    max_steps: int | None = 20
    """Rollout-and-update rounds (each: batch_size prompts, generation, scoring, updates)."""
    batch_size: int = 8
    """Prompts per step."""
    max_length: int = 192
    """Longest prompt, in tokens; longer prompts are left out (and counted)."""
    max_new_tokens: int = 48
    """Longest reply, in tokens."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts (1.0: the policy's own distribution, which the KL
    estimate assumes)."""
    kl_coef: float = 0.05
    """β, the weight of the KL penalty; the starting value when target_kl is set."""
    target_kl: float | None = None
    """Hold the KL near this with the adaptive controller of Ziegler et al. (2019); ``None``
    keeps β fixed."""
    kl_adapt_rate: float = 0.1
    """K_β of the controller: β ← β·(1 + K_β·clip((KL − target) / target, −0.2, 0.2))."""
    kl_budget: float | None = None
    """Stop the run when the KL of a step exceeds this; the policy of the last step within the
    budget is saved. ``None``: no budget."""
    reward_clip: float | None = None
    """Clip each reply's score to [−reward_clip, reward_clip] before the update."""
    length_penalty: float = 0.0
    """Subtract length_penalty × (reply tokens / max_new_tokens) from each score."""
    missing_eos_penalty: float = 1.0
    """Subtract this from the score of a reply that never ended within max_new_tokens."""
    heldout_every: int = 1
    """Score the rollouts with the held-out scorer every this many steps."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kl_coef < 0:
            raise InvalidInputError(
                f"kl_coef (β) must be ≥ 0, got {self.kl_coef}; 0 turns the KL penalty off"
            )
        for name in ("target_kl", "kl_budget", "reward_clip"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InvalidInputError(f"{name} must be above 0 (or unset), got {value}")
        if self.target_kl is not None and self.kl_coef == 0:
            raise InvalidInputError(
                "target_kl adapts β multiplicatively and cannot move it from 0; "
                "give --kl-coef above 0 with --target-kl"
            )
        if not 0 < self.kl_adapt_rate <= 1:
            raise InvalidInputError(f"kl_adapt_rate must lie in (0, 1], got {self.kl_adapt_rate}")
        if self.max_new_tokens < 1:
            raise InvalidInputError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not self.temperature > 0:
            raise InvalidInputError(f"temperature must be above 0, got {self.temperature}")
        if self.length_penalty < 0 or self.missing_eos_penalty < 0:
            raise InvalidInputError("length_penalty and missing_eos_penalty must be ≥ 0")
        if self.heldout_every < 1:
            raise InvalidInputError(f"heldout_every must be at least 1, got {self.heldout_every}")


@dataclass(frozen=True)
class PPOConfig(OnlineConfig):
    """PPO with a KL penalty to the reference (Schulman et al. 2017; Ziegler et al. 2019), as
    InstructGPT trained it: a value head, GAE, clipped surrogate and value losses."""

    method: ClassVar[str] = "ppo"
    ppo_epochs: int = 2
    """Passes over each step's rollouts."""
    mini_batch_size: int = 4
    """Rollouts per gradient step inside a pass (at most the step's rollouts)."""
    clip_range: float = 0.2
    """ε of the clipped surrogate: the probability ratio is held in [1 − ε, 1 + ε]."""
    clip_range_value: float = 0.2
    """How far the value prediction may move from its rollout value in one step."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    gamma: float = 1.0
    """Discount of GAE."""
    lam: float = 0.95
    """λ of GAE (bias against variance of the advantage)."""
    whiten_rewards: bool = False
    """Normalise the scores of each step to mean 0 and standard deviation 1 before the update."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ppo_epochs < 1 or self.mini_batch_size < 1:
            raise InvalidInputError("ppo_epochs and mini_batch_size must be at least 1")
        if not 0 < self.clip_range < 1 or not self.clip_range_value > 0:
            raise InvalidInputError("clip_range must lie in (0, 1), clip_range_value above 0")
        if not 0 <= self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise InvalidInputError("gamma and lam must lie in [0, 1]")


@dataclass(frozen=True)
class GRPOConfig(OnlineConfig):
    """GRPO (Shao et al. 2024) through TRL: several replies per prompt, each reply's advantage
    is its reward minus the group's mean over the group's standard deviation; KL to the
    reference in the loss (per token)."""

    method: ClassVar[str] = "grpo"
    num_generations: int = 4
    """Replies per prompt (the group)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_generations < 2:
            raise InvalidInputError(
                f"num_generations must be at least 2 (a group), got {self.num_generations}"
            )


@dataclass(frozen=True)
class RLOOConfig(GRPOConfig):
    """REINFORCE leave-one-out (Ahmadian et al. 2024) through TRL: each reply's baseline is the
    mean reward of the other replies to its prompt; KL to the reference in the reward (per
    reply)."""

    method: ClassVar[str] = "rloo"


def _check_type(file: Path, key: str, value: Any, hint: Any) -> None:
    """A YAML value must have its field's type (``1e-4`` is a string to YAML: write 0.0001)."""
    allowed = get_args(hint) or (hint,)
    if value is None and type(None) in allowed:
        return
    if bool in allowed:
        ok = isinstance(value, bool)
    elif float in allowed:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif int in allowed:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif str in allowed or get_origin(hint) is Literal:
        ok = isinstance(value, str) and (get_origin(hint) is not Literal or value in allowed)
    else:
        ok = True
    if not ok:
        names = "/".join(
            repr(a) if get_origin(hint) is Literal else getattr(a, "__name__", str(a))
            for a in allowed
        )
        hint_text = ""
        if isinstance(value, str) and float in allowed:
            hint_text = " (YAML reads 1e-4 as text: write 0.0001 or 1.0e-4)"
        raise InvalidInputError(f"{file}: {key} must be {names}, not {value!r}{hint_text}")


_CONFIGS: dict[str, type[TrainConfig]] = {
    c.method: c
    for c in (
        SFTConfig,
        RewardConfig,
        DPOConfig,
        KTOConfig,
        RRHFConfig,
        PPOConfig,
        RLOOConfig,
        GRPOConfig,
    )
}


def config_for(method: str) -> type[TrainConfig]:
    """The config class of ``method``."""
    try:
        return _CONFIGS[method]
    except KeyError:
        raise InvalidInputError(
            f"unknown training method {method!r}; use one of {', '.join(METHODS)}"
        ) from None
