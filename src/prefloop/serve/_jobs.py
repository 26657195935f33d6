"""The hot path's jobs: one request's work in a transaction, alone or in a batch
(:meth:`prefloop.serve.hotpath.HotPath.run_batch`), and the transaction object they share."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from prefloop.bandit import Policy
from prefloop.bandit.online import PolicyCache, decision_of_row
from prefloop.feedback.events import RatingEvent, RegenerateEvent, ThumbsEvent
from prefloop.feedback.record import RecordResult, RewardChange, reward_change
from prefloop.feedback.rewards import REWARD_KINDS
from prefloop.llm.generate import render_template
from prefloop.store.models import Arm, Generation, Task, new_id, utcnow
from prefloop.store.statements import (
    GENERATION_COLUMNS,
    PENDING,
    RATED,
    CompiledStatement,
    FastStatements,
    StateRow,
    later_than,
    reward_events,
)


class Fallback(Exception):
    """The raw path does not handle this request; run the ORM path (nothing was committed)."""


_HANDLED_EVENTS = (RatingEvent, ThumbsEvent, RegenerateEvent)
_REWARD_EVENTS = reward_events(REWARD_KINDS, bound=True)
"""The reward events of a batch's rated generations."""


@dataclass(frozen=True, slots=True)
class _Sent:
    """A statement sent on a cursor of its own, its rows not read yet."""

    cursor: Any
    statement: CompiledStatement

    def one(self) -> tuple[Any, ...] | None:
        try:
            return self.statement.row(self.cursor.fetchone())
        finally:
            self.cursor.close()

    def all(self) -> list[tuple[Any, ...]]:
        try:
            return [cast(tuple[Any, ...], self.statement.row(r)) for r in self.cursor.fetchall()]
        finally:
            self.cursor.close()


@dataclass(slots=True)
class _Live:
    """A policy state row locked in the transaction, with its live policy."""

    policy: Policy
    row: StateRow
    changed: bool = False


class _Tx:
    """One transaction's cursor with the compiled statements, and what its jobs share: the
    locked policy states and the writes to run at the commit."""

    def __init__(self, connection: Any, cursor: Any, statements: FastStatements) -> None:
        self.connection = connection
        self.cursor = cursor
        self.s = statements
        self.writes: list[tuple[str, Any]] = []
        self.lives: dict[tuple[int, str], _Live] = {}
        self.lost: dict[tuple[int, str], Exception] = {}
        """Policy states that could not be had (no state row yet): :meth:`state` raises."""
        self.sent: list[_Sent] = []
        self._rated: _Sent | dict[str, tuple[Any, ...]] = {}
        self._events: _Sent | dict[str, list[tuple[Any, ...]]] = {}

    def send_many(self, name: str, statement: Any, ids: Sequence[str]) -> _Sent:
        """:meth:`send` ``statement`` for the values ``ids`` of its expanding parameter."""
        compiled = self.s.expanded(name, statement, len(ids))
        return self.send(compiled, {f"ids_{k}": v for k, v in enumerate(ids, 1)})

    def read_rated(self, ids: Sequence[str]) -> None:
        """Lock and read the generations ``ids`` (see :meth:`rated`)."""
        if ids:
            self._rated = self.send_many("rated", RATED, ids)

    def rated(self, generation_id: str) -> tuple[Any, ...] | None:
        """A :data:`~prefloop.store.statements.RATED` row read by :meth:`read_rated` (None:
        no such generation)."""
        if isinstance(self._rated, _Sent):
            self._rated = {row[0]: row for row in self._rated.all()}
        return self._rated.get(generation_id)

    def read_events(self, ids: Sequence[str]) -> None:
        """Read the reward events of the generations ``ids`` (see :meth:`events`)."""
        if ids:
            self._events = self.send_many("events", _REWARD_EVENTS, ids)

    def events(self, generation_id: str) -> list[tuple[Any, ...]]:
        """The reward events of a generation read by :meth:`read_events`."""
        if isinstance(self._events, _Sent):
            grouped: dict[str, list[tuple[Any, ...]]] = {}
            for row in self._events.all():
                grouped.setdefault(row[0], []).append(row)
            self._events = grouped
        return self._events.get(generation_id, [])

    def send(self, statement: CompiledStatement, values: Mapping[str, Any]) -> _Sent:
        """Run ``statement`` on a cursor of its own and read its rows later: on PostgreSQL the
        statements sent before a read go to the server in one round trip (the pipeline)."""
        cursor = self.connection.cursor()
        cursor.execute(statement.sql, statement.params(values))
        sent = _Sent(cursor, statement)
        self.sent.append(sent)
        return sent

    def close_cursors(self) -> None:
        """Close the cursors of statements sent (SQLite does not commit while a statement,
        e.g. an ``INSERT … RETURNING`` whose row was not read, is still in progress)."""
        for sent in self.sent:
            sent.cursor.close()
        self.sent.clear()

    def state(self, key: tuple[int, str] | None) -> _Live:
        """The locked policy state ``key`` with its live policy (:class:`Fallback` when it
        has no state row yet: the ORM path creates it). Call it before changing anything
        that cannot be declined."""
        assert key is not None, "a job reads the policy state it named in second()"
        lost = self.lost.get(key)
        if lost is not None:
            raise lost
        return self.lives[key]

    def one(
        self, statement: CompiledStatement, values: Mapping[str, Any]
    ) -> tuple[Any, ...] | None:
        self.cursor.execute(statement.sql, statement.params(values))
        return statement.row(self.cursor.fetchone())

    def later(self, statement: CompiledStatement, values: Mapping[str, Any]) -> None:
        """Run a write whose answer nothing waits for at commit (on PostgreSQL pipelined with
        the COMMIT: one round trip, not one each). The writes run grouped by statement, in the
        order each statement was first queued, so a row queued before the rows that refer to
        it is inserted first."""
        self.writes.append((statement.sql, statement.params(values)))

    def live(
        self, cache: PolicyCache, key: tuple[int, str], found: tuple[Any, ...] | None
    ) -> _Live:
        """The live policy of the locked state row ``found`` (its id, config, version and
        time): the cache's when it was kept with that row, else loaded from the row's state,
        which is read only then (decoding it is a good part of a request's CPU)."""
        if found is None:  # the first decision creates the row: the ORM path does that
            raise Fallback("no policy state row yet")
        row_id, config, version, updated_at = found
        policy = cache.current(key, (row_id, version, updated_at), config)
        if policy is not None:
            return _Live(policy, StateRow(row_id, config, {}, version, updated_at))
        state = self.one(self.s.state_of, {"row_id": row_id})
        assert state is not None, "the row is locked in this transaction"
        row = StateRow(row_id, config, state[0], version, updated_at)
        return _Live(cache.load(row), row)

    def changed(self, live: _Live) -> datetime:
        """Note that ``live``'s policy changed: the row's version and time move on (the time
        is returned: a decision's), its state is written once, at the commit."""
        row = live.row
        row.version, row.updated_at = row.version + 1, later_than(row.updated_at)
        live.changed = True
        return row.updated_at

    def flush(self) -> None:
        """Queue the state of each changed policy."""
        for live in self.lives.values():
            if live.changed:
                row = live.row
                row.state = live.policy.to_state()
                values = {"state": row.state, "version": row.version, "updated_at": row.updated_at}
                self.later(self.s.write_state, {"row_id": row.id, **values})

    def grouped_writes(self) -> list[tuple[str, list[Any]]]:
        """The queued writes, grouped by statement (in first-queued order)."""
        groups: dict[str, list[Any]] = {}
        for sql, params in self.writes:
            groups.setdefault(sql, []).append(params)
        return list(groups.items())


@dataclass(frozen=True, slots=True)
class Picked:
    """What :meth:`HotPath.select` chose and logged."""

    decision_id: str
    generation_id: str
    policy: str
    propensity: float
    arm: Arm
    prompt: str | None


class Job:
    """One request's work in a hot-path transaction, alone or next to others (a batch).

    A transaction runs every job's :meth:`first` (send reads), then every job's :meth:`second`
    (read those, send more, name the policy state needed in :attr:`key`), locks the policy
    states named (in key order), then runs every job's :meth:`last` (compute, queue writes),
    writes each changed state once and commits. On PostgreSQL that is one pipelined round trip
    per step for the whole batch. A job that raises before it changed anything
    (:attr:`touched` unset) fails alone; one that raises after makes the transaction roll back,
    and it runs again without that job. :attr:`generation_id` and :attr:`idempotency_key` name
    what the job reads and changes: one job per generation and per key in a batch.
    """

    generation_id: str | None = None
    idempotency_key: str | None = None
    rates = False
    """Whether the job reads its generation (locked) and decision with :meth:`_Tx.rated`:
    the batch reads all of them in one statement before :meth:`second`."""

    def __init__(self, then: Callable[[Any], Any] | None) -> None:
        self.then = then
        """Applied to the result after the commit (e.g. the HTTP response)."""
        self.key: tuple[int, str] | None = None
        self.cache: PolicyCache | None = None
        self.touched = False
        self.wants_events = False
        """Set by :meth:`second` to read the generation's reward events with
        :meth:`_Tx.events` in :meth:`last` (one statement for the batch)."""

    def reset(self) -> None:
        """Before each attempt: a rolled-back transaction leaves nothing in the job."""
        self.key, self.touched, self.wants_events = None, False, False

    def first(self, tx: _Tx) -> None:
        """Send the reads that do not depend on anything (round trip one)."""

    def second(self, tx: _Tx) -> None:
        """Read the first step's answers, send the next statements, set :attr:`key`."""

    def last(self, tx: _Tx) -> Any:
        """Compute and queue the writes, with the policy state of :attr:`key` (locked) from
        :meth:`_Tx.state`."""
        raise NotImplementedError

    def finish(self, result: Any) -> Any:
        return result if self.then is None else self.then(result)


class _SelectJob(Job):
    def __init__(
        self,
        then: Callable[[Picked], Any] | None,
        *,
        cache: PolicyCache,
        task: Task,
        arms: Sequence[Arm],
        inputs: Mapping[str, Any],
        end_user: str | None,
        context: Mapping[str, Any],
        policy: str,
    ) -> None:
        super().__init__(then)
        self.cache = cache
        self.task, self.arms, self.policy = task, arms, policy
        self.inputs, self.end_user, self.context = inputs, end_user, context

    def second(self, tx: _Tx) -> None:
        self.key = (self.task.id, self.policy)

    def last(self, tx: _Tx) -> Picked:
        live = tx.state(self.key)  # no state row yet: declined before any change
        assert self.cache is not None and self.key is not None
        self.touched = True
        policy, arms, task = live.policy, self.arms, self.task
        policy.sync_arms([arm.name for arm in arms])
        choice = self.cache.select(self.key, policy, context=self.context, end_user=self.end_user)
        arm = next(a for a in arms if a.name == choice.arm)
        prompt = _render(arm, self.inputs)
        created = tx.changed(live)
        decision_id, generation_id = new_id("dec"), new_id("gen")
        tx.later(
            tx.s.insert_decision,
            {
                "id": decision_id,
                "task_id": task.id,
                "policy": self.policy,
                "arm_id": arm.id,
                "propensity": choice.propensity,
                "probabilities": choice.probabilities,
                "end_user": self.end_user,
                "context": dict(self.context),
                "created_at": created,
            },
        )
        tx.later(
            tx.s.insert_generation,
            {
                "id": generation_id,
                "task_id": task.id,
                "arm_id": arm.id,
                "input": dict(self.inputs),
                "prompt": prompt,
                "output": None,
                "status": PENDING,
                "error": None,
                "model": None,
                "latency_ms": None,
                "prompt_tokens": None,
                "completion_tokens": None,
                "cost": None,
                "policy": self.policy,
                "propensity": choice.propensity,
                "decision_id": decision_id,
                "end_user": self.end_user,
                "context": dict(self.context),
                "reward": None,
                "created_at": utcnow(),
            },
        )
        return Picked(decision_id, generation_id, self.policy, choice.propensity, arm, prompt)


class _CompleteJob(Job):
    def __init__(
        self, then: Callable[[Generation], Any] | None, generation_id: str, params: dict[str, Any]
    ) -> None:
        super().__init__(then)
        self.generation_id = generation_id
        self.params = params

    def first(self, tx: _Tx) -> None:
        self.sent = tx.send(tx.s.complete, self.params)  # changes the row only when pending

    def last(self, tx: _Tx) -> Generation:
        found = self.sent.one()
        if found is None:  # nothing changed
            raise Fallback("not a pending generation: the ORM path explains")
        return Generation(**dict(zip(GENERATION_COLUMNS, found, strict=True)))


class _FeedbackJob(Job):
    """Three round trips on PostgreSQL (shared by a batch): the generation (locked) with its
    decision; the new event, the generation's reward events and the policy's state (locked);
    the writes with the COMMIT."""

    def __init__(
        self,
        then: Callable[[RecordResult], Any] | None,
        *,
        cache: PolicyCache,
        task: Task,
        fields: dict[str, Any],
        rules: Any,
        rewarded: bool,
        key: str | None,
    ) -> None:
        super().__init__(then)
        self.cache = cache
        self.task, self.fields, self.rules, self.rewarded = task, fields, rules, rewarded
        self.generation_id = fields["generation_id"]
        self.idempotency_key = key

    rates = True

    def second(self, tx: _Tx) -> None:
        found = tx.rated(self.fields["generation_id"])
        if found is None or found[1] != self.task.id:
            raise Fallback("an unknown generation: the ORM path explains")
        self.reward, self.arm_id, behind = found[2], found[3], found[4:]
        status, _, decision_id, found_decision, task_id, policy = behind[:6]
        if status != "ok":
            raise Fallback("a pending or failed generation: the ORM path explains")
        if decision_id is not None and (found_decision is None or behind[-1] is None):
            raise Fallback("a missing decision: the ORM path explains")
        self.decision_id, self.behind = decision_id, behind
        insert = tx.s.insert_feedback if self.idempotency_key is None else tx.s.insert_feedback_once
        self.inserted = tx.send(insert, self.fields)
        if self.rewarded:
            self.wants_events = True
            if decision_id is not None:
                self.key = (task_id, policy)

    def last(self, tx: _Tx) -> RecordResult:
        new_row = self.inserted.one()  # first: whether this job has written anything
        if new_row is None:  # nothing inserted
            raise Fallback("a repeated idempotency key: the ORM path replays it")
        self.touched = True  # from here on, a failure rolls the transaction back
        feedback_id = int(new_row[0])
        changes: list[RewardChange] = []
        if self.wants_events:  # prefloop.loop.submit_feedback's steps 2 and 3
            gid: str = self.fields["generation_id"]
            change = reward_change(
                gid,
                status="ok",  # checked in second()
                old=self.reward,
                decision_id=self.decision_id,
                arm_id=self.arm_id,
                events=cast(Any, [_Event(*e) for e in tx.events(gid)]),
                rules=self.rules,
            )
            if change is not None:
                if self.key is not None:
                    live = tx.state(self.key)  # no state row: the batch runs again without
                    if live.policy.config.discount != 1.0:  # needs the decision's index: the
                        raise Fallback("a discounted policy")  # ORM path counts it
                    decision = decision_of_row(self.behind, None)
                    live.policy.update(decision, change.new, previous=change.old)
                    tx.changed(live)
                tx.later(tx.s.set_reward, {"gid": gid, "new_reward": change.new})
                changes.append(change)
        return RecordResult(feedback_id=feedback_id, duplicate=False, reward_changes=changes)


@dataclass(frozen=True, slots=True)
class _Event:
    """A reward event's columns, as :func:`derive_reward` reads them."""

    generation_id: str
    id: int
    kind: str
    source: str
    author: str
    value: float | None
    created_at: Any


def _render(arm: Arm, inputs: Mapping[str, Any]) -> str | None:
    template = arm.template if arm.template is not None else (arm.params or {}).get("template")
    if not isinstance(template, str):
        return None
    return render_template(template, inputs, arm_name=arm.name)
