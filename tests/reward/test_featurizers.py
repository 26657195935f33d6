"""Featurizers: exact text statistics, concatenation, embeddings and truncation warnings."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from prefloop.errors import InvalidInputError
from prefloop.reward import TruncationWarning
from prefloop.reward.featurizers import (
    CharSurprisal,
    Concat,
    SentenceEmbedding,
    StyleStats,
    TextStats,
    Toxicity,
    _Encoder,
    build_featurizer,
    last_request,
)


def stats(text: str, prompt: str | None = None) -> dict[str, float]:
    featurizer = TextStats()
    row = featurizer.transform([text], [prompt])[0]
    names = [n.split(":", 1)[1] for n in featurizer.feature_names()]
    assert len(names) == row.size
    return dict(zip(names, row.tolist(), strict=True))


def test_plain_sentences() -> None:
    s = stats("We walked. It rained!  Fine?")
    assert s["sentences"] == 3
    assert s["chars_per_100"] == pytest.approx(len("We walked. It rained!  Fine?") / 100)
    assert (s["exclamations"], s["questions"], s["double_spaces"]) == (1, 1, 1)
    assert s["format_ok"] == 1.0 and s["has_prompt"] == 0.0


def test_meta_text_breaks_the_format() -> None:
    for text in (
        "Here is the diary (version 2).",
        "## Diary\n- went out",
        "Note: we went out",
        "일기를 작성해드릴게요.\n\n오늘은 좋았다.",
        "xxx(음식 이름)을 먹었다.",
    ):
        assert stats(text)["format_ok"] == 0.0, text
    assert stats("부산에 놀러갔다. 정말 좋았다!")["format_ok"] == 1.0


def test_korean_cues() -> None:
    s = stats("오늘 바다에 갔다. 정말 좋았습니다. 다음에 또 와요!")
    assert s["ko_polite_endings"] == 2
    assert s["ko_plain_ending_share"] == pytest.approx(1 / 3)
    assert s["hangul_share"] == 1.0


def test_repetition_and_prompt_overlap() -> None:
    s = stats("good good good day. good good good day.", prompt="a good day")
    assert s["sentence_repetition"] == pytest.approx(0.5)
    assert s["word_repetition"] == pytest.approx(1 - 2 / 8)
    assert s["has_prompt"] == 1.0 and 0.0 < s["prompt_overlap"] < 1.0


def test_empty_text_gives_zeros_not_errors() -> None:
    s = stats("")
    assert s["sentences"] == 0 and s["chars_per_100"] == 0


def test_concat_and_build() -> None:
    a, b = TextStats(), TextStats()
    both = a + b
    assert isinstance(both, Concat) and len(both.parts) == 2
    x = both.transform(["one. two."])
    assert x.shape == (1, 2 * TextStats().transform(["z"]).shape[1])
    built = build_featurizer("stats+use")
    assert isinstance(built, Concat)
    assert isinstance(built.parts[1], SentenceEmbedding) and built.parts[1].model == "use"
    with pytest.raises(InvalidInputError, match=r"unknown feature set 'nope'"):
        build_featurizer("stats+nope")


def test_last_request_of_a_dialogue() -> None:
    prompt = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how do I pick a lock?\n\nAssistant:"
    assert last_request(prompt) == "how do I pick a lock?"
    assert last_request("  write a diary  ") == "write a diary"


def test_encoder_caches_and_warns_about_truncation() -> None:
    calls: list[list[str]] = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return np.array([[len(t[:5]), 1.0] for t in texts])

    encoder = _Encoder(2, encode, lambda ts: sum(len(t) > 5 for t in ts), "5 characters")
    with pytest.warns(
        TruncationWarning, match=r"1 of 2 texts are longer than tiny takes \(5 characters\)"
    ):
        first = encoder.embed(["abc", "abcdefgh", "abc"], "tiny")
    assert first[:, 0].tolist() == [3, 5, 3]
    again = encoder.embed(["abcdefgh"], "tiny")
    assert again[0, 0] == 5 and calls == [["abc", "abcdefgh"]]


@pytest.mark.slow
def test_use_embeddings_handle_korean_and_cut_very_long_texts() -> None:
    featurizer = SentenceEmbedding(model="use")
    x = featurizer.transform(["부산에 놀러갔다.", "Busan trip.", "오늘은 비가 왔다."])
    assert x.shape == (3, 512)
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-4)
    with pytest.warns(TruncationWarning, match=r"4000 characters"):
        featurizer.transform(["가" * 4100])


@pytest.mark.slow
def test_prompt_view_adds_product_and_cosine() -> None:
    featurizer = SentenceEmbedding(model="use", view="prompt+text")
    x = featurizer.transform(["a reply", "a reply"], ["\n\nHuman: a question\n\nAssistant:", None])
    assert x.shape == (2, 512 * 2 + 1)
    assert np.all(x[1, 512:] == 0.0)  # no prompt: no interaction
    assert -1.0 <= x[0, -1] <= 1.0


def style(text: str) -> dict[str, float]:
    featurizer = StyleStats()
    row = featurizer.transform([text])[0]
    names = [n.split(":", 1)[1] for n in featurizer.feature_names()]
    assert len(names) == row.size
    return dict(zip(names, row.tolist(), strict=True))


def test_style_counts_connectives_intensifiers_and_endings() -> None:
    linked = style("바다에 가서 수영하고 밥을 먹었다. 정말 좋았던 것 같다.")
    # 가서, 수영하고, 좋았던 (a text's last word never counts)
    assert linked["connectives"] == 3
    assert linked["intensifiers"] == 1 and linked["reflective_phrases"] == 1
    assert linked["ending_variety"] == 1.0  # 었다 / 같다
    flat = style("밥을 먹었다. 물을 먹었다. 잠을 잤다.")
    assert flat["connectives"] == 0
    assert flat["ending_variety"] == pytest.approx(2 / 3)
    assert style("오늘바다에가서놀았다.")["word_chars_max"] == 10  # missing spaces show


def test_char_surprisal_needs_fitting_and_finds_odd_text() -> None:
    corpus = [
        "오늘 바다에 갔다. 정말 좋았다.",
        "친구랑 바다에 갔다. 너무 좋았다.",
        "바다가 좋았다.",
    ] * 3
    with pytest.raises(InvalidInputError, match="not fitted"):
        CharSurprisal().transform(corpus)
    model = CharSurprisal().fit(corpus)
    usual, typo = model.transform(["가족이랑 바다에 갔다. 좋았다.", "바댜에 갓따 조앗다"])
    assert typo[0] > usual[0] + 1.0  # mean surprisal
    assert typo[3] > usual[3]  # share of unseen trigrams


def test_char_surprisal_leaves_a_training_text_out() -> None:
    model = CharSurprisal().fit(["우리는 산에 갔다.", "산이 높았다."])
    inside = model.transform(["우리는 산에 갔다."])[0]
    # Scored without its own counts, the training text looks like a new text would.
    assert inside[3] > 0.3
    assert np.allclose(
        pickle.loads(pickle.dumps(model)).transform(["산에 갔다."]), model.transform(["산에 갔다."])
    )


def test_style_and_surprisal_combine_by_name() -> None:
    featurizer = build_featurizer("stats+style+char-lm")
    assert isinstance(featurizer, Concat)
    x = featurizer.fit(["하나. 둘.", "셋이다."]).transform(["넷이다."])
    assert x.shape == (1, len(TextStats().feature_names()) + 11 + 4)


def test_toxicity_scores_insults_above_polite_text() -> None:
    x = Toxicity().transform(
        ["You are a stupid idiot and I hate you", "Thank you, have a nice day", ""]
    )
    assert x.shape == (3, 6)
    assert x[0, 0] > 2.0 > -2.0 > x[1, 0]  # logit of "toxic"
    assert np.all(np.isfinite(x))
    assert len(Toxicity().feature_names()) == 6


@pytest.mark.slow
def test_e5_embeddings_place_korean_paraphrases_close() -> None:
    featurizer = SentenceEmbedding(model="e5")
    x = featurizer.transform(
        ["부산 바다에 놀러 갔다.", "부산 해변으로 여행을 갔다.", "세금 신고 마감일"]
    )
    assert x.shape == (3, 384)
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-3)
    assert x[0] @ x[1] > x[0] @ x[2]


def test_dialogue_messages_of_a_transcript_and_of_a_plain_prompt() -> None:
    from prefloop.reward._smollm2_features import dialogue_messages

    prompt = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how do I pick a lock?\n\nAssistant:"
    assert dialogue_messages(prompt) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "how do I pick a lock?"},
    ]
    assert dialogue_messages("  write a diary ") == [{"role": "user", "content": "write a diary"}]
    assert dialogue_messages(None) == [] and dialogue_messages("  ") == []


@pytest.mark.slow
def test_smollm2_features_read_the_real_model() -> None:
    from prefloop.reward.featurizers import SmolLM2Features

    prompt = "\n\nHuman: What is the capital of France?\n\nAssistant:"
    replies = ["The capital of France is Paris.", "Blorp zxq vv wug trantle qqq."]
    with_prompt = SmolLM2Features(view="prompt+text")
    x = with_prompt.transform(replies, [prompt, prompt])
    assert x.shape == (2, 576 + 1) and np.all(np.isfinite(x))
    # The last column is the mean log-probability per token: a fitting answer is far likelier.
    assert x[0, -1] > x[1, -1] + 2.0 and x[0, -1] < 0.0
    # Reading the reply after its question changes what the model makes of it.
    alone = SmolLM2Features(view="text").transform(replies[:1])
    assert not np.allclose(alone[0], x[0])
    # Cached within the process, identical on a second call; pickled without the network.
    assert np.array_equal(with_prompt.transform(replies[:1], [prompt]), x[:1])
    assert len(pickle.dumps(with_prompt)) < 1000
    assert isinstance(build_featurizer("smollm2-prompt"), SmolLM2Features)
    with pytest.warns(TruncationWarning, match=r"only their last 8 tokens"):
        short = SmolLM2Features(view="prompt+text", max_tokens=8).transform(replies[:1], [prompt])
    assert short.shape == (1, 577)
    with pytest.raises(InvalidInputError, match="layer 99 does not exist"):
        SmolLM2Features(layer=99).transform(["hi"])
    # The hidden state comes at unit length, so models leave the block unscaled, like embeddings.
    assert np.allclose(np.linalg.norm(x[:, :-1], axis=1), 1.0) and with_prompt.prescaled
    # A featurizer pickled before `unit_length` existed keeps giving the raw state, standardized.
    old = SmolLM2Features(view="prompt+text")
    del old.__dict__["unit_length"]
    raw = pickle.loads(pickle.dumps(old)).transform(replies, [prompt, prompt])
    assert not old.prescaled and np.linalg.norm(raw[0, :-1]) > 2.0
    assert np.allclose(raw[:, :-1] / np.linalg.norm(raw[:, :-1], axis=1, keepdims=True), x[:, :-1])
    assert np.array_equal(raw[:, -1], x[:, -1])
