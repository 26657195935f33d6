"""Specs, the vectorised simulator, and ``prefloop bandit simulate``."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from prefloop._files import _process_umask
from prefloop.bandit import load_spec, parse_spec, plot_regret, simulate
from prefloop.cli import app
from prefloop.errors import InvalidInputError

LEVELS = [-1, -0.5, 0, 0.5, 1]
BENCH = {
    "A": [0.05, 0.05, 0.20, 0.35, 0.35],
    "B": [0.03, 0.05, 0.15, 0.35, 0.42],
    "C": [0.01, 0.02, 0.08, 0.28, 0.61],
    "D": [0.02, 0.04, 0.12, 0.30, 0.52],
}
TINY = {
    "arms": {
        "good": {"values": [0, 1], "probs": [0.2, 0.8]},
        "bad": {"values": [0, 1], "probs": [0.7, 0.3]},
    }
}


def _bench_spec() -> dict:
    return {"arms": {k: {"values": LEVELS, "probs": p} for k, p in BENCH.items()}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], 'expected \\{"arms"'),
        ({"arms": {"A": {"values": [0, 1], "probs": [0.5, 0.5]}}}, "at least two arms"),
        (
            {
                "arms": {
                    "A": {"values": [0, 1], "probs": [0.5, 0.6]},
                    "B": {"values": [0], "probs": [1]},
                }
            },
            "arm 'A': probs sum to 1.1, not 1",
        ),
        (
            {"arms": {"A": {"values": [0, 1], "probs": [1.0]}, "B": {"values": [0], "probs": [1]}}},
            "arm 'A': 2 values but 1 probs",
        ),
        (
            {
                "arms": {
                    "A": {"values": [0, 0], "probs": [0.5, 0.5]},
                    "B": {"values": [0], "probs": [1]},
                }
            },
            "values repeat",
        ),
        (
            {
                "arms": {
                    "A": {"values": [0, 1], "probs": [1.5, -0.5]},
                    "B": {"values": [0], "probs": [1]},
                }
            },
            "probabilities must be ≥ 0",
        ),
        (
            {
                "arms": {
                    "A": {"values": [0, "x"], "probs": [0.5, 0.5]},
                    "B": {"values": [0], "probs": [1]},
                }
            },
            "arm 'A' values must be a non-empty list of finite numbers",
        ),
        (
            {"arms": {"A": {"values": [0]}, "B": {"values": [0], "probs": [1]}}},
            "needs exactly the keys 'values' and 'probs'",
        ),
    ],
)
def test_spec_errors_say_what_to_fix(data: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_spec(data)


def test_spec_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_spec(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"arms": {\n  "A": [}')
    with pytest.raises(InvalidInputError, match=r"broken\.json:2:9: not valid JSON"):
        load_spec(broken)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_bench_spec()))
    spec = load_spec(good)
    assert spec.best_arm == "C" and spec.means.round(3).tolist() == [0.45, 0.54, 0.73, 0.63]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policies": []}, "name at least one policy"),
        ({"policies": ["ucb9"]}, "unknown policy 'ucb9'; choose from"),
        ({"policies": ["ucb1", "ucb1"]}, "'ucb1' is named twice"),
        ({"horizon": 0}, "horizon must be a positive integer"),
        ({"runs": -3}, "runs must be a positive integer"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"checkpoints": [50]}, "checkpoints must be ≤ the horizon 20"),
        ({"runs": 10**6, "horizon": 10**4}, "too many to hold"),
    ],
)
def test_simulate_argument_errors(kwargs: dict, message: str) -> None:
    arguments = {"policies": ["ucb1"], "horizon": 20, "runs": 2, "seed": 0} | kwargs
    with pytest.raises(InvalidInputError, match=message):
        simulate(parse_spec(TINY), **arguments)


def test_common_random_numbers_and_reproducibility() -> None:
    spec = parse_spec(TINY)
    one = simulate(spec, ["ucb1", "default"], horizon=50, runs=20, seed=3)
    two = simulate(spec, ["default"], horizon=50, runs=20, seed=3)
    assert np.array_equal(
        one.policies["default"].regret_curve, two.policies["default"].regret_curve
    )
    other = simulate(spec, ["default"], horizon=50, runs=20, seed=4)
    assert not np.array_equal(
        other.policies["default"].regret_curve, two.policies["default"].regret_curve
    )


def test_regret_is_the_gap_times_the_bad_pulls() -> None:
    spec = parse_spec(TINY)  # gap 0.5; the reference UCB1 plays each arm once first
    result = simulate(spec, ["ucb1-reference"], horizon=2, runs=5, seed=0)
    assert result.policies["ucb1-reference"].regret_curve.tolist() == [0.0, 0.5]


@pytest.mark.slow
def test_default_beats_the_reference_on_the_bench_spec() -> None:
    """Fixed seed, margins well inside what 200 runs measure (see bench/bench_bandit.py)."""
    result = simulate(
        parse_spec(_bench_spec()),
        ["default", "ucb1-reference"],
        horizon=1000,
        runs=200,
        seed=7,
        checkpoints=[200],
    )
    ours, reference = result.policies["default"], result.policies["ucb1-reference"]
    assert ours.checkpoints[200].regret < 0.7 * reference.checkpoints[200].regret
    assert ours.checkpoints[1000].regret < 0.45 * reference.checkpoints[1000].regret
    assert ours.checkpoints[1000].p_best > 0.9
    low, high = ours.checkpoints[1000].regret_ci
    assert low < ours.checkpoints[1000].regret < high


def test_cli_prints_pure_json_and_writes_the_png(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(TINY))
    png = tmp_path / "regret.png"
    result = CliRunner().invoke(
        app,
        [
            "bandit",
            "simulate",
            "--spec",
            str(spec),
            "--policies",
            "default,ucb1-reference",
            "--horizon",
            "60",
            "--runs",
            "8",
            "--seed",
            "1",
            "--json",
            "--plot",
            str(png),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["best_arm"] == "good" and set(summary["policies"]) == {
        "default",
        "ucb1-reference",
    }
    for row in summary["policies"].values():
        assert row["regret_ci"][0] <= row["regret"] <= row["regret_ci"][1]
        assert 0 <= row["p_best"] <= 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    # written under a private temporary name, then given the umask's permissions
    assert stat.S_IMODE(png.stat().st_mode) == 0o666 & ~_process_umask()


def test_cli_table_and_bad_spec_exit_code(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(TINY))
    table = CliRunner().invoke(
        app, ["bandit", "simulate", "--spec", str(spec), "--horizon", "30", "--runs", "4"]
    )
    assert table.exit_code == 0 and "best arm: good" in table.stdout
    spec.write_text(
        json.dumps(
            {
                "arms": {
                    "A": {"values": [0, 1], "probs": [0.4, 0.4]},
                    "B": {"values": [0], "probs": [1]},
                }
            }
        )
    )
    failed = subprocess.run(
        [sys.executable, "-m", "prefloop", "bandit", "simulate", "--spec", str(spec), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 2 and failed.stdout == ""
    assert "probs sum to 0.8, not 1" in failed.stderr


def test_plot_refuses_a_missing_folder(tmp_path: Path) -> None:
    result = simulate(parse_spec(TINY), ["ucb1"], horizon=5, runs=2, seed=0)
    with pytest.raises(InvalidInputError, match="does not exist"):
        plot_regret(result, tmp_path / "nope" / "x.png")


ISSUE_POLICY_NAMES = [
    "ucb1-reference",
    "ucb1",
    "epsilon-greedy",
    "thompson",
    "softmax",
    "mabwiser-ucb1",
    "mabwiser-epsilon-greedy",
    "mabwiser-thompson",
    "default",
]


def test_cli_runs_every_policy_name_the_issue_lists(tmp_path: Path) -> None:
    pytest.importorskip("mabwiser")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(TINY))
    args = ["--spec", str(spec), "--policies", ",".join(ISSUE_POLICY_NAMES)]
    args += ["--horizon", "40", "--runs", "4", "--seed", "3", "--json"]
    result = CliRunner().invoke(app, ["bandit", "simulate", *args])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert list(summary["policies"]) == ISSUE_POLICY_NAMES and summary["best_arm"] == "good"
    for name, row in summary["policies"].items():
        assert set(row) >= {"regret", "regret_ci", "p_best"}, name
        low, high = row["regret_ci"]
        assert 0 <= low <= row["regret"] <= high, name
        assert row["regret"] < 40 * 0.5, name  # always playing 'bad' would cost 0.5 a step


PINNED = (
    '{"policies": {"default": {"regret": 2.24, "regret_ci": [1.1999, 3.2801], "p_best": 1.0}, '
    '"ucb1": {"regret": 6.72, "regret_ci": [5.9205, 7.5195], "p_best": 1.0}}, '
    '"best_arm": "good", "arm_means": {"good": 0.5, "bad": -0.3}, '
    '"horizon": 30, "runs": 5, "seed": 2'
)


def test_simulate_json_is_byte_for_byte_what_it_was(tmp_path: Path) -> None:
    """The typed summary prints the JSON the dict did (keys, order, rounding)."""
    spec = tmp_path / "spec.json"
    arms = {
        "good": {"values": [-1, 0, 1], "probs": [0.1, 0.3, 0.6]},
        "bad": {"values": [-1, 0, 1], "probs": [0.5, 0.3, 0.2]},
    }
    spec.write_text(json.dumps({"arms": arms}))
    args = ["--spec", str(spec), "--policies", "default,ucb1", "-T", "30", "-R", "5"]
    args += ["--seed", "2", "--json"]
    plain = CliRunner().invoke(app, ["bandit", "simulate", *args])
    assert plain.exit_code == 0, plain.output
    assert plain.stdout == PINNED + "}\n"
    png = tmp_path / "regret.png"
    plotted = CliRunner().invoke(app, ["bandit", "simulate", *args, "--plot", str(png)])
    assert plotted.exit_code == 0, plotted.output
    assert plotted.stdout == PINNED + f', "plot": "{png}"}}\n'


def test_a_summary_with_stopping_rules_keeps_its_json_shape() -> None:
    from prefloop.bandit import parse_spec

    spec = parse_spec(TINY)
    result = simulate(spec, ["thompson"], horizon=40, runs=4, seed=1, stop_threshold=0.9)
    summary = result.summary()
    data = summary.to_json()
    assert list(data) == [
        "policies",
        "best_arm",
        "arm_means",
        "horizon",
        "runs",
        "seed",
        "stopping",
    ]
    rule = result.policies["thompson"].stopping
    assert rule is not None and data["stopping"] == {
        "thompson": {
            "threshold": rule.threshold,
            "stopped": rule.stopped,
            "median_feedbacks": rule.median_feedbacks,
            "correct": rule.correct,
        }
    }
    point = result.policies["thompson"].checkpoints[40]
    assert summary.policies["thompson"].regret == round(point.regret, 4)
    assert data["policies"]["thompson"]["regret"] == round(point.regret, 4)
