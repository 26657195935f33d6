"""The fast Bradley–Terry pairwise model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prefloop.io.records import PairRecord, RankingRecord
from prefloop.reward import PairData, load_reward_model
from prefloop.reward.evaluate import cross_validate, make_folds
from prefloop.reward.pairwise import BradleyTerryConfig, BradleyTerryModel
from tests.reward.conftest import synthetic_pairs


def pairs(n: int = 60, seed: int = 0) -> PairData:
    return PairData.from_records(PairRecord(**row) for row in synthetic_pairs(n, seed))


def stats_model(**kwargs: object) -> BradleyTerryModel:
    return BradleyTerryModel(BradleyTerryConfig(features="stats", **kwargs))  # type: ignore[arg-type]


def test_bradley_terry_beats_both_length_baselines_out_of_fold() -> None:
    data = pairs(60)
    result = cross_validate(stats_model, data, make_folds(data, 5, seed=0), samples=200)
    report = result.report
    assert report.accuracy >= 0.95
    assert report.baseline.shorter_wins < 0.75
    assert report.accuracy - max(report.baseline.to_json().values()) >= 0.15
    assert report.vs_baseline.beats_baseline


def test_rewards_are_antisymmetric_and_centred() -> None:
    data = pairs(40)
    model = stats_model(c_grid=(1.0,)).fit(data)
    p = model.preference_probability(data)
    swapped = PairData(prompts=data.prompts, chosen=data.rejected, rejected=data.chosen)
    assert np.allclose(p + model.preference_probability(swapped), 1.0)
    replies = data.chosen + data.rejected
    assert float(np.mean(model.score(replies, data.prompts + data.prompts))) == pytest.approx(
        0.0, abs=1e-9
    )


def test_penalty_is_chosen_by_inner_folds() -> None:
    model = stats_model(c_grid=(0.001, 0.1, 10.0), inner_folds=3).fit(pairs(45))
    assert set(model.selection_["log_loss_by_c"]) == {"0.001", "0.1", "10"}
    losses = model.selection_["log_loss_by_c"]
    assert model.chosen_c_ == float(min(losses, key=losses.get))  # type: ignore[arg-type]


def test_rankings_become_pairs_and_train_the_same_model() -> None:
    ranking = RankingRecord(
        prompt="q", responses=("Plain answer.", "Note: (draft)", "## v2\n\n(x)"), ranking=(1, 2, 3)
    )
    data = PairData.from_records(ranking.pairs() * 3)
    assert len(data) == 9
    model = stats_model(c_grid=(1.0,)).fit(data)
    scores = model.score(list(ranking.responses), ["q"] * 3)
    assert scores[0] > scores[1] and scores[0] > scores[2]


def test_margins_weight_pairs_when_asked() -> None:
    data = pairs(40)
    weighted = PairData(
        prompts=data.prompts,
        chosen=data.chosen,
        rejected=data.rejected,
        margins=np.linspace(0.5, 3.0, len(data)),
    )
    a = stats_model(c_grid=(1.0,), use_margins=True).fit(weighted)
    b = stats_model(c_grid=(1.0,)).fit(weighted)
    assert a.weights_ is not None and b.weights_ is not None
    assert not np.allclose(a.weights_, b.weights_)


def test_save_and_load_keep_the_rewards(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = pairs(30)
    model = stats_model(c_grid=(1.0,)).fit(data)
    folder = model.save(tmp_path / "bt")
    loaded = load_reward_model(folder, kind="pairwise")
    assert isinstance(loaded, BradleyTerryModel)
    assert np.allclose(
        loaded.score(data.chosen, data.prompts), model.score(data.chosen, data.prompts)
    )


def test_toxicity_features_learn_to_prefer_the_civil_reply(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The real toxicity network as the only features: a reply that insults the user loses."""
    rng = np.random.default_rng(0)
    civil = ["I can help with that.", "Here is a calm answer.", "Thanks for asking, sure."]
    rude = [
        "Shut up, you stupid idiot.",
        "You are a worthless moron.",
        "Go away, idiot, I hate you.",
    ]
    rows = [
        PairRecord(
            prompt=f"question {i}?",
            chosen=f"{civil[i % 3]} {' '.join(rng.choice(['yes', 'ok', 'well'], i % 4))}",
            rejected=f"{rude[i % 3]} {' '.join(rng.choice(['yes', 'ok', 'well'], (i + 1) % 4))}",
        )
        for i in range(40)
    ]
    data = PairData.from_records(rows)
    config = BradleyTerryConfig(features="toxicity", c_grid=(1.0,))
    result = cross_validate(lambda: BradleyTerryModel(config), data, make_folds(data, 4, seed=0))
    assert result.report.accuracy >= 0.95
    model = BradleyTerryModel(config).fit(data)
    loaded = load_reward_model(model.save(tmp_path / "tox"))
    assert np.allclose(loaded.score(civil + rude), model.score(civil + rude))


@pytest.mark.slow
def test_smollm2_features_fit_save_and_load(tmp_path: Path) -> None:
    # The real SmolLM2 on six short pairs: a saved model scores the same after loading, and the
    # network itself is not in the folder.
    data = pairs(6, seed=3)
    model = BradleyTerryModel(BradleyTerryConfig(features="smollm2-prompt", c_grid=(1.0,)))
    model.fit(data)
    assert model.weights_ is not None and model.weights_.shape == (577,)
    assert model.scale_ is not None and np.all(model.scale_ == 1.0)  # prescaled, like embeddings
    # Fitted on replies that differ in meta text, it prefers the plain ones it was trained on.
    assert float(np.mean(model.preference_probability(data) > 0.5)) >= 5 / 6
    folder = model.save(tmp_path / "hh")
    assert sum(f.stat().st_size for f in folder.iterdir()) < 100_000
    loaded = load_reward_model(folder, kind="pairwise")
    assert np.allclose(
        loaded.score(data.chosen, data.prompts), model.score(data.chosen, data.prompts)
    )
