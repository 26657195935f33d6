"""The scikit-learn rating model: candidates, auto selection, weights, clipping, real data."""

from __future__ import annotations

import numpy as np
import pytest

from prefloop.errors import InvalidInputError
from prefloop.reward import RatingData, load_rating_data, load_reward_model
from prefloop.reward.evaluate import cross_validate, make_folds
from prefloop.reward.rating import (
    RatingModelConfig,
    SklearnRatingModel,
    _level_weights,
    _TextRidge,
    parse_candidate,
)
from tests.conftest import shared_data
from tests.reward.conftest import synthetic_ratings


def data(n: int = 60, seed: int = 0) -> RatingData:
    rows = synthetic_ratings(n, seed)
    return RatingData(
        texts=[r["text"] for r in rows],
        ratings=np.array([r["rating"] for r in rows]),
        prompts=[None] * n,
        source="synthetic",
    )


def test_parse_candidate() -> None:
    assert parse_candidate("ridge") == ("ridge", "stats+use")
    assert parse_candidate("random-forest:stats") == ("random-forest", "stats")
    with pytest.raises(InvalidInputError, match=r"unknown rating model 'lasso'"):
        parse_candidate("lasso")
    with pytest.raises(InvalidInputError, match=r"unknown feature set"):
        parse_candidate("ridge:words")


@pytest.mark.parametrize(
    "spec",
    [
        "ridge:stats",
        "random-forest:stats",
        "gradient-boosting:stats",
        "ridge+boosting:stats",
        "stack:stats",
        "ridge+boosting:stats+style+char-lm",
    ],
)
def test_each_regressor_beats_the_mean_on_a_clear_signal(spec: str) -> None:
    train, test = data(60, seed=0), data(40, seed=1)
    model = SklearnRatingModel(RatingModelConfig(model=spec)).fit(train)
    pred = model.score(test.texts)
    mse = float(np.mean((pred - test.ratings) ** 2))
    baseline = float(np.mean((train.ratings.mean() - test.ratings) ** 2))
    assert mse < 0.5 * baseline, (spec, mse, baseline)


def test_predictions_stay_on_the_scale() -> None:
    model = SklearnRatingModel(RatingModelConfig(model="ridge:stats")).fit(data())
    extreme = ["Word. " * 400, "x", "Note: (version 9)\n\n## draft\n" * 20]
    pred = model.score(extreme)
    assert np.all(pred >= -1.0) and np.all(pred <= 1.0)


CANDIDATES = ("ridge:stats", "gradient-boosting:stats", "ridge+boosting:stats")


def test_auto_chooses_the_best_candidate_inside_the_training_data() -> None:
    config = RatingModelConfig(model="auto", candidates=CANDIDATES, inner_folds=3)
    model = SklearnRatingModel(config).fit(data())
    results = model.selection_["candidates"]
    assert set(results) == set(CANDIDATES)
    best = min(CANDIDATES, key=lambda s: results[s]["mse"])
    assert model.chosen == model.selection_["chosen"] == best
    assert model.details()["chosen"] == model.chosen


def test_auto_with_the_one_standard_error_rule() -> None:
    config = RatingModelConfig(
        model="auto", candidates=CANDIDATES, inner_folds=3, one_standard_error=True
    )
    model = SklearnRatingModel(config).fit(data())
    results = model.selection_["candidates"]
    best = model.selection_["best"]
    limit = results[best]["mse"] + results[best]["se"]
    assert model.chosen == next(s for s in CANDIDATES if results[s]["mse"] <= limit)


def test_level_weights_balance_rare_levels() -> None:
    y = np.array([0.0, 0.0, 0.0, 1.0])
    w = _level_weights(y)
    assert w.mean() == pytest.approx(1.0)
    assert w[3] == pytest.approx(3 * w[0])
    assert w[:3].sum() == pytest.approx(w[3])


def test_balanced_fit_moves_predictions_towards_rare_levels() -> None:
    base = data(60)
    keep = [i for i, y in enumerate(base.ratings) if y != 1.0 or i % 3 == 0]  # make 1.0 rare
    skewed = base.subset(keep)
    plain = SklearnRatingModel(RatingModelConfig(model="ridge:stats")).fit(skewed)
    balanced = SklearnRatingModel(RatingModelConfig(model="ridge:stats", balance_levels=True))
    balanced.fit(skewed)
    rare = [t for t, y in zip(skewed.texts, skewed.ratings, strict=True) if y == 1.0]
    assert balanced.score(rare).mean() > plain.score(rare).mean()


def test_stack_uses_out_of_fold_text_predictions() -> None:
    """The TF-IDF column the stack trains on comes from models that did not see the text: on
    labels that are pure noise it carries no signal, although the same model fitted on all
    the texts memorises them."""
    rng = np.random.default_rng(0)
    texts = [f"item {i} " + " ".join(rng.choice(list("abcdefgh"), 6)) for i in range(80)]
    noise = rng.normal(size=80)
    oof = _TextRidge.out_of_fold(texts, noise, None, seed=0)
    in_sample = _TextRidge().fit(texts, noise, None).predict(texts)
    assert np.corrcoef(oof, noise)[0, 1] < 0.1
    assert np.corrcoef(in_sample, noise)[0, 1] > 0.3


def _drafts_of_inputs(n_inputs: int = 24, drafts: int = 4) -> RatingData:
    """Each input's drafts share a word of their own and a rating: text grouping lets a model
    learn the word, input grouping holds the word out with its input."""
    rng = np.random.default_rng(1)
    offsets = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], n_inputs)
    texts, ratings, inputs = [], [], []
    for i in range(n_inputs):
        for d in range(drafts):
            filler = " ".join(rng.choice(["sun", "sea", "walk", "day", "tea"], 4))
            texts.append(f"place{i:02d}x{'q' * (i % 7)} {filler} {d}")
            ratings.append(offsets[i])
            inputs.append(f'{{"image_id": "{i}"}}')
    return RatingData(
        texts=texts,
        ratings=np.array(ratings),
        prompts=[None] * len(texts),
        inputs=inputs,
        source="inputs",
    )


def test_stack_column_holds_out_whole_groups_when_given() -> None:
    """With group labels the out-of-fold TF-IDF column never sees a draft's siblings, so a
    word shared only inside an input cannot carry its rating over."""
    data = _drafts_of_inputs()
    groups = np.repeat(np.arange(24), 4)
    by_text = _TextRidge.out_of_fold(data.texts, data.ratings, None, seed=0)
    by_input = _TextRidge.out_of_fold(data.texts, data.ratings, None, seed=0, groups=groups)
    assert np.corrcoef(by_text, data.ratings)[0, 1] > 0.8
    assert np.corrcoef(by_input, data.ratings)[0, 1] < 0.4


def test_auto_chooses_on_folds_grouped_like_the_evaluation() -> None:
    """group_by="input": the candidates are scored on inputs the inner fit has not seen, so a
    text model that only memorises each input's word no longer looks good."""
    drafts = _drafts_of_inputs()
    candidates = ("ridge:stats", "stack:stats")

    def inner_mse(group_by: str) -> dict[str, float]:
        config = RatingModelConfig(candidates=candidates, inner_folds=4, group_by=group_by)
        model = SklearnRatingModel(config).fit(drafts)
        return {s: r["mse"] for s, r in model.selection_["candidates"].items()}

    by_text, by_input = inner_mse("text"), inner_mse("input")
    assert by_text["stack:stats"] < 0.5 * by_input["stack:stats"], (by_text, by_input)
    assert by_input == inner_mse("auto")  # the default groups by input from 10 inputs on

    def grouping(rated: RatingData) -> str:
        config = RatingModelConfig(candidates=candidates, inner_folds=3)
        return str(SklearnRatingModel(config).fit(rated).selection_["group_by"])

    assert grouping(drafts) == "input"
    assert grouping(drafts.subset(np.arange(36))) == "text"  # 9 inputs
    assert grouping(data()) == "text"  # no input named
    with pytest.raises(InvalidInputError, match="unknown fold grouping 'photo'"):
        SklearnRatingModel(RatingModelConfig(model="ridge:stats", group_by="photo")).fit(drafts)


def test_stack_model_saves_and_reloads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    train, test = data(60, seed=0), data(20, seed=1)
    model = SklearnRatingModel(RatingModelConfig(model="stack:stats+style+char-lm")).fit(train)
    folder = model.save(tmp_path / "stack")
    again = load_reward_model(folder)
    assert np.allclose(again.score(test.texts), model.score(test.texts))
    assert again.details()["chosen"] == "stack:stats+style+char-lm"


@pytest.mark.slow
def test_memozy_stack_beats_the_surface_statistics() -> None:
    """Guards the benchmark figure: on the diary data the stacked model with the style and
    surprisal features beats ridge on the text statistics on the same folds."""
    memozy = load_rating_data(shared_data("memozy-train.jsonl"))
    folds = make_folds(memozy, 5, seed=0)
    reports = {
        spec: cross_validate(
            lambda s=spec: SklearnRatingModel(RatingModelConfig(model=s)),
            memozy,
            folds,
            samples=100,
        ).report
        for spec in ("ridge:stats", "stack:stats+style+char-lm")
    }
    stack = reports["stack:stats+style+char-lm"]
    assert stack.mse < reports["ridge:stats"].mse - 0.01
    assert stack.mse < 0.19 and stack.spearman > 0.55


@pytest.mark.slow
def test_memozy_cross_validation_beats_the_mean_with_a_margin() -> None:
    """Guards the benchmark target on the real data: 5-fold CV of the cheapest candidate."""
    memozy = load_rating_data(shared_data("memozy-train.jsonl"))
    result = cross_validate(
        lambda: SklearnRatingModel(RatingModelConfig(model="ridge:stats")),
        memozy,
        make_folds(memozy, 5, seed=0),
        samples=200,
    )
    report = result.report
    assert report.mse < 0.23 < report.baseline.mse
    assert report.spearman > 0.45
    assert report.vs_baseline.beats_baseline
