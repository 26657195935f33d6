"""The fine-tuned transformer reward model on a tiny BERT built from a config (seconds on CPU)."""

from __future__ import annotations

import json
import math
import random
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from prefloop.errors import InvalidInputError
from prefloop.reward import (
    IncompatibleModelError,
    PairData,
    RatingData,
    TruncationWarning,
    load_reward_model,
)
from prefloop.reward.finetune import (
    FinetuneConfig,
    FinetunedRewardModel,
    _Encoder,
    bradley_terry_loss,
)

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "runs",
    "sleeps",
    "today",
    "park",
    "house",
    "tree",
    "river",
    "blue",
    "green",
    "red",
    "walks",
    "eats",
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = [*SPECIAL, "question", ":", "thanks", *WORDS]


def synthetic_pairs(n: int, seed: int) -> PairData:
    """The same random reply twice; the chosen one has the word "thanks" added somewhere."""
    rng = random.Random(seed)
    prompts, chosen, rejected = [], [], []
    for _ in range(n):
        base = [rng.choice(WORDS) for _ in range(rng.randint(4, 9))]
        good, bad = base.copy(), base.copy()
        good.insert(rng.randrange(len(good) + 1), "thanks")
        bad.insert(rng.randrange(len(bad) + 1), rng.choice(WORDS))
        prompts.append("question : " + " ".join(rng.choice(WORDS) for _ in range(5)))
        chosen.append(" ".join(good))
        rejected.append(" ".join(bad))
    return PairData(prompts=prompts, chosen=chosen, rejected=rejected)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread, above all on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT (hidden size 32) with a word-level vocabulary, saved as a model folder."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)})
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=1,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_config(folder: Path, **overrides: object) -> FinetuneConfig:
    settings: dict[str, object] = {
        "base_model": str(folder),
        "max_length": 32,
        "epochs": 2,
        "batch_size": 16,
        "learning_rate": 1e-2,
        "warmup_ratio": 0.1,
        "seed": 0,
        "device": "cpu",
    }
    settings.update(overrides)
    return FinetuneConfig(**settings)  # type: ignore[arg-type]


def accuracy(model: FinetunedRewardModel, data: PairData) -> float:
    return float(
        np.mean(model.score(data.chosen, data.prompts) > model.score(data.rejected, data.prompts))
    )


@pytest.fixture(scope="module")
def trained(tiny_bert: Path) -> FinetunedRewardModel:
    return FinetunedRewardModel(tiny_config(tiny_bert)).fit(synthetic_pairs(160, seed=1))


def test_learns_a_synthetic_preference(trained: FinetunedRewardModel, tiny_bert: Path) -> None:
    held_out = synthetic_pairs(100, seed=2)
    untrained = FinetunedRewardModel(tiny_config(tiny_bert, learning_rate=1e-9, epochs=1))
    untrained.fit(synthetic_pairs(16, seed=3))

    assert accuracy(trained, held_out) >= 0.9
    assert accuracy(untrained, held_out) < 0.75  # the task is not solved without training
    log = trained.training_
    assert log is not None and log.steps == 2 * 10
    assert np.mean(log.losses[-5:]) < np.mean(log.losses[:5]) - 0.1
    assert log.truncated == 0 and log.inputs == 320


def test_parameters_changed_and_embeddings_stayed(
    trained: FinetunedRewardModel, tiny_bert: Path
) -> None:
    from safetensors.torch import load_file

    before = load_file(str(tiny_bert / "model.safetensors"))
    assert trained._model is not None
    after = {k: v.detach().cpu() for k, v in trained._model.state_dict().items()}
    layer = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.allclose(before[layer], after[layer])
    words = "bert.embeddings.word_embeddings.weight"  # frozen by default
    assert torch.equal(before[words], after[words])


def test_score_unit_is_the_sigmoid_of_the_reward(trained: FinetunedRewardModel) -> None:
    texts = ["thanks the cat", "the cat runs"]
    raw = trained.score(texts)
    assert np.allclose(trained.score_unit(texts), 1.0 / (1.0 + np.exp(-raw)))


def test_save_and_load_give_the_same_scores(trained: FinetunedRewardModel, tmp_path: Path) -> None:
    data = synthetic_pairs(20, seed=5)
    folder = trained.save(tmp_path / "rm")

    assert (folder / "model" / "model.safetensors").exists()
    assert (folder / "model" / "tokenizer_config.json").exists()
    manifest = json.loads((folder / "prefloop-reward.json").read_text())
    assert manifest["kind"] == "pairwise" and manifest["class"] == "finetuned-transformer"
    assert "torch" in manifest["versions"]

    loaded = load_reward_model(folder, kind="pairwise")
    assert isinstance(loaded, FinetunedRewardModel)
    assert np.allclose(
        loaded.score(data.chosen, data.prompts), trained.score(data.chosen, data.prompts), atol=1e-6
    )
    assert loaded.training_ is not None and loaded.training_.losses == pytest.approx(
        trained.training_.losses if trained.training_ else [], abs=1e-5
    )
    with pytest.raises(IncompatibleModelError, match="pairwise"):
        load_reward_model(folder, kind="rating")


def test_same_seed_same_model(tiny_bert: Path) -> None:
    data = synthetic_pairs(32, seed=7)
    config = tiny_config(tiny_bert, epochs=1)
    first = FinetunedRewardModel(config).fit(data).score(data.chosen, data.prompts)
    again = FinetunedRewardModel(config).fit(data).score(data.chosen, data.prompts)
    other = FinetunedRewardModel(tiny_config(tiny_bert, epochs=1, seed=1)).fit(data)
    assert np.array_equal(first, again)
    assert not np.allclose(first, other.score(data.chosen, data.prompts))


# ---- truncation -------------------------------------------------------------------------------
def encoder(folder: Path, max_length: int) -> _Encoder:
    from transformers import AutoTokenizer

    return _Encoder(AutoTokenizer.from_pretrained(str(folder)), max_length, segments=True)


def test_truncation_keeps_the_end_of_the_prompt_and_the_start_of_the_reply(
    tiny_bert: Path,
) -> None:
    enc = encoder(tiny_bert, max_length=9)  # 6 tokens besides [CLS] … [SEP] … [SEP]
    vocab = {w: i for i, w in enumerate(VOCAB)}
    prompt = "cat dog runs sleeps today park"  # 6 tokens
    reply = "blue green red walks eats tree"  # 6 tokens

    def ids(text: str) -> list[int]:
        return [vocab[w] for w in text.split()]

    cls, sep = vocab["[CLS]"], vocab["[SEP]"]

    (cut,) = enc.encode([prompt], [reply])  # both too long: half each
    assert cut.input_ids == [cls, *ids("sleeps today park"), sep, *ids("blue green red"), sep]
    assert cut.prompt_cut and cut.reply_cut
    assert cut.token_type_ids == [0] * 5 + [1] * 4

    (short,) = enc.encode(["cat"], ["dog runs"])
    assert not short.prompt_cut and not short.reply_cut
    assert short.input_ids == [cls, *ids("cat"), sep, *ids("dog runs"), sep]

    (long_prompt,) = enc.encode([prompt], ["dog"])  # the reply fits; the prompt gets the rest
    assert long_prompt.input_ids == [cls, *ids("dog runs sleeps today park"), sep, *ids("dog"), sep]
    assert long_prompt.prompt_cut and not long_prompt.reply_cut

    (long_reply,) = enc.encode(["cat"], [reply])  # a short prompt leaves the reply more room
    assert long_reply.input_ids == [cls, *ids("cat"), sep, *ids("blue green red walks eats"), sep]

    (no_prompt,) = enc.encode([None], [reply + " " + reply])
    assert no_prompt.input_ids == [cls, *ids("blue green red walks eats tree blue"), sep]
    assert no_prompt.reply_cut and not no_prompt.prompt_cut


def test_truncation_is_counted_and_warned(tiny_bert: Path) -> None:
    data = synthetic_pairs(16, seed=4)
    long = PairData(
        prompts=[p + " " + " ".join(WORDS) for p in data.prompts],
        chosen=data.chosen,
        rejected=data.rejected,
    )
    model = FinetunedRewardModel(tiny_config(tiny_bert, max_length=16, epochs=1))
    with pytest.warns(TruncationWarning, match=r"32 of 32 inputs .* max_length=16"):
        model.fit(long)
    assert model.training_ is not None
    assert model.training_.truncated == 32 and model.training_.prompts_cut == 32

    with pytest.warns(TruncationWarning, match="scoring: 1 of 2"):
        model.score(["the cat", " ".join(WORDS * 2)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncationWarning)
        model.score(["the cat"])  # nothing cut, nothing said


def dialogue(*turns: str) -> str:
    """An HH-style prompt: alternating Human / Assistant turns ending with "Assistant:"."""
    roles = ("Human", "Assistant")
    return "".join(f"\n\n{roles[i % 2]}: {t}" for i, t in enumerate(turns)) + "\n\nAssistant:"


def test_last_turn_view_reads_only_the_last_human_turn(tiny_bert: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    last = _Encoder(tokenizer, 32, segments=True, prompt_view="last-turn")
    whole = _Encoder(tokenizer, 32, segments=True, prompt_view="dialogue")
    prompt = dialogue("cat dog", "runs", "park tree")
    (read,) = last.encode([prompt], ["blue"])
    (plain,) = whole.encode(["park tree"], ["blue"])
    assert read.input_ids == plain.input_ids  # [CLS] park tree [SEP] blue [SEP]
    (full,) = whole.encode([prompt], ["blue"])
    assert len(full.input_ids) > len(read.input_ids)
    (no_turns,) = last.encode(["cat dog"], ["blue"])  # a prompt without turns is read whole
    assert no_turns.input_ids == whole.encode(["cat dog"], ["blue"])[0].input_ids
    (no_prompt,) = last.encode([None], ["blue"])
    assert no_prompt.input_ids == whole.encode([None], ["blue"])[0].input_ids


def test_last_turn_model_ignores_earlier_turns_and_round_trips(
    tiny_bert: Path, tmp_path: Path
) -> None:
    data = synthetic_pairs(32, seed=9)
    data = PairData(
        prompts=[dialogue("cat", "dog", p) for p in data.prompts],
        chosen=data.chosen,
        rejected=data.rejected,
    )
    replies = data.chosen[:8]
    asked = data.prompts[:8]
    earlier_changed = [p.replace("Human: cat", "Human: river tree house", 1) for p in asked]
    assert earlier_changed != asked

    last = FinetunedRewardModel(tiny_config(tiny_bert, epochs=1)).fit(data)  # the default view
    assert last.config.prompt_view == "last-turn"
    assert np.array_equal(last.score(replies, asked), last.score(replies, earlier_changed))
    whole = FinetunedRewardModel(tiny_config(tiny_bert, epochs=1, prompt_view="dialogue"))
    whole.fit(data)
    assert not np.allclose(whole.score(replies, asked), whole.score(replies, earlier_changed))

    loaded = load_reward_model(last.save(tmp_path / "rm"))
    assert isinstance(loaded, FinetunedRewardModel)
    assert loaded.config.prompt_view == "last-turn"
    assert np.allclose(loaded.score(replies, asked), last.score(replies, asked), atol=1e-6)


def test_a_model_saved_before_prompt_view_existed_reads_dialogues(
    trained: FinetunedRewardModel, tmp_path: Path
) -> None:
    folder = trained.save(tmp_path / "old")
    manifest_file = folder / "prefloop-reward.json"
    manifest = json.loads(manifest_file.read_text())
    del manifest["config"]["prompt_view"]
    manifest_file.write_text(json.dumps(manifest))
    loaded = load_reward_model(folder)
    assert isinstance(loaded, FinetunedRewardModel)
    assert loaded.config.prompt_view == "dialogue"


# ---- the loss ----------------------------------------------------------------------------------
def test_loss_matches_a_hand_computation() -> None:
    r_c, r_r = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 0.0])
    plain = (math.log1p(math.exp(-1.5)) + math.log1p(math.exp(1.0))) / 2
    assert bradley_terry_loss(r_c, r_r).item() == pytest.approx(plain, rel=1e-6)

    margin = torch.tensor([1.0, 0.5])
    with_margin = (math.log1p(math.exp(-0.5)) + math.log1p(math.exp(1.5))) / 2
    assert bradley_terry_loss(r_c, r_r, margin).item() == pytest.approx(with_margin, rel=1e-6)

    centered = plain + 0.1 * ((2.5**2 + 1.0**2) / 2)
    assert bradley_terry_loss(r_c, r_r, 0.0, 0.1).item() == pytest.approx(centered, rel=1e-6)


def test_centering_pulls_rewards_toward_zero(tiny_bert: Path) -> None:
    data = synthetic_pairs(64, seed=8)
    free = FinetunedRewardModel(tiny_config(tiny_bert, epochs=1)).fit(data)
    centered = FinetunedRewardModel(tiny_config(tiny_bert, epochs=1, center_coef=1.0)).fit(data)
    texts = data.chosen + data.rejected
    prompts = data.prompts * 2
    assert abs(centered.score(texts, prompts).mean()) < abs(free.score(texts, prompts).mean())
    assert abs(centered.score(texts, prompts).mean()) < 0.5


# ---- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("max_length", 4),
        ("epochs", 0),
        ("batch_size", 0),
        ("learning_rate", -1.0),
        ("warmup_ratio", 1.0),
        ("center_coef", -0.5),
        ("margin_scale", -1.0),
        ("device", "tpu"),
        ("prompt_view", "whole"),
    ],
)
def test_bad_settings_name_the_setting(tiny_bert: Path, setting: str, value: object) -> None:
    model = FinetunedRewardModel(tiny_config(tiny_bert, **{setting: value}))
    with pytest.raises(InvalidInputError, match=setting if setting != "device" else "tpu"):
        model.fit(synthetic_pairs(8, seed=0))


def test_unknown_base_model_is_refused(tmp_path: Path) -> None:
    model = FinetunedRewardModel(FinetuneConfig(base_model=str(tmp_path / "nowhere")))
    with pytest.raises(InvalidInputError, match="nowhere"):
        model.fit(synthetic_pairs(8, seed=0))


def test_ratings_are_refused(tiny_bert: Path) -> None:
    ratings = RatingData(texts=["a", "b", "c", "d"], ratings=np.array([0, 1, 0, 1.0]),
                         prompts=[None] * 4)  # fmt: skip
    with pytest.raises(InvalidInputError, match="PairData"):
        FinetunedRewardModel(tiny_config(tiny_bert)).fit(ratings)  # type: ignore[arg-type]


# ---- a decoder backbone ------------------------------------------------------------------------
def test_a_decoder_backbone_trains_and_round_trips(tmp_path: Path) -> None:
    from tests.llm.tiny_model import WORDS as LLAMA_WORDS
    from tests.llm.tiny_model import build_tiny_chat_model

    folder = tmp_path / "tiny-llama"
    build_tiny_chat_model(folder)
    rng = random.Random(0)
    words = [w for w in LLAMA_WORDS if w != "good"]
    base = [" ".join(rng.choice(words) for _ in range(5)) for _ in range(48)]
    data = PairData(
        prompts=["today"] * 48,
        chosen=[b + " good" for b in base],
        rejected=[b + " bad" for b in base],
    )
    model = FinetunedRewardModel(tiny_config(folder, epochs=3)).fit(data)
    assert accuracy(model, data) >= 0.9
    loaded = load_reward_model(model.save(tmp_path / "rm"))
    assert np.allclose(loaded.score(data.chosen[:4]), model.score(data.chosen[:4]), atol=1e-6)
