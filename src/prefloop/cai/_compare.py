"""An LLM judge that compares two replies under a principle, as a multiple-choice question.

The question follows Constitutional AI's feedback prompt (Bai et al., 2022): the conversation,
the principle's comparison question, the two replies as options ``(A)`` and ``(B)``, and the
answer asked for as one of the two letters. Each pair is asked twice with the replies swapped,
which cancels the judge's preference for a position (Zheng et al., 2023, "Judging
LLM-as-a-judge"): two votes for the same reply make it the winner, a split vote is a tie.

A call that fails (after the backend's own retries) or an answer that names neither option is
asked again, up to ``max_attempts`` calls per order; a pair left without both answers gets no
verdict — never a made-up one — and is listed in :attr:`Comparisons.failures`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from prefloop.cai._constitution import Principle
from prefloop.errors import InvalidInputError
from prefloop.io.readers import hh_messages
from prefloop.llm.base import (
    ChatBackend,
    GenerationParams,
    LLMError,
    LLMRequestError,
    Message,
)
from prefloop.reward.judge import parse_winner

Choice = Literal["A", "B"]
Verdict = Literal["a", "b", "tie"]
Progress = Callable[[str, int, int], None]

_SYSTEM = (
    "You are a careful and impartial judge of replies written by an AI assistant. You read a "
    "conversation and two candidate replies, then answer a multiple-choice question about them."
)
_LEADING = re.compile(r"^\s*(?:\(\s*([AB])\s*\)|([AB])\s*(?:[.:)!]|$))")
_ANSWER_IS = re.compile(r"\banswer\s+is\s*:?\s*\(?\s*([AB])\s*\)?(?![\w])", re.I)
_IN_PARENTHESES = re.compile(r"\(\s*([AB])\s*\)")
_CORRECTION: Message = {
    "role": "user",
    "content": "That is not one of the options. Answer with exactly (A) or (B), nothing else.",
}


def parse_choice(reply: str) -> Choice | None:
    """``A`` or ``B`` from a multiple-choice answer, or None when it names neither clearly.

    Read, in this order: a reply that starts with ``(A)``/``A.``/``B`` alone; the last ``the
    answer is (B)``; ``Winner: A`` or ``{"winner": "B"}`` (:func:`prefloop.reward.judge.
    parse_winner`); a reply whose parenthesised letters are all the same one.
    """
    text = reply.replace("*", "").replace("`", "").strip()
    leading = _LEADING.match(text)
    if leading:
        return "A" if (leading.group(1) or leading.group(2)) == "A" else "B"
    stated = _ANSWER_IS.findall(text)
    if stated:
        return "A" if stated[-1].upper() == "A" else "B"
    winner = parse_winner(text)
    if winner is not None:
        return winner
    letters = {m.upper() for m in _IN_PARENTHESES.findall(text)}
    if len(letters) == 1:
        return "A" if letters == {"A"} else "B"
    return None


def transcript(prompt: str) -> str:
    """A prompt as the conversation the judge reads: ``Human:``/``Assistant:`` turns (an HH
    dialogue keeps its turns; any other prompt is one Human turn)."""
    turns = hh_messages(prompt)
    return "\n".join(
        f"{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content'].strip()}" for m in turns
    )


def comparison_messages(
    principle: Principle, prompt: str, first: str, second: str
) -> list[Message]:
    """The conversation sent to the judge for one order of one pair."""
    conversation = transcript(prompt) if prompt.strip() else "(no conversation was recorded)"
    user = (
        "Consider the following conversation between a human and an AI assistant:\n\n"
        f"{conversation}\n\n"
        f"{principle.comparison.strip()}\n\n"
        "Options:\n"
        f"(A) {first.strip() or '(an empty reply)'}\n\n"
        f"(B) {second.strip() or '(an empty reply)'}\n\n"
        "Answer with (A) or (B) only."
    )
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class CompareConfig:
    """How the judge is asked."""

    max_attempts: int = 3
    """Calls per order of a pair at most (first try included): a failed call or an answer that
    names neither option is asked again."""
    max_tokens: int = 16
    """Tokens the judge may write; ``(A)`` needs about three."""
    temperature: float = 0.0
    """0 takes the judge's most likely answer."""
    seed: int = 0
    """Draws the principle of each pair; sent to the backend as its seed."""

    def check(self) -> None:
        problems = []
        if self.max_attempts < 1:
            problems.append(f"max_attempts={self.max_attempts} (use 1 or more)")
        if self.max_tokens < 1:
            problems.append(f"max_tokens={self.max_tokens} (use 1 or more, e.g. 16)")
        if self.temperature < 0:
            problems.append(f"temperature={self.temperature} (use 0 or more)")
        if problems:
            raise InvalidInputError("bad judge settings: " + "; ".join(problems))


@dataclass(frozen=True)
class CompareFailure:
    """A pair that got no verdict, and the last problem seen."""

    index: int
    attempts: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CompareStats:
    """Counts over one :func:`compare_pairs` call."""

    pairs: int = 0
    judged: int = 0
    failed: int = 0
    calls: int = 0
    llm_errors: int = 0
    """Calls that raised an LLMError (timeouts, 5xx, bodies that are not a completion, …)."""
    errors: dict[str, int] = field(default_factory=dict)
    """The distinct errors of those calls, each with how often it occurred."""
    unparsable: int = 0
    """Answers that named neither (A) nor (B) (asked again with a correction)."""
    position_inconsistent: int = 0
    """Pairs whose verdict followed the position when the replies swapped places (ties)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Comparisons:
    """The verdict on each pair: ``a`` (the first reply), ``b``, ``tie``, or None (no verdict)."""

    verdicts: list[Verdict | None]
    principles: list[str]
    """The id of the principle each pair was judged under."""
    failures: list[CompareFailure]
    stats: CompareStats

    def first_wins(self) -> NDArray[np.float64]:
        """P(first ≻ second) per pair: 1, 0, 0.5 for a tie, NaN without a verdict."""
        value = {"a": 1.0, "b": 0.0, "tie": 0.5}
        return np.array([np.nan if v is None else value[v] for v in self.verdicts])


@dataclass
class _Ask:
    messages: list[Message]
    attempts: int = 0
    answer: Choice | None = None
    reason: str = ""
    history: list[Message] = field(default_factory=list)


def compare_pairs(
    backend: ChatBackend,
    prompts: Sequence[str],
    first: Sequence[str],
    second: Sequence[str],
    principles: Sequence[Principle],
    config: CompareConfig | None = None,
    *,
    progress: Progress | None = None,
) -> Comparisons:
    """Which of ``first[i]`` and ``second[i]`` answers ``prompts[i]`` better under
    ``principles[i]``: each pair asked in both orders, in batched rounds."""
    cfg = config or CompareConfig()
    cfg.check()
    n = len(prompts)
    if not (len(first) == len(second) == len(principles) == n):
        raise InvalidInputError(
            f"compare_pairs needs one first reply, second reply and principle per prompt; got "
            f"{n} prompts, {len(first)}, {len(second)} and {len(principles)}"
        )
    asks = [
        _Ask(comparison_messages(principles[i], prompts[i], first[i], second[i])) for i in range(n)
    ]
    asks += [
        _Ask(comparison_messages(principles[i], prompts[i], second[i], first[i])) for i in range(n)
    ]
    stats = CompareStats(pairs=n)
    params = GenerationParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, seed=cfg.seed)
    pending = list(asks)
    answered = 0
    for _ in range(cfg.max_attempts):
        if not pending:
            break
        results = backend.complete_batch([a.messages + a.history for a in pending], params)
        if len(results) != len(pending):
            raise LLMError(
                f"backend {backend.name} returned {len(results)} results for {len(pending)} "
                "conversations"
            )
        still: list[_Ask] = []
        for ask, result in zip(pending, results, strict=True):
            ask.attempts += 1
            stats.calls += 1
            if isinstance(result, LLMError):
                stats.llm_errors += 1
                error = f"{type(result).__name__}: {result}"
                stats.errors[error] = stats.errors.get(error, 0) + 1
                ask.reason = error
                if not isinstance(result, LLMRequestError):  # a rejected request stays so
                    still.append(ask)
                continue
            choice = parse_choice(result.text)
            if choice is None:
                stats.unparsable += 1
                ask.reason = f"an answer that names neither (A) nor (B): {result.text[:80]!r}"
                ask.history = [{"role": "assistant", "content": result.text}, _CORRECTION]
                still.append(ask)
                continue
            ask.answer = choice
            answered += 1
        pending = still
        if progress is not None:
            progress("judging", answered, len(asks))
    verdicts: list[Verdict | None] = []
    failures: list[CompareFailure] = []
    for i in range(n):
        straight, swapped = asks[i], asks[n + i]
        if straight.answer is None or swapped.answer is None:
            bad = straight if straight.answer is None else swapped
            failures.append(CompareFailure(i, straight.attempts + swapped.attempts, bad.reason))
            verdicts.append(None)
            stats.failed += 1
            continue
        votes_first = (straight.answer == "A") + (swapped.answer == "B")  # 0, 1 or 2
        verdicts.append("a" if votes_first == 2 else "b" if votes_first == 0 else "tie")
        stats.position_inconsistent += int(votes_first == 1)
        stats.judged += 1
    return Comparisons(
        verdicts=verdicts,
        principles=[p.id for p in principles],
        failures=failures,
        stats=stats,
    )


def no_verdict_message(stats: CompareStats, backend: str, *, stored: bool) -> str:
    """Why a run got no verdict at all, and what to do about it (``stored``: say that
    nothing was stored)."""
    nothing = "; nothing was stored" if stored else ""
    if stats.llm_errors and stats.llm_errors == stats.calls:
        common = max(stats.errors.items(), key=lambda item: item[1])[0]
        return (
            f"every one of the {stats.calls} judge calls to {backend} failed ({common})"
            f"{nothing}. Check that the backend answers, e.g. `prefloop llm complete "
            "hello --backend openai` (PREFLOOP_LLM_BASE_URL, PREFLOOP_LLM_API_KEY, "
            "PREFLOOP_LLM_MODEL) or use `--backend local`"
        )
    return (
        f"the judge ({backend}) gave no verdict on any of the {stats.pairs} pairs: "
        f"{stats.unparsable} answers named neither (A) nor (B) and {stats.llm_errors} of "
        f"{stats.calls} calls failed{nothing}. Use a model that follows the answer "
        "format (a larger instruction-tuned one), or raise --max-attempts"
    )
