"""The store-bound bandit (bandit/online.py) on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC

import numpy as np
import pytest
from sqlalchemy import delete, func, select

from prefloop.bandit import (
    apply_reward,
    arm_stats,
    check_state,
    decide,
    evaluate_offline,
    logged_decisions,
    make_policy,
    rebuild_state,
    recommend_arm,
    state_differences,
)
from prefloop.bandit._thompson import ThompsonSampling
from prefloop.bandit.online import PolicyCache
from prefloop.errors import ConflictError, InvalidInputError, NotFoundError
from prefloop.store import Store, repo
from prefloop.store.models import Arm, BanditDecision, Generation, PolicyState


def _task(store: Store, arms: tuple[str, ...] = ("A", "B", "C")) -> None:
    with store.session() as s:
        task = repo.get_or_create_task(s, "diary")
        for arm in arms:
            repo.create_arm(s, task, arm, template=f"prompt {arm}: {{place}}")


def _decide_and_generate(store: Store, **kwargs: object) -> tuple[str, str]:
    """One request: a decision and the generation made from it; returns their ids."""
    with store.session() as s:
        task = repo.get_task(s, "diary")
        decision = decide(s, task, **kwargs)  # type: ignore[arg-type]
        generation = repo.add_generation(
            s,
            task,
            arm_id=decision.arm_id,
            output="a diary entry",
            policy=decision.policy,
            propensity=decision.propensity,
            decision_id=decision.id,
            end_user=decision.end_user,
        )
        return decision.id, generation.id


def _set_reward(store: Store, generation_id: str, reward: float | None) -> None:
    """What the feedback area does: change the cached reward, then tell the bandit."""
    with store.session() as s:
        generation = repo.get_generation(s, generation_id)
        old, generation.reward = generation.reward, reward
        apply_reward(s, generation, old, reward)


def _compare(store: Store, policy: str) -> list[str]:
    with store.session(readonly=True) as s:
        task = repo.get_task(s, "diary")
        check = check_state(s, task, policy)
        assert check.stored is not None
        return state_differences(check.stored, check.recomputed)


def test_decide_logs_the_decision_with_its_probabilities(store: Store) -> None:
    _task(store)
    ids = [_decide_and_generate(store, context={"place": "Busan"}, seed=1)[0] for _ in range(3)]
    with store.session(readonly=True) as s:
        decisions = [s.get(BanditDecision, i) for i in ids]
        arms = {a.id: a.name for a in repo.active_arms(s, repo.get_task(s, "diary"))}
        for d in decisions:
            assert d is not None and d.policy == "default"
            assert set(d.probabilities) == {"A", "B", "C"}
            assert sum(d.probabilities.values()) == pytest.approx(1.0)
            assert d.propensity == d.probabilities[arms[d.arm_id]] > 0
            assert d.context == {"place": "Busan"}
        times = [d.created_at.replace(tzinfo=d.created_at.tzinfo or UTC) for d in decisions]
        assert times == sorted(times) and len(set(times)) == 3
        row = s.scalar(select(PolicyState))
        assert row is not None and row.version == 3 and row.state["t"] == 3


@pytest.mark.parametrize(
    ("policy", "config"),
    [("default", None), ("ucb1", {"discount": 0.9, "sticky": True}), ("linucb", None)],
)
def test_late_changed_and_missing_rewards_match_the_log(
    store: Store, policy: str, config: dict | None
) -> None:
    _task(store)
    rng = np.random.default_rng(0)
    pending: list[str] = []
    rewarded: list[str] = []
    for step in range(24):
        if step == 8:
            with store.session() as s:
                repo.create_arm(s, repo.get_task(s, "diary"), "D", template="d {place}")
        if step == 16:
            with store.session() as s:
                task = repo.get_task(s, "diary")
                repo.set_labels(repo.get_arm(s, task, "B"), ["retired"])
        user = f"user{rng.integers(3)}"
        context = {"place": str(rng.choice(["Busan", "Seoul"]))}
        kwargs = {"policy": policy, "end_user": user, "context": context, "seed": step}
        if config is not None:
            kwargs["config"] = config
        pending.append(_decide_and_generate(store, **kwargs)[1])
        while pending and rng.random() < 0.5:
            generation_id = pending.pop(int(rng.integers(len(pending))))
            if rng.random() < 0.2:
                continue  # this one never gets feedback
            _set_reward(store, generation_id, float(rng.choice([-1, -0.5, 0, 0.5, 1])))
            rewarded.append(generation_id)
    for generation_id in rewarded[:4]:  # ratings change later ...
        _set_reward(store, generation_id, 0.25)
    _set_reward(store, rewarded[4], None)  # ... or are withdrawn
    with store.session() as s:  # an arm added after the last decision
        repo.create_arm(s, repo.get_task(s, "diary"), "E", template="e {place}")
    assert _compare(store, policy) == []
    with store.session(readonly=True) as s:
        row = s.scalar(select(PolicyState).where(PolicyState.policy == policy))
        assert row is not None and row.state["t"] == 24
        assert row.version == 24 + len(rewarded) + 5


def test_a_different_reward_in_the_log_is_caught(store: Store) -> None:
    _task(store)
    _, generation_id = _decide_and_generate(store, seed=0)
    _set_reward(store, generation_id, 1.0)
    with store.session() as s:  # the cache changes behind the bandit's back
        s.get(Generation, generation_id).reward = -1.0  # type: ignore[union-attr]
    differences = _compare(store, "default")
    assert any("reward_sum" in line for line in differences)
    with store.session() as s:
        rebuild_state(s, repo.get_task(s, "diary"), "default")
    assert _compare(store, "default") == []


def test_missing_state_row_is_rebuilt_from_the_log(store: Store) -> None:
    _task(store)
    first = _decide_and_generate(store, seed=0)[1]
    second = _decide_and_generate(store, seed=1)[1]
    _set_reward(store, first, 0.5)
    with store.session() as s:
        s.execute(delete(PolicyState))
    _set_reward(store, second, -0.5)
    assert _compare(store, "default") == []
    with store.session(readonly=True) as s:
        state = check_state(s, repo.get_task(s, "diary"), "default").stored
        assert state is not None and state["t"] == 2
        assert sum(arm["n"] for arm in state["arms"].values()) == 2


def test_bad_calls(store: Store) -> None:
    _task(store, arms=("A",))
    with store.session() as s:
        task = repo.get_task(s, "diary")
        repo.set_labels(repo.get_arm(s, task, "A"), ["retired"])
    with store.session() as s, pytest.raises(ConflictError, match="has no active arms"):
        decide(s, repo.get_task(s, "diary"))
    with store.session() as s:
        task = repo.get_task(s, "diary")
        repo.set_labels(repo.get_arm(s, task, "A"), ["candidate"])
        decide(s, task, policy="softmax", config={"temperature": 0.5})
    with store.session() as s, pytest.raises(ConflictError, match="cannot switch"):
        decide(s, repo.get_task(s, "diary"), policy="softmax", config={"temperature": 0.1})
    with store.session() as s:
        task = repo.get_task(s, "diary")
        failed = repo.add_generation(s, task, status="failed", error="timeout")
        plain = repo.add_generation(s, task, output="imported, no bandit behind it")
        assert apply_reward(s, plain, None, 1.0) is False
        failed.decision_id = decide(s, task).id
        with pytest.raises(InvalidInputError, match="failed LLM call has no reward"):
            apply_reward(s, failed, None, 1.0)


def test_arm_stats_and_recommendation(store: Store) -> None:
    _task(store)
    with store.session() as s:
        task = repo.get_task(s, "diary")
        arms = {a.name: a for a in repo.active_arms(s, task)}
        for name, rewards in {"A": [1.0, 0.5, 1.0], "B": [-1.0, 0.0], "C": []}.items():
            for reward in rewards:
                repo.add_generation(s, task, arm_id=arms[name].id, output="x", reward=reward)
        repo.add_generation(s, task, arm_id=arms["B"].id, status="failed", error="boom")
    for seed in range(4):
        _decide_and_generate(store, seed=seed)
    with store.session(readonly=True) as s:
        task = repo.get_task(s, "diary")
        summary = arm_stats(s, task)
        by_name = {a.arm: a for a in summary.arms}
        assert by_name["A"].count == 3 and by_name["A"].raw_mean_reward == pytest.approx(2.5 / 3)
        assert by_name["B"].count == 2 and by_name["B"].raw_mean_reward == -0.5
        assert by_name["C"].count == 0 and by_name["C"].mean_reward is None
        assert by_name["C"].interval is None
        low, high = by_name["A"].interval  # type: ignore[misc]
        assert -1 <= low < by_name["A"].mean_reward < high <= 1  # type: ignore[operator]
        assert sum(a.share for a in summary.arms) == pytest.approx(1.0)
        decided = dict(
            s.execute(
                select(BanditDecision.arm_id, func.count()).group_by(BanditDecision.arm_id)
            ).all()
        )
        assert by_name["A"].share == decided.get(by_name["A"].arm_id, 0) / 4
        assert summary.best_arm == "A" and summary.best_probability == by_name["A"].p_best
        assert sum(a.p_best or 0 for a in summary.arms) == pytest.approx(1.0)
        assert summary.feedbacks == 5 and summary.decisions == 4
        recommendation = recommend_arm(s, task, threshold=0.95)
        assert recommendation.arm == "A" and not recommendation.confident
        assert "A leads" in str(recommendation)


def test_logged_decisions_feed_off_policy_evaluation(store: Store) -> None:
    _task(store)
    for seed in range(12):
        _, generation_id = _decide_and_generate(store, policy="epsilon-greedy", seed=seed)
        _set_reward(store, generation_id, 1.0 if seed % 3 else 0.0)
    with store.session(readonly=True) as s:
        logs = logged_decisions(s, repo.get_task(s, "diary"), policy="epsilon-greedy")
    assert len(logs) == 12 and all(0 < log.propensity <= 1 for log in logs)
    estimate = evaluate_offline(logs, {"A": 1 / 3, "B": 1 / 3, "C": 1 / 3})
    assert estimate.n == 12 and -1 <= estimate.doubly_robust <= 2


def test_concurrent_requests_keep_the_state_equal_to_the_log(store: Store) -> None:
    _task(store)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(6):
                _, generation_id = _decide_and_generate(store, end_user=f"w{k}")
                _set_reward(store, generation_id, [-1.0, 0.0, 0.5, 1.0][(k + i) % 4])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _compare(store, "default") == []
    with store.session(readonly=True) as s:
        row = s.scalar(select(PolicyState))
        assert row is not None and row.state["t"] == 24 and row.version == 48


def test_decide_with_the_callers_arms_and_apply_reward_by_id(store: Store) -> None:
    """A service passes its cached active arms and reports rewards by generation id; a stale
    arm list (C missing) still leaves the stored state equal to its recomputation."""
    _task(store)
    made = [_decide_and_generate(store, seed=k) for k in range(4)]
    with store.session() as s:
        task = repo.get_task(s, "diary")
        arms = [arm for arm in repo.active_arms(s, task) if arm.name != "C"]
        decision = decide(s, task, active_arms=arms, seed=9)
        assert set(decision.probabilities) == {"A", "B"}
        chosen = s.get(Arm, decision.arm_id)
        assert chosen is not None and chosen.name in {"A", "B"}
    for k, (_, generation_id) in enumerate(made):
        with store.session() as s:
            generation = repo.get_generation(s, generation_id)
            old, generation.reward = generation.reward, (1.0 if k % 2 else -0.5)
            assert apply_reward(s, generation_id, old, generation.reward) is True
    assert _compare(store, "default") == []
    with store.session() as s:
        assert apply_reward(s, made[0][1], -0.5, -0.5) is False  # no change
        with pytest.raises(NotFoundError, match="no generation 'ghost'"):
            apply_reward(s, "ghost", None, 1.0)


# -- the service's cache (PolicyCache) ------------------------------------------------------------
def _decide_cached(store: Store, cache: PolicyCache, **kwargs: object) -> BanditDecision:
    with store.session() as s:
        return decide(s, repo.get_task(s, "diary"), cache=cache, **kwargs)  # type: ignore[arg-type]


def _reward_cached(store: Store, cache: PolicyCache, decision_id: str, reward: float) -> None:
    """A generation for the decision, then its reward, as the service's routes do."""
    with store.session() as s:
        task = repo.get_task(s, "diary")
        decision = s.get(BanditDecision, decision_id)
        assert decision is not None
        generation = repo.add_generation(
            s, task, arm_id=decision.arm_id, output="x", decision_id=decision.id, reward=reward
        )
        assert apply_reward(s, generation.id, None, reward, cache=cache)


def test_two_workers_with_their_own_caches_stay_consistent(store: Store) -> None:
    """Two service processes share the store, each with its own cache: a write by one makes
    the other load the state again, so no update is lost and the state equals the log."""
    _task(store)
    other = Store.open(store.url)  # the second worker: its own engine and connections
    try:
        first, second = PolicyCache(refresh=0.0), PolicyCache(refresh=0.0)
        rewards = [1.0, -0.5, 0.5, 0.0, -1.0, 1.0]
        for step, reward in enumerate(rewards):
            cache, where = (first, store) if step % 2 == 0 else (second, other)
            decision = _decide_cached(where, cache)
            _reward_cached(where, cache, decision.id, reward)
        assert _compare(store, "default") == []
        with store.session(readonly=True) as s:
            row = s.scalar(select(PolicyState))
            assert row is not None and row.state["t"] == len(rewards)
            assert sum(arm["n"] for arm in row.state["arms"].values()) == len(rewards)
        # each decision followed the other worker's writes: the state was loaded again
        assert first.loads == second.loads == len(rewards) // 2
        loads = first.loads
        decision = _decide_cached(store, first)  # the second worker wrote last
        _reward_cached(store, first, decision.id, 0.5)
        assert first.loads == loads + 1
        for _ in range(3):  # alone, a worker reuses its live policy
            decision = _decide_cached(store, first)
            _reward_cached(store, first, decision.id, 0.5)
        assert first.loads == loads + 1
        assert _compare(store, "default") == []
    finally:
        other.close()


def test_a_rolled_back_request_does_not_leave_its_policy_in_the_cache(store: Store) -> None:
    _task(store)
    cache = PolicyCache(refresh=0.0)
    _decide_cached(store, cache)
    loads = cache.loads
    with pytest.raises(RuntimeError), store.session() as s:
        decide(s, repo.get_task(s, "diary"), cache=cache)
        raise RuntimeError("the request fails after deciding: its transaction rolls back")
    _decide_cached(store, cache)
    assert cache.loads == loads + 1  # the cached copy held the rolled-back decision
    assert _compare(store, "default") == []
    with store.session(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(BanditDecision)) == 2
        row = s.scalar(select(PolicyState))
        assert row is not None and row.state["t"] == 2


def test_thompson_probabilities_are_reused_until_the_rewards_move(store: Store) -> None:
    """Batched Thompson sampling: the vector is computed once and reused while no arm's rewards
    moved by more than ``refresh`` of their count; each decision logs the probability it had."""
    _task(store)
    cache = PolicyCache(refresh=0.5)
    first = _decide_cached(store, cache)
    assert cache.computed == 1
    same = [_decide_cached(store, cache) for _ in range(5)]
    assert cache.computed == 1  # no reward: the same vector
    for decision in (first, *same):
        assert decision.probabilities == first.probabilities
        with store.session(readonly=True) as s:
            arm = s.get(Arm, decision.arm_id)
        assert arm is not None and decision.propensity == decision.probabilities[arm.name]
    _reward_cached(store, cache, first.id, 1.0)  # an arm with no rewards got one: recompute
    _decide_cached(store, cache)
    assert cache.computed == 2
    seeded = _decide_cached(store, cache, seed=3)  # a seeded decision draws afresh
    assert cache.computed == 2 and set(seeded.probabilities) == {"A", "B", "C"}
    assert _compare(store, "default") == []


def test_the_refresh_rule_is_relative_to_each_arms_count(store: Store) -> None:
    _task(store, arms=("A",))
    cache = PolicyCache(refresh=0.25)
    decisions = [_decide_cached(store, cache) for _ in range(9)]
    for decision in decisions[:4]:
        _reward_cached(store, cache, decision.id, 1.0)
    computed = cache.computed
    _decide_cached(store, cache)  # 4 rewards since the last vector (0 rewards): recompute
    assert cache.computed == computed + 1
    _reward_cached(store, cache, decisions[4].id, 1.0)  # 1 more on 4: ≤ 25%
    _decide_cached(store, cache)
    assert cache.computed == computed + 1
    _reward_cached(store, cache, decisions[5].id, 1.0)  # 2 more on 4: > 25%
    _decide_cached(store, cache)
    assert cache.computed == computed + 2
    with pytest.raises(InvalidInputError, match="refresh must be a number"):
        PolicyCache(refresh=-1)


def test_select_from_draws_by_the_given_probabilities() -> None:
    policy = make_policy("default", arms=["A", "B", "C"], seed=0)
    assert isinstance(policy, ThompsonSampling)
    vector = {"A": 0.2, "B": 0.5, "C": 0.3}
    chosen = [policy.select_from(vector).arm for _ in range(4000)]
    for arm, p in vector.items():
        assert abs(chosen.count(arm) / 4000 - p) < 0.03  # 4 sd at n = 4000
    assert policy.t == 4000 and policy.arm_summary()["B"]["decisions"] == chosen.count("B")
    with pytest.raises(InvalidInputError, match="active arms"):
        policy.select_from({"A": 1.0})
    with pytest.raises(InvalidInputError, match="sum to 1"):
        policy.select_from({"A": 0.5, "B": 0.5, "C": 0.5})
    sticky = make_policy("default", arms=["A", "B"], config={"sticky": True}, seed=1)
    assert isinstance(sticky, ThompsonSampling)
    kept = sticky.select_from({"A": 0.5, "B": 0.5}, end_user="u1").arm
    again = sticky.select_from({"A": 0.5, "B": 0.5}, end_user="u1")
    assert again.arm == kept and again.sticky and again.propensity == 1.0
