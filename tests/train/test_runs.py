"""Training runs on the tiny model: each method learns, the adapter moves and the reference does
not, the reference cache is hit, runs are recorded, resumed, and bad input is refused early."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import func, select
from typer.testing import CliRunner

from prefloop.cli import app
from prefloop.errors import InvalidInputError, PrefloopError
from prefloop.feedback import PairwiseEvent, RatingEvent, record_feedback
from prefloop.store import Store, TrainingRun
from prefloop.store.repo import add_generation, get_or_create_task
from prefloop.train._run import TrainingInterrupted, TruncationWarning, run_training
from prefloop.train.config import config_for
from prefloop.train.data import TrainingData, from_file
from prefloop.train.models import load_base, load_trained
from tests.train.conftest import BAD, GOOD, PROMPTS, pair_rows, write_jsonl


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reference log-probs go to a folder of this test, not the user's cache."""
    monkeypatch.setattr("prefloop.train._refcache.cache_folder", lambda: tmp_path / "refs")


def _file_rows(method: str) -> list[dict[str, Any]]:
    if method in ("dpo", "reward"):
        return pair_rows()
    if method == "sft":
        return [{"prompt": p, "completion": GOOD} for p in PROMPTS]
    if method == "kto":
        good = [{"prompt": p, "completion": GOOD, "label": True} for p in PROMPTS]
        return good + [{"prompt": p, "completion": BAD, "label": False} for p in PROMPTS]
    return [{"prompt": p, "responses": [GOOD, BAD, "maybe"], "ranking": [1, 3, 2]} for p in PROMPTS]


def _data(method: str, tmp_path: Path) -> TrainingData:
    return from_file(write_jsonl(tmp_path / f"{method}.jsonl", _file_rows(method)), method)


def _config(method: str, base: Path, **changes: Any) -> Any:
    # one batch holds all the data, so every step sees the same (fixed) batch
    settings: dict[str, Any] = {
        "base": str(base),
        "max_steps": 6,
        "learning_rate": 3e-3,
        "batch_size": 8 if method == "kto" else 4,
        "max_length": 64,
        "logging_steps": 1,
    }
    return config_for(method)(**{**settings, **changes})


@pytest.mark.parametrize("method", ["sft", "reward", "dpo", "kto", "rrhf"])
def test_each_method_lowers_its_loss_on_a_fixed_batch(
    method: str, tiny_base: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run_training(_data(method, tmp_path), _config(method, tiny_base), out)
    assert result.steps == 6 and result.examples == len(_file_rows(method))
    assert result.loss_first is not None and result.loss_last is not None
    assert result.loss_last < result.loss_first - 1e-4, (result.loss_first, result.loss_last)
    assert not out.with_name("out.checkpoints").exists()  # removed after success
    if method == "reward":
        from prefloop.reward import load_reward_model

        model = load_reward_model(out)
        good, bad = model.score([GOOD, BAD], [PROMPTS[0], PROMPTS[0]])
        assert good > bad  # it learned the preference
        unit = model.score_unit([GOOD], [PROMPTS[0]])
        assert 0 < unit[0] < 1
        assert result.eval["accuracy"] == 1.0
    if method == "dpo":
        # the implicit reward β·log(π/π_ref) starts at 0 for both replies (accuracy 0) and
        # ends ordering every training pair
        assert result.eval["rewards/accuracies"] == 1.0
        assert result.eval["rewards/margins"] > 0
    if method == "rrhf":
        assert result.eval["rank_accuracy"] == 1.0


def test_the_adapter_moves_and_the_reference_stays_the_base(
    tiny_base: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dpo"
    run_training(_data("dpo", tmp_path), _config("dpo", tiny_base), out)
    trained, tokenizer, manifest = load_trained(out)
    base, _ = load_base(tiny_base)
    assert manifest.method == "dpo" and manifest.adapter and manifest.base == str(tiny_base)
    ids = tokenizer("We walked by the sea", return_tensors="pt")
    with torch.no_grad():
        policy = trained(**ids).logits
        with trained.disable_adapter():
            reference = trained(**ids).logits
        original = base(**ids).logits
    assert torch.allclose(reference, original, atol=1e-5)  # the reference is the base
    assert not torch.allclose(policy, original, atol=1e-4)  # the adapter changed the policy
    lora_b = [p for n, p in trained.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().max() > 0 for p in lora_b)  # LoRA B starts at zero


def test_merge_saves_a_whole_model(tiny_base: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged"
    run_training(_data("sft", tmp_path), _config("sft", tiny_base, max_steps=2, merge=True), out)
    model, _, manifest = load_trained(out)
    assert not manifest.adapter and (out / "config.json").exists()
    assert type(model).__name__ == "LlamaForCausalLM"


def test_reference_log_probs_are_cached_across_runs(tiny_base: Path, tmp_path: Path) -> None:
    data = _data("dpo", tmp_path)
    first = run_training(data, _config("dpo", tiny_base, max_steps=2), tmp_path / "a")
    second = run_training(data, _config("dpo", tiny_base, max_steps=2), tmp_path / "b")
    other_loss = run_training(
        data, _config("dpo", tiny_base, max_steps=2, loss="ipo"), tmp_path / "c"
    )
    changed = TrainingData("dpo", data.rows[:3], "three pairs")
    fewer = run_training(changed, _config("dpo", tiny_base, max_steps=2), tmp_path / "d")
    shorter = run_training(
        data, _config("dpo", tiny_base, max_steps=1, max_length=60), tmp_path / "e"
    )
    assert shorter.reference_cache == "miss"  # other truncation, other log-probs
    assert [first.reference_cache, second.reference_cache] == ["miss", "hit"]
    assert other_loss.reference_cache == "hit"  # the reference does not depend on the loss
    assert fewer.reference_cache == "miss"  # other data, other key
    assert second.loss_first == pytest.approx(first.loss_first, abs=1e-6)
    assert second.loss_last == pytest.approx(first.loss_last, rel=1e-4)


def test_long_examples_are_counted_and_warned(tiny_base: Path, tmp_path: Path) -> None:
    rows = [*pair_rows(), {"prompt": "word " * 80, "chosen": GOOD, "rejected": BAD}]
    data = from_file(write_jsonl(tmp_path / "long.jsonl", rows), "dpo")
    with pytest.warns(TruncationWarning, match=r"1 of 5 examples .*\(1 of them .*left out"):
        result = run_training(data, _config("dpo", tiny_base, max_steps=1), tmp_path / "out")
    assert result.truncated == 1


def test_resume_continues_from_the_last_checkpoint(tiny_base: Path, tmp_path: Path) -> None:
    data, out = _data("sft", tmp_path), tmp_path / "out"
    run_training(
        data, _config("sft", tiny_base, max_steps=2, save_steps=2), out, keep_checkpoints=True
    )
    assert (tmp_path / "out.checkpoints" / "checkpoint-2").is_dir()
    resumed = run_training(
        data, _config("sft", tiny_base, max_steps=4), out, resume=True, force=True
    )
    assert resumed.steps == 4 and resumed.resumed_from == 2  # steps 3 and 4 were trained


def test_checkpoints_of_another_run_are_neither_resumed_nor_deleted(
    tiny_base: Path, tmp_path: Path
) -> None:
    data, out = _data("sft", tmp_path), tmp_path / "out"
    with pytest.raises(TrainingInterrupted, match="checkpoint-2, is usable"):  # Ctrl-C at step 3

        def stop(step: int, total: int) -> None:
            if step == 3:
                raise KeyboardInterrupt

        run_training(data, _config("sft", tiny_base, save_steps=2), out, progress=stop)
    checkpoint = tmp_path / "out.checkpoints" / "checkpoint-2"
    assert (checkpoint / "trainer_state.json").exists() and not out.exists()
    with pytest.raises(InvalidInputError, match="interrupted run; continue it with --resume"):
        run_training(data, _config("sft", tiny_base), out)
    other = TrainingData("sft", data.rows[:2], "two rows")
    with pytest.raises(InvalidInputError, match=r"come from another run \(data_fingerprint differ"):
        run_training(other, _config("sft", tiny_base), out, resume=True)
    assert checkpoint.exists()
    fresh = run_training(other, _config("sft", tiny_base, max_steps=1), out, force=True)
    assert fresh.resumed_from is None and not checkpoint.exists()


def test_a_trained_adapter_is_the_base_of_the_next_run(tiny_base: Path, tmp_path: Path) -> None:
    """DPO after SFT: the SFT adapter is merged into its base, which DPO then trains and
    uses as its reference."""
    sft = tmp_path / "sft"
    run_training(_data("sft", tmp_path), _config("sft", tiny_base, max_steps=2), sft)
    dpo = tmp_path / "dpo"
    result = run_training(_data("dpo", tmp_path), _config("dpo", sft, max_steps=2), dpo)
    assert result.loss_first == pytest.approx(0.6931, abs=1e-3)  # reference = the SFT model
    _, _, manifest = load_trained(dpo)
    assert manifest.base == str(sft.resolve()) and manifest.adapter
    with pytest.raises(InvalidInputError, match="is the base model itself"):
        run_training(_data("dpo", tmp_path), _config("dpo", sft), sft, force=True)


# --------------------------------------------------------------------------------------------
# From the store, through the command line
# --------------------------------------------------------------------------------------------


def _diary_store(url: str) -> None:
    with Store.open(url, upgrade=True) as store, store.session() as s:
        task = get_or_create_task(s, "diary")
        for i, prompt in enumerate(PROMPTS):
            good = add_generation(s, task, prompt=prompt, output=f"{GOOD} {i}")
            bad = add_generation(s, task, prompt=prompt, output=f"{BAD} {i}")
            record_feedback(s, task, RatingEvent(generation_id=good.id, value=1))
            record_feedback(s, task, RatingEvent(generation_id=bad.id, value=-1))
        pairs_only = get_or_create_task(s, "pairs-only")
        a = add_generation(s, pairs_only, prompt="Q", output="A")
        b = add_generation(s, pairs_only, prompt="Q", output="B")
        record_feedback(s, pairs_only, PairwiseEvent(a=a.id, b=b.id, winner="a"))


def _run_count(url: str) -> int:
    with Store.open(url) as store, store.session(readonly=True) as s:
        return int(s.scalar(select(func.count()).select_from(TrainingRun)) or 0)


def test_train_from_a_task_is_recorded_and_listed(tiny_base: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    _diary_store(url)
    runner = CliRunner()
    out = tmp_path / "kto"
    result = runner.invoke(
        app,
        [
            *("train", "kto", "--task", "diary", "--out", str(out), "--base", str(tiny_base)),
            *("--max-steps", "2", "--batch-size", "4", "--db", url, "--json"),
        ],
    )
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("method", "base", "out", "examples", "steps", "seconds", "loss_first"):
        assert key in row
    assert row["method"] == "kto" and row["examples"] == 8 and row["steps"] == 2
    listed = runner.invoke(app, ["train", "list", "--db", url, "--json"])
    runs = json.loads(listed.stdout)["runs"]
    assert [(r["method"], r["task"], r["status"]) for r in runs] == [("kto", "diary", "done")]
    assert runs[0]["metrics"]["loss_last"] == pytest.approx(row["loss_last"])


def test_a_reward_model_from_a_task_is_registered_and_evaluates(
    tiny_base: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    _diary_store(url)
    runner = CliRunner()
    out = tmp_path / "rm"
    trained = runner.invoke(
        app,
        [
            *("train", "reward", "--task", "diary", "--out", str(out), "--base", str(tiny_base)),
            *("--max-steps", "4", "--learning-rate", "0.003", "--db", url, "--json"),
        ],
    )
    assert trained.exit_code == 0, trained.output
    listed = runner.invoke(app, ["reward", "list", "--db", url, "--json"])
    assert listed.exit_code == 0, listed.output
    assert "lm-scalar" in listed.stdout
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows())
    evaluated = runner.invoke(
        app, ["reward", "eval", "--model", str(out), "--data", str(pairs), "--json"]
    )
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    assert "baseline" in json.dumps(report)  # baselines next to it, as for every reward model


SAME = [{"prompt": "Q", "chosen": "x", "rejected": "x"}]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dpo", "--data", "{empty}"], "no examples"),
        (["dpo", "--data", "{same}"], "same text"),
        (["dpo", "--data", "{pairs}", "--base", "{missing}"], "does not exist"),
        (["dpo", "--data", "{pairs}", "--base", "{encoder}"], "not a causal language model"),
        (["dpo", "--data", "{pairs}", "--loss", "nope"], "unknown loss 'nope'"),
        (["kto", "--task", "pairs-only"], "KTO does not use pairs"),
        (["dpo", "--task", "nope"], "no task named 'nope'"),
        (["dpo", "--data", "{pairs}", "--beta", "-1"], "beta must be"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    args: list[str], message: str, tiny_base: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    _diary_store(url)
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    files = {
        "{empty}": str(write_jsonl(tmp_path / "empty.jsonl", [])),
        "{same}": str(
            write_jsonl(tmp_path / "same.jsonl", [{"prompt": "Q", "chosen": "x", "rejected": "x"}])
        ),
        "{pairs}": str(write_jsonl(tmp_path / "pairs.jsonl", pair_rows())),
        "{missing}": str(tmp_path / "no-such-model"),
        "{encoder}": str(encoder),
    }
    argv = ["train", *(files.get(a, a) for a in args)]
    if "--base" not in argv:
        argv += ["--base", str(tiny_base)]
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [*argv, "--out", str(out), "--db", url])
    # a PrefloopError (exit status 2 through the prefloop command) or a usage error (status 2)
    error = result.exception if isinstance(result.exception, PrefloopError) else None
    assert error is not None or result.exit_code == 2, result.output
    assert message in " ".join((str(error) if error else result.output).split())
    assert not out.exists() and not out.with_name("out.checkpoints").exists()
    assert _run_count(url) == 0


def test_an_output_folder_that_is_not_a_model_is_never_overwritten(
    tiny_base: Path, tmp_path: Path
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(InvalidInputError, match="does not hold a model prefloop trained"):
        run_training(_data("sft", tmp_path), _config("sft", tiny_base), out)
    assert (out / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("learning_rate: 1e-4", "learning_rate must be float, not '1e-4' (YAML reads 1e-4"),
        ('lora: "no"', "lora must be bool"),
        ("max_steps: 2.5", "max_steps must be int"),
        ("loss: foo", "loss must be 'dpo'/'ipo'"),
        ("bogus: 1", "unknown setting(s) bogus for dpo"),
    ],
)
def test_a_config_file_with_a_wrong_value_names_it(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "dpo.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidInputError) as caught:
        config_for("dpo").from_yaml(path)
    assert message in str(caught.value)
    path.write_text("loss: ipo\nbeta: 0.2\nlearning_rate: 0.0001\n", encoding="utf-8")
    loaded = config_for("dpo").from_yaml(path)
    assert (loaded.loss, loaded.beta, loaded.learning_rate) == ("ipo", 0.2, 0.0001)


def test_kto_splits_a_task_scale_at_its_middle(tmp_path: Path) -> None:
    from prefloop.train import from_task

    url = f"sqlite:///{tmp_path / 'p.db'}"
    with Store.open(url, upgrade=True) as store:
        with store.session() as s:
            task = get_or_create_task(s, "stars", scale=[1, 2, 3, 4, 5])
            for value in (1, 2, 3, 4, 5):
                g = add_generation(s, task, prompt="Q", output=f"{value} stars")
                record_feedback(s, task, RatingEvent(generation_id=g.id, value=value))
        data = from_task(store, "stars", config_for("kto")())
    labels = {row["completion"][0]["content"]: row["label"] for row in data.rows}
    assert labels == {"1 stars": False, "2 stars": False, "4 stars": True, "5 stars": True}
