"""Online runs (ppo, rloo, grpo) end to end on tiny models: records, guards, report, registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from prefloop.store import Store
from prefloop.train.config import GRPOConfig, PPOConfig, RLOOConfig
from prefloop.train.data import TrainingData
from prefloop.train.online import StepRecord, hacking_signs, run_online

PROMPTS = ("Write about Busan.", "Write about Seoul.", "Write about Jeju.", "Write about Daegu.")


def _data(method: str) -> TrainingData:
    rows = [
        {"prompt": [{"role": "user", "content": p}], "text": p, "inputs": {"place": p[11:-1]}}
        for p in PROMPTS
    ]
    return TrainingData(method=method, rows=rows, source="test")


def _length(prompts: list[str], completions: list[str], **_: Any) -> list[float | None]:
    return [len(c) / 100 for c in completions]


def _record(step: int, reward: float, heldout: float | None, length: float = 10.0) -> StepRecord:
    return StepRecord(
        step=step,
        reward=reward,
        scored=8,
        failed=0,
        kl=0.1,
        beta=0.05,
        entropy=2.0,
        length=length,
        ended=1.0,
        toxicity=0.0,
        heldout=heldout,
        seconds=1.0,
    )


def test_hacking_is_flagged_when_reward_rises_and_the_heldout_falls() -> None:
    hacked = [_record(i, 0.1 * i, 1.0 - 0.1 * i) for i in range(1, 10)]
    signs = hacking_signs(hacked, 48)
    assert len(signs) == 1 and "held-out reward fell" in signs[0]
    honest = [_record(i, 0.1 * i, 0.1 * i) for i in range(1, 10)]
    assert hacking_signs(honest, 48) == []
    long = [_record(i, 0.1 * i, None, length=5.0 + 4 * i) for i in range(1, 10)]
    assert "grew from" in hacking_signs(long, 48)[0]
    flat = [_record(i, 0.5, 0.9 - 0.1 * i) for i in range(1, 10)]  # no rise, no flag
    assert hacking_signs(flat, 48) == []
    assert hacking_signs(hacked[:5], 48) == []  # too few steps to tell from noise


def test_a_ppo_run_records_each_step_and_saves_a_policy_with_its_report(
    tiny_base: Path, tmp_path: Path
) -> None:
    from sqlalchemy import select

    from prefloop.store.models import TrainingRun
    from prefloop.train.models import load_trained, read_manifest

    store = Store.open(f"sqlite:///{tmp_path / 'runs.db'}")
    config = PPOConfig(
        base=str(tiny_base),
        max_steps=2,
        batch_size=2,
        mini_batch_size=1,
        max_new_tokens=6,
        target_kl=0.5,
    )
    seen: list[tuple[int, int]] = []
    result = run_online(
        _data("ppo"),
        config,
        tmp_path / "policy",
        _length,
        heldout=lambda p, c, **_: [1.0] * len(c),
        heldout_name="ones",
        store=store,
        progress=lambda step, total: seen.append((step, total)),
    )
    assert seen == [(1, 2), (2, 2)]
    assert result.steps == 2 and result.stopped == "max_steps"
    assert result.heldout_first == 1.0 and result.heldout_scorer == "ones"
    assert [r.step for r in result.history] == [1, 2]
    assert result.history[0].kl == pytest.approx(
        0.0, abs=1e-5
    )  # the policy starts as the reference
    assert result.beta_last == result.history[-1].beta
    summary = result.to_json()
    for key in (
        "method",
        "steps",
        "seconds",
        "reward_mean_first",
        "reward_mean_last",
        "kl_last",
        "beta_last",
        "heldout_first",
        "heldout_last",
        "hacking_flag",
    ):
        assert key in summary
    report = tmp_path / "policy" / "report"
    assert {p.name for p in report.iterdir()} >= {"report.html", "curves.png", "steps.jsonl"}
    steps = [json.loads(line) for line in (report / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2]
    assert read_manifest(tmp_path / "policy").method == "ppo"
    _model, _tokenizer, manifest = load_trained(tmp_path / "policy")
    assert manifest.adapter
    from prefloop.train.evaluate import EvalConfig, evaluate_policy

    evaluation = evaluate_policy(  # `prefloop train eval` applies to the policy
        tmp_path / "policy",
        list(PROMPTS[:2]),
        _length,
        EvalConfig(max_new_tokens=4, toxicity=False, bootstrap=100),
    )
    assert evaluation.method == "ppo" and evaluation.prompts == 2
    with store.session(readonly=True) as session:
        run = session.scalar(select(TrainingRun))
        assert run is not None and run.method == "ppo" and run.status == "done"
        assert run.metrics["steps"] == 2
    store.close()


def test_a_run_that_leaves_its_kl_budget_stops_and_keeps_the_last_good_policy(
    tmp_path: Path,
) -> None:
    import torch
    from safetensors.torch import load_file

    from tests.support.tiny_lm import build_tiny_llama

    base = build_tiny_llama(tmp_path / "peaked", init_std=1.0)
    config = PPOConfig(
        base=str(base),
        max_steps=6,
        batch_size=4,
        mini_batch_size=2,
        max_new_tokens=2,
        learning_rate=3e-2,
        kl_coef=0.0,
        kl_budget=1e-4,
    )
    result = run_online(_data("ppo"), config, tmp_path / "policy", _length)
    assert result.stopped == "kl_budget"
    assert result.steps == 2  # step 1 measures the reference itself (KL 0); step 2 is over
    assert result.history[-1].kl is not None and result.history[-1].kl > 1e-4
    weights = load_file(tmp_path / "policy" / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and all(torch.count_nonzero(w) == 0 for w in lora_b)  # the untouched start


@pytest.mark.parametrize("config_type", [GRPOConfig, RLOOConfig])
def test_rloo_and_grpo_run_through_trl_with_a_kl_penalty(
    config_type: type[GRPOConfig], tiny_base: Path, tmp_path: Path
) -> None:
    config = config_type(
        base=str(tiny_base), max_steps=2, batch_size=2, num_generations=2, max_new_tokens=6
    )
    assert config.kl_coef > 0
    failures = iter([True, False, False, False] * 4)

    def flaky(prompts: list[str], completions: list[str], **cols: Any) -> list[float | None]:
        assert cols["inputs"][0]["place"] in prompts[0]  # the task inputs travel along
        return [None if next(failures) else len(c) / 100 for c in completions]

    result = run_online(_data(config.method), config, tmp_path / "policy", flaky)
    assert result.steps == 2 and result.method == config.method
    assert all(r.kl is not None for r in result.history)
    assert result.history[0].failed == 1  # left out of the update, never scored 0
    assert (tmp_path / "policy" / "report" / "report.html").exists()


# -- the command line --------------------------------------------------------------------------
def _cli(*args: str) -> Any:
    from typer.testing import CliRunner

    from prefloop.cli import app

    return CliRunner().invoke(app, ["train", *args])


def test_train_ppo_from_a_task_prints_one_json_object_and_is_listed(
    tiny_base: Path, tmp_path: Path
) -> None:
    from tests.train.test_runs import _diary_store

    url = f"sqlite:///{tmp_path / 'p.db'}"
    _diary_store(url)
    out = tmp_path / "ppo"
    result = _cli(
        *("ppo", "--task", "diary", "--reward", "rubric-0.1*length", "--heldout", "length"),
        *("--base", str(tiny_base), "--max-steps", "2", "--batch-size", "2"),
        *("--max-new-tokens", "6", "--target-kl", "1.0", "--out", str(out), "--db", url, "--json"),
    )
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout.strip().splitlines()[-1])
    for key in (
        "method",
        "steps",
        "seconds",
        "reward_mean_first",
        "reward_mean_last",
        "kl_last",
        "beta_last",
        "heldout_first",
        "heldout_last",
        "hacking_flag",
    ):
        assert key in row
    assert row["method"] == "ppo" and row["steps"] == 2 and row["reward"] == "rubric-0.1*length"
    listed = json.loads(_cli("list", "--db", url, "--json").stdout)["runs"]
    assert [(r["method"], r["task"], r["status"]) for r in listed] == [("ppo", "diary", "done")]


def test_bad_online_input_gets_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Write about Busan."}\n', encoding="utf-8")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    out = str(tmp_path / "out")
    cases = [
        (("ppo", "--prompts", str(prompts), "--out", out), "give --reward SPEC"),
        (("ppo", "--reward", "rubric", "--out", out), "exactly one of --task"),
        (("grpo", "--prompts", str(empty), "--reward", "rubric", "--out", out), "holds no prompts"),
        (
            (
                "ppo",
                "--prompts",
                str(prompts),
                "--reward",
                "rubric",
                "--kl-coef",
                "-1",
                "--out",
                out,
            ),
            "must be ≥ 0",
        ),
        (
            ("rloo", "--prompts", str(prompts), "--reward", "rubric+", "--out", out),
            "bad reward SPEC",
        ),
        (("ppo", "--prompts", str(prompts), "--reward", str(tmp_path), "--out", out), "reward"),
    ]
    for args, message in cases:
        result = _cli(*args, "--db", url)
        assert result.exit_code != 0, args
        said = " ".join(f"{result.output} {result.exception or ''}".split())
        assert message in said, (args, said)
    assert not (tmp_path / "out").exists()  # nothing half-written
