"""Reference log-probabilities computed once and kept on disk, across runs.

DPO and its relatives compare the policy's log-probability of each reply with the reference
model's. The reference never changes during a run, so TRL can compute its log-probs in one pass
before training (``precompute_ref_log_probs``) instead of one extra forward per step — but it
forgets them when the run ends. Here they are saved under prefloop's cache folder, keyed by the
base model's fingerprint, the data's fingerprint and the tokenisation settings, and a later run
on the same data and base skips the pass entirely.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from prefloop._files import atomic_path
from prefloop.llm._cache import cache_root

__all__ = ["ReferenceCache", "model_fingerprint"]

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")
_SAMPLE_BYTES = 1 << 20


def model_fingerprint(folder: Path) -> str:
    """sha256 over a model folder's config, tokenizer files and weights (each weight file by its
    size, modification time and first and last megabyte, so a 500 MB model is fingerprinted in
    milliseconds; a copied folder gets a new fingerprint, which only costs one recomputation)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder).as_posix()
        if relative.startswith(".") or "/." in relative:
            continue
        digest.update(relative.encode())
        stat = path.stat()
        size = stat.st_size
        # the modification time too: a file rewritten in place with the same size is new
        digest.update(f"{size}:{stat.st_mtime_ns}".encode())
        with path.open("rb") as handle:
            if path.suffix in _WEIGHT_SUFFIXES and size > 2 * _SAMPLE_BYTES:
                digest.update(handle.read(_SAMPLE_BYTES))
                handle.seek(size - _SAMPLE_BYTES)
                digest.update(handle.read(_SAMPLE_BYTES))
            else:
                digest.update(handle.read())
    return digest.hexdigest()


def cache_folder() -> Path:
    """Where reference log-probs are kept: ``$PREFLOOP_REFERENCE_CACHE`` if set, else
    ``<prefloop cache>/reference-logps``."""
    explicit = os.environ.get("PREFLOOP_REFERENCE_CACHE")
    return Path(explicit).expanduser() if explicit else cache_root() / "reference-logps"


class ReferenceCache:
    """The cached reference log-probs of one (base, data, settings) triple."""

    def __init__(self, *, base_fingerprint: str, data_fingerprint: str, settings: dict[str, Any]):
        blob = json.dumps(
            {"base": base_fingerprint, "data": data_fingerprint, "settings": settings},
            sort_keys=True,
        )
        self.key = hashlib.sha256(blob.encode()).hexdigest()[:32]
        self.path = cache_folder() / f"{self.key}.npz"
        self.hit: bool | None = None

    def load(self, rows: int) -> dict[str, np.ndarray] | None:
        """The cached columns, or None when absent or not for ``rows`` rows."""
        if not self.path.exists():
            return None
        try:
            with np.load(self.path) as data:
                columns = {name: np.asarray(data[name]) for name in data.files}
        except (OSError, ValueError, KeyError):
            return None  # a damaged file is recomputed, never trusted
        if set(columns) != set(COLUMNS) or any(len(c) != rows for c in columns.values()):
            return None
        return columns

    def save(self, columns: dict[str, np.ndarray]) -> None:
        """Write atomically (a temporary file renamed into place)."""
        with atomic_path(self.path, suffix=".npz") as temporary:
            np.savez(temporary, **columns)  # type: ignore[arg-type]
