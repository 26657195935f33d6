"""``prefloop bandit stats`` and ``prefloop bandit recompute`` against a real SQLite store."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from prefloop.bandit import apply_reward, decide
from prefloop.cli import app
from prefloop.store import Store, repo
from prefloop.store.models import Generation


def _fill(store: Store) -> None:
    with store.session() as s:
        task = repo.get_or_create_task(s, "diary")
        for arm in ("A", "B"):
            repo.create_arm(s, task, arm, template=arm + " {place}")
        for i in range(6):
            decision = decide(s, task, seed=i)
            generation = repo.add_generation(
                s, task, arm_id=decision.arm_id, output="x", decision_id=decision.id
            )
            generation.reward = 1.0 if i % 2 else -0.5
            apply_reward(s, generation, None, generation.reward)


def test_stats_and_recompute_commands(sqlite_store: Store) -> None:
    _fill(sqlite_store)
    db = ["--db", sqlite_store.url]
    stats = CliRunner().invoke(app, ["bandit", "stats", "--task", "diary", "--json", *db])
    assert stats.exit_code == 0, stats.output
    summary = json.loads(stats.stdout)
    assert summary["decisions"] == 6 and summary["feedbacks"] == 6
    assert {a["arm"] for a in summary["arms"]} == {"A", "B"}
    assert summary["best_arm"] in {"A", "B"} and summary["stop"] is False

    check = CliRunner().invoke(app, ["bandit", "recompute", "--task", "diary", "--json", *db])
    assert json.loads(check.stdout) | {"differences": []} == {
        "task": "diary",
        "policy": "default",
        "matches": True,
        "differences": [],
        "fixed": False,
        "decisions": 6,
    }
    with sqlite_store.session() as s:  # the cache moves without telling the bandit
        s.query(Generation).update({Generation.reward: 0.0})
    drift = CliRunner().invoke(app, ["bandit", "recompute", "--task", "diary", "--json", *db])
    assert json.loads(drift.stdout)["matches"] is False
    fixed = CliRunner().invoke(app, ["bandit", "recompute", "--task", "diary", "--fix", *db])
    assert fixed.exit_code == 0 and "rebuilt from the log" in fixed.stdout
    again = CliRunner().invoke(app, ["bandit", "recompute", "--task", "diary", "--json", *db])
    assert json.loads(again.stdout)["matches"] is True
    table = CliRunner().invoke(app, ["bandit", "stats", "--task", "diary", *db])
    assert table.exit_code == 0 and "leads with" in table.stdout
