"""An LLM as a reward model: a rubric, few-shot examples for each level, a discrete answer.

:class:`LLMJudge` is a ``rating`` reward model like any other, so ``prefloop reward eval``
measures its agreement with people exactly as it measures a regressor. ``fit`` does not train
anything: it picks the few-shot examples (``shots_per_level`` texts per level of the scale,
drawn with ``seed`` from the labeled data). ``score`` asks the LLM for ``Score: <level>`` and
accepts only the scale's exact levels (``+0.5``, ``0.50``, JSON ``{"score": 0.5}`` and
``**Score:** 0.5`` are read as 0.5; ``0.7`` or prose is not). An unreadable answer is retried
with a short correction, a transport error is retried as it was, and after ``max_attempts`` the
item gets NaN — no score, counted in :attr:`LLMJudge.stats` — never a made-up 0.

:meth:`LLMJudge.compare` is the pairwise mode: which of two replies is better, asked in both
orders to cancel position bias (Zheng et al., 2023, "Judging LLM-as-a-judge").
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from prefloop.errors import InvalidInputError
from prefloop.llm.base import (
    ChatBackend,
    Completion,
    GenerationParams,
    LLMError,
    LLMRequestError,
    Message,
)
from prefloop.reward._classes import ModelSpec, register_model
from prefloop.reward._data import Array, RatingData
from prefloop.reward._model import ProgressCallback, RewardModel

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "JudgeConfig",
    "JudgeExample",
    "JudgeFailure",
    "JudgeStats",
    "LLMJudge",
    "format_level",
    "parse_level",
    "parse_winner",
]

JUDGE_FILE = "judge.json"
DEFAULT_RUBRIC = (
    "Judge how good the text is as an answer to its input: correct, helpful, natural and "
    "complete. Higher levels are better."
)
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_LABELLED = re.compile(
    rf"\b(?:score|rating|level)\b[\"']?\s*(?:(?:is|of)\s+)?[:=]?\s*({_NUMBER})", re.I
)
_BARE = re.compile(rf"^\s*({_NUMBER})\s*[.!]?\s*$")
_JSON_OBJECT = re.compile(r"\{[^{}]*\}")
_WINNER = re.compile(
    r"\b(?:winner|better|answer)\b\W{0,3}(?:is\s*)?[:=]?\s*(?:response\s*)?\b([AB])\b", re.I
)
_BARE_WINNER = re.compile(r"^\s*(?:response\s*)?([AB])\s*[.!]?\s*$", re.I)


def format_level(level: float) -> str:
    """A scale level as the judge is asked to write it: ``-1``, ``-0.5``, ``0``, ``0.5``, ``1``."""
    return f"{level:g}"


def _clean(reply: str) -> str:
    """Drop markdown emphasis and code marks; use ASCII minus signs."""
    return reply.replace("−", "-").replace("–", "-").replace("*", "").replace("`", "").strip()


def parse_level(reply: str, scale: Sequence[float]) -> float | None:
    """The scale level a judge's reply names, or None when it names none exactly.

    Read, in this order: a JSON object with ``score`` (or ``rating``); the last ``Score: x``
    (``Rating``/``Level`` too, ``:``/``=``/``is``); a reply that is only a number. The number
    must equal a level (``+0.5`` and ``0.50`` do; ``0.7`` or ``2`` do not).
    """
    text = _clean(reply)
    candidates: list[str] = []
    for blob in _JSON_OBJECT.findall(text):
        try:
            obj = json.loads(blob)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            for key in ("score", "rating", "Score", "Rating"):
                if key in obj and not isinstance(obj[key], bool):
                    candidates.append(str(obj[key]))
                    break
    if not candidates:
        labelled = _LABELLED.findall(text)
        if labelled:
            candidates.append(labelled[-1])
        else:
            bare = _BARE.match(text)
            if bare:
                candidates.append(bare.group(1))
    if not candidates:
        return None
    try:
        value = float(candidates[0].strip())
    except ValueError:
        return None
    for level in scale:
        if math.isclose(value, level, rel_tol=0.0, abs_tol=1e-9):
            return float(level)
    return None


def parse_winner(reply: str) -> Literal["A", "B"] | None:
    """``A`` or ``B`` from a pairwise reply (``Winner: A``, ``{"winner": "B"}``, ``B``)."""
    text = _clean(reply)
    for blob in _JSON_OBJECT.findall(text):
        try:
            obj = json.loads(blob)
        except json.JSONDecodeError:
            continue
        value = obj.get("winner") if isinstance(obj, dict) else None
        if isinstance(value, str) and value.strip().upper() in ("A", "B"):
            return "A" if value.strip().upper() == "A" else "B"
    found = _WINNER.findall(text) or ([m.group(1)] if (m := _BARE_WINNER.match(text)) else [])
    if not found:
        return None
    return "A" if found[-1].upper() == "A" else "B"


@dataclass(frozen=True)
class JudgeConfig:
    """Settings of :class:`LLMJudge`."""

    rubric: str = ""
    """What each level means (the task's rubric); empty uses a generic one."""
    task: str = ""
    """One line on what the texts are, e.g. "diary entries written from a photo"."""
    shots_per_level: int = 1
    """Few-shot examples per level of the scale, picked in ``fit`` (0 = none)."""
    max_example_chars: int = 1200
    """Longer example texts are shortened to this many characters (their beginning)."""
    max_attempts: int = 3
    """LLM calls per item at most, first try included; then the item gets no score."""
    temperature: float = 0.0
    """Sampling temperature of the judge (0 = its most likely answer)."""
    max_tokens: int = 24
    """Tokens the judge may write; ``Score: -0.5`` needs about five."""
    seed: int = 0
    """Picks the few-shot examples and their order; sent to the backend as its seed."""
    backend: str = "openai"
    """How a loaded judge gets its LLM when none is given: ``openai`` or ``local``
    (:func:`prefloop.llm.make_backend`, configured by ``PREFLOOP_LLM_*``)."""

    def check(self) -> None:
        problems = []
        if self.shots_per_level < 0:
            problems.append(f"shots_per_level={self.shots_per_level} (use 0 or more)")
        if self.max_attempts < 1:
            problems.append(f"max_attempts={self.max_attempts} (use 1 or more)")
        if self.max_tokens < 1:
            problems.append(f"max_tokens={self.max_tokens} (use 1 or more, e.g. 24)")
        if self.temperature < 0:
            problems.append(f"temperature={self.temperature} (use 0 or more)")
        if self.max_example_chars < 20:
            problems.append(f"max_example_chars={self.max_example_chars} (use 20 or more)")
        if problems:
            raise InvalidInputError("bad judge settings: " + "; ".join(problems))


@dataclass(frozen=True)
class JudgeExample:
    """One few-shot example: a text people rated ``rating``."""

    text: str
    rating: float
    prompt: str | None = None


@dataclass(frozen=True)
class JudgeFailure:
    """An item the judge could not score, and why (the last problem seen)."""

    index: int
    attempts: int
    reason: str


@dataclass
class JudgeStats:
    """Counts over the life of a judge (``reset`` starts again)."""

    items: int = 0
    """Items asked to score (each pair counts once in ``compare``)."""
    scored: int = 0
    failed: int = 0
    """Items with no score after ``max_attempts``."""
    calls: int = 0
    """LLM calls made, failed ones included."""
    llm_errors: int = 0
    """Calls that raised an LLMError (timeouts, 5xx, garbage bodies, …)."""
    errors: dict[str, int] = field(default_factory=dict)
    """The distinct errors of those calls, each with how often it occurred."""
    unparsable: int = 0
    """Answers that named no level of the scale (retried with a correction)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls_without_usage: int = 0
    """Answers whose backend reported no token counts (not included in the sums)."""
    cost: float = 0.0
    position_inconsistent: int = 0
    """Pairs whose verdict changed when the two replies swapped places (scored 0.5)."""

    def reset(self) -> None:
        for name, value in asdict(JudgeStats()).items():
            setattr(self, name, value)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Job:
    """One question to the judge, carried across attempts."""

    index: int
    messages: list[Message]
    attempts: int = 0
    reason: str = ""
    answer: Any = None
    done: bool = False
    history: list[Message] = field(default_factory=list)


@register_model
class LLMJudge(RewardModel):
    """A rating reward model that asks an LLM (any :class:`ChatBackend`) for a level.

    ``LLMJudge(config, backend=...)``; a judge loaded from a folder makes its backend from the
    environment (``config.backend``) on first use unless one is set with :meth:`use_backend`.
    """

    name = "llm-judge"
    kind = "rating"
    config_type = JudgeConfig

    config: JudgeConfig

    @classmethod
    def config_for(cls, spec: ModelSpec) -> JudgeConfig:
        """The defaults with ``spec.seed``, and the task's rubric and description when given."""
        config = JudgeConfig(seed=spec.seed)
        if spec.rubric or spec.description:
            config = replace(config, rubric=spec.rubric, task=spec.description)
        return config

    def __init__(self, config: JudgeConfig | None = None, *, backend: ChatBackend | None = None):
        super().__init__(config)
        self._backend = backend
        self.examples_: list[JudgeExample] = []
        self.scale_: tuple[float, ...] = ()
        self.missing_levels_: list[float] = []
        self.stats = JudgeStats()
        self.failures_: list[JudgeFailure] = []
        """The items of the last ``score``/``compare`` call that got no score."""

    # ---- backend ---------------------------------------------------------------------------
    def use_backend(self, backend: ChatBackend) -> LLMJudge:
        self._backend = backend
        return self

    @property
    def backend(self) -> ChatBackend:
        if self._backend is None:
            from prefloop.llm import make_backend

            self._backend = make_backend(self.config.backend)
        return self._backend

    # ---- fit = choose the few-shot examples -------------------------------------------------
    def _fit(self, data: RatingData, progress: ProgressCallback | None) -> None:
        cfg = self.config
        cfg.check()
        rng = np.random.default_rng(cfg.seed)
        self.scale_ = data.scale
        examples: list[JudgeExample] = []
        self.missing_levels_ = []
        for level in data.scale:
            at_level = np.flatnonzero(np.isclose(data.ratings, level, rtol=0.0, atol=1e-9))
            if at_level.size == 0:
                self.missing_levels_.append(level)
                continue
            take = min(cfg.shots_per_level, at_level.size)
            for i in sorted(rng.choice(at_level, size=take, replace=False).tolist()):
                examples.append(JudgeExample(data.texts[i], level, data.prompts[i]))
        self.examples_ = [examples[i] for i in rng.permutation(len(examples))]
        if self.missing_levels_ and cfg.shots_per_level > 0:
            missing = ", ".join(format_level(v) for v in self.missing_levels_)
            warnings.warn(
                f"no labeled example at level(s) {missing} of the scale; the judge sees none "
                "for them (add ratings at those levels to show it one)",
                stacklevel=3,
            )

    # ---- the prompt ------------------------------------------------------------------------
    def _levels_text(self) -> str:
        return ", ".join(format_level(v) for v in self.scale_)

    def _system_message(self) -> Message:
        cfg = self.config
        what = cfg.task.strip() or "texts written by an AI assistant"
        content = (
            f"You are a careful rater of {what}.\n\n"
            f"Rubric:\n{cfg.rubric.strip() or DEFAULT_RUBRIC}\n\n"
            f"The rating scale has exactly these levels, from worst to best: "
            f"{self._levels_text()}.\n"
            "Answer with a single line `Score: <level>` using one of those levels exactly, "
            "and nothing else."
        )
        return {"role": "system", "content": content}

    def _item_message(self, text: str, prompt: str | None, limit: int | None = None) -> Message:
        body = text if limit is None or len(text) <= limit else text[:limit] + " […]"
        context = f"Input:\n{prompt.strip()}\n\n" if prompt and prompt.strip() else ""
        return {"role": "user", "content": f"{context}Text to rate:\n<<<\n{body}\n>>>"}

    def messages_for(self, text: str, prompt: str | None = None) -> list[Message]:
        """The conversation the judge is sent for one text (system, examples, the text)."""
        messages: list[Message] = [self._system_message()]
        for ex in self.examples_:
            messages.append(self._item_message(ex.text, ex.prompt, self.config.max_example_chars))
            messages.append({"role": "assistant", "content": f"Score: {format_level(ex.rating)}"})
        messages.append(self._item_message(text, prompt))
        return messages

    def _correction(self) -> Message:
        return {
            "role": "user",
            "content": "That is not one of the allowed answers. Reply with exactly one line "
            f"`Score: <level>` where <level> is one of: {self._levels_text()}.",
        }

    # ---- asking ----------------------------------------------------------------------------
    def _params(self) -> GenerationParams:
        cfg = self.config
        return GenerationParams(
            max_tokens=cfg.max_tokens, temperature=cfg.temperature, seed=cfg.seed
        )

    def _account(self, result: Completion | LLMError) -> None:
        self.stats.calls += 1
        if isinstance(result, LLMError):
            self.stats.llm_errors += 1
            error = f"{type(result).__name__}: {result}"
            self.stats.errors[error] = self.stats.errors.get(error, 0) + 1
            return
        if result.prompt_tokens is None or result.completion_tokens is None:
            self.stats.calls_without_usage += 1
        else:
            self.stats.prompt_tokens += result.prompt_tokens
            self.stats.completion_tokens += result.completion_tokens
        if result.cost is not None:
            self.stats.cost += result.cost

    def _run(
        self,
        jobs: list[_Job],
        parse: Callable[[str], Any],
        correction: Message,
        progress: ProgressCallback | None,
        what: str,
    ) -> None:
        """Ask every job until it parses or runs out of attempts, in batched rounds."""
        params = self._params()
        pending = list(jobs)
        finished = 0
        for _ in range(self.config.max_attempts):
            if not pending:
                break
            results = self.backend.complete_batch([j.messages + j.history for j in pending], params)
            if len(results) != len(pending):
                raise LLMError(
                    f"backend {self.backend.name} returned {len(results)} results for "
                    f"{len(pending)} conversations"
                )
            still: list[_Job] = []
            for job, result in zip(pending, results, strict=True):
                job.attempts += 1
                self._account(result)
                if isinstance(result, LLMError):
                    job.reason = f"{type(result).__name__}: {result}"
                    if not isinstance(result, LLMRequestError):  # a rejected request stays so
                        still.append(job)
                    continue
                answer = parse(result.text)
                if answer is None:
                    self.stats.unparsable += 1
                    job.reason = f"unreadable answer {result.text[:80]!r}"
                    job.history = [{"role": "assistant", "content": result.text}, correction]
                    still.append(job)
                    continue
                job.answer, job.done = answer, True
                finished += 1
            pending = still
            if progress is not None:
                progress(what, finished, len(jobs))

    def _score(self, texts: list[str], prompts: list[str | None]) -> Array:
        return self._judge(texts, prompts, None)

    def score_with_progress(
        self,
        texts: Sequence[str],
        prompts: Sequence[str | None] | None = None,
        progress: ProgressCallback | None = None,
    ) -> Array:
        """Like :meth:`score`, reporting ``progress("judging", done, total)`` after each round."""
        if not self.is_fitted:
            raise InvalidInputError("this judge is not fitted; call fit first")
        text_list = list(texts)
        prompt_list: list[str | None] = (
            [None] * len(text_list) if prompts is None else list(prompts)
        )
        if len(prompt_list) != len(text_list):
            raise InvalidInputError(f"{len(text_list)} texts but {len(prompt_list)} prompts")
        return self._judge(text_list, prompt_list, progress)

    def _judge(
        self, texts: list[str], prompts: list[str | None], progress: ProgressCallback | None
    ) -> Array:
        if not self.scale_:
            raise InvalidInputError("this judge has no scale; fit it on rating data first")
        jobs = [
            _Job(i, self.messages_for(t, p))
            for i, (t, p) in enumerate(zip(texts, prompts, strict=True))
        ]
        scale = self.scale_
        self._run(
            jobs, lambda reply: parse_level(reply, scale), self._correction(), progress, "judging"
        )
        out = np.full(len(jobs), np.nan)
        self.failures_ = []
        self.stats.items += len(jobs)
        for job in jobs:
            if job.done:
                out[job.index] = float(job.answer)
                self.stats.scored += 1
            else:
                self.failures_.append(JudgeFailure(job.index, job.attempts, job.reason))
                self.stats.failed += 1
        return out

    # ---- pairwise mode ---------------------------------------------------------------------
    def _pair_messages(self, prompt: str | None, first: str, second: str) -> list[Message]:
        cfg = self.config
        what = cfg.task.strip() or "replies written by an AI assistant"
        system = (
            f"You compare two {what} and say which is better.\n\n"
            f"Rubric:\n{cfg.rubric.strip() or DEFAULT_RUBRIC}\n\n"
            "Answer with a single line `Winner: A` or `Winner: B`, and nothing else."
        )
        context = f"Input:\n{prompt.strip()}\n\n" if prompt and prompt.strip() else ""
        user = f"{context}Response A:\n<<<\n{first}\n>>>\n\nResponse B:\n<<<\n{second}\n>>>"
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def compare(
        self,
        first: Sequence[str],
        second: Sequence[str],
        prompts: Sequence[str | None] | None = None,
        progress: ProgressCallback | None = None,
    ) -> Array:
        """P(first[i] is better than second[i]): 1, 0, 0.5 when the verdict follows the position
        (counted in ``stats.position_inconsistent``), NaN when either order got no answer.

        Each pair is asked twice, the replies swapped the second time. Needs no ``fit``.
        """
        self.config.check()
        a, b = list(first), list(second)
        p = [None] * len(a) if prompts is None else list(prompts)
        if not (len(a) == len(b) == len(p)):
            raise InvalidInputError(
                f"compare needs as many second texts and prompts as first texts; got {len(a)}, "
                f"{len(b)} and {len(p)}"
            )
        n = len(a)
        jobs = [_Job(i, self._pair_messages(p[i], a[i], b[i])) for i in range(n)]
        jobs += [_Job(n + i, self._pair_messages(p[i], b[i], a[i])) for i in range(n)]
        correction: Message = {
            "role": "user",
            "content": "Reply with exactly one line: `Winner: A` or `Winner: B`.",
        }
        self._run(jobs, parse_winner, correction, progress, "comparing")
        out = np.full(n, np.nan)
        self.failures_ = []
        self.stats.items += n
        for i in range(n):
            straight, swapped = jobs[i], jobs[n + i]
            if not (straight.done and swapped.done):
                bad = straight if not straight.done else swapped
                self.failures_.append(
                    JudgeFailure(i, straight.attempts + swapped.attempts, bad.reason)
                )
                self.stats.failed += 1
                continue
            first_wins = (straight.answer == "A") + (swapped.answer == "B")  # 0, 1 or 2 votes
            out[i] = first_wins / 2.0
            self.stats.position_inconsistent += int(first_wins == 1)
            self.stats.scored += 1
        return out

    # ---- saved folder ----------------------------------------------------------------------
    def _save_files(self, folder: Path) -> None:
        payload = {
            "scale": list(self.scale_),
            "missing_levels": self.missing_levels_,
            "examples": [asdict(ex) for ex in self.examples_],
            "backend_at_save": None if self._backend is None else self._backend.name,
        }
        (folder / JUDGE_FILE).write_text(
            json.dumps(payload, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
        )

    def _load_files(self, folder: Path) -> None:
        path = folder / JUDGE_FILE
        if not path.exists():
            raise InvalidInputError(f"{folder} has no {JUDGE_FILE}; it is not a saved LLM judge")
        payload = json.loads(path.read_text(encoding="utf-8"))
        self.scale_ = tuple(float(v) for v in payload["scale"])
        self.missing_levels_ = [float(v) for v in payload.get("missing_levels", [])]
        self.examples_ = [
            JudgeExample(str(e["text"]), float(e["rating"]), e.get("prompt"))
            for e in payload["examples"]
        ]
