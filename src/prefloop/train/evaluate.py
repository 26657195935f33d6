"""A trained policy against its reference, on held-out prompts.

Both models answer the same prompts (the chat template applied, the prompt as the user
message; batched; greedy, or sampled with a seed). Then:

* **win rate** — a scorer (a prefloop reward model, or any ``(prompts, completions) ->
  scores`` function) scores both answers to each prompt; the trained model wins a prompt when
  its answer scores higher, a tie counts half. The 95% interval is a seeded percentile
  bootstrap over prompts. A prompt whose answers the scorer could not score (``None``, NaN, or
  the call failed) is dropped and counted, never scored as a loss.
* **KL to the reference** — on the trained model's own answers (the end-of-text token
  included), the log-probability the trained model gave each answer token less the one the
  reference gave it, averaged per token (``kl_per_token``: the usual Monte Carlo estimate of
  KL(policy ‖ reference), unbiased for sampled answers, and it can come out slightly negative
  when the two are close); and, at the same positions, the KL between the two models' whole
  next-token distributions (``kl_full_per_token``: never negative, and meaningful for greedy
  answers too). Both models go through one forward function, so a disabled or zero adapter
  gives exactly 0.
* **length ratio** — mean answer tokens of the trained model over the reference's.
* **toxicity rate** — the share of answers the packaged toxic-comment classifier rates toxic
  (P(toxic) ≥ the threshold, 0.5), for each model.

The reference of a LoRA adapter is its base with the adapter disabled (one model in memory);
a whole trained model's reference is the base named in its manifest.
:func:`write_eval_report` writes ``report.html`` (side-by-side samples, every model text
escaped), ``rewards.png``, ``lengths.png`` and ``eval.json``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prefloop.errors import ImportFileError, InvalidInputError
from prefloop.train._eval_report import write_eval_report

__all__ = [
    "EvalConfig",
    "EvalSample",
    "PolicyEvaluation",
    "Scorer",
    "evaluate_policy",
    "read_prompts_file",
    "reward_model_scorer",
    "sequence_log_probs",
    "win_rate",
    "write_eval_report",
]

Scorer = Callable[[Sequence[str], Sequence[str]], Sequence[float | None]]
"""``scorer(prompts, completions) -> scores``: one score per completion; ``None`` or NaN means
"could not score" (the prompt is then dropped from the win rate, and counted)."""

Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``, called as generation, the KL pass and scoring advance."""

PHASES = ("trained", "reference", "kl", "scoring")
"""The phases :func:`evaluate_policy` reports to ``progress``: generation by the trained model,
generation by the reference, the log-probability pass, the scorer."""


@dataclass(frozen=True)
class EvalConfig:
    """Settings of :func:`evaluate_policy`."""

    n: int | None = None
    """Evaluate the first ``n`` prompts (``None``: all)."""
    max_new_tokens: int = 64
    """Longest answer, in tokens, of either model."""
    temperature: float = 0.0
    """0: greedy decoding; above 0: sampling at this temperature (seeded by ``seed``)."""
    top_p: float = 1.0
    """Nucleus sampling cut when sampling."""
    seed: int = 0
    """Seeds sampling and the bootstrap."""
    batch_size: int = 8
    """Prompts generated (and scored) together."""
    bootstrap: int = 2000
    """Bootstrap resamples for the win rate's interval."""
    threads: int | None = None
    """torch threads while generating and scoring log-probabilities (``None``: torch's
    default, one per core; on a busy machine 1 can be many times faster)."""
    toxicity: bool = True
    """Measure the toxicity rate of both models' answers (needs ``toxic-comment-classifier``)."""
    toxicity_threshold: float = 0.5
    """An answer counts as toxic when the classifier's P(toxic) is at least this."""

    def check(self) -> None:
        if self.n is not None and self.n < 1:
            raise InvalidInputError(f"n must be >= 1 (or None for all prompts), got {self.n}")
        if self.max_new_tokens < 1:
            raise InvalidInputError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise InvalidInputError(
                f"temperature must be >= 0 (0 is greedy), got {self.temperature}"
            )
        if not 0 < self.top_p <= 1:
            raise InvalidInputError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.threads is not None and self.threads < 1:
            raise InvalidInputError(f"threads must be >= 1 (or None), got {self.threads}")
        if self.batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.bootstrap < 100:
            raise InvalidInputError(f"bootstrap must be >= 100 resamples, got {self.bootstrap}")
        if not 0 < self.toxicity_threshold < 1:
            raise InvalidInputError(
                f"toxicity_threshold must be in (0, 1), got {self.toxicity_threshold}"
            )


@dataclass(frozen=True)
class EvalSample:
    """One prompt's answers side by side, with what was measured on them."""

    prompt: str
    trained: str
    reference: str
    trained_tokens: int
    reference_tokens: int
    kl: float
    """Sum over the trained answer's tokens of log π(token) − log π_ref(token)."""
    kl_full: float
    """Sum over the trained answer's positions of KL(π(·|context) ‖ π_ref(·|context))."""
    kl_tokens: int
    """Tokens in that sum (the answer's tokens and its end-of-text token, if it ended)."""
    trained_reward: float | None
    reference_reward: float | None
    trained_toxicity: float | None = None
    reference_toxicity: float | None = None

    @property
    def outcome(self) -> float | None:
        """1 the trained answer scored higher, 0.5 a tie, 0 lower; ``None`` unscored."""
        if self.trained_reward is None or self.reference_reward is None:
            return None
        if self.trained_reward > self.reference_reward:
            return 1.0
        return 0.5 if self.trained_reward == self.reference_reward else 0.0


@dataclass(frozen=True)
class PolicyEvaluation:
    """What :func:`evaluate_policy` measured; ``to_json()`` for scripts."""

    model: str
    method: str
    base: str
    adapter: bool
    scorer: str
    prompts: int
    """Prompts both models answered."""
    too_long: int
    """Prompts left out because prompt + ``max_new_tokens`` exceed the model's context."""
    scored: int
    """Prompts whose two answers were both scored: the win rate's sample size."""
    unscored: int
    """Prompts dropped from the win rate because the scorer gave no score for an answer."""
    scorer_errors: tuple[str, ...]
    """Distinct messages of scorer calls that failed (their answers count as unscored)."""
    wins: int
    ties: int
    losses: int
    win_rate: float | None
    win_rate_interval: tuple[float, float] | None
    mean_reward_trained: float | None
    mean_reward_reference: float | None
    kl_per_token: float
    """Mean over the trained answers' tokens of log π(token) − log π_ref(token)."""
    kl_full_per_token: float
    """Mean over the same positions of the KL between the two next-token distributions."""
    kl_per_answer: float
    mean_tokens_trained: float
    mean_tokens_reference: float
    length_ratio: float | None
    toxicity_threshold: float | None
    toxicity_trained: float | None
    toxicity_reference: float | None
    config: EvalConfig
    seconds: float
    samples: tuple[EvalSample, ...] = field(repr=False)
    files: dict[str, str] = field(default_factory=dict)

    def to_json(self, *, samples: bool = False) -> dict[str, Any]:
        """The figures as one JSON-able object; ``samples=True`` adds every answer pair."""
        out = {k: v for k, v in asdict(self).items() if k != "samples"}
        out["scorer_errors"] = list(self.scorer_errors)
        out["verdict"] = self.verdict
        if self.win_rate_interval is not None:
            out["win_rate_interval"] = list(self.win_rate_interval)
        if samples:
            out["samples"] = [asdict(s) for s in self.samples]
        return out

    @property
    def verdict(self) -> str:
        """One sentence: the win rate, its interval, and whether it excludes a coin flip."""
        from prefloop.train._eval_report import verdict

        return verdict(self)

    def with_files(self, files: dict[str, Path]) -> PolicyEvaluation:
        from dataclasses import replace

        return replace(self, files={k: str(v) for k, v in files.items()})


# -- prompts and scorers -----------------------------------------------------------------------
def read_prompts_file(path: str | Path) -> list[str]:
    """The ``prompt`` of each line of a JSONL file (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(
            f"prompts file {str(path)!r} does not exist; give a JSONL file with one "
            '{"prompt": "..."} object per line'
        )
    prompts: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ImportFileError(str(path), number, f"not JSON ({exc.msg})") from None
            value = row.get("prompt") if isinstance(row, dict) else None
            if not isinstance(value, str) or not value.strip():
                raise ImportFileError(
                    str(path),
                    number,
                    'each line needs a non-empty "prompt" string, e.g. '
                    '{"prompt": "Write one line about Busan."}',
                )
            prompts.append(value)
    if not prompts:
        raise InvalidInputError(
            f'{path} holds no prompts; give one {{"prompt": "..."}} object per line'
        )
    return prompts


def reward_model_scorer(model: Any) -> Scorer:
    """A prefloop reward model (:func:`prefloop.reward.load_reward_model`) as a scorer: its raw
    score of each completion given its prompt; NaN (a judge that failed) becomes ``None``."""

    def score(prompts: Sequence[str], completions: Sequence[str]) -> list[float | None]:
        raw = np.asarray(model.score(list(completions), list(prompts)), dtype=np.float64)
        return [float(x) if math.isfinite(x) else None for x in raw]

    return score


def _scorer_name(scorer: Any) -> str:
    name = getattr(scorer, "name", None) or getattr(scorer, "__name__", None)
    return str(name or type(scorer).__name__)


# -- the statistics ----------------------------------------------------------------------------
def win_rate(
    outcomes: Sequence[float], *, resamples: int = 2000, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """Mean of ``outcomes`` (1 win, 0.5 tie, 0 loss) and its 95% percentile bootstrap interval
    over the prompts (``resamples`` resamples, seeded)."""
    values = np.asarray(outcomes, dtype=np.float64)
    if values.size == 0:
        raise InvalidInputError("no scored prompt: a win rate needs at least one")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, values.size, size=(resamples, values.size))
    means = values[draws].mean(axis=1)  # (resamples,)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(values.mean()), (float(low), float(high))


# -- generation and log-probabilities ----------------------------------------------------------
def _prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _end_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    config = getattr(model, "generation_config", None)
    for source in (getattr(config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, list | tuple):
            ids.update(int(x) for x in source)
    if tokenizer.pad_token_id is not None:
        ids.add(int(tokenizer.pad_token_id))
    return ids


def _batches(order: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(order), size):
        yield list(order[start : start + size])


def _generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[list[int]],
    config: EvalConfig,
    progress: Callable[[int], None],
) -> list[list[int]]:
    """Each prompt's answer as token ids, ending with its end-of-text token when it ended
    (left-padded batches, longest prompts first; sampling seeded for the whole call)."""
    import torch

    end_ids = _end_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(end_ids)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    answers: list[list[int]] = [[] for _ in prompts]
    sampling: dict[str, Any] = (
        {"do_sample": False}
        if config.temperature == 0
        else {"do_sample": True, "temperature": config.temperature, "top_p": config.top_p}
    )
    if sampling["do_sample"]:
        sampling["top_k"] = 0
    device = next(model.parameters()).device
    done = 0
    from prefloop.llm._local import _seeded  # the local backend's seeding, devices included

    with _seeded(config.seed), torch.inference_mode():
        for chunk in _batches(order, config.batch_size):
            rows = [prompts[i] for i in chunk]
            width = max(len(r) for r in rows)
            input_ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows])
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=config.max_new_tokens,
                pad_token_id=pad_id,
                eos_token_id=sorted(end_ids),
                **sampling,
            )
            for i, row in zip(chunk, output[:, width:].tolist(), strict=True):
                end = next((k for k, token in enumerate(row) if token in end_ids), None)
                answers[i] = row if end is None else row[: end + 1]
            done += len(chunk)
            progress(done)
    return answers


def _answer_log_probs(
    model: Any, prompts: Sequence[list[int]], completions: Sequence[list[int]]
) -> tuple[Any, Any, Any]:
    """One batch through ``model``: ``(log_probs, tokens, mask)`` where ``log_probs[b, k]`` is
    the next-token log-distribution (over the vocabulary) that predicted completion token
    ``tokens[b, k]``; shapes (B, A, V), (B, A), (B, A) with A the longest completion.

    Rows are prompt + completion, right-padded, so positions count from 0 in every row; the
    policy and the reference both go through this one function.
    """
    import torch

    device = next(model.parameters()).device
    rows = [list(p) + list(c) for p, c in zip(prompts, completions, strict=True)]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows], device=device)  # (B, W)
    attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    logits = model(input_ids=ids, attention_mask=attention).logits  # (B, W, V)
    longest = max(len(c) for c in completions)
    # position len(prompt) - 1 + k predicts completion token k
    first = torch.tensor([len(p) - 1 for p in prompts], device=device)
    steps = torch.arange(longest, device=device)
    mask = steps[None, :] < torch.tensor([len(c) for c in completions], device=device)[:, None]
    positions = torch.where(mask, first[:, None] + steps[None, :], first[:, None])  # (B, A)
    batch = torch.arange(len(rows), device=device)[:, None]
    log_probs = torch.log_softmax(logits[batch, positions].float(), dim=-1)  # (B, A, V)
    tokens = torch.where(mask, ids[batch, (positions + 1).clamp(max=width - 1)], 0)  # (B, A)
    return log_probs, tokens, mask


def sequence_log_probs(
    model: Any,
    prompts: Sequence[list[int]],
    completions: Sequence[list[int]],
    *,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[np.ndarray]:
    """log p(token | prompt, earlier tokens) of each completion token under ``model``: one
    float64 array per completion (batched forward passes, right-padded)."""
    import torch

    out: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            stop = min(start + batch_size, len(prompts))
            log_probs, tokens, mask = _answer_log_probs(
                model, prompts[start:stop], completions[start:stop]
            )
            taken = log_probs.gather(-1, tokens[..., None]).squeeze(-1)  # (B, A)
            out += [row[keep].double().cpu().numpy() for row, keep in zip(taken, mask, strict=True)]
            if progress is not None:
                progress(stop)
    return out


def _kl_to_reference(
    models: _Models,
    prompts: Sequence[list[int]],
    completions: Sequence[list[int]],
    batch_size: int,
    progress: Callable[[int], None],
) -> list[tuple[float, float]]:
    """Per completion ``(sampled, full)``: the sum over its tokens of log π(y) − log π_ref(y)
    of the token taken, and of KL(π(·|ctx) ‖ π_ref(·|ctx)) over the whole vocabulary at
    each of its positions (never negative)."""
    import torch

    out: list[tuple[float, float]] = []
    reference_model, reference_mode = models.reference_mode()
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            stop = min(start + batch_size, len(prompts))
            chunk_p, chunk_c = prompts[start:stop], completions[start:stop]
            policy, tokens, mask = _answer_log_probs(models.policy, chunk_p, chunk_c)
            with reference_mode():
                reference, _, _ = _answer_log_probs(reference_model, chunk_p, chunk_c)
            gap = policy - reference  # (B, A, V) log-ratio of every next token
            sampled = (gap.gather(-1, tokens[..., None]).squeeze(-1) * mask).sum(-1)  # (B,)
            full = ((policy.exp() * gap).sum(-1) * mask).sum(-1)  # (B,)
            out += [(float(a), float(b)) for a, b in zip(sampled, full, strict=True)]
            progress(stop)
    return out


# -- the evaluation ----------------------------------------------------------------------------
@dataclass
class _Models:
    policy: Any
    tokenizer: Any
    reference: Any | None
    """A separate reference model, or ``None`` when it is ``policy`` with its adapter off."""
    manifest: Any

    def reference_mode(self) -> tuple[Any, Callable[[], AbstractContextManager[Any]]]:
        """The reference model, and the context in which it is the reference (the adapter
        switched off, for an adapter)."""
        if self.reference is not None:
            return self.reference, nullcontext
        return self.policy, self.policy.disable_adapter


def _load_models(model_dir: Path) -> _Models:
    from prefloop.train.models import load_base, load_trained, read_manifest

    if not model_dir.is_dir():
        raise InvalidInputError(
            f"model folder {str(model_dir)!r} does not exist; give the --out folder of a "
            "`prefloop train` run"
        )
    manifest = read_manifest(model_dir)
    policy, tokenizer, manifest = load_trained(model_dir)
    reference = None
    if not manifest.adapter:
        reference, ref_tokenizer = load_base(manifest.base)
        reference.eval()
        if ref_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise InvalidInputError(
                f"{model_dir} and its base {manifest.base} have different vocabularies, so "
                "their log-probabilities cannot be compared; evaluate against the base it was "
                "trained from"
            )
    elif not hasattr(policy, "disable_adapter"):
        raise InvalidInputError(f"{model_dir} says it holds an adapter, but none loaded")
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidInputError(
            f"the tokenizer in {model_dir} has no chat template, so prompts cannot be put as a "
            "user message; train from an instruct model or set tokenizer.chat_template"
        )
    return _Models(policy, tokenizer, reference, manifest)


def _score_all(
    scorer: Scorer, prompts: Sequence[str], texts: Sequence[str], batch_size: int, tick: Progress
) -> tuple[list[float | None], list[str]]:
    """Scores in batches; a batch whose call fails is left unscored and its error kept."""
    scores: list[float | None] = []
    errors: list[str] = []
    for start in range(0, len(texts), batch_size):
        chunk_p, chunk_t = prompts[start : start + batch_size], texts[start : start + batch_size]
        try:
            got = list(scorer(chunk_p, chunk_t))
            if len(got) != len(chunk_t):
                raise InvalidInputError(
                    f"the scorer returned {len(got)} scores for {len(chunk_t)} texts"
                )
            scores += [float(x) if x is not None and math.isfinite(float(x)) else None for x in got]
        except Exception as exc:  # a failed call drops its samples; it is no score of 0
            errors.append(f"{type(exc).__name__}: {exc}")
            scores += [None] * len(chunk_t)
        tick("scoring", len(scores), len(texts))
    return scores, errors


def _toxicity(texts: Sequence[str]) -> np.ndarray:
    from prefloop.reward._toxicity import LABELS, load_toxicity_classifier

    return load_toxicity_classifier().predict(list(texts))[:, LABELS.index("toxic")]


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def evaluate_policy(
    model_dir: str | Path,
    prompts: Sequence[str],
    scorer: Scorer | Any,
    config: EvalConfig | None = None,
    *,
    scorer_name: str | None = None,
    progress: Progress | None = None,
) -> PolicyEvaluation:
    """Generate from the trained model in ``model_dir`` and from its reference on ``prompts``
    and compare them (see the module's documentation).

    ``scorer`` is a :data:`Scorer` function or a prefloop reward model (anything with
    ``score(texts, prompts)``); ``scorer_name`` is how the result names it (e.g. its folder).
    ``progress(phase, done, total)`` follows the :data:`PHASES`. Raises
    :class:`InvalidInputError` for a folder prefloop did not train, no prompts, or when no
    prompt could be scored at all.
    """
    config = config or EvalConfig()
    config.check()
    started = time.perf_counter()
    prompt_list = [str(p) for p in prompts][: config.n]
    if not prompt_list:
        raise InvalidInputError("no prompts to evaluate on; give at least one")
    scorer_name = scorer_name or _scorer_name(scorer)
    score_fn: Scorer = reward_model_scorer(scorer) if hasattr(scorer, "score") else scorer
    if config.toxicity:
        _toxicity([""])  # a missing classifier fails before any generation
    tick: Progress = progress or (lambda _phase, _done, _total: None)
    model_dir = Path(model_dir)
    models = _load_models(model_dir)

    # Prompts the context cannot hold with a full answer are left out (and counted).
    encoded = [_prompt_ids(models.tokenizer, p) for p in prompt_list]
    context = getattr(models.policy.config, "max_position_embeddings", None)
    keep = [
        i
        for i, ids in enumerate(encoded)
        if not isinstance(context, int) or len(ids) + config.max_new_tokens <= context
    ]
    too_long = len(prompt_list) - len(keep)
    if not keep:
        raise InvalidInputError(
            f"every prompt is longer than the model's context of {context} tokens less "
            f"max_new_tokens={config.max_new_tokens}; shorten the prompts or lower it"
        )
    texts_in = [prompt_list[i] for i in keep]
    ids_in = [encoded[i] for i in keep]
    total = len(ids_in)

    from prefloop.llm._local import _torch_threads  # the local backend's thread setting

    with _torch_threads(config.threads):
        trained = _generate(
            models.policy, models.tokenizer, ids_in, config, lambda d: tick("trained", d, total)
        )
        reference_model, reference_mode = models.reference_mode()
        with reference_mode():
            reference = _generate(
                reference_model,
                models.tokenizer,
                ids_in,
                config,
                lambda d: tick("reference", d, total),
            )
        kl = _kl_to_reference(
            models, ids_in, trained, config.batch_size, lambda d: tick("kl", d, total)
        )

    end_ids = _end_ids(models.policy, models.tokenizer)

    def answer(ids: list[int]) -> list[int]:
        return ids[:-1] if ids and ids[-1] in end_ids else ids

    trained_text = [models.tokenizer.decode(answer(a), skip_special_tokens=True) for a in trained]
    reference_text = [
        models.tokenizer.decode(answer(a), skip_special_tokens=True) for a in reference
    ]
    rewards, errors = _score_all(
        score_fn, texts_in + texts_in, trained_text + reference_text, config.batch_size, tick
    )
    trained_reward, reference_reward = rewards[:total], rewards[total:]
    if config.toxicity:
        tox = _toxicity(trained_text + reference_text)
        tox_trained: list[float | None] = [float(x) for x in tox[:total]]
        tox_reference: list[float | None] = [float(x) for x in tox[total:]]
    else:
        tox_trained = tox_reference = [None] * total

    samples = tuple(
        EvalSample(
            prompt=texts_in[i],
            trained=trained_text[i],
            reference=reference_text[i],
            trained_tokens=len(answer(trained[i])),
            reference_tokens=len(answer(reference[i])),
            kl=kl[i][0],
            kl_full=kl[i][1],
            kl_tokens=len(trained[i]),
            trained_reward=trained_reward[i],
            reference_reward=reference_reward[i],
            trained_toxicity=tox_trained[i],
            reference_toxicity=tox_reference[i],
        )
        for i in range(total)
    )
    outcomes = [s.outcome for s in samples if s.outcome is not None]
    if not outcomes:
        why = f" (it failed: {errors[0]})" if errors else ""
        raise InvalidInputError(
            f"the scorer {scorer_name} scored no prompt's pair of answers{why}; check that it "
            "works on these texts"
        )
    rate, interval = win_rate(outcomes, resamples=config.bootstrap, seed=config.seed)
    kl_tokens = sum(s.kl_tokens for s in samples)
    tokens_trained = float(np.mean([s.trained_tokens for s in samples]))
    tokens_reference = float(np.mean([s.reference_tokens for s in samples]))
    threshold = config.toxicity_threshold

    def toxic_rate(values: Sequence[float | None]) -> float | None:
        if not config.toxicity:
            return None
        return float(np.mean([v is not None and v >= threshold for v in values]))

    return PolicyEvaluation(
        model=str(model_dir),
        method=models.manifest.method,
        base=models.manifest.base,
        adapter=models.manifest.adapter,
        scorer=scorer_name,
        prompts=total,
        too_long=too_long,
        scored=len(outcomes),
        unscored=total - len(outcomes),
        scorer_errors=tuple(dict.fromkeys(errors)),
        wins=sum(o == 1.0 for o in outcomes),
        ties=sum(o == 0.5 for o in outcomes),
        losses=sum(o == 0.0 for o in outcomes),
        win_rate=rate,
        win_rate_interval=interval,
        mean_reward_trained=_mean(trained_reward),
        mean_reward_reference=_mean(reference_reward),
        kl_per_token=float(sum(s.kl for s in samples) / max(kl_tokens, 1)),
        kl_full_per_token=float(sum(s.kl_full for s in samples) / max(kl_tokens, 1)),
        kl_per_answer=float(np.mean([s.kl for s in samples])),
        mean_tokens_trained=tokens_trained,
        mean_tokens_reference=tokens_reference,
        length_ratio=tokens_trained / tokens_reference if tokens_reference > 0 else None,
        toxicity_threshold=threshold if config.toxicity else None,
        toxicity_trained=toxic_rate(tox_trained),
        toxicity_reference=toxic_rate(tox_reference),
        config=config,
        seconds=round(time.perf_counter() - started, 2),
        samples=samples,
    )
