"""Reward functions from SPECs: the grammar, the arithmetic against hand values, None where a
scorer fails (never 0), each atom on real scorers (the rubric, the toxicity classifier, a saved
rating model, an lm-scalar model, the LLM judge on a real local chat server), and the call TRL
makes."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prefloop.demo import DIARY, RubricScorer
from prefloop.errors import InvalidInputError
from prefloop.feedback import RatingEvent, record_feedback
from prefloop.llm import OpenAIChatBackend, RetryPolicy
from prefloop.reward import RatingData
from prefloop.store import Store
from prefloop.store.repo import add_generation, get_or_create_task
from prefloop.train.rewards import (
    RewardFunction,
    RewardSpecError,
    completion_text,
    parse_reward_spec,
    prompt_text,
    reward_function,
)
from tests.reward.conftest import synthetic_ratings
from tests.support.chat_server import ChatServer, Fail

# A diary entry that breaks no rubric rule when its facts are Busan, friends and happy.
GOOD_ENTRY = (
    "Today I went to Busan with my friends and I felt happy the whole day. We walked along the "
    "beach in the morning and ate grilled fish at a small stall near the harbour. In the "
    "afternoon we climbed up to a temple on the hill and looked at the sea for a long time. "
    "On the train home I looked at the photos and smiled."
)
FACTS = {"place": "Busan", "company": "with friends", "mood": "happy"}


def words(n: int) -> str:
    return " ".join(["word"] * n)


# ---- the grammar ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "canonical"),
    [
        ("rubric", "rubric"),
        ("0.5 * rubric + toxicity", "0.5*rubric+toxicity"),
        ("rubric-0.1*length", "rubric-0.1*length"),  # '-' after a name is the minus sign
        ("rubric - 0.1 * length", "rubric-0.1*length"),
        ("2*3*length", "6*length"),  # numbers fold
        ("length*2", "length*2"),
        ("-length", "-length"),
        ("rubric - (length + toxicity)", "rubric-(length+toxicity)"),
        ("0.5*(rubric+length)", "0.5*(rubric+length)"),
        ("min(rubric, judge)", "min(rubric,judge)"),
        ("mean_std(rubric, judge, length)", "mean_std(rubric,judge,length,k=1)"),
        ("mean_std(rubric,judge,k=0.5)", "mean_std(rubric,judge,k=0.5)"),
        ("sigmoid(rubric)", "sigmoid(rubric)"),
        ("clip(rubric - length, -1, 1)", "clip(rubric-length,-1,1)"),
        ("clip(rubric, -2*0.5, 1e0)", "clip(rubric,-1,1)"),
        ("1e-3*length", "0.001*length"),
    ],
)
def test_specs_parse_to_their_canonical_form(spec: str, canonical: str) -> None:
    assert parse_reward_spec(spec) == canonical
    assert parse_reward_spec(canonical) == canonical  # the canonical form reads back the same


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "the SPEC is empty"),
        ("rubrc", "'rubrc' is neither a reward"),
        ("rubric+", "position 8: expected a reward"),
        ("rubric length", "expected an operator"),
        ("rubric)", "found ')'"),
        ("(rubric", "expected ')'"),
        ("0.5", "names no scorer"),
        ("rubric*length", "multiplies a reward by a number"),
        ("min(rubric)", "min needs at least two rewards"),
        ("mean_std(rubric)", "mean_std needs at least two rewards"),
        ("mean_std(rubric,length,k=-1)", "k must be >= 0"),
        ("mean_std(rubric,length,k=judge)", "k must be a number"),
        ("min(rubric,length,k=1)", "k= is an argument of mean_std"),
        ("sigmoid(rubric,length)", "sigmoid takes one reward"),
        ("clip(rubric,1,-1)", "low < high"),
        ("clip(rubric,length,1)", "low bound must be a number"),
        ("clip(rubric)", "clip takes a reward and two numbers"),
        ("sigmoid rubric", "sigmoid is a function"),
        ("rubric & length", "unexpected character '&'"),
        ("'no/such/folder'", "no such reward-model folder"),
        ("'unclosed", "never closed"),
        ("rubic-0.1*length", "write A - B with spaces"),
        ("0.5rubric", "'0.5rubric' is neither"),
    ],
)
def test_bad_specs_name_the_problem_and_what_is_allowed(spec: str, message: str) -> None:
    with pytest.raises(RewardSpecError, match=re.escape(message)) as caught:
        parse_reward_spec(spec)
    assert isinstance(caught.value, InvalidInputError)
    assert "min(A,B,…), mean_std(A,B,…,k=1), sigmoid(A), clip(A,LO,HI)" in str(caught.value)


def test_a_spec_that_is_not_text_is_refused() -> None:
    with pytest.raises(RewardSpecError, match="a reward SPEC is a string"):
        reward_function(["rubric"])  # type: ignore[arg-type]


def test_folder_names_with_dashes_and_quotes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "rm-v2").mkdir()
    (tmp_path / "rubric").mkdir()
    folder = tmp_path / "rm-v2"
    # the longest existing folder wins over reading '-' as a minus
    assert parse_reward_spec(f"{folder}-0.1*length") == f"{folder}-0.1*length"
    assert parse_reward_spec(f"min({folder},{folder} - length)") == (
        f"min({folder},{folder}-length)"
    )
    # a folder called like an atom is quoted, and stays a folder
    quoted = f"'{tmp_path / 'rubric'}'"
    assert parse_reward_spec(quoted) == str(tmp_path / "rubric")
    monkeypatch.chdir(tmp_path)
    assert parse_reward_spec("'rubric' + rubric") == "'rubric'+rubric"
    assert parse_reward_spec("rm-v2-length") == "rm-v2-length"


# ---- arithmetic against hand values --------------------------------------------------------------
LENGTHS = (10, 30, 50)


def length_batch() -> tuple[list[str], list[str]]:
    return ["p"] * len(LENGTHS), [words(n) for n in LENGTHS]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("length", lambda x: x),
        ("2*length+1", lambda x: 2 * x + 1),
        ("length*2-0.5", lambda x: 2 * x - 0.5),
        ("-length", lambda x: -x),
        ("1-(length+length)", lambda x: 1 - 2 * x),
        ("min(length, 0.2)", lambda x: min(x, 0.2)),
        ("min(length, 1-length)", lambda x: min(x, 1 - x)),
        # members L and 2L: mean 1.5L, population std 0.5L
        ("mean_std(length, 2*length)", lambda x: 1.5 * x - 0.5 * x),
        ("mean_std(length, 2*length, k=0)", lambda x: 1.5 * x),
        ("mean_std(length, 2*length, 3*length, k=2)", lambda x: 2 * x - 2 * x * math.sqrt(2 / 3)),
        ("sigmoid(10*length-3)", lambda x: 1 / (1 + math.exp(-(10 * x - 3)))),
        ("clip(10*length-3, -1, 1)", lambda x: max(-1.0, min(1.0, 10 * x - 3))),
    ],
)
def test_formulas_compute_what_they_say(spec: str, expected: Any) -> None:
    reward = reward_function(spec)
    got = reward(*length_batch())
    want = [expected(n / 100) for n in LENGTHS]
    assert got == pytest.approx(want, abs=1e-12)


def test_the_rubric_enters_formulas_with_its_own_values() -> None:
    texts = [GOOD_ENTRY, "Here is your diary: a day.", "I went to Busan with friends, happy."]
    scorer = RubricScorer()
    rubric = [scorer.score(t, DIARY.facts(FACTS)).value for t in texts]
    assert rubric == [1.0, -1.0, 0.0]  # clean; meta text; 7 words (< 20: -1)
    reward = reward_function("0.5*rubric - length")
    got = reward(["p"] * 3, texts, inputs=[FACTS] * 3)
    want = [0.5 * r - len(t.split()) / 100 for r, t in zip(rubric, texts, strict=True)]
    assert got == pytest.approx(want, abs=1e-12)


def test_an_empty_batch_gives_no_rewards() -> None:
    reward = reward_function("rubric+length")
    assert reward([], []) == []
    assert reward.last_stats is not None and reward.last_stats.n == 0


def test_mismatched_or_malformed_batches_are_refused() -> None:
    reward = reward_function("rubric")
    with pytest.raises(InvalidInputError, match="2 prompts but 1 completions"):
        reward(["a", "b"], ["x"])
    with pytest.raises(InvalidInputError, match="not one string"):
        reward("a", "x")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="completion 1 is a int"):
        reward(["a"], [7])
    with pytest.raises(InvalidInputError, match="one dict of input fields per completion"):
        reward(["a"], ["x"], inputs=[FACTS, FACTS])
    with pytest.raises(InvalidInputError, match="inputs 1 is a int"):
        reward(["a"], ["x"], inputs=[3])


# ---- prompts and completions in TRL's conversational form ----------------------------------------
def test_prompt_and_completion_texts() -> None:
    assert prompt_text("plain") == "plain"
    assert prompt_text([{"role": "user", "content": "Hi"}]) == "Hi"
    assert prompt_text(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    ) == ("Be brief.\n\nHi")
    multi = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": [{"type": "text", "text": "Tell me a joke"}]},
    ]
    assert prompt_text(multi) == (
        "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Tell me a joke\n\nAssistant:"
    )
    assert completion_text([{"role": "assistant", "content": "Sure."}]) == "Sure."
    assert completion_text([{"role": "tool", "content": "x"}]) == "x"


# ---- the rubric's facts --------------------------------------------------------------------------
def test_the_rubric_checks_facts_only_when_it_is_given_the_inputs() -> None:
    reward = reward_function("rubric")
    no_mood = GOOD_ENTRY.replace(" and I felt happy the whole day", "")
    texts = [GOOD_ENTRY, no_mood, no_mood, no_mood]
    inputs: list[Any] = [FACTS, FACTS, None, json.dumps(FACTS)]  # None: no facts; JSON text read
    got = reward(["p"] * 4, texts, inputs=inputs)
    assert got == [1.0, 0.5, 1.0, 0.5]  # the missing mood costs 0.5 where the facts are known
    assert reward(["p"] * 2, texts[:2]) == [1.0, 1.0]  # no inputs column: no fact rule
    # the diary's cue words: "with my family" is mentioned by "mom"
    family = {"place": "Busan", "company": "with my family", "mood": "happy"}
    with_mom = GOOD_ENTRY.replace("my friends", "my mom")
    assert reward(["p"], [with_mom], inputs=[family]) == [1.0]


def test_a_store_task_gives_the_rubric_its_scale_and_fields(sqlite_store: Store) -> None:
    with sqlite_store.session() as s:
        get_or_create_task(s, "trip", input_fields=["city"], scale=[1, 2, 3, 4, 5])
    reward = reward_function("rubric", task="trip", store=sqlite_store)
    text = GOOD_ENTRY.replace("Busan", "Gyeongju")
    # the task's only field is the city; "mood" in the inputs is not one of its facts
    got = reward(["p"] * 2, [text, GOOD_ENTRY], inputs=[{"city": "Gyeongju", "mood": "x"}] * 2)
    assert got == [5.0, 4.0]  # the top of 1..5; a missing fact costs 0.5 of the range [-1, 1]


# ---- failures are None, never 0 ------------------------------------------------------------------
def judge_backend(server: ChatServer) -> OpenAIChatBackend:
    return OpenAIChatBackend(
        base_url=server.url,
        api_key="test",
        model=server.model,
        timeout=5.0,
        retry=RetryPolicy(max_retries=0),
    )


def item_text(messages: list[dict[str, Any]]) -> str:
    user = [m["content"] for m in messages if m["role"] == "user"]
    found = re.findall(r"<<<\n(.*?)\n>>>", user[-1], flags=re.S)
    return found[-1] if found else user[-1]


def fails_on_broken(messages: list[dict[str, Any]]) -> Any:
    """A judge that scores 0.5, and rejects the request (HTTP 400, not retried) for BROKEN."""
    return Fail(400, "cannot read this") if "BROKEN" in item_text(messages) else "Score: 0.5"


@pytest.fixture
def server() -> Iterator[ChatServer]:
    with ChatServer.start(responder=fails_on_broken) as running:
        yield running


@pytest.mark.parametrize(
    "spec",
    [
        "judge",
        "judge+length",
        "0*judge+length",
        "length-0.1*judge",
        "-judge",
        "min(judge, length)",
        "min(length, judge)",
        "mean_std(length, judge, k=0)",
        "sigmoid(judge)",
        "clip(judge, -1, 1)",
        "clip(judge - 10, -1, 1)",
        "min(length, 2*length)+0*judge",
    ],
)
def test_a_sample_one_atom_cannot_score_has_no_reward_in_any_formula(
    spec: str, server: ChatServer
) -> None:
    reward = reward_function(spec, backend=judge_backend(server))
    texts = ["fine text", "BROKEN text", "another fine one"]
    got = reward(["p"] * 3, texts)
    assert got[1] is None  # not 0, not a number
    assert got[0] is not None and got[2] is not None
    stats = reward.last_stats
    assert stats is not None and (stats.n, stats.n_failed) == (3, 1)
    assert stats.failed_fraction == pytest.approx(1 / 3)
    judge = stats.atoms["judge"]
    assert judge.n_failed == 1 and judge.mean == 0.5 and "cannot read this" in str(judge.error)
    if "length" in spec:
        assert stats.atoms["length"].n_failed == 0


def test_the_judge_scores_on_the_scale_and_sees_the_prompt(server: ChatServer) -> None:
    replies = {"good": "Score: 1", "bad": "Score: -0.5"}
    server.responder = lambda messages: replies[item_text(messages)]
    reward = reward_function("judge", backend=judge_backend(server))
    prompts = [[{"role": "user", "content": "Write about Busan."}], "Write about Seoul."]
    completions = [[{"role": "assistant", "content": "good"}], "bad"]
    assert reward(prompts, completions) == [1.0, -0.5]
    sent = {r.messages[-1]["content"] for r in server.chat_requests}  # concurrent: any order
    assert sent == {
        "Input:\nWrite about Busan.\n\nText to rate:\n<<<\ngood\n>>>",
        "Input:\nWrite about Seoul.\n\nText to rate:\n<<<\nbad\n>>>",
    }
    system = server.chat_requests[0].messages[0]["content"]
    assert "-1, -0.5, 0, 0.5, 1" in system and "photo diary" in system  # the diary task
    assert reward.describe()["atoms"] == {"judge": "judge"}


def test_a_judge_server_that_fails_every_call_gives_all_none(server: ChatServer) -> None:
    server.responder = lambda messages: Fail(503, "overloaded")
    reward = reward_function("0.5*judge+rubric", backend=judge_backend(server))
    got = reward(["p"] * 3, [GOOD_ENTRY] * 3)
    assert got == [None, None, None]
    stats = reward.last_stats
    assert stats is not None and stats.n_failed == 3 and stats.mean is None
    assert stats.atoms["judge"].n_failed == 3 and "503" in str(stats.atoms["judge"].error)
    assert stats.atoms["rubric"].n_failed == 0  # the other atom still scored
    assert stats.to_json()["failed_fraction"] == 1.0


def test_a_remote_judge_without_settings_fails_before_scoring(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("PREFLOOP_LLM_API_KEY", "PREFLOOP_LLM_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(InvalidInputError, match="PREFLOOP_LLM_API_KEY is not set"):
        reward_function("rubric+judge", backend="openai")


def test_a_store_without_a_task_keeps_the_diary_and_a_zero_shot_judge(
    server: ChatServer, sqlite_store: Store
) -> None:
    server.responder = lambda messages: "Score: 0"
    reward = reward_function("judge", store=sqlite_store, backend=judge_backend(server))
    assert reward(["Q"], ["text"]) == [0.0]
    messages = server.chat_requests[0].messages
    assert [m["role"] for m in messages] == ["system", "user"]  # no examples


def test_the_judge_takes_examples_from_the_store(server: ChatServer, sqlite_store: Store) -> None:
    server.responder = lambda messages: "Score: 1"
    with sqlite_store.session() as s:
        task = get_or_create_task(s, "stars", scale=[1, 2, 3], rubric="More stars are better.")
        for i, value in enumerate((1, 2, 3, 1, 2, 3)):
            g = add_generation(s, task, prompt="Q", output=f"rated {value} (text {i})")
            record_feedback(s, task, RatingEvent(generation_id=g.id, value=value))
    reward = reward_function(
        "judge", task="stars", store=sqlite_store, backend=judge_backend(server)
    )
    assert reward(["Q"], ["new text"]) == [1.0]
    messages = server.chat_requests[0].messages
    assert "More stars are better." in messages[0]["content"]
    assert "1, 2, 3" in messages[0]["content"]
    shots = [m["content"] for m in messages if m["role"] == "assistant"]
    assert sorted(shots) == ["Score: 1", "Score: 2", "Score: 3"]  # one example per level


# ---- the toxicity classifier ---------------------------------------------------------------------
def test_toxicity_is_minus_the_probability_of_toxic() -> None:
    from prefloop.reward._toxicity import load_toxicity_classifier

    texts = ["What a lovely walk by the sea with my family.", "You are a stupid idiot, shut up."]
    reward = reward_function("toxicity")
    got = reward(["p", "p"], texts)
    expected = -load_toxicity_classifier().predict(texts)[:, 0]
    assert got == pytest.approx(expected.tolist(), abs=1e-9)
    assert got[0] is not None and got[1] is not None
    assert -0.2 < got[0] <= 0.0 and got[1] < -0.5
    combined = reward_function("rubric+toxicity")(["p", "p"], texts)
    assert combined[1] is not None and combined[0] is not None and combined[1] < combined[0]


# ---- saved reward models -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rating_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from prefloop.reward.rating import RatingModelConfig, SklearnRatingModel

    rows = synthetic_ratings(40)
    data = RatingData(
        texts=[r["text"] for r in rows],
        ratings=np.array([r["rating"] for r in rows]),
        prompts=[None] * len(rows),
    )
    model = SklearnRatingModel(RatingModelConfig(model="ridge:stats")).fit(data)
    return model.save(tmp_path_factory.mktemp("rm") / "rating-rm")


def test_a_saved_rating_model_is_a_reward(rating_folder: Path) -> None:
    from prefloop.reward import load_reward_model

    texts = [r["text"] for r in synthetic_ratings(6, seed=3)]
    model = load_reward_model(rating_folder)
    raw = model.score(texts, ["p"] * len(texts))
    reward = reward_function(str(rating_folder))
    assert reward(["p"] * len(texts), texts) == pytest.approx(raw.tolist())
    assert reward.describe()["atoms"] == {
        str(rating_folder): "rating reward model (sklearn-rating)"
    }
    squashed = reward_function(f"sigmoid({rating_folder}) - 0.1*length")
    want = [1 / (1 + math.exp(-r)) - len(t.split()) / 1000 for r, t in zip(raw, texts, strict=True)]
    assert squashed(["p"] * len(texts), texts) == pytest.approx(want)
    # one model named twice is loaded and scored once
    ensemble = reward_function(f"min({rating_folder}, {rating_folder}+1)")
    assert ensemble.atoms == (str(rating_folder),)
    assert ensemble(["p"] * len(texts), texts) == pytest.approx(raw.tolist())


def test_folders_that_are_not_reward_models_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RewardSpecError, match="is not a prefloop reward model"):
        reward_function(str(empty))
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "prefloop-train.json").write_text(json.dumps({"method": "dpo"}), "utf-8")
    with pytest.raises(RewardSpecError, match=r"trained by `prefloop train dpo` \(a policy\)"):
        reward_function(f"{policy}+rubric")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "prefloop-reward.json").write_text("{not json", "utf-8")
    with pytest.raises(RewardSpecError, match="is not valid JSON"):
        reward_function(str(broken))
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "prefloop-reward.json").write_text(json.dumps({"format": 99, "kind": "rating"}))
    with pytest.raises(RewardSpecError, match="saved in reward-model format 99"):
        reward_function(str(newer))
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    manifest = {"format": 1, "kind": "rating", "class": "quantum-rm", "module": "elsewhere"}
    (unknown / "prefloop-reward.json").write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(RewardSpecError, match="of class 'quantum-rm', which this prefloop does"):
        reward_function(str(unknown))
    afile = tmp_path / "file.txt"
    afile.write_text("x", "utf-8")
    with pytest.raises(RewardSpecError, match="is not a folder"):
        reward_function(str(afile))


def test_an_lm_scalar_model_reads_the_prompt(tiny_base: Path, tmp_path: Path) -> None:
    import torch

    from prefloop.reward import TrainSummary, load_reward_model
    from prefloop.reward.lm_scalar import ScalarHeadConfig, ScalarHeadRewardModel
    from prefloop.train.models import load_scalar_model, load_tokenizer

    torch.manual_seed(0)
    model = ScalarHeadRewardModel(ScalarHeadConfig(base=str(tiny_base), lora=False))
    model.tokenizer_ = load_tokenizer(tiny_base)
    model.model_ = load_scalar_model(tiny_base, model.tokenizer_).eval()
    model.train_ = TrainSummary(n=0, fingerprint="untrained head")
    folder = model.save(tmp_path / "lm-rm")
    loaded = load_reward_model(folder)

    reward = reward_function(str(folder))
    assert reward.describe()["atoms"][str(folder)] == "pairwise reward model (lm-scalar)"
    texts = ["We walked by the sea.", "We walked by the sea."]
    plain = ["Write about Busan.", "Write about Seoul."]
    chat = [[{"role": "user", "content": p}] for p in plain]
    expected = loaded.score(texts, plain)
    assert expected[0] != pytest.approx(expected[1])  # the prompt matters to the model
    assert reward(plain, texts) == pytest.approx(expected.tolist(), abs=1e-6)
    assert reward(chat, [[{"role": "assistant", "content": t}] for t in texts]) == pytest.approx(
        expected.tolist(), abs=1e-6
    )
    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Write about Busan."},
    ]
    hh = "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Write about Busan.\n\nAssistant:"
    assert reward([turns], texts[:1]) == pytest.approx(
        loaded.score(texts[:1], [hh]).tolist(), abs=1e-6
    )


# ---- how TRL calls it ----------------------------------------------------------------------------
def test_trl_sees_the_name_and_a_plain_synchronous_function() -> None:
    from trl.trainer.utils import get_callable_name, is_async_callable

    reward = reward_function("0.5 * rubric + toxicity")
    assert isinstance(reward, RewardFunction)
    assert reward.name == reward.__name__ == "0.5*rubric+toxicity"
    assert get_callable_name(reward) == "0.5*rubric+toxicity"
    assert not is_async_callable(reward)


def test_called_the_way_grpo_calls_reward_functions(server: ChatServer) -> None:
    """The keywords of TRL 1.16's ``GRPOTrainer._calculate_rewards``: prompts, completions,
    completion_ids, the dataset's other columns, trainer_state, log_extra and log_metric."""
    reward = reward_function("rubric + 0.1*judge", backend=judge_backend(server))
    prompts = [[{"role": "user", "content": "Write my diary."}]] * 3
    completions = [
        [{"role": "assistant", "content": GOOD_ENTRY}],
        [{"role": "assistant", "content": GOOD_ENTRY + " BROKEN"}],
        [{"role": "assistant", "content": "Here is your diary: fine."}],
    ]
    metrics: dict[str, list[float]] = {}
    output = reward(
        prompts=prompts,
        completions=completions,
        completion_ids=[[1, 2], [3], [4, 5]],
        inputs=[FACTS, FACTS, FACTS],
        trainer_state=object(),
        log_extra=lambda column, values: None,
        log_metric=lambda name, value: metrics.setdefault(name, []).append(value),
    )
    assert output == pytest.approx([1.05, None, -0.95])
    # what TRL does next: None becomes NaN, and the sample drops out of the group's baseline
    as_trl = [r if r is not None else float("nan") for r in output]
    assert math.isnan(as_trl[1]) and not any(math.isnan(r) for r in (as_trl[0], as_trl[2]))
    name = "rubric+0.1*judge"
    assert metrics[f"reward/{name}/failed_fraction"] == [pytest.approx(1 / 3)]
    assert metrics[f"reward/{name}/judge/failed_fraction"] == [pytest.approx(1 / 3)]
    # the rubric scored all three: 1, 0.5 (" BROKEN" leaves the last sentence cut off), -1
    assert metrics[f"reward/{name}/rubric/mean"] == [pytest.approx(0.5 / 3)]


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_inside_a_real_trl_trainer(
    method: str, tiny_base: Path, tmp_path: Path, server: ChatServer
) -> None:
    """TRL's own ``_calculate_rewards`` (GRPO and RLOO) with conversational data and the
    dataset's ``inputs`` column: our reward where it scored, NaN (dropped) where it did not."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    reward = reward_function("rubric - 0.1*length + 0*judge", backend=judge_backend(server))
    row = {"prompt": [{"role": "user", "content": "Write my diary."}], "inputs": FACTS}
    config, trainer_class = {"grpo": (GRPOConfig, GRPOTrainer), "rloo": (RLOOConfig, RLOOTrainer)}[
        method
    ]
    args = config(
        output_dir=str(tmp_path / method),
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=4,
        report_to=[],
        use_cpu=True,
    )
    trainer = trainer_class(
        model=str(tiny_base),
        reward_funcs=[reward],
        args=args,
        train_dataset=Dataset.from_list([row] * 2),
    )
    assert trainer.reward_func_names == [reward.name]
    completions = [
        [{"role": "assistant", "content": GOOD_ENTRY}],
        [{"role": "assistant", "content": "BROKEN"}],
    ]
    rewards = trainer._calculate_rewards([row, row], [row["prompt"]] * 2, completions, [[1], [2]])
    assert rewards.shape == (2, 1)
    assert rewards[0, 0].item() == pytest.approx(1.0 - 0.1 * len(GOOD_ENTRY.split()) / 100)
    assert math.isnan(rewards[1, 0].item())  # dropped by TRL, not scored 0
