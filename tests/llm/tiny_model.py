"""A tiny randomly initialised Llama chat model with a word-level tokenizer (fast on CPU).

Its outputs are random words, but it runs the same code path as a real model: chat template,
left-padded batches, sampling, stop strings, end-of-sequence handling.
"""

from __future__ import annotations

from pathlib import Path

_WORD_TEXT = (
    "the a an sea sky sun day night walk talk happy sad blue green red I you we they it "
    "is was are like love see go went to by with and or but in on at of for from friend "
    "family alone city park river cafe coffee tea book music song rain wind cold warm "
    "morning evening photo diary today yesterday tomorrow very quite so much many little "
    "big small new old good bad nice calm quiet loud long short time place mood company"
)
WORDS = tuple(_WORD_TEXT.split())
SPECIALS = ("<pad>", "<unk>", "<|im_start|>", "<|im_end|>")
ROLES = ("system", "user", "assistant")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> "
    "{% endfor %}{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)


def build_tiny_chat_model(folder: Path, *, seed: int = 0, layers: int = 2) -> None:
    """Write a tiny chat model and its tokenizer into ``folder`` (save_pretrained format)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate((*SPECIALS, *ROLES, *WORDS))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=vocab["<pad>"],
        eos_token_id=vocab["<|im_end|>"],
        bos_token_id=None,
        initializer_range=0.5,  # spread logits, so greedy choices are not near-ties
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
