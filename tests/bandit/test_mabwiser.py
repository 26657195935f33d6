"""The MABWiser baselines of the simulator."""

from __future__ import annotations

import sys

import pytest

from prefloop.bandit import parse_spec, simulate, simulation_policies
from prefloop.errors import InvalidInputError

SPEC = parse_spec(
    {
        "arms": {
            "low": {"values": [-1, 0, 1], "probs": [0.5, 0.3, 0.2]},
            "high": {"values": [-1, 0, 1], "probs": [0.1, 0.2, 0.7]},
        }
    }
)
MABWISER = ["mabwiser-ucb1", "mabwiser-epsilon-greedy", "mabwiser-thompson"]


def test_mabwiser_policies_are_offered() -> None:
    assert set(MABWISER) <= set(simulation_policies())


def test_mabwiser_baselines_run_and_learn() -> None:
    result = simulate(SPEC, MABWISER, horizon=150, runs=6, seed=0)
    for name in MABWISER:
        curve = result.policies[name].regret_curve
        # the warm-up pulls each arm once in order: 'low' (gap 0.9), then 'high'
        assert curve[:2].tolist() == pytest.approx([0.9, 0.9])
        # then regret grows far slower than always playing the worse arm (0.9 per step)
        assert curve[-1] - curve[1] < 0.3 * 0.9 * 148, name


def test_missing_mabwiser_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mabwiser.mab", None)
    with pytest.raises(InvalidInputError, match="needs MABWiser, a development extra"):
        simulate(SPEC, ["mabwiser-ucb1"], horizon=5, runs=1, seed=0)
