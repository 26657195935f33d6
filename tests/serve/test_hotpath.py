"""The raw-DBAPI hot path (:mod:`prefloop.serve.hotpath`) writes what the ORM path writes:
rows it wrote read back through the ORM with the same types and values, a failure writes
nothing, and the state stays equal to its recomputation."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import inspect, select

from prefloop import bandit
from prefloop.bandit.online import PolicyCache
from prefloop.errors import InvalidInputError
from prefloop.feedback import RatingEvent, ThumbsEvent
from prefloop.serve import ops
from prefloop.serve.catalog import Catalog
from prefloop.serve.hotpath import Fallback, HotPath
from prefloop.store import BanditDecision, Feedback, Generation, PolicyState, Store, repo
from tests.serve.conftest import row_counts

INPUTS = {"place": "Jeju", "company": "my sister"}
CONTEXT = {"device": "phone", "hour": 9, "nested": {"a": [1, 2.5, None]}}


def _setup(store: Store) -> tuple[Catalog, PolicyCache, HotPath]:
    with store.session() as s:
        ops.create_task(s, "diary", input_fields=["place", "company"])
        ops.create_arm(s, "diary", "terse", template="Diary, one line: {place}.")
        ops.create_arm(s, "diary", "vivid", template="A vivid entry about {place} with {company}.")
    catalog, cache = Catalog(ttl=60.0), PolicyCache(refresh=0.01)
    with store.session() as s:  # the first decision (it creates the state row) and the catalog
        ops.select_arm(s, "diary", inputs=INPUTS, catalog=catalog, policies=cache)
    return catalog, cache, HotPath(store.engine, lambda: store.session(readonly=True))


def _check(hot: HotPath, task: Any) -> None:
    ops.check_inputs(task, INPUTS)


def _columns(row: Any) -> dict[str, Any]:
    return {attr.key: getattr(row, attr.key) for attr in inspect(type(row)).column_attrs}


def _same_shape(raw: Any, orm: Any, *, equal: tuple[str, ...]) -> None:
    """Every column has the same Python type in both rows; the ``equal`` ones the same value."""
    left, right = _columns(raw), _columns(orm)
    for name, value in left.items():
        other = right[name]
        assert type(value) is type(other), (name, value, other)
        if isinstance(value, datetime):
            assert (value.tzinfo is None) == (other.tzinfo is None), name
        if name in equal:
            assert value == other, (name, value, other)


def test_hot_path_rows_read_back_like_orm_rows(store: Store) -> None:
    catalog, cache, hot = _setup(store)
    # the same loop twice: through the hot path and through the ORM path
    picked = hot.select(
        catalog, cache, "diary", inputs=INPUTS, end_user="u1", context=CONTEXT,
        policy="default", check=lambda task: _check(hot, task),
    )  # fmt: skip
    completed = hot.complete(
        picked.generation_id, {"output": "Dear diary", "model": "m", "latency_ms": 12.5,
                               "prompt_tokens": 7, "completion_tokens": 9, "cost": 0.25},
    )  # fmt: skip
    rated = hot.feedback(
        catalog, cache, "diary",
        RatingEvent(generation_id=picked.generation_id, value=1, idempotency_key="raw-1",
                    author="ann"),
    )  # fmt: skip
    assert hot.committed == 3
    with store.session() as s:
        chosen = ops.select_arm(
            s, "diary", inputs=INPUTS, end_user="u1", context=CONTEXT, catalog=catalog,
            policies=cache,
        )  # fmt: skip
        orm_generation_id, orm_decision_id = chosen.generation_id, chosen.decision.id
    with store.session() as s:
        ops.complete_generation(
            s, orm_generation_id, output="Dear diary", model="m", latency_ms=12.5,
            prompt_tokens=7, completion_tokens=9, cost=0.25,
        )  # fmt: skip
    with store.session() as s:
        orm_rated = ops.submit_feedback(
            s, "diary",
            RatingEvent(generation_id=orm_generation_id, value=1, idempotency_key="orm-1",
                        author="ann"),
            catalog=catalog, policies=cache,
        )  # fmt: skip
    assert completed.status == "ok" and completed.output == "Dear diary"
    assert [c.new for c in rated.reward_changes] == [c.new for c in orm_rated.reward_changes]
    with store.session(readonly=True) as s:
        raw_gen, orm_gen = (s.get(Generation, g) for g in (picked.generation_id, orm_generation_id))
        _same_shape(
            raw_gen, orm_gen,
            equal=("task_id", "input", "status", "output", "model", "latency_ms", "prompt_tokens",
                   "completion_tokens", "cost", "policy", "end_user", "context", "reward", "error"),
        )  # fmt: skip
        assert raw_gen is not None and raw_gen.context == CONTEXT and raw_gen.input == INPUTS
        assert raw_gen.decision_id == picked.decision_id and raw_gen.propensity == picked.propensity
        raw_dec, orm_dec = (s.get(BanditDecision, d) for d in (picked.decision_id, orm_decision_id))
        _same_shape(raw_dec, orm_dec, equal=("task_id", "policy", "end_user", "context"))
        assert raw_dec is not None and orm_dec is not None
        assert set(raw_dec.probabilities) == set(orm_dec.probabilities) == {"terse", "vivid"}
        assert raw_dec.created_at < orm_dec.created_at  # decisions keep their order
        raw_fb, orm_fb = (
            s.scalars(select(Feedback).where(Feedback.idempotency_key == k)).one()
            for k in ("raw-1", "orm-1")
        )
        _same_shape(
            raw_fb, orm_fb,
            equal=("task_id", "kind", "source", "author", "value", "payload", "derived_from_id",
                   "other_generation_id"),
        )  # fmt: skip
        assert raw_fb.id == rated.feedback_id and raw_fb.generation_id == picked.generation_id
        state = s.scalars(select(PolicyState)).one()
        assert state.version == 5  # created at 0; three decisions and two rewards since
        assert isinstance(state.updated_at, datetime)
        task = repo.get_task(s, "diary")
        check = bandit.check_state(s, task)
        assert check.stored == check.recomputed


def test_a_failed_hot_request_writes_nothing(store: Store) -> None:
    catalog, cache, hot = _setup(store)
    with store.session() as s:  # an arm whose template needs an input the task does not ask for
        ops.retire_arm(s, "diary", "terse")
        ops.retire_arm(s, "diary", "vivid")
        ops.create_arm(s, "diary", "broken", template="About {weather}.")
    catalog.invalidate()
    with store.session() as s:
        catalog.entry(s, "diary")
    before = row_counts(store)
    with store.session(readonly=True) as s:
        version = s.scalars(select(PolicyState.version)).one()
    with pytest.raises(InvalidInputError, match="weather"):  # after the state write and inserts
        hot.select(
            catalog, cache, "diary", inputs=INPUTS, end_user=None, context={},
            policy="default", check=lambda task: _check(hot, task),
        )  # fmt: skip
    assert row_counts(store) == before
    with store.session(readonly=True) as s:
        assert s.scalars(select(PolicyState.version)).one() == version
    assert hot.committed == 0


def test_hot_path_declines_what_the_orm_path_explains(store: Store) -> None:
    catalog, cache, hot = _setup(store)
    picked = hot.select(
        catalog, cache, "diary", inputs=INPUTS, end_user=None, context={}, policy="default",
        check=lambda task: _check(hot, task),
    )  # fmt: skip
    before = row_counts(store)
    with pytest.raises(Fallback):  # still pending: the ORM path says so
        hot.feedback(
            catalog, cache, "diary", ThumbsEvent(generation_id=picked.generation_id, up=True)
        )
    with pytest.raises(Fallback):  # a new policy has no state row yet
        hot.select(
            catalog, cache, "diary", inputs=INPUTS, end_user=None, context={}, policy="other",
            check=lambda task: _check(hot, task),
        )  # fmt: skip
    hot.complete(picked.generation_id, {"output": "x"})
    with pytest.raises(Fallback):  # completed once already
        hot.complete(picked.generation_id, {"output": "y"})
    event = ThumbsEvent(generation_id=picked.generation_id, up=True, idempotency_key="k")
    hot.feedback(catalog, cache, "diary", event)
    with pytest.raises(Fallback):  # a repeated key is replayed by the ORM path
        hot.feedback(catalog, cache, "diary", event)
    after = row_counts(store)
    assert after["feedback"] == before["feedback"] + 1
    assert after["generations"] == before["generations"]


def test_positional_statements_are_the_named_ones_with_other_placeholders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """psycopg's statements are compiled with %s placeholders; apart from those, the SQL must be
    what the engine's own (named) dialect renders, with the parameters in the same order."""
    from sqlalchemy.dialects.postgresql import psycopg

    import prefloop.store.statements as sql
    from prefloop.serve._jobs import _REWARD_EVENTS

    named = psycopg.dialect()
    assert sql.positional(named).paramstyle == "format"
    compiled = sql.FastStatements(named)
    monkeypatch.setattr(sql, "positional", lambda dialect: dialect)
    plain = sql.FastStatements(named)
    checked = 0
    pairs = [(name, st, vars(plain)[name]) for name, st in vars(compiled).items()]
    for name, query in (("rated", sql.RATED), ("events", _REWARD_EVENTS)):
        pairs.append((name, compiled.expanded(name, query, 3), plain.expanded(name, query, 3)))
    for name, statement, other in pairs:
        if not isinstance(statement, sql.CompiledStatement):
            continue
        assert statement.positions is not None and other.positions is None
        assert statement.sql == re.sub(r"%\((\w+)\)s", "%s", other.sql), name
        assert list(statement.positions) == re.findall(r"%\((\w+)\)s", other.sql), name
        checked += 1
    assert checked >= 11
