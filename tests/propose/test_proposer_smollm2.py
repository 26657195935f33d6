"""The proposer with the real packaged SmolLM2-135M-Instruct (slow).

A 135M model often fails to follow the meta-prompt; the test accepts either outcome, but a
failure must be reported clearly and must not produce arms, and every arm it does produce must
be a valid, new template.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from prefloop.llm import GenerationParams, LocalChatBackend, template_fields
from prefloop.propose import ProposerConfig, propose_arms, token_jaccard
from prefloop.store import Arm, Store
from tests.propose.test_proposer import FIELDS, seed_task


@pytest.mark.slow
def test_smollm2_proposes_valid_arms_or_reports_clearly_why_not(sqlite_store: Store) -> None:
    ids = seed_task(sqlite_store)
    # One torch thread: on a shared 2-core machine it is several times faster than two.
    backend = LocalChatBackend.smollm2(num_threads=1)
    config = ProposerConfig(
        n=1, max_llm_calls=1, params=GenerationParams(max_tokens=120, temperature=0.7, seed=0)
    )

    report = propose_arms(sqlite_store, "diary", backend, config)

    assert report.llm_calls == 1 and report.completion_tokens > 0 and report.prompt_tokens > 300
    with sqlite_store.session(readonly=True) as s:
        arms = list(s.scalars(select(Arm).order_by(Arm.id)))
    new = [arm for arm in arms if arm.created_by == "proposer"]
    assert [arm.name for arm in new] == [p.name for p in report.accepted]
    old_templates = [arm.template or "" for arm in arms if arm.created_by != "proposer"]
    for arm in new:
        assert sorted(template_fields(arm.template or "")) == sorted(FIELDS)
        assert arm.parent_id == ids["b"] and arm.labels == ["candidate"]
        assert all(token_jaccard(arm.template or "", t) < 0.8 for t in old_templates)
    if not report.ok:
        assert new == []
        assert report.rejected or report.errors
        assert "no usable template" in report.summary()
