"""Regret against estimated means, checked against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from prefloop.demo import cumulative_regret, uniform_regret
from prefloop.errors import InvalidInputError

MEANS = {"a": 0.5, "b": 0.0, "c": -0.5}


def test_cumulative_regret_adds_each_choices_gap_to_the_best_mean() -> None:
    curve = cumulative_regret(["a", "b", "c", "a", "b"], MEANS)
    np.testing.assert_allclose(curve, [0.0, 0.5, 1.5, 1.5, 2.0])


def test_uniform_regret_is_the_mean_gap_per_step() -> None:
    # best 0.5, mean of means 0: each uniform choice costs 0.5 in expectation.
    np.testing.assert_allclose(uniform_regret(4, MEANS), [0.5, 1.0, 1.5, 2.0])
    assert uniform_regret(0, MEANS).size == 0


def test_always_choosing_the_best_arm_has_no_regret() -> None:
    assert cumulative_regret(["a"] * 10, MEANS)[-1] == 0.0
    assert cumulative_regret([], MEANS).size == 0


def test_regret_needs_a_mean_for_every_chosen_arm() -> None:
    with pytest.raises(InvalidInputError, match="'d'"):
        cumulative_regret(["a", "d"], MEANS)
    with pytest.raises(InvalidInputError, match="at least one arm"):
        uniform_regret(3, {})
    with pytest.raises(InvalidInputError, match="steps"):
        uniform_regret(-1, MEANS)
