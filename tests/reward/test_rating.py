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
    assert stack["mse"] < reports["ridge:stats"]["mse"] - 0.01
    assert stack["mse"] < 0.19 and stack["spearman"] > 0.55


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
    assert report["mse"] < 0.23 < report["baseline"]["mse"]
    assert report["spearman"] > 0.45
    assert report["vs_baseline"]["beats_baseline"]
