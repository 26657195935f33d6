"""A tiny randomly initialised Llama with SmolLM2's tokenizer, for the training tests.

Two layers of width 32 over SmolLM2-135M-Instruct's real tokenizer and chat template: it trains
in well under a second per step on a CPU while tokenizing, templating and padding exactly as
the real model does. The tokenizer comes from the packaged model (converted once and cached).
"""

from __future__ import annotations

from pathlib import Path


def build_tiny_llama(
    folder: Path, *, seed: int = 0, layers: int = 2, init_std: float = 0.02
) -> Path:
    """Write the tiny model and SmolLM2's tokenizer into ``folder`` (save_pretrained format).

    ``init_std`` is the spread of the random weights: the default gives a nearly uniform
    next-token distribution; about 1 gives a peaked one, whose likely tokens a few steps of
    reinforcement learning can visibly move."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from prefloop.llm._cache import smollm2_folder

    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=True,
        initializer_range=init_std,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
