"""The demo's reward-model line says what the bootstrap interval says, not just which MSE is
lower: a model with a lower MSE whose interval includes 0 is "not clearly better"."""

from __future__ import annotations

import pytest

from prefloop.demo._result import RewardModelResult


@pytest.mark.parametrize(
    ("beats", "low", "expected"),
    [
        (True, 0.012, "it beats the baseline: the 95% interval of its MSE reduction is above 0"),
        (False, -0.004, "not clearly better than the baseline: the 95% interval of its MSE "
                        "reduction includes 0 (from -0.004)"),
    ],
)  # fmt: skip
def test_the_verdict_follows_the_interval(beats: bool, low: float, expected: str) -> None:
    result = RewardModelResult(
        kind="rating:ridge",
        ratings=104,
        metrics={"cv_mse": 0.180, "cv_mae": 0.338, "baseline_mse": 0.211, "baseline_mae": 0.392,
                 "mse_reduction_ci_low": low},
        beats_baseline=beats,
    )  # fmt: skip
    assert "MSE 0.180 (MAE 0.338) vs 0.211 (0.392)" in result.summary
    assert expected in result.summary
    assert ("does not beat" in result.summary) is False
