"""``prefloop demo``: the whole feedback loop on this machine, and the reference experiment.

* :func:`run_demo` with a :class:`DemoConfig` — a diary task, a hand-written prompt and LLM-written
  candidates, simulated requests, a bandit choosing prompts, the local LLM writing, the rubric
  scorer rating (the stand-in for people), a reward model fitted on the ratings, and a report
  (:class:`DemoResult`, :func:`write_report`, :func:`rich_summary`).
* :class:`RubricScorer` — the transparent rubric that rates the demo's outputs.
* :func:`run_reference_experiment` — the reference project's experiment: a simulated user
  (:data:`SIMULATED_USERS`) rates real generations of each prompt (:func:`reference_pools`);
  bandit policies run over those pools for 200 iterations (:func:`simulate_reference`).
"""

from prefloop.demo._reference import (
    SIMULATED_USERS,
    ReferenceConfig,
    ReferenceResult,
    plot_reward_distribution,
    reference_pools,
    run_reference_experiment,
    simulate_reference,
)
from prefloop.demo._regret import cumulative_regret, uniform_regret
from prefloop.demo._report import (
    allocation_figure,
    arm_means_figure,
    png_bytes,
    regret_figure,
    rich_summary,
    write_report,
)
from prefloop.demo._result import (
    DemoResult,
)
from prefloop.demo._rubric import RubricConfig, RubricScorer, RubricVerdict
from prefloop.demo._run import RUBRIC_AUTHOR, DemoConfig, run_demo
from prefloop.demo._task import DIARY, DemoTask, HandWrittenPrompt

__all__ = [
    "DIARY",
    "RUBRIC_AUTHOR",
    "SIMULATED_USERS",
    "DemoConfig",
    "DemoResult",
    "DemoTask",
    "HandWrittenPrompt",
    "ReferenceConfig",
    "ReferenceResult",
    "RubricConfig",
    "RubricScorer",
    "RubricVerdict",
    "allocation_figure",
    "arm_means_figure",
    "cumulative_regret",
    "plot_reward_distribution",
    "png_bytes",
    "reference_pools",
    "regret_figure",
    "rich_summary",
    "run_demo",
    "run_reference_experiment",
    "simulate_reference",
    "uniform_regret",
    "write_report",
]
