"""The demo's task: a photo diary written from the place, the company and the mood of the day.

It is the English version of the reference project's task (a diary app that picked its prompt
with a bandit): there, GPT-4o wrote Korean diary entries for a place in {Chuncheon, Busan, Seoul,
Yeosu}, a company in {friend, alone, family} and a mood in {happy, joyful}. The demo keeps those
values, adds a few more, and writes English because SmolLM2 writes English.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from prefloop.errors import InvalidInputError

__all__ = ["DIARY", "DemoTask", "HandWrittenPrompt"]


@dataclass(frozen=True, slots=True)
class HandWrittenPrompt:
    """A prompt template written by a person; ``{place}``, ``{company}``, ``{mood}`` are filled."""

    name: str
    template: str
    note: str = ""


@dataclass(frozen=True)
class DemoTask:
    """A task with its input vocabulary and the words that show each input was used."""

    name: str
    description: str
    base_prompt: HandWrittenPrompt
    fallback_prompts: tuple[HandWrittenPrompt, ...]
    values: Mapping[str, Mapping[str, tuple[str, ...]]]
    """For each input field, each value it can take → the words that mention it in a text."""
    rubric: str = ""
    input_fields: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_fields", tuple(self.values))
        for prompt in (self.base_prompt, *self.fallback_prompts):
            try:
                prompt.template.format(**{name: "x" for name in self.input_fields})
            except (KeyError, IndexError, ValueError) as exc:
                raise InvalidInputError(
                    f"prompt {prompt.name!r} must use only the placeholders "
                    f"{', '.join('{' + f + '}' for f in self.input_fields)}: {exc}"
                ) from exc

    def sample_inputs(self, n: int, rng: np.random.Generator) -> list[dict[str, str]]:
        """``n`` inputs, each field drawn uniformly and independently from its values."""
        if n < 0:
            raise InvalidInputError(f"the number of inputs must be >= 0, got {n}")
        choices = {name: list(options) for name, options in self.values.items()}
        return [
            {name: options[int(rng.integers(len(options)))] for name, options in choices.items()}
            for _ in range(n)
        ]

    def facts(self, inputs: Mapping[str, str]) -> dict[str, list[str]]:
        """The words that show a text used each given input (for the rubric's fact rule)."""
        out: dict[str, list[str]] = {}
        for name in self.input_fields:
            value = inputs.get(name)
            if value is None:
                raise InvalidInputError(f"input {dict(inputs)} lacks the field {name!r}")
            out[name] = list(self.values[name].get(value, (value,)))
        return out


_PLACES: dict[str, tuple[str, ...]] = {
    "Busan": ("Busan",),
    "Seoul": ("Seoul",),
    "Chuncheon": ("Chuncheon",),
    "Yeosu": ("Yeosu",),
    "the beach": ("beach", "sea", "ocean"),
    "a mountain trail": ("mountain", "trail", "hike", "hiking"),
    "an old market": ("market",),
}
_COMPANY: dict[str, tuple[str, ...]] = {
    "with friends": ("friend",),
    "alone": ("alone", "by myself", "on my own", "solo"),
    "with my family": ("family", "mom", "dad", "mother", "father", "parents", "sister", "brother"),
    "with my partner": ("partner", "boyfriend", "girlfriend", "husband", "wife"),
    "with my dog": ("dog", "puppy"),
}
_MOODS: dict[str, tuple[str, ...]] = {
    "happy": ("happy", "happiness", "happily"),
    "joyful": ("joy",),
    "calm": ("calm", "peaceful", "relaxed", "serene"),
    "tired": ("tired", "exhausted", "weary", "sleepy"),
    "nostalgic": ("nostalgi", "memories", "remember"),
    "excited": ("excit", "thrill"),
}

DIARY = DemoTask(
    name="diary",
    description=(
        "Write a short first-person photo diary entry about the user's day from the place they "
        "went, who they were with and how they felt."
    ),
    base_prompt=HandWrittenPrompt(
        name="hand-written",
        template=(
            "Write a short diary entry in the first person about my day. I went to {place} "
            "{company} and I felt {mood}. Mention the place, who I was with and how I felt. "
            "Write four or five sentences. Reply with the diary entry only."
        ),
        note="the prompt a developer would write first",
    ),
    fallback_prompts=(
        HandWrittenPrompt(
            name="fallback-facts-first",
            template=(
                'Write a diary entry that starts with the sentence "Today I went to {place} '
                '{company} and I felt {mood}." Then write three more short sentences about the '
                "day."
            ),
            note="puts the given facts in the first sentence, the fix a person would try after "
            "seeing outputs that forget the mood",
        ),
        HandWrittenPrompt(
            name="fallback-cheerful",
            template=(
                "Write a fun, cheerful diary entry about today. Today I was at {place} "
                "{company}, and I felt {mood}."
            ),
            note="the reference project's prompt C: fun and cheerful",
        ),
        HandWrittenPrompt(
            name="fallback-simple",
            template=(
                "Write a short and simple diary entry, the way a child would, about today. "
                "I went to {place} {company}. I felt {mood}."
            ),
            note="the reference project's prompt A: short, simple, child-like",
        ),
    ),
    values={"place": _PLACES, "company": _COMPANY, "mood": _MOODS},
    rubric=(
        "Rated by the demo's rubric scorer (a stand-in for people): +1 minus 0.5 for each of "
        "place, company and mood that the entry does not mention, 0.5 (or 1) for repeated "
        "sentences, 0.5 for a length outside 40–160 words and 0.5 for a cut-off last sentence; "
        'meta text ("Here is your diary", "Note:", several versions) is -1.'
    ),
)
"""The diary task of ``prefloop demo``."""
