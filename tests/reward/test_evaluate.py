"""Metrics, bootstrap intervals, folds and baselines (prefloop.reward.evaluate)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from prefloop.errors import InvalidInputError
from prefloop.io.records import PairRecord
from prefloop.reward import PairData, RatingData
from prefloop.reward.evaluate import (
    bootstrap_interval,
    bootstrap_intervals,
    cross_validate,
    fold_groups,
    length_model_probabilities,
    make_folds,
    pair_report,
    rating_report,
    resampling_clusters,
    shorter_wins_probabilities,
    within_input_report,
)
from prefloop.reward.rating import RatingModelConfig, SklearnRatingModel
from tests.reward.conftest import synthetic_ratings


def ratings(n: int = 40) -> RatingData:
    rows = synthetic_ratings(n)
    return RatingData(
        texts=[r["text"] for r in rows],
        ratings=np.array([r["rating"] for r in rows]),
        prompts=[None] * n,
    )


def test_rating_report_exact_on_a_tiny_case() -> None:
    y = np.array([0.0, 1.0, -1.0, 0.5])
    pred = np.array([0.0, 0.5, -1.0, 0.5])
    report = rating_report(y, pred, np.full(4, 0.125), samples=200, seed=1)
    assert report.n == 4
    assert report.mse == pytest.approx(0.25**2 / 1)  # only one error of 0.5 → 0.25/4
    assert report.mae == pytest.approx(0.125)
    assert report.baseline.mse == pytest.approx(np.mean((0.125 - y) ** 2))
    assert report.spearman == pytest.approx(0.9486832980505138)
    assert report.vs_baseline.value == pytest.approx(report.baseline.mse - report.mse)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bootstrap_interval_contains_the_point_estimate(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.normal(size=80)
    pred = y + rng.normal(scale=0.5, size=80)
    report = rating_report(y, pred, np.zeros(80), samples=300, seed=seed)
    for key in ("mse", "mae", "spearman", "pearson"):
        lo, hi = report.ci[key]
        assert lo <= getattr(report, key) <= hi, key
    lo, hi = bootstrap_interval(lambda i: float(np.mean(y[i])), 80, samples=300, seed=seed)
    assert lo <= float(np.mean(y)) <= hi
    assert hi - lo < 1.0


def test_pair_report_counts_ties_as_half() -> None:
    report = pair_report(
        np.array([0.9, 0.2, 0.5, 0.7]),
        np.array([1.0, 0.0, 0.5, 0.5]),
        np.array([0.6, 0.6, 0.6, 0.6]),
        samples=100,
    )
    assert report.accuracy == pytest.approx(2.5 / 4)
    assert report.baseline.to_json() == {"shorter_wins": pytest.approx(2 / 4), "length_model": 1.0}


def test_shorter_wins_baseline() -> None:
    data = PairData(prompts=["p"] * 3, chosen=["ab", "abcd", "xy"], rejected=["abc", "a", "zw"])
    assert shorter_wins_probabilities(data).tolist() == [1.0, 0.0, 0.5]


def test_length_model_learns_the_direction() -> None:
    rng = np.random.default_rng(0)
    records = []
    for i in range(60):
        short, long = "x" * int(rng.integers(5, 20)), "y" * int(rng.integers(40, 90))
        records.append(PairRecord(prompt=f"p{i}", chosen=long, rejected=short))
    data = PairData.from_records(records)
    p = length_model_probabilities(data.subset(range(40)), data.subset(range(40, 60)))
    assert np.all(p > 0.5)


def test_folds_are_seeded_identical_and_keep_duplicates_together() -> None:
    data = ratings(40)
    twice = RatingData(
        texts=data.texts + data.texts[:5],
        ratings=np.r_[data.ratings, data.ratings[:5]],
        prompts=[None] * 45,
    )
    a, b = make_folds(twice, 5, seed=3), make_folds(twice, 5, seed=3)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
    assert sorted(np.concatenate([test for _, test in a]).tolist()) == list(range(45))
    for train, test in a:
        assert not {twice.texts[i] for i in train} & {twice.texts[i] for i in test}
    c = make_folds(twice, 5, seed=4)
    assert any(not np.array_equal(x[1], y[1]) for x, y in zip(a, c, strict=True))


def test_pair_folds_never_split_a_prompt() -> None:
    records = [
        PairRecord(prompt=f"prompt {i % 7}", chosen=f"c{i}", rejected=f"r{i}") for i in range(35)
    ]
    data = PairData.from_records(records)
    for train, test in make_folds(data, 5, seed=0):
        assert not {data.prompts[i] for i in train} & {data.prompts[i] for i in test}


def test_too_few_groups_for_the_folds() -> None:
    data = RatingData(texts=["a", "a", "b"], ratings=np.array([0, 0, 1.0]), prompts=[None] * 3)
    with pytest.raises(InvalidInputError, match=r"needs at least 3 distinct texts.*has 2"):
        make_folds(data, 3)


def test_cross_validation_uses_the_given_folds_for_every_model() -> None:
    data = ratings(40)
    folds = make_folds(data, 4, seed=0)
    seen: list[list[int]] = []

    class Recording(SklearnRatingModel):
        def _fit(self, train, progress):  # type: ignore[no-untyped-def]
            seen.append(sorted(data.texts.index(t) for t in train.texts))
            super()._fit(train, progress)

    for spec in ("ridge:stats", "gradient-boosting:stats"):
        cross_validate(
            lambda s=spec: Recording(RatingModelConfig(model=s)), data, folds, samples=100
        )
    expected = [sorted(train.tolist()) for train, _ in folds]
    assert seen == expected + expected


def test_cross_validation_report_has_train_and_gap() -> None:
    data = ratings(40)
    result = cross_validate(
        lambda: SklearnRatingModel(RatingModelConfig(model="ridge:stats")),
        data,
        make_folds(data, 4),
        samples=100,
    )
    report = result.report
    assert {"n", "mse", "mae", "spearman", "pearson", "baseline", "ci", "train", "gap"} <= set(
        report.to_json()
    )
    assert report.cross_validation.gap["mse"] == pytest.approx(
        report.mse - report.cross_validation.train["mse"]
    )
    assert report.mse < report.baseline.mse * 0.5
    assert report.vs_baseline.beats_baseline


def test_rating_report_leaves_unscored_items_out_of_every_figure() -> None:
    y = np.array([0.0, 1.0, -1.0, 0.5, 1.0, -0.5])
    pred = np.array([0.0, 0.5, np.nan, 0.5, np.nan, -0.5])
    baseline = np.full(6, 0.25)
    report = rating_report(y, pred, baseline, samples=200, seed=1)
    scored = ~np.isnan(pred)
    assert report.n == 4 and report.unscored == 2
    assert report.mse == pytest.approx(np.mean((pred[scored] - y[scored]) ** 2))
    assert report.baseline.mse == pytest.approx(np.mean((0.25 - y[scored]) ** 2))
    assert all(np.isfinite(report.ci["mse"])) and np.isfinite(report.spearman)
    full = rating_report(y[scored], pred[scored], baseline[scored], samples=200, seed=1)
    assert full.unscored == 0
    assert {k: getattr(full, k) for k in ("mse", "mae", "spearman")} == {
        k: getattr(report, k) for k in ("mse", "mae", "spearman")
    }


def test_pair_report_leaves_unscored_pairs_out() -> None:
    report = pair_report(
        np.array([0.9, np.nan, 0.2, 0.7]),
        np.array([1.0, 0.0, 0.0, 0.0]),
        np.array([0.6, 0.4, 0.4, 0.4]),
        samples=100,
    )
    assert report.n == 3 and report.unscored == 1
    assert report.accuracy == pytest.approx(2 / 3)  # not 2/4: a missing pair is not wrong
    assert report.baseline.to_json() == {
        "shorter_wins": pytest.approx(1 / 3),
        "length_model": 1 / 3,
    }


def test_nothing_scored_is_an_error() -> None:
    with pytest.raises(InvalidInputError, match="no score for any of the 3 items"):
        rating_report(np.zeros(3), np.full(3, np.nan), np.zeros(3), samples=100)
    with pytest.raises(InvalidInputError, match="no score for any of the 2 pairs"):
        pair_report(np.full(2, np.nan), np.ones(2), np.ones(2), samples=100)


def test_folds_that_miss_or_repeat_an_item_are_refused() -> None:
    data = ratings(20)
    folds = make_folds(data, 4)
    make = lambda: SklearnRatingModel(RatingModelConfig(model="ridge:stats"))  # noqa: E731
    missing = [
        (train, test[1:]) if i == 0 else (train, test) for i, (train, test) in enumerate(folds)
    ]
    with pytest.raises(InvalidInputError, match=r"1 in no test part, 0 in several"):
        cross_validate(make, data, missing, samples=100)
    repeated = [*folds, folds[0]]
    with pytest.raises(InvalidInputError, match=r"0 in no test part, \d+ in several"):
        cross_validate(make, data, repeated, samples=100)


def test_plots_leave_unscored_items_out_and_say_so(tmp_path) -> None:
    from prefloop.reward.plots import plot_pairs, plot_ratings

    y = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 0.5])
    pred = np.array([-0.8, np.nan, 0.1, 0.4, 0.9, np.nan])
    png = plot_ratings(y, pred, tmp_path / "r.png", baseline=0.2)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no item has a score"):
        plot_ratings(y, np.full(y.size, np.nan), tmp_path / "none.png")

    data = PairData(prompts=["p"] * 3, chosen=["ab", "abcd", "xy"], rejected=["abc", "a", "zw"])
    png = plot_pairs(
        data, np.array([0.9, np.nan, 0.2]), np.ones(3), np.full(3, 0.5), tmp_path / "p.png"
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no pair has a score"):
        plot_pairs(data, np.full(3, np.nan), np.ones(3), np.ones(3), tmp_path / "none.png")


# ---- drafts of one input --------------------------------------------------------------------
def with_inputs(data: RatingData, per_input: int) -> RatingData:
    return RatingData(
        texts=data.texts,
        ratings=data.ratings,
        prompts=data.prompts,
        inputs=[f"photo {i // per_input}" for i in range(len(data))],
    )


def test_within_input_ordering_by_hand() -> None:
    data = RatingData(
        texts=["aa", "bbbb", "c", "xx", "yy", "alone", "unknown"],
        ratings=np.array([1.0, 0.0, 0.0, -1.0, 1.0, 0.5, 0.0]),
        prompts=[None] * 7,
        inputs=["A", "A", "A", "B", "B", "C", None],
    )
    pred = np.array([0.9, 0.1, 0.1, 0.5, 0.5, 0.0, 1.0])
    report = within_input_report(data, pred, samples=200)
    assert report is not None
    # A: (aa, bbbb) and (aa, c) were rated apart, (bbbb, c) is a tie in the rating: left out.
    # The model orders both A pairs right and ties on B's pair (half); "longer wins" is wrong
    # on (aa, bbbb), right on (aa, c), and ties on B's equally long texts.
    assert (report.pairs, report.inputs) == (3, 2)
    assert report.ordered_right == pytest.approx(2.5 / 3)
    assert report.longer_wins == pytest.approx(1.5 / 3)
    assert report.vs_baseline.value == pytest.approx(1 / 3)
    # Two inputs are too few to resample: no interval, and so no claim to beat the baseline.
    assert np.isnan(report.ci["ordered_right"]).all()
    assert not report.vs_baseline.beats_baseline
    # An unscored draft leaves its pairs out; B is left with one draft and says nothing.
    pred[3] = np.nan
    report = within_input_report(data, pred, samples=200)
    assert report is not None and (report.pairs, report.inputs) == (2, 1)
    assert within_input_report(replace(data, inputs=[]), pred) is None


def test_cross_validation_reports_same_input_ordering_when_inputs_are_known() -> None:
    data = ratings(40)

    def model() -> SklearnRatingModel:
        return SklearnRatingModel(RatingModelConfig(model="ridge:stats"))

    data = ratings(60)
    plain = cross_validate(model, data, make_folds(data, 4), samples=100).report
    assert plain.within_input is None
    grouped = with_inputs(data, 4)
    report = cross_validate(model, grouped, make_folds(grouped, 4), samples=100).report
    within = report.within_input
    assert within is not None
    assert within.inputs == 15 and within.pairs > 0
    lo, hi = within.ci["ordered_right"]
    assert lo <= within.ordered_right <= hi
    # The synthetic rubric is learnable: same-input drafts come out in the rater's order.
    assert within.ordered_right > 0.8 and within.vs_baseline.beats_baseline
    assert report.mse == pytest.approx(plain.mse)  # the same folds: same predictions


def test_folds_by_input_keep_every_draft_of_an_input_and_copies_of_a_text_together() -> None:
    data = RatingData(
        texts=["t1", "t2", "t1", "t3", "t4", "t5"],
        ratings=np.array([0.0, 1.0, 0.5, -1.0, 0.0, 1.0]),
        prompts=[None] * 6,
        inputs=["A", "A", "B", "C", None, "C"],
    )
    groups = fold_groups(data, "input")
    # t1 links input A to input B; t4 has no input and is on its own.
    assert groups[0] == groups[1] == groups[2] and groups[3] == groups[5]
    assert len({int(groups[0]), int(groups[3]), int(groups[4])}) == 3
    assert fold_groups(data).tolist() == [0, 1, 0, 2, 3, 4]  # by text: copies only
    grouped = with_inputs(ratings(40), 4)
    for _, test in make_folds(grouped, 5, seed=1, by="input"):
        held_out = {grouped.inputs[i] for i in test}
        assert sum(grouped.inputs.count(key) for key in held_out) == len(test)
    with pytest.raises(InvalidInputError, match=r"needs at least 5 inputs.*has 3"):
        make_folds(data, 5, by="input")
    with pytest.raises(InvalidInputError, match="no item names its input"):
        make_folds(ratings(40), 5, by="input")
    with pytest.raises(InvalidInputError, match="unknown fold grouping 'photo'"):
        make_folds(grouped, 5, by="photo")


def test_cluster_bootstrap_resamples_whole_inputs() -> None:
    rng = np.random.default_rng(0)
    # 60 inputs of 5 drafts that share most of their value: 60 independent draws, not 300.
    values = np.repeat(rng.normal(size=60), 5) + 0.1 * rng.normal(size=300)
    clusters = np.repeat(np.arange(60), 5)

    def mean(i: np.ndarray) -> dict[str, float]:
        return {"mean": float(values[i].mean())}

    def width(ci: dict[str, tuple[float, float]]) -> float:
        return ci["mean"][1] - ci["mean"][0]

    plain = bootstrap_intervals(mean, 300, seed=1)
    clustered = bootstrap_intervals(mean, 300, seed=1, clusters=clusters)
    # Theory: the width grows by about sqrt(5) (the design effect of 5 near-copies).
    assert 1.8 < width(clustered) / width(plain) < 2.8
    # One item per cluster, in order: exactly the plain bootstrap.
    assert bootstrap_intervals(mean, 300, seed=1, clusters=np.arange(300)) == plain
    with pytest.raises(InvalidInputError, match="299 cluster ids for 300 items"):
        bootstrap_intervals(mean, 300, clusters=np.arange(299))


def test_reports_resample_drafts_of_one_input_together() -> None:
    data = with_inputs(ratings(60), 5)
    assert resampling_clusters(data).tolist() == [i // 5 for i in range(60)]
    assert resampling_clusters(ratings(40)).tolist() == list(range(40))
    rng = np.random.default_rng(2)
    offsets = np.repeat(rng.normal(scale=0.4, size=12), 5)  # an error shared by each input
    pred = data.ratings + offsets + rng.normal(scale=0.05, size=60)
    base = np.zeros(60)
    plain = rating_report(data.ratings, pred, base, samples=400, seed=0)
    clustered = rating_report(
        data.ratings, pred, base, samples=400, seed=0, clusters=resampling_clusters(data)
    )
    assert clustered.mse == plain.mse
    assert np.ptp(clustered.ci["mse"]) > 1.3 * np.ptp(plain.ci["mse"])
    assert plain.resampled.to_json() == {"unit": "item", "count": 60}
    assert clustered.resampled.to_json() == {"unit": "group", "count": 12}
    # Fewer groups than MIN_CLUSTERS: their spread is unknown, so items are resampled.
    few = np.arange(60) // 7  # 9 groups
    fallback = rating_report(data.ratings, pred, base, samples=400, seed=0, clusters=few)
    assert fallback.ci == plain.ci and fallback.resampled.unit == "item"


@pytest.mark.parametrize("m", [2, 7, 40, 3000])
def test_same_input_ordering_counts_match_brute_force(m: int) -> None:
    """The O(m log m) count (via Kendall's tau-b) against every pair, ties on both sides."""
    from prefloop.reward.evaluate import _ordered_right

    rng = np.random.default_rng(m)
    ratings_ = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], size=m)
    values = rng.choice(np.linspace(0, 1, 6), size=m)  # many ties in the predictions too
    size = min(m, 300)  # brute force on a sample of the items when m is large
    a, b = np.triu_indices(size, k=1)
    apart = ratings_[a] != ratings_[b]
    right = (np.sign(values[a] - values[b]) * np.sign(ratings_[a] - ratings_[b]) + 1) / 2
    assert _ordered_right(values[:size], ratings_[:size]) == pytest.approx(
        (float(apart.sum()), float(right[apart].sum()))
    )
    pairs, ordered = _ordered_right(values, ratings_)
    assert 0 <= ordered <= pairs and pairs == m * (m - 1) / 2 - sum(
        c * (c - 1) / 2 for c in np.unique(ratings_, return_counts=True)[1]
    )
    assert _ordered_right(np.zeros(m), ratings_)[1] == pytest.approx(pairs / 2)  # all ties


def test_pairs_of_one_prompt_are_resampled_together() -> None:
    """The pairs expanded from one ranking share its prompt: evaluation resamples prompts."""
    from prefloop.reward.pairwise import BradleyTerryConfig, BradleyTerryModel
    from tests.reward.conftest import synthetic_pairs

    rows = synthetic_pairs(48)
    flipped = [i // 4 in (1, 5, 8) for i in range(48)]  # three rankings the model gets wrong
    data = PairData(
        prompts=[f"ranking {i // 4}" for i in range(48)],  # 12 rankings of 4 pairs each
        chosen=[r["rejected" if f else "chosen"] for r, f in zip(rows, flipped, strict=True)],
        rejected=[r["chosen" if f else "rejected"] for r, f in zip(rows, flipped, strict=True)],
    )
    assert resampling_clusters(data).tolist() == [i // 4 for i in range(48)]

    def model() -> BradleyTerryModel:
        return BradleyTerryModel(BradleyTerryConfig(features="stats"))

    result = cross_validate(model, data, make_folds(data, 4), samples=200)
    p_length = np.full(48, 0.5)  # any baseline: only the model's interval is compared
    shorter = shorter_wins_probabilities(data)
    by_pair = pair_report(result.predictions, shorter, p_length, samples=200)
    by_prompt = pair_report(
        result.predictions, shorter, p_length, samples=200, clusters=resampling_clusters(data)
    )
    assert result.report.ci["accuracy"] == by_prompt.ci["accuracy"]
    # Errors come by whole rankings, so resampling rankings gives the wider interval.
    assert np.ptp(by_prompt.ci["accuracy"]) > 1.3 * np.ptp(by_pair.ci["accuracy"])
