"""The bandit bound to the store: decide per request, learn from rewards, rebuild, report.

One :class:`~prefloop.store.models.PolicyState` row per (task, policy) holds the policy's
sufficient statistics; :func:`decide` and :func:`apply_reward` lock it for the rest of the
transaction (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite write transactions are serialised
by ``BEGIN IMMEDIATE``), change it and bump its ``version``. The log — the
:class:`~prefloop.store.models.BanditDecision` rows and the cached ``Generation.reward`` of the
generations made from them — is the truth: :func:`check_state` compares the stored state with
its recomputation from the log and :func:`rebuild_state` repairs it.

Decisions get strictly increasing ``created_at`` (taken under the lock), so their order in the
log is the order they were made, which discounting and sticky users depend on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from prefloop.bandit._base import Decision, DecisionEvent, Policy, PolicyConfig
from prefloop.bandit._identify import (
    JEFFREYS_PRIOR,
    Recommendation,
    check_draws,
    check_threshold,
    posterior_mean_draws,
    win_frequencies,
)
from prefloop.bandit._offline import LoggedDecision
from prefloop.bandit._registry import (
    make_policy,
    policy_config,
    policy_from_state,
    recompute,
    state_differences,
)
from prefloop.bandit._scale import RewardScale
from prefloop.bandit._thompson import ThompsonSampling
from prefloop.errors import ConflictError, InvalidInputError, NotFoundError
from prefloop.store import repo
from prefloop.store.models import (
    DEFAULT_SCALE,
    Arm,
    BanditDecision,
    Generation,
    PolicyState,
    Task,
    new_id,
    utcnow,
)
from prefloop.store.statements import (
    DECISION_OF,
    LOCK_STATE,
    READ_STATE,
    WRITE_STATE,
    StateRow,
    later_than,
)

__all__ = [
    "ArmStats",
    "PolicyCache",
    "StateCheck",
    "TaskStats",
    "apply_reward",
    "arm_stats",
    "check_state",
    "decide",
    "decision_of_row",
    "logged_decisions",
    "rebuild_state",
    "recommend_arm",
]


def decide(
    session: Session,
    task: Task,
    *,
    policy: str = "default",
    end_user: str | None = None,
    context: Mapping[str, Any] | None = None,
    seed: int | None = None,
    config: PolicyConfig | Mapping[str, Any] | None = None,
    active_arms: Sequence[Arm] | None = None,
    cache: PolicyCache | None = None,
) -> BanditDecision:
    """Choose one of ``task``'s active arms with ``policy`` and log the decision.

    The new :class:`BanditDecision` has the arm, its propensity and every active arm's
    probability (by arm name). ``config`` applies when this (task, policy) has no state yet; a
    different config for an existing state is a :class:`ConflictError`. ``seed`` makes the
    choice reproducible (it is combined with the state's version, so repeated calls differ).
    ``active_arms`` are the task's active arms when the caller has them (a service's cache);
    by default they are read from the store. ``cache`` (a service's :class:`PolicyCache`)
    keeps the live policy between requests and lets Thompson sampling reuse its selection
    probabilities while the rewards have barely moved; a seeded decision uses neither.
    """
    arms = list(repo.active_arms(session, task) if active_arms is None else active_arms)
    if not arms:
        raise ConflictError(
            f"task {task.name!r} has no active arms to choose from; add an arm or remove the "
            "'retired' label from one"
        )
    row = _lock_state(session, task, policy, config)
    key = (task.id, policy)
    live = _load(row, seed) if cache is None or seed is not None else cache.live(key, row)
    live.sync_arms([arm.name for arm in arms])
    if cache is not None and seed is None:
        choice = cache.select(key, live, context=context, end_user=end_user)
    else:
        choice = live.select(context=context, end_user=end_user)
    by_name = {arm.name: arm for arm in arms}
    decision = BanditDecision(
        id=new_id("dec"),
        task_id=task.id,
        policy=policy,
        arm_id=by_name[choice.arm].id,
        propensity=choice.propensity,
        probabilities=choice.probabilities,
        end_user=end_user,
        context=dict(context or {}),
        created_at=_save(session, row, live),
    )
    repo.insert_row(session, decision)
    if cache is not None and seed is None:
        cache.keep(key, live, row)
    return decision


def apply_reward(
    session: Session,
    generation: Generation | str,
    old_reward: float | None,
    new_reward: float | None,
    *,
    cache: PolicyCache | None = None,
) -> bool:
    """Move the state of the policy that chose ``generation``'s arm from its old reward to the new.

    Call it after the generation's cached reward changed (first reward: ``old_reward=None``;
    withdrawn: ``new_reward=None``); ``generation`` is the row or its id. Returns False when
    there is nothing to do (no decision behind the generation, or no change). When the
    policy's state row is missing it is rebuilt from the log, which already holds the new
    cached reward. ``cache`` (a service's :class:`PolicyCache`) keeps the live policy.
    """
    if old_reward == new_reward:
        return False
    if isinstance(generation, Generation) and generation.decision_id is None:
        return False
    generation_id = generation if isinstance(generation, str) else generation.id
    session.flush()
    # the generation's status, its decision and the decision's arm name in one statement
    found = session.connection().execute(DECISION_OF, {"generation_id": generation_id}).first()
    if found is None:
        raise NotFoundError(f"no generation {generation_id!r}")
    status, error, decision_id, found_decision, task_id, policy, created_at = found[:7]
    if decision_id is None:
        return False
    if status != "ok" and new_reward is not None:
        raise InvalidInputError(
            f"generation {generation_id!r} failed ({error!r}); a failed LLM call has no reward"
        )
    if found_decision is None or found[-1] is None:
        raise NotFoundError(f"generation {generation_id!r} names a missing decision")
    row = _read_state(session, task_id, policy, lock=True)
    if row is None:
        task = session.get(Task, task_id)
        assert task is not None, "a decision belongs to a task (foreign key)"
        row, created = _lock_or_create(session, task, policy, None)
        if created:
            _write_state(session, row, _recompute_state(session, task, policy))
            return True
    live = _load(row, None) if cache is None else cache.live((task_id, policy), row)
    index = None
    if live.config.discount != 1.0:
        index = session.scalar(
            select(func.count())
            .select_from(BanditDecision)
            .where(
                BanditDecision.task_id == task_id,
                BanditDecision.policy == policy,
                BanditDecision.created_at < created_at,
            )
        )
    live.update(decision_of_row(found, index), new_reward, previous=old_reward)
    _save(session, row, live)
    if cache is not None:
        cache.keep((task_id, policy), live, row)
    return True


@dataclass(frozen=True, slots=True)
class StateCheck:
    """A policy's stored state against its recomputation from the log (:func:`check_state`)."""

    task: str
    policy: str
    stored: dict[str, Any] | None
    """The stored state, its arms brought up to the task's active arms (None: none yet)."""
    recomputed: dict[str, Any]
    """The state rebuilt from the decisions and cached rewards in the store."""
    differences: list[str]
    """Where they disagree, as readable lines (``["no stored state"]`` when there is none)."""

    @property
    def matches(self) -> bool:
        return not self.differences

    @property
    def decisions(self) -> int:
        """The decisions of the log (the recomputed state's ``t``)."""
        return int(self.recomputed["t"])


def check_state(
    session: Session, task: Task, policy: str = "default", *, tolerance: float = 1e-9
) -> StateCheck:
    """Compare the stored state of ``policy`` on ``task`` with the one recomputed from the
    log: the decisions and the cached rewards of their generations are the truth, the state
    row is what the policy learned from them. Statistics agree within ``tolerance`` (float sums
    in another order); :func:`rebuild_state` repairs a state that differs."""
    stored = _stored_state(session, task, policy)
    recomputed = _recompute_state(session, task, policy)
    differences = (
        ["no stored state"]
        if stored is None
        else state_differences(stored, recomputed, tolerance=tolerance)
    )
    return StateCheck(
        task=task.name,
        policy=policy,
        stored=stored,
        recomputed=recomputed,
        differences=differences,
    )


def rebuild_state(session: Session, task: Task, policy: str = "default") -> dict[str, Any]:
    """Replace the stored state by the one recomputed from the log (a repair); returns it."""
    row, _ = _lock_or_create(session, task, policy, None)
    _write_state(session, row, _recompute_state(session, task, policy))
    return dict(row.state)


# -- reporting ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArmStats:
    """One arm's record: rewards from every generation of the arm, decisions of the bandit."""

    arm_id: int
    arm: str
    count: int
    """Generations of this arm with a reward."""
    mean_reward: float | None
    """Posterior mean of the arm's mean reward (Dirichlet(½) posterior on the task's levels):
    the estimator :attr:`interval` is for, so it lies inside it. With few rewards it is pulled
    toward the middle of the scale (one rating of 1 on -1..1 gives 0.29)."""
    interval: tuple[float, float] | None
    """95% credible interval of the mean reward (Dirichlet(½) posterior on the levels)."""
    raw_mean_reward: float | None
    """The plain average of the rewards received (not the interval's estimator)."""
    share: float
    """Fraction of the task's bandit decisions that chose this arm."""
    p_best: float | None
    """Posterior probability that this arm is the best active arm (None when retired)."""
    retired: bool


@dataclass(frozen=True)
class TaskStats:
    task: str
    arms: list[ArmStats]
    best_arm: str | None
    best_probability: float | None
    decisions: int
    feedbacks: int

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "arms": [vars(arm) | {"interval": _pair(arm.interval)} for arm in self.arms],
            "best_arm": self.best_arm,
            "best_probability": self.best_probability,
            "decisions": self.decisions,
            "feedbacks": self.feedbacks,
        }


def arm_stats(
    session: Session,
    task: Task,
    *,
    policy: str | None = None,
    draws: int = 4000,
    seed: int = 0,
) -> TaskStats:
    """Per arm: rewarded generations, mean reward, 95% interval, share of decisions (of
    ``policy`` only, when given); the best active arm and its probability of being best.

    The Monte Carlo estimates use a fixed ``seed``, so a dashboard does not flicker.
    """
    draws = check_draws(draws)
    arms = list(session.scalars(select(Arm).where(Arm.task_id == task.id).order_by(Arm.id)).all())
    scale = RewardScale.of(_scale(task))
    levels, counts, sums = _reward_tallies(session, task, arms, scale)
    share_query = (
        select(BanditDecision.arm_id, func.count())
        .where(BanditDecision.task_id == task.id)
        .group_by(BanditDecision.arm_id)
    )
    if policy is not None:
        share_query = share_query.where(BanditDecision.policy == policy)
    chosen = dict(session.execute(share_query).all())
    total = sum(chosen.values())
    rng = np.random.default_rng(seed)
    means = posterior_mean_draws(levels, scale.values, prior=JEFFREYS_PRIOR, draws=draws, rng=rng)
    active = [k for k, arm in enumerate(arms) if not arm.retired]
    p_best = np.zeros(len(arms))
    if active:
        p_best[active] = win_frequencies(means[:, active])
    low, high = np.quantile(means, [0.025, 0.975], axis=0) if arms else ([], [])
    # the Dirichlet posterior's mean weights of the levels, times the levels' values
    alpha = levels + JEFFREYS_PRIOR
    posterior = (alpha / alpha.sum(axis=1, keepdims=True)) @ scale.values if arms else []
    stats = [
        ArmStats(
            arm_id=arm.id,
            arm=arm.name,
            count=int(counts[k]),
            mean_reward=float(posterior[k]) if counts[k] else None,
            interval=(float(low[k]), float(high[k])) if counts[k] else None,
            raw_mean_reward=float(sums[k] / counts[k]) if counts[k] else None,
            share=chosen.get(arm.id, 0) / total if total else 0.0,
            p_best=None if arm.retired else float(p_best[k]),
            retired=arm.retired,
        )
        for k, arm in enumerate(arms)
    ]
    best = max(active, key=lambda k: p_best[k]) if active else None
    return TaskStats(
        task=task.name,
        arms=stats,
        best_arm=None if best is None else arms[best].name,
        best_probability=None if best is None else float(p_best[best]),
        decisions=total,
        feedbacks=int(counts.sum()),
    )


def recommend_arm(
    session: Session,
    task: Task,
    *,
    threshold: float = 0.95,
    draws: int = 4000,
    seed: int = 0,
    stats: TaskStats | None = None,
) -> Recommendation:
    """The best-arm call with its stopping rule, from every rewarded generation of the task:
    "C is best with probability ≥ 0.95 after N feedbacks", or who leads and with what.
    ``stats`` (of :func:`arm_stats` for all policies) spares counting the rewards again."""
    threshold = check_threshold(threshold)
    if stats is None:
        stats = arm_stats(session, task, draws=draws, seed=seed)
    probabilities = {a.arm: a.p_best for a in stats.arms if a.p_best is not None}
    return Recommendation(
        arm=stats.best_arm,
        probability=stats.best_probability or 0.0,
        probabilities=probabilities,
        feedbacks=float(sum(a.count for a in stats.arms if not a.retired)),
        threshold=threshold,
    )


def logged_decisions(
    session: Session, task: Task, *, policy: str | None = None
) -> list[LoggedDecision]:
    """Rewarded decisions with their propensities, for :func:`~prefloop.bandit.evaluate_offline`."""
    query = (
        select(BanditDecision, Generation.reward, Arm.name)
        .join(Generation, Generation.decision_id == BanditDecision.id)
        .join(Arm, Arm.id == BanditDecision.arm_id)
        .where(
            BanditDecision.task_id == task.id,
            Generation.status == "ok",
            Generation.reward.is_not(None),
        )
        .order_by(BanditDecision.created_at, BanditDecision.id)
    )
    if policy is not None:
        query = query.where(BanditDecision.policy == policy)
    return [
        LoggedDecision(
            arm=name,
            propensity=decision.propensity,
            reward=float(reward),
            context=decision.context or None,
            end_user=decision.end_user,
        )
        for decision, reward, name in session.execute(query).all()
        if reward is not None
    ]


def _recompute_state(session: Session, task: Task, policy: str = "default") -> dict[str, Any]:
    """The state of ``policy`` on ``task`` rebuilt from the decisions and rewards in the store."""
    row = _read_state(session, task.id, policy, lock=False)
    config = row.config if row is not None else policy_config(policy)
    names = dict(session.execute(select(Arm.id, Arm.name).where(Arm.task_id == task.id)).all())
    decisions = session.scalars(
        select(BanditDecision)
        .where(BanditDecision.task_id == task.id, BanditDecision.policy == policy)
        .order_by(BanditDecision.created_at, BanditDecision.id)
    ).all()
    rewards: dict[str, list[float]] = defaultdict(list)
    rows = session.execute(
        select(Generation.decision_id, Generation.reward)
        .join(BanditDecision, Generation.decision_id == BanditDecision.id)
        .where(
            BanditDecision.task_id == task.id,
            BanditDecision.policy == policy,
            Generation.status == "ok",
            Generation.reward.is_not(None),
        )
        .order_by(Generation.created_at, Generation.id)
    ).all()
    for decision_id, reward in rows:
        if decision_id is not None and reward is not None:
            rewards[decision_id].append(float(reward))
    events = [
        DecisionEvent(
            arm=names[d.arm_id],
            rewards=tuple(rewards.get(d.id, ())),
            end_user=d.end_user,
            context=d.context or None,
        )
        for d in decisions
    ]
    active = [arm.name for arm in repo.active_arms(session, task)]
    return recompute(policy, events, active_arms=active, scale=_scale(task), config=config)


def _stored_state(session: Session, task: Task, policy: str = "default") -> dict[str, Any] | None:
    """The stored state with its arms brought up to the task's active arms (None if none yet).

    Arms are synchronised at each decision; this applies arms added or retired since, so the
    result compares directly with :func:`_recompute_state`.
    """
    row = _read_state(session, task.id, policy, lock=False)
    if row is None:
        return None
    live = _load(row, None)
    live.sync_arms([arm.name for arm in repo.active_arms(session, task)])
    return live.to_state()


# -- the state row -----------------------------------------------------------------------------
def decision_of_row(found: Sequence[Any], index: int | None) -> Decision:
    """The decision a :data:`~prefloop.store.statements.DECISION_OF` row describes (its arm
    must be known), as the policy's ``update`` takes it; ``index`` is its position in the log
    (discounting only). The fast lane reads the same columns."""
    propensity, probabilities, end_user, context, arm_name = found[7:]
    return Decision(
        arm=arm_name,
        propensity=propensity,
        probabilities=dict(probabilities or {}),
        index=index,
        end_user=end_user,
        context=context,
    )


def _read_state(session: Session, task_id: int, policy: str, *, lock: bool) -> StateRow | None:
    """The (task, policy) state row, fresh; with ``lock`` locked for the rest of the transaction
    (``SELECT … FOR UPDATE`` on PostgreSQL; a SQLite writer holds the database's write lock)."""
    session.flush()
    query = LOCK_STATE if lock else READ_STATE
    found = session.connection().execute(query, {"task_id": task_id, "policy": policy}).first()
    return None if found is None else StateRow(*found)


def _write_state(session: Session, row: StateRow, state: dict[str, Any]) -> datetime:
    """Store ``state`` in ``row``, bump its version; returns the new, strictly later, time."""
    row.state, row.version, row.updated_at = state, row.version + 1, later_than(row.updated_at)
    values = {"state": row.state, "version": row.version, "updated_at": row.updated_at}
    session.connection().execute(WRITE_STATE, {"row_id": row.id, **values})
    repo.set_loaded(session, PolicyState, row.id, **values)  # an ORM copy this session holds
    return row.updated_at


def _lock_state(
    session: Session, task: Task, policy: str, config: PolicyConfig | Mapping[str, Any] | None
) -> StateRow:
    row, created = _lock_or_create(session, task, policy, config)
    if not created and config is not None:
        wanted = (
            config.to_dict()
            if isinstance(config, PolicyConfig)
            else policy_config(policy, config).to_dict()
        )
        if wanted != row.config:
            raise ConflictError(
                f"policy {policy!r} on task {task.name!r} already runs with config {row.config}; "
                f"it cannot switch to {wanted}. Use another policy name or rebuild the state."
            )
    return row


def _lock_or_create(
    session: Session, task: Task, policy: str, config: PolicyConfig | Mapping[str, Any] | None
) -> tuple[StateRow, bool]:
    """The (task, policy) state row, locked for this transaction; created when missing."""
    row = _read_state(session, task.id, policy, lock=True)
    if row is not None:
        return row, False
    fresh = make_policy(policy, scale=_scale(task), config=config)
    created = repo.insert_row(
        session,
        PolicyState(
            task_id=task.id,
            policy=policy,
            config=fresh.config.to_dict(),
            state=fresh.to_state(),
            version=0,
            updated_at=utcnow(),
        ),
        unless_stored=("task_id", "policy"),
    )
    # ours, or the one a concurrent request created first (waiting for its lock)
    row = _read_state(session, task.id, policy, lock=True)
    assert row is not None, "the state row was just inserted or found stored"
    return row, created


def _load(row: StateRow, seed: int | None) -> Policy:
    rng = np.random.default_rng(None if seed is None else [seed, row.version])
    state = dict(row.state or {})
    state["config"] = row.config
    return policy_from_state(state, seed=rng)


def _save(session: Session, row: StateRow, live: Policy) -> datetime:
    """Store ``live``'s state, bump the version; returns the new, strictly later, timestamp."""
    return _write_state(session, row, live.to_state())


# -- a service's cache: live policies and Thompson sampling's probabilities --------------------
@dataclass(frozen=True, slots=True)
class _Probabilities:
    config: PolicyConfig
    arms: tuple[str, ...]
    levels: np.ndarray  # (K, L): each arm's rewards on the scale's levels when computed
    probabilities: dict[str, float]


@dataclass(frozen=True, slots=True)
class _Kept:
    live: Policy
    config: dict[str, Any]  # the row's, as written
    stamp: tuple[int, int, datetime | None]  # the row's id, version and time as written


class PolicyCache:
    """What one process keeps between requests for each (task, policy); pass it to
    :func:`decide` and :func:`apply_reward`.

    - The live policy. It is used only when the row just read (and locked) in the request's
      own transaction has the id, version, time and config it was kept with (the time strictly
      increases with each write), so a write by another process, or a rolled-back request of
      this one, makes it load the row again: the store stays the truth.
    - Thompson sampling's selection probabilities. They are an estimate from ``draws`` posterior
      draws (1000 by default), most of a decision's cost, and depend only on the arms' rewards.
      A decision reuses the last estimate while no arm's rewards moved by more than ``refresh``
      of their count (L1 distance of its counts on the scale's levels): an arm with fewer than
      1/``refresh`` rewards gets them recomputed at each new reward. This is batched Thompson
      sampling with per-arm relative batches (Kalkanli & Özgür 2021, "Batched Thompson
      Sampling", NeurIPS, end a batch when an arm's count doubles; here at 1 + ``refresh``).
      The arm is drawn from the vector used and logged with its probability there, so the
      logged propensity is exact. ``refresh=0`` recomputes whenever a reward changed.
    """

    def __init__(self, *, refresh: float) -> None:
        if isinstance(refresh, bool) or not isinstance(refresh, int | float) or refresh < 0:
            raise InvalidInputError(f"refresh must be a number ≥ 0 (e.g. 0.01), got {refresh!r}")
        self.refresh = float(refresh)
        self._live: dict[tuple[int, str], _Kept] = {}
        self._probabilities: dict[tuple[int, str], _Probabilities] = {}
        self.loads = 0
        """How often a live policy was loaded from its row (the other times it was reused)."""
        self.computed = 0
        """How often probabilities were computed (the other decisions reused them)."""

    def live(self, key: tuple[int, str], row: StateRow) -> Policy:
        """The live policy of ``row``, read (and locked) in the caller's transaction.

        It leaves the cache until :meth:`keep` puts it back with the state written, so a
        request that fails half-way leaves nothing behind that could be mistaken for the row.
        """
        kept = self.current(key, (row.id, row.version, row.updated_at), row.config)
        return kept if kept is not None else self.load(row)

    def current(
        self,
        key: tuple[int, str],
        stamp: tuple[int, int, datetime | None],
        config: dict[str, Any],
    ) -> Policy | None:
        """The kept live policy when it was kept with the row's id, version and time
        (``stamp``, read and locked in the caller's transaction) and config; else None. The
        stamp names one written state, so the caller need not read the state itself (on a
        miss, :meth:`load` the row). Like :meth:`live`, it leaves the cache."""
        kept = self._live.pop(key, None)  # one request at a time: it holds the row's lock
        if kept is not None and kept.stamp == _stamp(*stamp) and kept.config == config:
            return kept.live
        return None

    def load(self, row: StateRow) -> Policy:
        """The live policy loaded from ``row``'s state (counted in :attr:`loads`)."""
        self.loads += 1
        return _load(row, None)

    def keep(self, key: tuple[int, str], live: Policy, row: StateRow) -> None:
        """Keep ``live``, whose state was just written to ``row``."""
        self._live[key] = _Kept(live, row.config, _stamp(row.id, row.version, row.updated_at))

    def select(
        self,
        key: tuple[int, str],
        live: Policy,
        *,
        context: Mapping[str, Any] | None,
        end_user: str | None,
    ) -> Decision:
        """``live``'s choice; Thompson sampling draws from the kept probabilities
        (:meth:`probabilities`)."""
        if isinstance(live, ThompsonSampling):
            probabilities = self.probabilities(key, live)
            return live.select_from(probabilities, context=context, end_user=end_user)
        return live.select(context=context, end_user=end_user)

    def probabilities(self, key: tuple[int, str], live: ThompsonSampling) -> dict[str, float]:
        """The selection probabilities of ``live``'s active arms, reused or computed."""
        arms = tuple(live.arms)
        levels = live.level_counts()
        kept = self._probabilities.get(key)
        if kept is not None and kept.arms == arms and kept.config == live.config:
            moved = np.abs(levels - kept.levels).sum(-1)
            if np.all(moved <= self.refresh * kept.levels.sum(-1)):
                return kept.probabilities
        probabilities = live.probabilities()
        self._probabilities[key] = _Probabilities(live.config, arms, levels, probabilities)
        self.computed += 1
        return probabilities

    def clear(self) -> None:
        self._live.clear()
        self._probabilities.clear()


def _stamp(
    row_id: int, version: int, updated_at: datetime | None
) -> tuple[int, int, datetime | None]:
    """A state row's id, version and time, the time in UTC (SQLite hands it back naive)."""
    if updated_at is not None and updated_at.tzinfo is None:
        updated_at = updated_at.replace(tzinfo=UTC)
    return row_id, version, updated_at


def _scale(task: Task) -> list[float]:
    return [float(v) for v in (task.scale or DEFAULT_SCALE)]


def _reward_tallies(
    session: Session, task: Task, arms: list[Arm], scale: RewardScale
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per arm: rewards counted on levels (K, L), their number (K,), their sum (K,).

    The database counts each distinct (arm, reward) once (``GROUP BY``): a task's rewards take
    few distinct values, so a dashboard over 100,000 rewarded generations reads a few rows."""
    position = {arm.id: k for k, arm in enumerate(arms)}
    levels = np.zeros((len(arms), len(scale.levels)))
    counts, sums = np.zeros(len(arms)), np.zeros(len(arms))
    rewarded = (
        Generation.task_id == task.id,
        Generation.status == "ok",
        Generation.reward.is_not(None),
        Generation.arm_id.is_not(None),
    )
    rows = session.execute(
        select(Generation.arm_id, Generation.reward, func.count())
        .where(*rewarded)
        .group_by(Generation.arm_id, Generation.reward)
    ).all()
    tallied = [(a, r, n) for a, r, n in rows if a is not None and r is not None]
    for arm_id, reward, _ in tallied:
        try:
            scale.check(reward)
        except InvalidInputError:  # name one generation that carries it
            generation_id = session.scalar(
                select(Generation.id)
                .where(*rewarded, Generation.arm_id == arm_id, Generation.reward == reward)
                .limit(1)
            )
            scale.check(reward, what=f"cached reward of generation {generation_id!r}")
    if tallied:
        index = np.array([position[arm_id] for arm_id, _, _ in tallied])
        rewards = np.array([reward for _, reward, _ in tallied], dtype=np.float64)
        number = np.array([n for _, _, n in tallied], dtype=np.float64)
        np.add.at(levels, index, scale.level_weights(rewards) * number[:, None])
        np.add.at(counts, index, number)
        np.add.at(sums, index, rewards * number)
    return levels, counts, sums


def _pair(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else [interval[0], interval[1]]
