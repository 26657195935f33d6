"""The loop layer (prefloop.loop): feedback recorded, rewards derived and the bandit moved in one
transaction, on SQLite and PostgreSQL; and no second copy of it elsewhere."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy import select

from prefloop import loop
from prefloop.bandit import check_state, decide
from prefloop.errors import NotFoundError
from prefloop.feedback import RatingEvent, RewardRules, ThumbsEvent, refresh_rewards
from prefloop.store import PolicyState, Store, Task, repo

SRC = Path(__file__).resolve().parents[1] / "src" / "prefloop"


def _decided(store: Store, n: int) -> list[str]:
    """A task with two arms and ``n`` generations, each made from a bandit decision."""
    with store.session() as s:
        task = repo.get_or_create_task(s, "diary")
        for arm in ("A", "B"):
            repo.create_arm(s, task, arm, template=f"{arm}: {{place}}")
        ids = []
        for k in range(n):
            decision = decide(s, task, seed=k)
            generation = repo.add_generation(
                s,
                task,
                arm_id=decision.arm_id,
                output=f"entry {k}",
                policy=decision.policy,
                propensity=decision.propensity,
                decision_id=decision.id,
            )
            ids.append(generation.id)
        return ids


def _version(store: Store) -> int:
    with store.session(readonly=True) as s:
        return int(s.scalar(select(PolicyState.version)) or 0)


def test_submit_feedback_moves_the_bandit_once_per_reward_change(store: Store) -> None:
    first, second = _decided(store, 2)
    before = _version(store)
    with store.session() as s:
        task = repo.get_task(s, "diary")
        rated = loop.submit_feedback(
            s, task, RatingEvent(generation_id=first, value=1, idempotency_key="k1")
        )
        again = loop.submit_feedback(
            s, task, RatingEvent(generation_id=first, value=1, idempotency_key="k1")
        )
        thumbs = loop.submit_feedback(s, task, ThumbsEvent(generation_id=second, up=False))
    assert [(c.old, c.new) for c in rated.reward_changes] == [(None, 1.0)]
    assert again.duplicate and again.reward_changes == []
    assert [(c.old, c.new) for c in thumbs.reward_changes] == [(None, -1.0)]
    assert _version(store) == before + 2  # one write per change, none for the repeat
    with store.session(readonly=True) as s:
        check = check_state(s, repo.get_task(s, "diary"))
        assert check.matches and check.stored == check.recomputed
        assert check.stored is not None and check.stored["t"] == 2


def test_a_failed_submission_leaves_neither_feedback_nor_bandit_changes(store: Store) -> None:
    [gid] = _decided(store, 1)
    before = _version(store)
    with pytest.raises(NotFoundError), store.session() as s:
        task = repo.get_task(s, "diary")
        loop.submit_feedback(s, task, RatingEvent(generation_id=gid, value=1))
        loop.submit_feedback(s, task, RatingEvent(generation_id="gen-none", value=1))
    assert _version(store) == before
    with store.session(readonly=True) as s:
        assert repo.get_generation(s, gid).reward is None


def test_changed_rules_refresh_rewards_and_the_bandit_follows(store: Store) -> None:
    first, second = _decided(store, 2)
    with store.session() as s:
        task = repo.get_task(s, "diary")
        loop.submit_feedback(s, task, RatingEvent(generation_id=first, value=1, source="judge"))
        loop.submit_feedback(s, task, RatingEvent(generation_id=second, value=-1))
    with store.session() as s:
        task = s.scalars(select(Task).where(Task.name == "diary")).one()
        assert repo.get_generation(s, first).reward is None  # judges weigh 0 by default
        task.reward_rules = RewardRules(source_weights={"judge": 1.0}).to_dict()
        s.flush()
        changes = refresh_rewards(s, task)
        assert loop.apply_reward_changes(s, changes) == 1
    with store.session(readonly=True) as s:
        assert repo.get_generation(s, first).reward == 1.0
        assert check_state(s, repo.get_task(s, "diary")).matches


def _imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of each ``from prefloop… import name`` in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prefloop."):
            found.extend((node.module or "", alias.name) for alias in node.names)
    return found


@pytest.mark.parametrize("package", ["serve", "demo", "bandit", "feedback", "store"])
def test_no_private_names_cross_a_package_boundary(package: str) -> None:
    """The fast lane shares the store's statements through prefloop.store.statements, not by
    importing another package's private names or modules."""
    crossing = []
    for path in sorted((SRC / package).rglob("*.py")):
        for module, name in _imports(path):
            parts = module.split(".")
            if parts[1] in (package, "_files"):  # its own package; prefloop's shared file helpers
                continue
            if name.startswith("_") or any(part.startswith("_") for part in parts):
                crossing.append(f"{path.relative_to(SRC)}: {module}.{name}")
    assert crossing == []


def test_only_the_loop_moves_the_bandit_after_feedback() -> None:
    """One home for "record feedback, then update the bandit": outside prefloop.loop no module
    calls both record_feedback and apply_reward (the fast lane runs the loop's steps through
    reward_change and the policy's update, checked against this path in its tests)."""
    both = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "loop.py" or path.parent.name == "bandit":
            continue
        calls = {
            node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call)
        }
        if {"record_feedback", "apply_reward"} <= calls:
            both.append(str(path.relative_to(SRC)))
    assert both == []
