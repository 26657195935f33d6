"""Critique and revision: the supervised stage of Constitutional AI (Bai et al., 2022).

For each prompt the model answers; then, for each of ``rounds`` rounds, a principle is drawn at
random (seeded) and the model critiques its latest answer against the principle's critique
request and rewrites it following the revision request, in one conversation::

    user: <prompt>                       assistant: <answer>
    user: <critique request>             assistant: <critique>
    user: <revision request>             assistant: <revision>   ← the next round's answer

The (prompt, final revision) pairs are SFT data (``prefloop train sft --data OUT.jsonl``); each
row also keeps its trace: the first answer, and the principle, critique and revision of every
round. Every step is one batched call over the prompts still going. A prompt whose call fails
(after the backend's own retries) or comes back empty is reported as failed and left out:
it never gets an empty or partial revision.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from prefloop._files import atomic_path
from prefloop.cai._constitution import Constitution
from prefloop.errors import InvalidInputError
from prefloop.io.readers import hh_messages
from prefloop.llm.base import ChatBackend, GenerationParams, LLMError, Message

Progress = Callable[[str, int, int], None]

_CRITIQUE_SUFFIX = "Answer with a short critique of a few sentences."
_REVISION_SUFFIX = "Reply with the rewritten answer only, with no title or preamble."
_LABEL = re.compile(
    r"^\s*(?:\*\*)?(?:revised answer|revision|rewritten answer)(?:\*\*)?\s*:\s*", re.I
)


@dataclass(frozen=True)
class ReviseConfig:
    """Settings of :func:`revise`."""

    rounds: int = 1
    """Critique-and-revise rounds per prompt (each draws its own principle)."""
    seed: int = 0
    """Draws the principles; sent to the backend as its sampling seed."""
    principle: str | None = None
    """Use only this principle (its id) instead of drawing one each round."""
    max_tokens: int = 256
    """Most tokens of each answer, critique and revision."""
    temperature: float = 0.7
    """Sampling temperature of every call (0 is greedy)."""

    def check(self) -> None:
        problems = []
        if self.rounds < 1:
            problems.append(f"rounds={self.rounds} (use 1 or more)")
        if self.max_tokens < 1:
            problems.append(f"max_tokens={self.max_tokens} (use 1 or more, e.g. 256)")
        if self.temperature < 0:
            problems.append(f"temperature={self.temperature} (use 0 or more)")
        if problems:
            raise InvalidInputError("bad revise settings: " + "; ".join(problems))


@dataclass(frozen=True)
class RevisionStep:
    """One round: the principle drawn, the model's critique, its revised answer."""

    principle: str
    critique: str
    revision: str


@dataclass(frozen=True)
class RevisedExample:
    """A prompt, the model's first answer, and each round of critique and revision."""

    prompt: str
    initial_answer: str
    steps: tuple[RevisionStep, ...]

    @property
    def final(self) -> str:
        return self.steps[-1].revision if self.steps else self.initial_answer

    def to_row(self, constitution: str) -> dict[str, Any]:
        """The JSONL row: ``prompt`` and ``completion`` (the final revision, what
        ``prefloop train sft --data`` reads) and the trace in extra fields."""
        return {
            "prompt": self.prompt,
            "completion": self.final,
            "initial_answer": self.initial_answer,
            "principles": [s.principle for s in self.steps],
            "critiques": [s.critique for s in self.steps],
            "revisions": [s.revision for s in self.steps],
            "constitution": constitution,
        }


@dataclass(frozen=True)
class RevisionFailure:
    """A prompt left out: the step whose call failed, and why."""

    index: int
    prompt: str
    step: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RevisionResult:
    """What :func:`revise` produced: the revised examples (in prompt order) and the failures."""

    examples: list[RevisedExample]
    failures: list[RevisionFailure]
    prompts: int
    rounds: int
    calls: int
    seconds: float
    constitution: str
    backend: str
    errors: dict[str, int] = field(default_factory=dict)
    """The distinct LLM errors seen, each with how often it occurred."""

    def rows(self) -> list[dict[str, Any]]:
        return [e.to_row(self.constitution) for e in self.examples]

    def to_json(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for example in self.examples:
            for step in example.steps:
                counts[step.principle] = counts.get(step.principle, 0) + 1
        return {
            "prompts": self.prompts,
            "revised": len(self.examples),
            "failed": len(self.failures),
            "rounds": self.rounds,
            "calls": self.calls,
            "seconds": round(self.seconds, 3),
            "constitution": self.constitution,
            "backend": self.backend,
            "principles_used": counts,
            "errors": dict(self.errors),
            "failures": [f.to_json() for f in self.failures],
        }


@dataclass
class _Item:
    index: int
    prompt: str
    conversation: list[Message]
    answer: str = ""
    initial: str = ""
    steps: list[RevisionStep] = field(default_factory=list)
    failed: RevisionFailure | None = None


def _said(role: Literal["user", "assistant"], content: str) -> Message:
    return {"role": role, "content": content}


def _strip_label(text: str) -> str:
    """A revision without a leading ``Revision:`` label the model may have written."""
    return _LABEL.sub("", text, count=1).strip()


def revise(
    backend: ChatBackend,
    prompts: Sequence[str],
    constitution: Constitution,
    config: ReviseConfig | None = None,
    *,
    progress: Progress | None = None,
) -> RevisionResult:
    """Answer, critique and revise each prompt (module docstring); ``progress("revising",
    done, total)`` counts the calls."""
    cfg = config or ReviseConfig()
    cfg.check()
    if not prompts:
        raise InvalidInputError("no prompts to revise; give a prompts file or a task with prompts")
    if any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise InvalidInputError("every prompt must be non-empty text")
    drawn = constitution.draw(len(prompts) * cfg.rounds, cfg.seed, only=cfg.principle)
    params = GenerationParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, seed=cfg.seed)
    items = [_Item(i, p, cast(list[Message], hh_messages(p))) for i, p in enumerate(prompts)]
    errors: dict[str, int] = {}
    stages = 1 + 2 * cfg.rounds  # the answer, then a critique and a revision per round
    calls = 0
    stage = 0
    started = time.perf_counter()

    def step(
        name: str, conversations: list[tuple[_Item, list[Message]]]
    ) -> list[tuple[_Item, str]]:
        """One stage: a batched call for the items still going, then the progress bar."""
        nonlocal calls, stage
        stage += 1
        out: list[tuple[_Item, str]] = []
        if conversations:
            out = ask(name, conversations)
            calls += len(conversations)
        if progress is not None:  # a prompt that failed counts as done for the bar
            progress("revising", stage * len(items), stages * len(items))
        return out

    def ask(name: str, conversations: list[tuple[_Item, list[Message]]]) -> list[tuple[_Item, str]]:
        """The non-empty answers; the items whose call failed or came back empty are marked."""
        results = backend.complete_batch([c for _, c in conversations], params)
        if len(results) != len(conversations):
            raise LLMError(
                f"backend {backend.name} returned {len(results)} results for "
                f"{len(conversations)} conversations"
            )
        out: list[tuple[_Item, str]] = []
        for (item, _), result in zip(conversations, results, strict=True):
            if isinstance(result, LLMError):
                reason = f"{type(result).__name__}: {result}"
                errors[reason] = errors.get(reason, 0) + 1
                item.failed = RevisionFailure(item.index, item.prompt, name, reason)
                continue
            text = _strip_label(result.text) if name.startswith("revision") else result.text.strip()
            if not text:
                item.failed = RevisionFailure(
                    item.index, item.prompt, name, f"the model returned an empty {name.split()[0]}"
                )
                continue
            out.append((item, text))
        return out

    def alive() -> list[_Item]:
        return [item for item in items if item.failed is None]

    for item, text in step("answer", [(item, item.conversation) for item in items]):
        item.initial = item.answer = text
    for round_number in range(1, cfg.rounds + 1):
        going = alive()
        principles = {
            item.index: drawn[item.index * cfg.rounds + round_number - 1] for item in going
        }
        critique_turns: dict[int, list[Message]] = {
            item.index: [
                *item.conversation,
                _said("assistant", item.answer),
                _said("user", f"{principles[item.index].critique.strip()}\n{_CRITIQUE_SUFFIX}"),
            ]
            for item in going
        }
        asked = [(item, critique_turns[item.index]) for item in going]
        critiques = {
            item.index: text for item, text in step(f"critique (round {round_number})", asked)
        }
        revision_turns: list[tuple[_Item, list[Message]]] = [
            (
                item,
                [
                    *critique_turns[item.index],
                    _said("assistant", critiques[item.index]),
                    _said("user", f"{principles[item.index].revision.strip()}\n{_REVISION_SUFFIX}"),
                ],
            )
            for item in alive()
        ]
        for item, text in step(f"revision (round {round_number})", revision_turns):
            item.steps.append(RevisionStep(principles[item.index].id, critiques[item.index], text))
            item.answer = text
    examples = [RevisedExample(item.prompt, item.initial, tuple(item.steps)) for item in alive()]
    failures = [item.failed for item in items if item.failed is not None]
    return RevisionResult(
        examples=examples,
        failures=failures,
        prompts=len(items),
        rounds=cfg.rounds,
        calls=calls,
        seconds=time.perf_counter() - started,
        constitution=constitution.name,
        backend=backend.name,
        errors=errors,
    )


def check_output_path(path: str | Path) -> Path:
    """``path`` as a file :func:`write_revisions` can write: its folder exists and it is not
    a folder itself (checked before any LLM call)."""
    target = Path(path)
    if target.is_dir():
        raise InvalidInputError(f"{target} is a folder; give a file name such as revised.jsonl")
    if not target.parent.is_dir():
        raise InvalidInputError(
            f"the folder of {str(target)!r} does not exist; create it or choose another -o path"
        )
    return target


def write_revisions(result: RevisionResult, path: str | Path) -> Path:
    """Write ``result``'s rows as JSONL to ``path`` at once: a temporary file beside it renamed
    into place, so the file is either the old one or complete. An error if there is nothing to
    write (every prompt failed)."""
    target = check_output_path(path)
    if not result.examples:
        raise InvalidInputError(f"no revised examples to write to {target}: every prompt failed")
    with atomic_path(target) as temporary, temporary.open("w", encoding="utf-8") as out:
        for row in result.rows():
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return target
