"""Training data from the store: a task's rated generations and its preference pairs, the
same ones the feedback package derives for every other consumer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from prefloop.io import PairRecord
from prefloop.reward._data import PairData, RatingData, input_key

if TYPE_CHECKING:
    from prefloop.store import Store

__all__ = ["pair_data_from_store", "rating_data_from_store"]


def rating_data_from_store(store: Store, task: str) -> RatingData:
    """Every successful generation of ``task`` with a reward (the value derived from its
    feedback, cached in ``Generation.reward``), on the task's scale: the rated examples of
    :func:`prefloop.feedback.rated_examples`, with their prompts."""
    from prefloop.feedback import rated_examples
    from prefloop.store.repo import get_task

    with store.session(readonly=True) as session:
        task_row = get_task(session, task)
        scale = tuple(float(v) for v in task_row.scale)
        examples = list(rated_examples(session, task_row))
    return RatingData(
        texts=[e.text for e in examples],
        ratings=np.array([e.reward for e in examples], dtype=np.float64),
        prompts=[e.prompt or None for e in examples],
        scale=scale,
        source=f"task {task!r}",
        inputs=[input_key(e.input, e.prompt) for e in examples],
    )


def pair_data_from_store(
    store: Store, task: str, *, sources: Sequence[str] | None = None
) -> PairData:
    """The preference pairs of ``task`` (:func:`prefloop.feedback.preference_pairs`: pairwise
    feedback and edits, every pair of each ranking; ties and identical texts left out), from
    people's feedback unless ``sources`` names others — the pairs the preference export
    writes."""
    from prefloop.feedback import HUMAN_SOURCES, preference_pairs
    from prefloop.store.repo import get_task

    with store.session(readonly=True) as session:
        task_row = get_task(session, task)
        pairs = [
            PairRecord(prompt=p.prompt, chosen=p.chosen, rejected=p.rejected, margin=p.margin)
            for p in preference_pairs(
                session, task_row, sources=HUMAN_SOURCES if sources is None else sources
            )
        ]
    return PairData.from_records(pairs, source=f"task {task!r}")
