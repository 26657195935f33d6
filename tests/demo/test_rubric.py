"""The rubric scorer on hand-made texts: each rule can fail, and a clean text gets +1."""

from __future__ import annotations

import pytest

from prefloop.demo import DIARY, RubricConfig, RubricScorer
from prefloop.errors import InvalidInputError

INPUTS = {"place": "Busan", "company": "with friends", "mood": "happy"}
FACTS = DIARY.facts(INPUTS)

GOOD = (
    "Today I went to Busan with two old friends from school. We walked along the beach in the "
    "morning and ate grilled fish at a small stall near the harbour. The wind was cool and the "
    "sky was a clear, bright blue all afternoon. In the evening we watched the lights of the "
    "bridge come on one by one. I felt so happy and grateful for a simple day like this."
)


@pytest.fixture
def scorer() -> RubricScorer:
    return RubricScorer()


def test_a_clean_diary_gets_the_top_level(scorer: RubricScorer) -> None:
    verdict = scorer.score(GOOD, FACTS)
    assert verdict.value == 1.0
    assert verdict.reasons == ()
    assert verdict.deductions == {}


@pytest.mark.parametrize(
    "meta",
    [
        "Here is your diary entry:\n\n",
        "Sure! ",
        "Note: this entry is fictional.\n",
        "Version 1:\n",
        "Dear [Your Name],\n",
    ],
)
def test_meta_text_is_the_lowest_level(scorer: RubricScorer, meta: str) -> None:
    verdict = scorer.score(meta + GOOD, FACTS)
    assert verdict.value == -1.0
    assert "meta" in verdict.deductions
    assert "meta text" in verdict.reasons[0]


def test_meta_text_at_the_end_counts_too(scorer: RubricScorer) -> None:
    assert scorer.score(GOOD + "\n\nI hope this captures your day!", FACTS).value == -1.0


def test_a_missing_fact_loses_half_a_point_each(scorer: RubricScorer) -> None:
    no_place = GOOD.replace("Busan", "the city").replace("beach", "shore")
    verdict = scorer.score(no_place, FACTS)
    assert verdict.value == 0.5
    assert verdict.reasons == ("does not mention the place (Busan)",)

    no_place_no_mood = no_place.replace("happy", "content")
    verdict = scorer.score(no_place_no_mood, FACTS)
    assert verdict.value == 0.0
    assert len(verdict.reasons) == 2


def test_fact_words_match_the_start_of_words_in_any_case(scorer: RubricScorer) -> None:
    text = GOOD.replace("friends", "FRIENDS")
    assert scorer.score(text, FACTS).value == 1.0
    alone = DIARY.facts({"place": "Busan", "company": "alone", "mood": "happy"})
    solo = GOOD.replace("with two old friends from school", "by myself")
    assert scorer.score(solo, alone).value == 1.0
    assert (
        "company"
        in scorer.score(GOOD.replace(" with two old friends from school", ""), FACTS).reasons[0]
    )


def test_a_repeated_sentence_is_penalised(scorer: RubricScorer) -> None:
    sentence = " I felt so happy and grateful for a simple day like this."
    once = scorer.score(GOOD + sentence, FACTS)
    assert once.value == 0.5
    assert once.reasons == ("repeats 1 sentence",)
    twice = scorer.score(GOOD + sentence + sentence, FACTS)
    assert twice.value == 0.0
    assert twice.deductions["repetition"] == 1.0


def test_a_looping_text_is_penalised_without_whole_sentences_repeating(
    scorer: RubricScorer,
) -> None:
    loop = (
        "Today in Busan with friends I was happy, so happy with friends in Busan, so happy with "
        "friends in Busan, so happy with friends in Busan, so happy with friends in Busan, so "
        "happy with friends in Busan, so happy with friends in Busan, so happy with friends."
    )
    verdict = scorer.score(loop, FACTS)
    assert verdict.deductions["repetition"] == 1.0
    assert any(reason.startswith("loops") for reason in verdict.reasons)


def test_length_bands(scorer: RubricScorer) -> None:
    short = "Busan with friends. I was happy. The sea was blue and the fish was good."
    verdict = scorer.score(short, FACTS)
    assert verdict.value == 0.0  # under half the minimum: -1
    assert verdict.reasons[0].startswith("too short: 15 words")

    medium = GOOD.split(". In the evening")[0] + ". I was happy."  # 47 words: in the band
    assert scorer.score(medium, FACTS).value == 1.0
    tight = RubricScorer(RubricConfig(min_words=60, max_words=200))
    assert tight.score(medium, FACTS).value == 0.5  # between half the minimum and the minimum
    assert tight.score(medium, FACTS).reasons == ("too short: 47 words (the band is 60+)",)

    extra = (
        "After lunch we climbed the hill behind the temple and rested under a pine. A cat "
        "followed us down the stairs, then sat by the gate as if it owned the place. My feet "
        "ached, yet nobody wanted to go home early. We bought peaches from an old woman at the "
        "corner, who laughed at our accents. Later the rain came, soft and warm, and we ran "
        "into a bookshop full of maps. I found a postcard of the harbour painted in 1950. The "
        "owner told us about the fishing boats his father used to steer. On the bus back, "
        "everyone fell asleep except me, watching the neon signs blink one after another."
    )
    long = GOOD + " " + extra
    verdict = scorer.score(long, FACTS)
    assert verdict.value == 0.5
    assert verdict.reasons[0].startswith("too long")


def test_a_cut_off_last_sentence_is_penalised(scorer: RubricScorer) -> None:
    verdict = scorer.score(GOOD + " Tomorrow we plan to", FACTS)
    assert verdict.value == 0.5
    assert verdict.reasons == ("the last sentence is cut off",)
    assert scorer.score(GOOD + " 🌊", FACTS).value == 1.0  # an emoji ends a diary fine


def test_deductions_are_clipped_at_the_lowest_level(scorer: RubricScorer) -> None:
    verdict = scorer.score("the the the", FACTS)
    assert verdict.points == -1.0
    assert verdict.value == -1.0


def test_points_map_onto_another_scale() -> None:
    stars = RubricScorer(scale=(1, 2, 3, 4, 5))
    assert stars.score(GOOD, FACTS).value == 5
    assert stars.score("Here is your diary: " + GOOD, FACTS).value == 1
    no_place = GOOD.replace("Busan", "the city").replace("beach", "shore")
    assert stars.score(no_place, FACTS).value == 4
    thumbs = RubricScorer(scale=(-1, 1))
    assert thumbs.score(no_place, FACTS).value == 1  # 0.5 is nearer +1 than -1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_words": 50, "max_words": 40}, "length band"),
        ({"fact_penalty": -0.5}, "fact_penalty"),
        ({"max_repeated_trigram_share": 1.5}, "max_repeated_trigram_share"),
    ],
)
def test_bad_config_is_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        RubricConfig(**kwargs)  # type: ignore[arg-type]


def test_a_bad_scale_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="increasing"):
        RubricScorer(scale=(1, 0))
