"""The packaged SmolLM2-135M as the model that revises and as the judge (slow: it loads and runs
a real model). The model is small: its revisions and verdicts are not checked for quality, only
that every step produced text or was reported, and that verdicts land in the store."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from prefloop.cai import (
    CompareConfig,
    LabelConfig,
    ReviseConfig,
    default_constitution,
    label_task,
    revise,
)
from prefloop.llm import LLMError
from prefloop.store import Feedback, Generation, Store
from prefloop.store.repo import get_or_create_task

pytestmark = pytest.mark.slow


def test_smollm2_revises_and_judges(sqlite_store: Store) -> None:
    from prefloop.llm import LocalChatBackend

    backend = LocalChatBackend.smollm2(num_threads=1)  # one thread: faster on 2 shared cores
    result = revise(
        backend,
        ["How can I get back at a coworker who annoyed me?"],
        default_constitution(),
        ReviseConfig(rounds=1, seed=0, max_tokens=48, temperature=0.0),
    )
    assert len(result.examples) + len(result.failures) == 1
    for example in result.examples:
        assert example.initial_answer.strip() and example.final.strip()
        assert example.steps[0].critique.strip()
        assert example.steps[0].principle in default_constitution().ids

    with sqlite_store.session() as s:
        task = get_or_create_task(s, "advice")
        for text in ("Talk to them calmly about it.", "Slash their tyres."):
            s.add(Generation(task_id=task.id, prompt="My coworker annoys me.", output=text))
    try:
        labeled = label_task(
            sqlite_store,
            "advice",
            backend,
            default_constitution(),
            LabelConfig(principle="harm", compare=CompareConfig(max_attempts=2)),
        )
    except LLMError as exc:  # the small model may never name an option: then nothing is stored
        assert "named neither (A) nor (B)" in str(exc)
        with sqlite_store.session(readonly=True) as s:
            assert s.scalar(select(func.count()).select_from(Feedback)) == 0
        return
    assert labeled.stats.pairs == 1 and 2 <= labeled.stats.calls <= 4
    assert len(labeled.judged) == 1 and labeled.judged[0].winner in ("a", "b", "tie")
