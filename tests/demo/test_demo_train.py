"""``prefloop demo --train``: a KTO adapter trained on the demo's ratings joins the bandit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from prefloop.demo import DemoConfig, run_demo
from prefloop.demo._train import TrainedArmResult, compare_arms
from prefloop.errors import InvalidInputError
from prefloop.llm import LocalChatBackend
from prefloop.store import Store, TrainingRun
from prefloop.store.models import Arm, Generation
from prefloop.store.repo import add_generation, create_arm, get_or_create_task


def test_demo_train_adds_a_trained_model_arm_and_serves_it(
    tmp_path: Path, tiny_backend: LocalChatBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFLOOP_REFERENCE_CACHE", str(tmp_path / "refs"))
    config = DemoConfig(
        out_dir=tmp_path,
        requests=16,
        warmup=0,
        max_tokens=8,
        propose=False,
        reward_model=None,
        train=True,
        train_steps=2,
        train_requests=24,
    )
    result = run_demo(config, backend=tiny_backend)
    trained = result.trained
    assert trained is not None and trained.method == "kto" and trained.steps == 2
    assert trained.examples > 0
    assert (tmp_path / "trained-arms" / trained.arm / "prefloop-train.json").exists()
    with Store.open(config.url) as store, store.session(readonly=True) as session:
        arm = session.scalar(select(Arm).where(Arm.name == trained.arm))
        assert arm is not None and arm.kind == "model" and arm.created_by == "trainer"
        served = session.scalars(select(Generation).where(Generation.arm_id == arm.id)).all()
        runs = session.scalars(select(TrainingRun)).all()
    assert [(r.method, r.status) for r in runs] == [("kto", "done")]
    assert trained.rated == sum(g.reward is not None for g in served)
    assert result.requests == 16 + 24
    summary = result.to_json()["trained"]
    assert summary["arm"] == trained.arm and summary["verdict"] == trained.verdict
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "The trained model as an arm" in html and trained.arm in html
    assert json.dumps(summary)  # JSON-able


def test_compare_arms_puts_the_difference_inside_its_bootstrap_interval(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    with Store.open(url, upgrade=True) as store:
        with store.session() as s:
            task = get_or_create_task(s, "t")
            good = create_arm(s, task, "good", template="x")
            weak = create_arm(s, task, "weak", template="y")
            model = create_arm(s, task, "m", model_ref="folder", params={"template": "x"})
            for arm, rewards in ((good, [0.5, 0.5, 1.0, 0.5]), (weak, [-1, -1]), (model, [1] * 6)):
                for r in rewards:
                    add_generation(s, task, arm_id=arm.id, output="o", reward=float(r))
        base = TrainedArmResult("m", "kto", "folder", 8, 2, 1.0, 0.5, 0.4)
        result = compare_arms(store, "t", base, seed=0)
    assert result.best_prompt == "good" and result.best_prompt_mean == pytest.approx(0.625)
    assert result.mean == 1.0 and result.rated == 6
    assert result.difference == pytest.approx(0.375)
    assert result.interval is not None
    assert result.interval[0] <= result.difference <= result.interval[1]
    assert result.interval[0] > 0 and "beats the best prompt (good)" in result.verdict


def test_demo_train_needs_the_local_backend(tmp_path: Path) -> None:
    from prefloop.demo._train import local_base

    with pytest.raises(InvalidInputError, match="needs the local backend"):
        local_base(object())
