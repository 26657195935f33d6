"""The meta-prompt that asks an LLM for better templates, and the parsing of its answer.

OPRO-style (Yang et al., *Large Language Models as Optimizers*, 2023): the meta-prompt shows
the templates tried so far with their scores, worst first, then the best template's best and
worst rated outputs, and asks for new templates that would score higher. Templates come back
between ``<PROMPT>`` and ``</PROMPT>`` markers (a JSON list is accepted too).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefloop.llm.base import Message

OPEN, CLOSE = "<PROMPT>", "</PROMPT>"
_MARKED = re.compile(r"<PROMPT\b[^>]*>(.*?)</PROMPT\s*>", re.IGNORECASE | re.DOTALL)
_OPEN_ONLY = re.compile(r"<PROMPT\b[^>]*>", re.IGNORECASE)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)

SYSTEM = (
    "You are an expert prompt engineer. You write instructions (prompt templates) that make a "
    "language model produce outputs people rate highly."
)


@dataclass(frozen=True)
class ScoredArm:
    """A prompt arm with the mean of its rewards (``None``: not rated yet)."""

    name: str
    template: str
    mean_reward: float | None
    n_rated: int


@dataclass(frozen=True)
class ScoredOutput:
    """A rated output of an arm: the input it was made from, the text, its reward."""

    inputs: Mapping[str, Any]
    output: str
    reward: float


@dataclass(frozen=True)
class ProposalContext:
    """What the proposer knows about a task when it asks for new templates."""

    task: str
    description: str
    rubric: str
    scale: tuple[float, float]
    fields: tuple[str, ...]
    arms: tuple[ScoredArm, ...] = ()
    best: ScoredArm | None = None
    best_outputs: tuple[ScoredOutput, ...] = ()
    worst_outputs: tuple[ScoredOutput, ...] = ()


@dataclass
class ParsedAnswer:
    templates: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def build_meta_prompt(
    context: ProposalContext,
    n: int,
    *,
    pending: Sequence[str] = (),
    previous_problem: str | None = None,
    max_example_chars: int = 600,
) -> list[Message]:
    """The chat messages asking for ``n`` new templates."""
    placeholders = ", ".join("{" + name + "}" for name in context.fields)
    low, high = context.scale
    lines = [f"Task: {context.task}"]
    if context.description:
        lines.append(f"What the task produces: {context.description}")
    if context.rubric:
        lines.append(f"How people rate the outputs: {_clip(context.rubric, 1500)}")
    lines.append(f"Ratings run from {low:g} (worst) to {high:g} (best).")
    lines.append("")
    if placeholders:
        lines += [
            "A prompt template is the instruction sent to the model for one request. It must "
            f"contain each of these placeholders, written exactly like this: {placeholders}. "
            "They are replaced by the request's inputs. Use no other curly braces.",
            "",
        ]
    scored = sorted(
        (arm for arm in context.arms if arm.mean_reward is not None),
        key=lambda arm: arm.mean_reward if arm.mean_reward is not None else 0.0,
    )
    if scored:
        lines.append("Templates tried so far, worst first, with their mean rating:")
        for arm in scored:
            lines += [
                f'{OPEN[:-1]} score="{arm.mean_reward:.2f}" ratings="{arm.n_rated}">',
                _clip(arm.template, 2000),
                CLOSE,
            ]
        lines.append("")
    unrated = [arm for arm in context.arms if arm.mean_reward is None and arm != context.best]
    if unrated or pending:
        lines.append("Templates already written but not rated yet (do not repeat them):")
        for template in [arm.template for arm in unrated] + list(pending):
            lines += [OPEN, _clip(template, 2000), CLOSE]
        lines.append("")
    if context.best is not None:
        lines += ["The current best template:", OPEN, context.best.template, CLOSE, ""]
        for title, outputs in (
            ("Outputs of the best template that were rated highest:", context.best_outputs),
            ("Outputs of the best template that were rated lowest:", context.worst_outputs),
        ):
            if not outputs:
                continue
            lines.append(title)
            for example in outputs:
                shown = "; ".join(f"{k}={v}" for k, v in example.inputs.items())
                lines += [
                    f"Input: {shown}",
                    f"Output: {_clip(example.output, max_example_chars)}",
                    f"Rating: {example.reward:g}",
                    "",
                ]
    lines.append(
        f"Write {n} new prompt template{'s' if n > 1 else ''} that would get higher ratings than "
        "all the templates above: keep what the best outputs do well and avoid what made the "
        "worst outputs bad. Make each template clearly different from the others and from "
        "the templates above."
    )
    if placeholders:
        lines.append(f"Every template must contain {placeholders}.")
    lines.append(
        f"Write each template between {OPEN} and {CLOSE}, one after another, and nothing else."
    )
    if previous_problem:
        lines += ["", f"Your previous answer could not be used: {previous_problem}"]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def parse_templates(answer: str, *, cut_off: bool = False) -> ParsedAnswer:
    """Templates from an answer: between ``<PROMPT>`` markers, else a JSON list of strings.

    ``cut_off``: the backend said the answer stopped at the length limit (finish_reason
    ``length``); only then does an unclosed template say so.
    """
    parsed = ParsedAnswer()
    unclosed = f"a template without its closing {CLOSE}" + (
        " (the answer stopped at the length limit: raise max_tokens)" if cut_off else ""
    )
    marked = [t.strip() for t in _MARKED.findall(answer)]
    if marked:
        parsed.templates = [t for t in marked if t]
        if len(parsed.templates) < len(marked):
            parsed.problems.append("an empty template between the markers")
        if len(_OPEN_ONLY.findall(answer)) > len(marked):
            parsed.problems.append(unclosed)
        return parsed
    from_json = _json_templates(answer)
    if from_json:
        parsed.templates = from_json
        return parsed
    if _OPEN_ONLY.search(answer):
        parsed.problems.append(unclosed)
    else:
        parsed.problems.append(
            f"no template between {OPEN} and {CLOSE} (and no JSON list of strings)"
        )
    return parsed


def _json_templates(answer: str) -> list[str]:
    candidates = [m.strip() for m in _FENCE.findall(answer)] + [answer.strip()]
    for candidate in candidates:
        for opener, closer in (("[", "]"), ("{", "}")):
            start, end = candidate.find(opener), candidate.rfind(closer)
            if start < 0 or end <= start:
                continue
            try:
                value = json.loads(candidate[start : end + 1])
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                value = value.get("prompts") or value.get("templates")
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                return [v.strip() for v in value if v.strip()]
    return []


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
