"""make_reward_model (a model from a spec) and cross_validate_spec (a spec next to the
candidates of auto, on the same folds)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from prefloop.errors import InvalidInputError
from prefloop.reward import (
    BradleyTerryModel,
    IncompatibleModelError,
    LLMJudge,
    ModelSpec,
    RatingData,
    SklearnRatingModel,
    cross_validate,
    cross_validate_spec,
    make_folds,
    make_reward_model,
)
from tests.reward.conftest import synthetic_ratings


def _ratings(n: int = 40) -> RatingData:
    rows = synthetic_ratings(n, seed=5)
    return RatingData(
        texts=[str(r["text"]) for r in rows],
        ratings=np.array([r["rating"] for r in rows], dtype=np.float64),
        prompts=[None] * n,
    )


def test_specs_make_the_models_they_name() -> None:
    rating = make_reward_model(
        ModelSpec(
            "rating", "auto", seed=4, balance_levels=True, candidates=("ridge:stats",),
            group_by="input",
        )
    )  # fmt: skip
    assert isinstance(rating, SklearnRatingModel)
    assert (rating.config.seed, rating.config.balance_levels) == (4, True)
    assert (rating.config.candidates, rating.config.group_by) == (("ridge:stats",), "input")
    assert make_reward_model(ModelSpec("rating")).config.group_by == "auto"  # its own default
    pairwise = make_reward_model(ModelSpec("pairwise", "bt:stats", seed=2))
    assert isinstance(pairwise, BradleyTerryModel)
    assert (pairwise.config.features, pairwise.config.seed) == ("stats", 2)
    judge = make_reward_model(
        ModelSpec("rating", "llm-judge", seed=3, rubric="1 = vivid", description="diaries")
    )
    assert isinstance(judge, LLMJudge)
    assert (judge.config.seed, judge.config.rubric, judge.config.task) == (
        3,
        "1 = vivid",
        "diaries",
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ModelSpec("pairwise", "ridge:stats"), "--model ridge:stats is a rating regressor"),
        (ModelSpec("rating", "lasso"), "lasso"),
        (ModelSpec("rating", "ridge:nonsense"), "nonsense"),
        (ModelSpec("rating", "auto", candidates=("ridge:nonsense",)), "nonsense"),
        (ModelSpec("rating", "llm-judge:stats"), "llm-judge takes no :FEATURES"),
        (ModelSpec("pairwise", "llm-judge"), "is a rating model, not a pairwise one"),
        (ModelSpec("ranking", "auto"), "rating or pairwise, not 'ranking'"),  # type: ignore[arg-type]
    ],
)
def test_a_bad_spec_says_what_is_wrong(spec: ModelSpec, message: str) -> None:
    with pytest.raises((InvalidInputError, IncompatibleModelError), match=message):
        make_reward_model(spec)


def test_auto_and_its_candidates_are_measured_on_the_same_folds() -> None:
    data = _ratings()
    spec = ModelSpec("rating", "auto", seed=1, candidates=("ridge:stats", "stack:stats"))
    run = cross_validate_spec(spec, data, folds=3, samples=100)
    assert set(run.candidates) == {"ridge:stats", "stack:stats"}
    assert run.group_by == "text" and len(run.folds) == 3
    alone = cross_validate(
        lambda: make_reward_model(ModelSpec("rating", "ridge:stats", seed=1)),
        data,
        make_folds(data, 3, seed=1),
        samples=100,
        seed=1,
    ).report
    assert run.candidates["ridge:stats"].mse == alone.mse
    assert run.candidates["ridge:stats"].ci == alone.ci
    printed = run.to_json()
    assert list(printed)[-4:] == ["models", "model", "group_by", "seconds"]
    assert json.loads(json.dumps(printed)) == printed
    fixed = cross_validate_spec(ModelSpec("rating", "ridge:stats", seed=1), data, folds=3)
    assert not fixed.candidates and "models" not in fixed.to_json()
