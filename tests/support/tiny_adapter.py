"""Trained adapter folders on the tiny Llama, as ``prefloop train`` leaves them, for arm tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest


def build_tiny_adapter(base_folder: Path, out: Path, *, seed: int, scale: float = 0.5) -> Path:
    """A LoRA adapter on ``base_folder`` whose B weights are random (so it changes the outputs),
    saved with the tokenizer and a ``prefloop-train.json`` manifest."""
    import torch
    from peft import LoraConfig, get_peft_model

    from prefloop.train.models import TrainedManifest, load_base, write_manifest

    model, tokenizer = load_base(base_folder)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    peft_model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_manifest(out, TrainedManifest(method="dpo", base=str(base_folder), adapter=True))
    return out


@dataclass(frozen=True)
class TinyModels:
    """The tiny base and two adapters trained (perturbed) on it."""

    base: Path
    adapter_a: Path
    adapter_b: Path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """Built once per test session (a few seconds); import it into a test module to use it."""
    from tests.support.tiny_lm import build_tiny_llama

    root = tmp_path_factory.mktemp("tiny-arms")
    base = build_tiny_llama(root / "base")
    return TinyModels(
        base=base,
        adapter_a=build_tiny_adapter(base, root / "adapter-a", seed=1),
        adapter_b=build_tiny_adapter(base, root / "adapter-b", seed=2),
    )
