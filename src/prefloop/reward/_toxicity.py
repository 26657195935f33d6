"""The toxicity classifier of the ``toxic-comment-classifier`` package, run with torch.

The package ships Keras weights (``model.weights.h5``) of a small network trained on the
Jigsaw toxic-comment data — word embedding (20,000 words × 50) → bidirectional LSTM (50 units
each way, all steps) → max over time → dense 50 (ReLU) → dense 6 (sigmoid) for toxic, severe
toxic, obscene, threat, insult and identity hate — and a pickled Keras ``Tokenizer``. Its own
code needs TensorFlow; here the weights are read with h5py into the equivalent torch module, and
the tokenizer's word index is read from the pickle by an unpickler that only admits the
tokenizer's plain data (no code runs). Install with
``pip install --no-deps toxic-comment-classifier h5py``.

Keras and torch LSTMs share the gate order (input, forget, cell, output); Keras keeps
``kernel`` as (inputs, 4·units), torch as its transpose, and has a single bias.
"""

from __future__ import annotations

import importlib.util
import pickle
import re
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from prefloop.errors import InvalidInputError

__all__ = ["LABELS", "MAX_TOKENS", "ToxicityClassifier", "load_toxicity_classifier"]

LABELS: tuple[str, ...] = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
MAX_TOKENS = 100
"""The network reads the last 100 words of a text (Keras ``pad_sequences`` keeps the end)."""

_INSTALL = "pip install --no-deps toxic-comment-classifier h5py"


class _TokenizerState:
    """Receives the pickled Keras tokenizer's attributes; has no behaviour of its own."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class _TokenizerUnpickler(pickle.Unpickler):
    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("collections", "OrderedDict"),
            ("collections", "defaultdict"),
            ("builtins", "int"),
            ("builtins", "list"),
            ("builtins", "dict"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if name == "Tokenizer" and module.startswith("keras"):
            return _TokenizerState
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"the toxicity tokenizer may not load {module}.{name}")


def _package_folder() -> Path:
    # find_spec does not run the package's __init__ (which imports TensorFlow).
    spec = importlib.util.find_spec("toxic_classifier")
    if spec is None or not spec.submodule_search_locations:
        raise InvalidInputError(f"the toxicity features need toxic-comment-classifier: {_INSTALL}")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class ToxicityClassifier:
    """The six toxicity probabilities of each text; torch on the CPU, batched."""

    def __init__(self, folder: Path | None = None) -> None:
        import torch

        try:
            import h5py
        except ImportError as exc:
            raise InvalidInputError(f"the toxicity features need h5py: {_INSTALL}") from exc
        folder = folder or _package_folder()
        with open(folder / "tokenizer.pickle", "rb") as handle:
            state = _TokenizerUnpickler(handle).load()
        self.num_words = int(state.num_words)
        self.word_index: dict[str, int] = {
            w: i for w, i in state.word_index.items() if i < self.num_words
        }
        self.lower = bool(state.lower)
        self._filters = re.compile("[" + re.escape(state.filters) + "]")
        self.split = str(state.split)
        with h5py.File(folder / "model.weights.h5", "r") as f:
            layers = f["layers"]

            def weight(path: str) -> torch.Tensor:
                return torch.from_numpy(np.asarray(layers[path], dtype=np.float32))

            embedding = weight("embedding/vars/0")
            lstm = torch.nn.LSTM(50, 50, batch_first=True, bidirectional=True)
            for direction, suffix in (("forward_layer", ""), ("backward_layer", "_reverse")):
                cell = f"bidirectional/{direction}/cell/vars"
                getattr(lstm, f"weight_ih_l0{suffix}").data = weight(f"{cell}/0").T.contiguous()
                getattr(lstm, f"weight_hh_l0{suffix}").data = weight(f"{cell}/1").T.contiguous()
                getattr(lstm, f"bias_ih_l0{suffix}").data = weight(f"{cell}/2")
                getattr(lstm, f"bias_hh_l0{suffix}").data = torch.zeros(200)
            dense = torch.nn.Linear(100, 50)
            dense.weight.data = weight("dense/vars/0").T.contiguous()
            dense.bias.data = weight("dense/vars/1")
            head = torch.nn.Linear(50, len(LABELS))
            head.weight.data = weight("dense_1/vars/0").T.contiguous()
            head.bias.data = weight("dense_1/vars/1")
        self._embedding = torch.nn.Embedding.from_pretrained(embedding, freeze=True)
        self._lstm, self._dense, self._head = lstm.eval(), dense.eval(), head.eval()

    def token_ids(self, text: str) -> list[int]:
        """The Keras tokenizer's ``texts_to_sequences``: lower-case, drop punctuation, split on
        spaces, keep the 20,000 most frequent words."""
        if self.lower:
            text = text.lower()
        words = self._filters.sub(self.split, text).split(self.split)
        return [self.word_index[w] for w in words if w and w in self.word_index]

    def predict(self, texts: list[str], batch: int = 128) -> np.ndarray:
        """Array (len(texts), 6) of probabilities in the order of :data:`LABELS`."""
        import torch

        out = np.empty((len(texts), len(LABELS)), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, len(texts), batch):
                chunk = texts[start : start + batch]
                ids = np.zeros((len(chunk), MAX_TOKENS), dtype=np.int64)  # zeros in front
                for row, text in enumerate(chunk):
                    seq = self.token_ids(text)[-MAX_TOKENS:]
                    if seq:
                        ids[row, MAX_TOKENS - len(seq) :] = seq
                hidden, _ = self._lstm(self._embedding(torch.from_numpy(ids)))
                pooled = hidden.max(dim=1).values
                logits = self._head(torch.relu(self._dense(pooled)))
                out[start : start + len(chunk)] = torch.sigmoid(logits).double().numpy()
        return out


_LOADED: dict[str, ToxicityClassifier] = {}
_LOCK = threading.Lock()


def load_toxicity_classifier() -> ToxicityClassifier:
    """The process-wide classifier (loaded once, about a second)."""
    with _LOCK:
        if "model" not in _LOADED:
            _LOADED["model"] = ToxicityClassifier()
        return _LOADED["model"]
