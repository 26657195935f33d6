"""``prefloop demo``: the whole feedback loop on this machine, and the reference experiment.

* :func:`run_demo` with a :class:`DemoConfig` — a diary task, a hand-written prompt and LLM-written
  candidates, simulated requests, a bandit choosing prompts, the local LLM writing, the rubric
  scorer rating (the stand-in for people), a reward model fitted on the ratings, and a report
  (:class:`DemoResult`, :func:`write_report`, :func:`rich_summary`).
* :class:`RubricScorer` — the transparent rubric that rates the demo's outputs.
* :func:`simulate_reference` — the reference project's experiment: a simulated user scores real
  generations of each prompt; bandit policies run over those pools for 200 iterations.
"""

from prefloop.demo._regret import cumulative_regret, uniform_regret
from prefloop.demo._report import rich_summary, write_report
from prefloop.demo._result import (
    ArmResult,
    DemoResult,
    Example,
    ProposalOutcome,
    RewardModelResult,
)
from prefloop.demo._rubric import META_PATTERNS, RubricConfig, RubricScorer, RubricVerdict
from prefloop.demo._run import RUBRIC_AUTHOR, DemoConfig, ProgressCallback, run_demo
from prefloop.demo._task import DIARY, DemoTask, HandWrittenPrompt

__all__ = [
    "DIARY",
    "META_PATTERNS",
    "RUBRIC_AUTHOR",
    "ArmResult",
    "DemoConfig",
    "DemoResult",
    "DemoTask",
    "Example",
    "HandWrittenPrompt",
    "ProgressCallback",
    "ProposalOutcome",
    "RewardModelResult",
    "RubricConfig",
    "RubricScorer",
    "RubricVerdict",
    "cumulative_regret",
    "rich_summary",
    "run_demo",
    "uniform_regret",
    "write_report",
]
