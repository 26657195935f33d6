"""The reference experiment: pools of real generations rated by a simulated user, policies run
over them. The generations come from a demo run against the scripted server of conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from prefloop.demo import (
    DemoConfig,
    ReferenceConfig,
    reference_pools,
    run_demo,
    run_reference_experiment,
    simulate_reference,
)
from prefloop.demo._reference import ArmPool
from prefloop.errors import InvalidInputError
from prefloop.llm import OpenAIChatBackend, RetryPolicy
from prefloop.store import Store
from tests.demo.conftest import diary_writer
from tests.support.chat_server import ChatServer

DIARY_SCALE = (-1.0, -0.5, 0.0, 0.5, 1.0)


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    folder = tmp_path_factory.mktemp("reference-demo")
    with ChatServer.start(responder=diary_writer, model="diary-writer") as server:
        backend = OpenAIChatBackend(
            base_url=server.url, api_key="test", model=server.model, retry=RetryPolicy(0)
        )
        result = run_demo(
            DemoConfig(out_dir=folder, requests=40, warmup=8, reward_model=None),
            backend=backend,
        )
    with Store.open(result.database_url) as store:
        yield store


def test_pool_statistics() -> None:
    pool = ArmPool("a", (1.0, 1.0, 0.0, -1.0))
    assert pool.mean == 0.25
    low, high = pool.interval
    assert low == pytest.approx(0.25 - 1.959964 * np.std([1, 1, 0, -1], ddof=1) / 2, abs=1e-5)
    assert high == pytest.approx(0.5 - low)
    spec = pool.spec()
    assert spec.values == (-1.0, 0.0, 1.0)
    assert spec.probs == (0.25, 0.25, 0.5)
    assert spec.mean == pytest.approx(pool.mean)


def test_rubric_pools_hold_each_arms_outputs_rated_by_the_rubric(demo_store: Store) -> None:
    pools, about = reference_pools(demo_store, "diary", user="rubric")
    assert about["kind"] == "rubric"
    by_name = {pool.name: pool for pool in pools}
    assert set(by_name) == {
        "hand-written",
        "proposed-1",
        "fallback-facts-first",
        "fallback-cheerful",
    }
    assert sum(len(p.ratings) for p in pools) == about["ratings"] == 48
    # The scripted server writes clean diaries only for the proposed prompt.
    assert set(by_name["proposed-1"].ratings) == {1.0}
    assert set(by_name["hand-written"].ratings) == {-1.0}  # meta text
    assert set(by_name["fallback-cheerful"].ratings) == {0.5}  # forgets the mood


def test_reward_model_user_answers_on_the_scale(demo_store: Store) -> None:
    pools, about = reference_pools(
        demo_store, "diary", user="reward-model", folds=3, model="ridge:stats"
    )
    levels = set(DIARY_SCALE)
    assert all(set(pool.ratings) <= levels for pool in pools)
    assert about["kind"] == "reward-model"
    assert {"cv_mse", "baseline_mse", "beats_baseline", "agreement_with_ratings"} <= set(about)
    # Clean diaries and meta text are easy to tell apart: the cross-fitted model agrees with
    # the ratings on most texts and ranks the proposed prompt first.
    assert about["agreement_with_ratings"] >= 0.8
    best = max(pools, key=lambda pool: pool.mean)
    assert best.name == "proposed-1"


def test_policies_over_the_pools_beat_uniform_allocation(demo_store: Store, tmp_path: Path) -> None:
    config = ReferenceConfig(iterations=100, runs=20, user="rubric", seed=3)
    result = run_reference_experiment(demo_store, "diary", tmp_path, config)
    summary = result.to_json()
    assert summary["best_arm"] == "proposed-1"
    assert set(summary["policies"]) == {"default", "ucb1-reference"}
    uniform = summary["uniform_regret"]
    # Best mean 1, the others -1 (or close): uniform allocation loses ~1.5 per step.
    assert uniform == pytest.approx(100 * (1 - np.mean([p.mean for p in result.pools])))
    for name, figures in summary["policies"].items():
        assert figures["regret"] < 0.25 * uniform, name
        assert figures["p_best"] == 1.0
    for key in ("distribution_png", "regret_png"):
        assert Path(summary["files"][key]).read_bytes()[:4] == b"\x89PNG"


def test_the_experiment_needs_two_arms() -> None:
    with pytest.raises(InvalidInputError, match="two arms"):
        simulate_reference([ArmPool("only", (1.0, 0.0))], ReferenceConfig(runs=2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"iterations": 0}, "iterations"),
        ({"user": "oracle"}, "simulated user"),
        ({"policies": ()}, "policy"),
    ],
)
def test_bad_reference_settings_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        ReferenceConfig(**kwargs)  # type: ignore[arg-type]


def test_the_defaults_are_the_reference_projects_setting() -> None:
    """The issue's experiment: a reward model plays the user, 200 iterations, prefloop's
    default policy next to the reference project's UCB1."""
    config = ReferenceConfig()
    assert (config.iterations, config.user) == (200, "reward-model")
    assert config.policies == ("default", "ucb1-reference")
