"""Constitutional AI and AI feedback (Bai et al., 2022, "Constitutional AI: Harmlessness from
AI Feedback").

* A :class:`Constitution` is a small YAML file of principles, each with a critique request, a
  revision request and a comparison question (:func:`load_constitution`; the packaged default
  is :func:`default_constitution`, its text :func:`default_constitution_text`).
* :func:`revise` — the model answers, critiques its answer against a principle drawn at random
  and revises it, for N rounds; :func:`write_revisions` writes the (prompt, final revision)
  pairs as SFT data with their trace.
* :func:`label_task` — an LLM judge compares two outputs of one input under a principle, as a
  multiple-choice question asked in both orders, and the verdict is stored as pairwise feedback
  with source ``judge`` (kept out of human exports and reward-model training unless asked).
* :func:`judge_agreement` — the judge's agreement with human preference pairs, reported like
  any pairwise reward model's, with a bootstrap interval.

Any :class:`prefloop.llm.ChatBackend` answers; a failed call is never a revision or a verdict.
"""

from prefloop.cai._compare import (
    CompareConfig,
    CompareFailure,
    CompareStats,
    Comparisons,
    compare_pairs,
    comparison_messages,
    parse_choice,
)
from prefloop.cai._constitution import (
    Constitution,
    Principle,
    default_constitution,
    default_constitution_text,
    load_constitution,
    parse_constitution,
)
from prefloop.cai._label import (
    AgreementConfig,
    JudgeAgreement,
    JudgedPair,
    LabelConfig,
    LabelResult,
    judge_agreement,
    label_task,
)
from prefloop.cai._revise import (
    ReviseConfig,
    RevisedExample,
    RevisionFailure,
    RevisionResult,
    RevisionStep,
    check_output_path,
    revise,
    write_revisions,
)

__all__ = [
    "AgreementConfig",
    "CompareConfig",
    "CompareFailure",
    "CompareStats",
    "Comparisons",
    "Constitution",
    "JudgeAgreement",
    "JudgedPair",
    "LabelConfig",
    "LabelResult",
    "Principle",
    "ReviseConfig",
    "RevisedExample",
    "RevisionFailure",
    "RevisionResult",
    "RevisionStep",
    "check_output_path",
    "compare_pairs",
    "comparison_messages",
    "default_constitution",
    "default_constitution_text",
    "judge_agreement",
    "label_task",
    "load_constitution",
    "parse_choice",
    "parse_constitution",
    "revise",
    "write_revisions",
]
