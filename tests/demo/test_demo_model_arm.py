"""The demo's request loop serves a model arm with its own adapter, next to the prompt arms."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from prefloop.demo import DIARY, RUBRIC_AUTHOR, DemoConfig, run_demo
from prefloop.llm import LocalChatBackend, add_model_arm
from prefloop.store import Store
from prefloop.store.models import Feedback, Generation
from prefloop.store.repo import create_arm, get_arm, get_or_create_task
from tests.support.tiny_adapter import TinyModels


def test_the_demo_serves_a_model_arm_on_its_adapter(
    tmp_path: Path, tiny_backend: LocalChatBackend, tiny_models: TinyModels
) -> None:
    config = DemoConfig(
        out_dir=tmp_path, requests=16, warmup=0, max_tokens=8, propose=False, reward_model=None
    )
    with Store.open(config.url) as store, store.session() as session:
        task = get_or_create_task(session, DIARY.name, input_fields=DIARY.input_fields)
        base = DIARY.base_prompt
        create_arm(session, task, base.name, template=base.template, labels=["production"])
        tuned = add_model_arm(session, task, "tuned", tiny_models.adapter_a)
        assert tuned.params["template"] == base.template  # the production prompt's
        tuned_id = tuned.id
    result = run_demo(config, backend=tiny_backend)
    assert result.proposal.reused
    with Store.open(config.url) as store, store.session(readonly=True) as session:
        rows = session.scalars(select(Generation)).all()
        by_arm = {(row.arm_id == tuned_id, row.model, row.status) for row in rows}
        rated = set(
            session.scalars(select(Feedback.generation_id).where(Feedback.author == RUBRIC_AUTHOR))
        )
        prompt_arm = get_arm(session, task, base.name).id
    assert by_arm == {(True, "local:adapter-a", "ok"), (False, tiny_backend.model_name, "ok")}
    assert {row.id for row in rows} == rated  # the model arm's outputs are rated too
    assert {row.arm_id for row in rows} == {tuned_id, prompt_arm}
