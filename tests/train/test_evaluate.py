"""`prefloop train eval`: a tiny trained adapter against its reference, judged by a tiny rating
reward model fitted here; the KL, the win rate and its interval, the report and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from prefloop.errors import InvalidInputError, PrefloopError
from prefloop.reward import RatingData, RatingModelConfig, SklearnRatingModel
from prefloop.store import Store
from prefloop.store.repo import add_generation, get_or_create_task
from prefloop.train.evaluate import (
    EvalConfig,
    evaluate_policy,
    read_prompts_file,
    sequence_log_probs,
    win_rate,
    write_eval_report,
)
from prefloop.train.models import TrainedManifest, load_base, write_manifest
from tests.reward.conftest import synthetic_ratings, write_jsonl
from tests.support.tiny_lm import build_tiny_llama

PROMPTS = [
    "Write one line about Busan.",
    "Describe a quiet morning by the river.",
    "What goes well with coffee?",
    "Tell me about the market <b>today</b> & tomorrow.",
    "A short note on summer rain.",
    "Say hello.",
]
FAST = EvalConfig(max_new_tokens=10, batch_size=4, bootstrap=500, seed=3, threads=1)


# -- fixtures: a tiny base, adapters on it, a whole model, a rating reward model ----------------
@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-base"))


def _adapter(base: Path, out: Path, *, scale: float) -> Path:
    """A LoRA adapter on ``base``; ``scale`` 0 leaves B at zero (the adapter changes nothing)."""
    import torch
    from peft import LoraConfig, get_peft_model

    model, tokenizer = load_base(base)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # LoRA's A matrices start random
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name and scale:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_manifest(out, TrainedManifest(method="dpo", base=str(base), adapter=True))
    return out


@pytest.fixture(scope="module")
def perturbed_dir(base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _adapter(base_dir, tmp_path_factory.mktemp("perturbed"), scale=2.0)


@pytest.fixture(scope="module")
def zero_dir(base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _adapter(base_dir, tmp_path_factory.mktemp("zero"), scale=0.0)


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = synthetic_ratings(40)
    data = RatingData(
        texts=[r["text"] for r in rows],
        ratings=np.array([r["rating"] for r in rows]),
        prompts=[None] * len(rows),
    )
    model = SklearnRatingModel(RatingModelConfig(model="ridge:stats")).fit(data)
    return model.save(tmp_path_factory.mktemp("rm") / "rm")


@pytest.fixture(scope="module")
def reward_model(reward_dir: Path) -> Any:
    from prefloop.reward import load_reward_model

    return load_reward_model(reward_dir)


@pytest.fixture(scope="module")
def perturbed_eval(perturbed_dir: Path, reward_model: Any) -> Any:
    return evaluate_policy(perturbed_dir, PROMPTS, reward_model, FAST)


# -- the measurements --------------------------------------------------------------------------
def test_a_zero_adapter_has_zero_kl_and_ties_everywhere(
    zero_dir: Path, reward_model: Any, tmp_path: Path
) -> None:
    result = evaluate_policy(zero_dir, PROMPTS, reward_model, FAST)
    assert all(s.trained == s.reference for s in result.samples)
    assert abs(result.kl_per_token) < 1e-6 and abs(result.kl_full_per_token) < 1e-6
    assert all(abs(s.kl) < 1e-5 and abs(s.kl_full) < 1e-5 for s in result.samples)
    assert (result.win_rate, result.win_rate_interval) == (0.5, (0.5, 0.5))
    assert result.ties == result.scored == len(PROMPTS)
    assert result.length_ratio == pytest.approx(1.0)
    assert "not clearly different" in result.verdict
    files = write_eval_report(result, tmp_path / "ties")  # identical rewards still plot
    assert files["rewards_png"].stat().st_size > 1000


def test_a_perturbed_adapter_moves_away_from_its_reference(perturbed_eval: Any) -> None:
    result = perturbed_eval
    # greedy answers: the full KL is the measure that cannot go negative; the sampled-token
    # estimate is far from 0 too
    assert result.kl_full_per_token > 0.005 and abs(result.kl_per_token) > 0.05
    assert all(s.kl_full > 1e-3 for s in result.samples)
    assert sum(s.trained != s.reference for s in result.samples) >= len(PROMPTS) // 2
    assert result.scored == len(PROMPTS) and result.unscored == 0
    assert result.wins + result.ties + result.losses == result.scored
    expected = (result.wins + 0.5 * result.ties) / result.scored
    assert result.win_rate == pytest.approx(expected)
    low, high = result.win_rate_interval
    assert 0.0 <= low <= result.win_rate <= high <= 1.0
    ratio = np.mean([s.trained_tokens for s in result.samples]) / np.mean(
        [s.reference_tokens for s in result.samples]
    )
    assert result.length_ratio == pytest.approx(ratio)
    for rate in (result.toxicity_trained, result.toxicity_reference):
        assert rate is not None and 0.0 <= rate <= 1.0
    assert all(
        s.trained_toxicity is not None and 0.0 <= s.trained_toxicity <= 1.0 for s in result.samples
    )


def test_mixed_outcomes_give_an_interval_around_the_win_rate(perturbed_dir: Path) -> None:
    def checksum(prompts: Any, texts: Any) -> list[float | None]:  # a scorer that disagrees
        return [float(sum(map(ord, t)) % 7) for t in texts]

    result = evaluate_policy(perturbed_dir, PROMPTS, checksum, FAST)
    assert result.wins and result.losses  # some of each, so the interval has width
    low, high = result.win_rate_interval
    assert low < result.win_rate < high
    assert result.win_rate == pytest.approx((result.wins + 0.5 * result.ties) / len(PROMPTS))
    assert "not clearly different" in result.verdict


def test_the_kl_is_the_mean_log_probability_gap_of_the_sampled_tokens(
    perturbed_dir: Path, perturbed_eval: Any
) -> None:
    """Recompute one answer's KL with an unbatched forward pass of each model."""
    import torch

    from prefloop.train.models import load_trained

    model, tokenizer, _ = load_trained(perturbed_dir)
    sample = perturbed_eval.samples[1]
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": sample.prompt}], add_generation_prompt=True, tokenize=False
    )
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    answer = tokenizer(sample.trained, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + answer])

    def logp(m: Any) -> float:
        with torch.no_grad():
            lp = torch.log_softmax(m(input_ids=ids).logits[0, :-1].float(), dim=-1)
        return float(lp[len(prompt) - 1 :].gather(-1, ids[0, len(prompt) :, None]).sum())

    with model.disable_adapter():
        reference = logp(model)
    policy = logp(model)
    assert sample.kl_tokens == len(answer)  # it ran to max_new_tokens (no end token)
    assert sample.kl == pytest.approx(policy - reference, rel=1e-4, abs=1e-4)
    # and the batched, padded pass gives the unbatched log-probabilities
    batched = sequence_log_probs(model, [[1, 2, 3], prompt], [[4, 5], answer], batch_size=2)
    assert float(batched[1].sum()) == pytest.approx(policy, rel=1e-4, abs=1e-4)


def test_a_whole_model_is_compared_with_its_base(base_dir: Path, tmp_path: Path) -> None:
    """A non-adapter folder loads its base as the reference; the base itself gives KL 0."""
    model, tokenizer = load_base(base_dir)
    out = tmp_path / "whole"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_manifest(out, TrainedManifest(method="sft", base=str(base_dir), adapter=False))

    result = evaluate_policy(
        out, PROMPTS[:3], lambda p, c: [float(len(t)) for t in c], FAST, scorer_name="length"
    )
    assert abs(result.kl_per_token) < 1e-6
    assert (result.adapter, result.scorer, result.win_rate) == (False, "length", 0.5)


def test_sampling_is_seeded(perturbed_dir: Path) -> None:
    def length(prompts: Any, texts: Any) -> list[float | None]:
        return [float(len(t)) for t in texts]

    sampled = EvalConfig(max_new_tokens=8, temperature=1.0, seed=5, toxicity=False, threads=1)
    first = evaluate_policy(perturbed_dir, PROMPTS[:3], length, sampled)
    again = evaluate_policy(perturbed_dir, PROMPTS[:3], length, sampled)
    assert [s.trained for s in first.samples] == [s.trained for s in again.samples]
    assert first.toxicity_trained is None and first.toxicity_threshold is None


def test_win_rate_counts_ties_half_and_its_interval_is_seeded() -> None:
    outcomes = [1.0] * 14 + [0.5] * 4 + [0.0] * 6
    rate, (low, high) = win_rate(outcomes, resamples=1000, seed=1)
    assert rate == pytest.approx(16 / 24)
    assert low < rate < high and low > 0.4 and high < 0.9
    assert win_rate(outcomes, resamples=1000, seed=1) == (rate, (low, high))
    assert win_rate([0.5] * 5) == (0.5, (0.5, 0.5))
    with pytest.raises(InvalidInputError, match="no scored prompt"):
        win_rate([])


def test_an_unscored_answer_drops_its_prompt_and_is_counted(perturbed_dir: Path) -> None:
    calls = {"n": 0}

    def flaky(prompts: Any, texts: Any) -> list[float | None]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("judge timed out")
        return [
            None if p == PROMPTS[0] else float(len(t)) for p, t in zip(prompts, texts, strict=True)
        ]

    config = EvalConfig(max_new_tokens=6, batch_size=3, toxicity=False, bootstrap=200, threads=1)
    result = evaluate_policy(perturbed_dir, PROMPTS[:5], flaky, config)
    # batches of 3 over the 5 trained then the 5 reference answers: the failed second call
    # held the trained answers of prompts 3 and 4 (and the reference's of prompt 0, which
    # had no score anyway): prompts 0, 3 and 4 are dropped, 1 and 2 judged
    assert (result.unscored, result.scored) == (3, 2)
    assert result.scorer_errors == ("RuntimeError: judge timed out",)
    assert result.wins + result.ties + result.losses == 2
    assert [s.trained_reward is None for s in result.samples] == [True, False, False, True, True]

    def broken(prompts: Any, texts: Any) -> list[float | None]:
        raise RuntimeError("no judge")

    with pytest.raises(InvalidInputError, match=r"scored no prompt.*no judge"):
        evaluate_policy(perturbed_dir, PROMPTS[:2], broken, config)


def test_bad_folders_and_settings_are_named(
    tmp_path: Path, base_dir: Path, reward_model: Any
) -> None:
    with pytest.raises(InvalidInputError, match="prefloop did not train it"):
        evaluate_policy(base_dir, PROMPTS, reward_model, FAST)
    with pytest.raises(InvalidInputError, match="does not exist"):
        evaluate_policy(tmp_path / "missing", PROMPTS, reward_model, FAST)
    with pytest.raises(InvalidInputError, match="no prompts"):
        evaluate_policy(base_dir, [], reward_model, FAST)
    with pytest.raises(InvalidInputError, match="max_new_tokens"):
        evaluate_policy(base_dir, PROMPTS, reward_model, EvalConfig(max_new_tokens=0))


def test_prompts_file_errors_name_the_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="holds no prompts"):
        read_prompts_file(empty)
    wrong = write_jsonl(tmp_path / "wrong.jsonl", [{"prompt": "ok"}, {"text": "no prompt"}])
    with pytest.raises(InvalidInputError, match=r"wrong.jsonl:2: .*\"prompt\""):
        read_prompts_file(wrong)
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text('{"prompt": "a"}\nnot json\n', encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"garbage\.jsonl:2: not JSON"):
        read_prompts_file(garbage)
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_prompts_file(tmp_path / "none.jsonl")


def test_the_report_escapes_model_text(perturbed_eval: Any, tmp_path: Path) -> None:
    files = write_eval_report(perturbed_eval, tmp_path / "report")
    page = files["html"].read_text(encoding="utf-8")
    assert "&lt;b&gt;today&lt;/b&gt; &amp; tomorrow" in page and "<b>today</b>" not in page
    assert page.count("data:image/png;base64,") == 2
    assert page.count("class='win'") == perturbed_eval.wins
    assert page.count("class='loss'") == perturbed_eval.losses
    for key in ("rewards_png", "lengths_png"):
        assert files[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(files["json"].read_text(encoding="utf-8"))
    assert len(saved["samples"]) == len(PROMPTS)
    assert saved["files"]["html"] == str(files["html"])
    assert sorted(p.name for p in files["html"].parent.iterdir()) == [
        "eval.json",
        "lengths.png",
        "report.html",
        "rewards.png",
    ]


# -- the command ---------------------------------------------------------------------------------
def _app() -> typer.Typer:
    from prefloop.cli.train_eval import eval_command

    app = typer.Typer()
    train_app = typer.Typer()
    train_app.command("eval")(eval_command)
    app.add_typer(train_app, name="train")
    return app


def _invoke(*args: str | Path) -> Any:
    return CliRunner().invoke(_app(), ["train", "eval", "--threads", "1", *map(str, args)])


def test_cli_json_object_and_report(perturbed_dir: Path, reward_dir: Path, tmp_path: Path) -> None:
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in PROMPTS])
    result = _invoke(
        "--model", perturbed_dir, "--prompts", prompts, "--reward", reward_dir,
        "--n", "4", "--max-new-tokens", "6", "--seed", "2", "--out", tmp_path / "out", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout.strip().splitlines()[-1])
    assert obj["prompts"] == 4 and obj["method"] == "dpo" and obj["adapter"] is True
    assert obj["scorer"] == str(reward_dir)
    low, high = obj["win_rate_interval"]
    assert low <= obj["win_rate"] <= high
    assert obj["kl_per_token"] > 0 and math.isfinite(obj["length_ratio"])
    assert obj["config"]["max_new_tokens"] == 6 and obj["config"]["seed"] == 2
    assert "samples" not in obj
    assert obj["verdict"].startswith(f"The trained model wins {obj['win_rate']:.1%}")
    assert Path(obj["files"]["html"]).is_file() and Path(obj["files"]["rewards_png"]).is_file()


def test_cli_reads_the_task_prompts(perturbed_dir: Path, reward_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Store.open(url, upgrade=True) as store, store.session() as session:
        task = get_or_create_task(session, "diary")
        for i, prompt in enumerate(["Busan, friends, happy", "Seoul, alone, calm"]):
            add_generation(session, task, output=f"draft {i}", prompt=prompt)
            add_generation(session, task, output=f"again {i}", prompt=prompt)
    result = _invoke(
        "--model", perturbed_dir, "--task", "diary", "--db", url, "--reward", reward_dir,
        "--max-new-tokens", "4", "--no-toxicity",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    table = " ".join(result.stdout.split())
    assert "prompts (scored) │ 2 (2)" in table and "toxic" not in table
    assert "The trained model wins" in table


def test_cli_bad_input_is_named(
    perturbed_dir: Path, base_dir: Path, reward_dir: Path, tmp_path: Path
) -> None:
    good = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hi"}])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    model, rm = ["--model", perturbed_dir], ["--reward", reward_dir]
    cases: list[tuple[list[str | Path], str]] = [
        (["--model", base_dir, "--prompts", good, *rm], "did not train"),
        ([*model, "--prompts", empty, *rm], "no prompts"),
        ([*model, "--prompts", good, "--reward", perturbed_dir], "not a prefloop reward model"),
        ([*model, *rm], "exactly one of --prompts"),
    ]
    for args, message in cases:
        result = _invoke(*args)
        assert isinstance(result.exception, PrefloopError), result.output
        assert message in " ".join(str(result.exception).split())
