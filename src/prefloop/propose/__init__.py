"""The proposer: an LLM writes new candidate prompt arms from a task's rated outputs.

:func:`propose_arms` reads a task's prompt arms and the cached rewards of their generations
(failed generations and unrewarded ones are left out), takes the arm with the best mean reward
as the parent, and asks a :class:`~prefloop.llm.ChatBackend` for ``n`` better templates with an
OPRO-style meta-prompt (Yang et al., *Large Language Models as Optimizers*, 2023): the templates
tried so far with their scores, the best template, and its best and worst rated outputs.

Each proposed template is checked before it becomes an arm: it must parse as a template, use
exactly the task's input fields as placeholders, and not be a near-duplicate of an existing arm
or of another proposal (:attr:`ProposerConfig.max_similarity`). Accepted templates become arms
labelled ``candidate``, created by ``proposer``, with the best arm as parent. Everything
rejected is reported with its reason in the :class:`ProposalReport`, with the number of LLM
calls and tokens; when nothing usable came back the report says so and no arm is added.

>>> report = propose_arms(store, "diary", backend, ProposerConfig(n=3))  # doctest: +SKIP
>>> report.ok, [arm.name for arm in report.accepted]  # doctest: +SKIP
(True, ['proposed-1', 'proposed-2', 'proposed-3'])
"""

from prefloop.propose._proposer import (
    ProposalReport,
    ProposedArm,
    ProposerConfig,
    Rejection,
    propose_arms,
)
from prefloop.propose._similarity import char_ngram_cosine, token_jaccard

__all__ = [
    "ProposalReport",
    "ProposedArm",
    "ProposerConfig",
    "Rejection",
    "char_ngram_cosine",
    "propose_arms",
    "token_jaccard",
]
