"""Shared behaviour of every registered reward model class, discovered from the registry.

Each class gets a tiny setup below (a local chat server for the judge, tiny transformers for the
fine-tuned models); a class registered without one fails
:func:`test_every_registered_class_has_a_tiny_setup`, so a new model cannot skip these checks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

import numpy as np
import pytest

from prefloop.errors import InvalidInputError
from prefloop.llm import OpenAIChatBackend, RetryPolicy
from prefloop.reward import (
    MANIFEST_NAME,
    IncompatibleModelError,
    ModelSpec,
    PairData,
    RatingData,
    RewardModel,
    load_reward_model,
    make_reward_model,
    registered_models,
)
from prefloop.reward.finetune import FinetuneConfig
from prefloop.reward.judge import JudgeConfig, LLMJudge
from prefloop.reward.lm_scalar import ScalarHeadConfig
from tests.reward.conftest import synthetic_pairs, synthetic_ratings
from tests.reward.test_finetune import synthetic_pairs as word_pairs
from tests.reward.test_finetune import tiny_bert  # noqa: F401  (a fixture used below)
from tests.support.chat_server import ChatServer
from tests.support.tiny_lm import build_tiny_llama


@dataclass
class Setup:
    """A fresh unfitted model, data to fit it on, and what a loaded copy needs to score."""

    model: RewardModel
    data: RatingData | PairData
    ready: Callable[[RewardModel], RewardModel] = lambda model: model


def _ratings(n: int = 30) -> RatingData:
    rows = synthetic_ratings(n, seed=3)
    return RatingData(
        texts=[str(r["text"]) for r in rows],
        ratings=np.array([r["rating"] for r in rows], dtype=np.float64),
        prompts=[None] * n,
        source="tiny ratings",
    )


def _pairs(n: int = 24) -> PairData:
    rows = synthetic_pairs(n, seed=3)
    return PairData(
        prompts=[r["prompt"] for r in rows],
        chosen=[r["chosen"] for r in rows],
        rejected=[r["rejected"] for r in rows],
        source="tiny pairs",
    )


@pytest.fixture(scope="module")
def chat_server() -> Iterator[ChatServer]:
    with ChatServer.start(responder=lambda messages: "Score: 0.5") as running:
        yield running


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama") / "base")


def _sklearn_rating(request: pytest.FixtureRequest) -> Setup:
    return Setup(make_reward_model(ModelSpec("rating", "ridge:stats", seed=1)), _ratings())


def _bradley_terry(request: pytest.FixtureRequest) -> Setup:
    return Setup(make_reward_model(ModelSpec("pairwise", "bradley-terry:stats", seed=1)), _pairs())


def _judge(request: pytest.FixtureRequest) -> Setup:
    server: ChatServer = request.getfixturevalue("chat_server")
    backend = OpenAIChatBackend(
        base_url=server.url,
        api_key="test",
        model=server.model,
        timeout=2.0,
        retry=RetryPolicy(max_retries=0),
    )

    def ready(model: RewardModel) -> RewardModel:
        assert isinstance(model, LLMJudge)
        return model.use_backend(backend)

    return Setup(LLMJudge(JudgeConfig(seed=1), backend=backend), _ratings(10), ready)


def _finetuned(request: pytest.FixtureRequest) -> Setup:
    from prefloop.reward import FinetunedRewardModel

    folder: Path = request.getfixturevalue("tiny_bert")
    config = FinetuneConfig(
        base_model=str(folder), max_length=32, epochs=1, batch_size=16, seed=1, device="cpu"
    )
    return Setup(FinetunedRewardModel(config), word_pairs(16, seed=2))


def _lm_scalar(request: pytest.FixtureRequest) -> Setup:
    from prefloop.reward.lm_scalar import ScalarHeadRewardModel

    base: Path = request.getfixturevalue("tiny_llama")
    config = ScalarHeadConfig(base=str(base), max_length=64, epochs=1.0, learning_rate=3e-3)
    places = ("Busan", "Seoul", "Jeju", "Daegu")
    pairs = PairData(
        prompts=[f"Write about {place}." for place in places],
        chosen=[f"We walked by the sea in {place} and laughed all day." for place in places],
        rejected=["no"] * len(places),
        source="short pairs",
    )
    return Setup(ScalarHeadRewardModel(config), pairs)


SETUPS: dict[str, Callable[[pytest.FixtureRequest], Setup]] = {
    "sklearn-rating": _sklearn_rating,
    "bradley-terry": _bradley_terry,
    "llm-judge": _judge,
    "finetuned-transformer": _finetuned,
    "lm-scalar": _lm_scalar,
}
HEAVY = {"finetuned-transformer", "lm-scalar"}
"""Classes that train a transformer: a few seconds each even when tiny."""


def test_every_registered_class_has_a_tiny_setup() -> None:
    assert set(registered_models()) == set(SETUPS)


@pytest.fixture(
    params=[
        pytest.param(name, marks=pytest.mark.slow) if name in HEAVY else name
        for name in sorted(registered_models())
    ]
)
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def setup(name: str, request: pytest.FixtureRequest) -> Setup:
    return SETUPS[name](request)


@pytest.mark.parametrize("seed", [0, 7])
def test_config_is_a_frozen_dataclass_and_the_spec_seeds_it(name: str, seed: int) -> None:
    cls = registered_models()[name]
    assert cls.name == name and cls.kind in ("rating", "pairwise")
    assert is_dataclass(cls.config_type)
    assert "seed" in {f.name for f in fields(cls.config_type)}
    assert cls.config_type.__dataclass_params__.frozen  # type: ignore[attr-defined]
    model = make_reward_model(ModelSpec(cls.kind, name, seed=seed))
    assert type(model) is cls and model.config.seed == seed and not model.is_fitted
    other = "pairwise" if cls.kind == "rating" else "rating"
    with pytest.raises(InvalidInputError, match=f"is a {cls.kind} model, not a {other} one"):
        make_reward_model(ModelSpec(other, name))


def test_an_unfitted_model_says_to_fit_it(setup: Setup, tmp_path: Path) -> None:
    model = setup.model
    with pytest.raises(InvalidInputError, match="not fitted; call fit first"):
        model.score(["a text"])
    with pytest.raises(InvalidInputError, match=r"unfitted .* fit it first"):
        model.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_fit_refuses_the_other_kind_of_data(setup: Setup) -> None:
    wrong = _pairs() if isinstance(setup.data, RatingData) else _ratings()
    with pytest.raises(InvalidInputError, match=f"trains on {type(setup.data).__name__}"):
        setup.model.fit(wrong)


def test_fit_score_save_load_gives_the_same_scores(setup: Setup, tmp_path: Path) -> None:
    data = setup.data
    texts = data.texts if isinstance(data, RatingData) else data.chosen + data.rejected
    prompts = data.prompts if isinstance(data, RatingData) else data.prompts * 2
    model = setup.model.fit(data)
    assert model.is_fitted and model.train_ is not None
    assert model.train_.n == len(data) and model.train_.fingerprint == data.fingerprint()
    scores = model.score(texts, prompts)
    assert scores.shape == (len(texts),) and scores.dtype == np.float64
    assert np.isfinite(scores).all()
    unit = model.score_unit(texts, prompts)
    assert ((unit >= 0) & (unit <= 1)).all()
    assert model.score([]).shape == (0,)
    with pytest.raises(InvalidInputError, match="list of texts, not one string"):
        model.score("one string")  # type: ignore[arg-type]

    folder = model.save(tmp_path / "saved")
    manifest = json.loads((folder / MANIFEST_NAME).read_text("utf-8"))
    assert (manifest["class"], manifest["kind"]) == (model.name, model.kind)
    assert manifest["config"]["seed"] == model.config.seed
    loaded = setup.ready(load_reward_model(folder, kind=model.kind))
    assert type(loaded) is type(model) and loaded.config == model.config
    assert loaded.train_ == model.train_
    np.testing.assert_allclose(loaded.score(texts, prompts), scores, rtol=1e-5, atol=1e-6)
    assert type(model).load(folder).name == model.name
    other = "pairwise" if model.kind == "rating" else "rating"
    with pytest.raises(IncompatibleModelError, match=f"a {other} model is needed here"):
        load_reward_model(folder, kind=other)  # type: ignore[arg-type]
