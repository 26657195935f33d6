"""The fast lane (serve/fastlane.py) answers the common hot-route requests before FastAPI and
hands everything else to the app: the answers must be the ones the app gives without it."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from prefloop.serve import ServeSettings, create_app
from prefloop.serve.app import Busy, ServiceContext
from prefloop.serve.fastlane import FastLane
from prefloop.store import BanditDecision, Feedback, Generation, Store
from tests.serve.conftest import TEMPLATES, Api, AppFactory, row_counts

_ID = re.compile(r"\b(dec|gen)_[0-9a-zA-Z]+")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT[\d:.+]+Z?")


def _lane(api: Api) -> FastLane:
    app: Any = api.client.app
    layer = app.middleware_stack
    while not isinstance(layer, FastLane):
        layer = layer.app
    return layer


def _shape(value: Any, task: str) -> Any:
    """A body with its task's name, generated ids, times and numbers replaced: what must match
    between two apps given the same requests."""
    if isinstance(value, dict):
        return {k: _shape(v, task) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v, task) for v in value]
    if isinstance(value, str):
        value = re.sub(r"known tasks: .*", "known tasks: …", value)  # both apps' tasks
        return _TIME.sub("<time>", _ID.sub(r"\1_*", value.replace(task, "<task>")))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return type(value).__name__
    return value


def _scenario(api: Api, task: str) -> list[tuple[str, int, Any]]:
    """Good and bad requests on the three hot routes; (what, status, body shape) of each."""
    api.seed(task, {"vivid": TEMPLATES["vivid"]})  # one arm: the same choice in both apps
    body = {"task": task, "inputs": {"place": "Jeju", "company": "my sister"}}
    out: list[tuple[str, int, Any]] = []

    def record(what: str, answer: Any) -> Any:
        out.append((what, answer.status_code, _shape(answer.json(), task)))
        return answer

    chosen = record("select", api.call("POST", "/v1/select", "client", json=body)).json()
    gid = chosen["generation_id"]
    rating = {"task": task, "event": {"kind": "rating", "generation_id": gid, "value": 1}}
    record("rate a pending generation", api.call("POST", "/v1/feedback", "client", json=rating))
    output = f"/v1/generations/{gid}/output"
    record("output", api.call("POST", output, "client", json={"output": "A windy day."}))
    record("output again", api.call("POST", output, "client", json={"output": "Again."}))
    record(
        "output and error", api.call("POST", output, "client", json={"output": "a", "error": "b"})
    )
    record(
        "output of nothing",
        api.call("POST", "/v1/generations/gen_x/output", "client", json={"output": "a"}),
    )
    key = {"Idempotency-Key": f"{task}-1"}
    record("rate", api.call("POST", "/v1/feedback", "client", json=rating, headers=key))
    record("rate again", api.call("POST", "/v1/feedback", "client", json=rating, headers=key))
    thumbs = {"task": task, "event": {"kind": "thumbs", "generation_id": gid, "up": False}}
    record("thumbs", api.call("POST", "/v1/feedback", "client", json=thumbs))
    bad = {"task": task, "event": {"kind": "rating", "generation_id": gid, "value": 0.3}}
    record("off-scale rating", api.call("POST", "/v1/feedback", "client", json=bad))
    record("labeler rates", api.call("POST", "/v1/feedback", "labeler", json=rating))
    record("labeler rates again", api.call("POST", "/v1/feedback", "labeler", json=thumbs))
    record("labeler selects", api.call("POST", "/v1/select", "labeler", json=body))
    record("no key", api.client.post("/v1/select", json=body))
    record(
        "unknown key", api.client.post("/v1/select", json=body, headers={"X-API-Key": "pf_nope"})
    )
    record("unknown task", api.call("POST", "/v1/select", "client", json={**body, "task": "nope"}))
    record("missing input", api.call("POST", "/v1/select", "client", json={**body, "inputs": {}}))
    record("seeded", api.call("POST", "/v1/select", "client", json={**body, "seed": 3}))
    record("unknown field", api.call("POST", "/v1/select", "client", json={**body, "x": 1}))
    raw = {"content": b"{not json", "headers": {"Content-Type": "application/json"}}
    record("bad JSON", api.call("POST", "/v1/select", "client", **raw))
    long_key = {"Idempotency-Key": "k" * 201}
    record("long key", api.call("POST", "/v1/feedback", "client", json=rating, headers=long_key))
    big = {**body, "context": {"pad": "x" * 5000}}
    record("too large", api.call("POST", "/v1/select", "client", json=big))
    return out


@pytest.mark.parametrize("batch", [True, False], ids=["group-commit", "one-by-one"])
def test_the_lane_answers_as_the_app_does(make_api: AppFactory, batch: bool) -> None:
    settings = {"key_cache_seconds": 60, "max_body_bytes": 4096, "batch_writes": batch}
    laned = make_api(**settings)
    plain = make_api(fast_lane=False, **settings)
    with_lane = _scenario(laned, "task-a")
    without = _scenario(plain, "task-b")
    assert [w[0] for w in with_lane] == [w[0] for w in without]
    for (what, status, shape), (_, status_app, shape_app) in zip(with_lane, without, strict=True):
        assert (status, shape) == (status_app, shape_app), what
    lane = _lane(laned)
    # select, output, rate, thumbs, labeler rates: answered by the lane; the rest handed over
    # output, rate, thumbs and the labeler's two events: answered by the lane (keys looked up
    # on first use); the rest handed over, the first decision too (it creates the policy's
    # state), the oversized body unread (uncounted)
    assert lane.answered == 5, lane.declined
    assert sum(lane.declined.values()) == len(with_lane) - 1 - lane.answered
    assert lane.declined["a malformed body"] == 3
    assert lane.declined["a key to refuse"] == 3  # labeler selects, no key, unknown key
    assert any("repeated idempotency key" in reason for reason in lane.declined)
    assert not any(isinstance(layer, FastLane) for layer in _stack(make_api(fast_lane=False)))


def _stack(api: Api) -> list[Any]:
    app: Any = api.client.app
    layers, layer = [], app.middleware_stack
    while layer is not None:
        layers.append(layer)
        layer = getattr(layer, "app", None)
    return layers


def test_the_lane_writes_what_the_app_writes(make_api: AppFactory, store: Store) -> None:
    api = make_api(key_cache_seconds=60)
    api.seed()
    api.select()  # the first decision creates the policy's state: the app's path
    chosen = api.select(end_user="u1", context={"hour": 9})
    api.complete(chosen["generation_id"])
    assert api.rate(chosen["generation_id"], 0.5, **{"Idempotency-Key": "a"}).status_code == 201
    assert _lane(api).answered == 3
    with store.session(readonly=True) as s:
        decision = s.get(BanditDecision, chosen["decision_id"])
        generation = s.get(Generation, chosen["generation_id"])
        feedback = s.scalars(select(Feedback)).one()
        assert s.scalar(select(func.count()).select_from(BanditDecision)) == 2
        assert decision is not None and generation is not None
        assert (decision.end_user, decision.context) == ("u1", {"hour": 9})
        assert generation.status == "ok" and generation.reward == 0.5
        assert generation.decision_id == decision.id
        assert (feedback.kind, feedback.value, feedback.idempotency_key) == ("rating", 0.5, "a")
    loads = api.client.app.state.prefloop.policies.loads  # type: ignore[attr-defined]
    for _ in range(3):  # the live policy is reused: its row's id, version and time match
        again = api.select()
        api.complete(again["generation_id"])
        assert api.rate(again["generation_id"], 1).status_code == 201
    assert api.client.app.state.prefloop.policies.loads == loads  # type: ignore[attr-defined]
    assert _lane(api).answered == 12
    metrics = api.client.get("/metrics").text
    assert 'route="/v1/select",status="200"' in metrics
    assert 'route="/v1/generations/{generation_id}/output",status="200"' in metrics
    assert 'route="/v1/feedback",status="201"' in metrics
    lane_count = 'prefloop_fast_lane_requests_total{route="/v1/select",outcome="%s"} %d'
    assert lane_count % ("answered", 4) in metrics  # and the first decision handed over:
    assert lane_count % ("handed_over", 1) in metrics
    reason = 'prefloop_fast_lane_handed_over_total{route="/v1/select",reason="Fallback"} 1\n'
    assert reason in metrics  # the first decision: the ORM path creates the policy's state


def test_loop_writes_wait_in_a_thread_while_another_connection_writes(
    make_api: AppFactory, store: Store
) -> None:
    """On the loop a transaction never waits for another connection's lock (SQLite's write
    lock, PostgreSQL's state row): it fails at once with nothing written, and the request
    then waits in a write thread."""
    api = make_api(key_cache_seconds=60, writes_on_loop=True, batch_writes=False)
    api.seed()
    api.select()  # the first decision creates the policy's state (the app's path)
    context: ServiceContext = api.client.app.state.prefloop  # type: ignore[attr-defined]
    release = _hold_write_lock(store)
    before = row_counts(store)
    started = time.monotonic()
    with pytest.raises(Busy):
        context.hot_now(
            lambda: context.hot.select(
                context.catalog, context.policies, "diary",
                inputs={"place": "a", "company": "b"}, end_user=None, context={},
                policy="default", check=lambda _task: None,
            )
        )  # fmt: skip
    assert time.monotonic() - started < 1.0  # at once, not after a busy or lock timeout
    assert row_counts(store) == before
    released = threading.Timer(0.3, release)
    released.start()
    chosen = api.select()  # waits in a write thread until the other connection commits
    released.join()
    assert row_counts(store)["bandit_decisions"] == before["bandit_decisions"] + 1
    assert chosen["generation_id"]
    assert _lane(api).busy["database"] >= 1


def _hold_write_lock(store: Store) -> Callable[[], None]:
    """Another connection takes what a decision needs (SQLite: the write lock; PostgreSQL:
    the policy's state row); returns what releases it."""
    if store.dialect == "sqlite":
        path = store.url.removeprefix("sqlite:///")
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
    else:
        import psycopg

        other = psycopg.connect(store.url.replace("postgresql+psycopg://", "postgresql://"))
        other.execute("SELECT id FROM policy_states FOR UPDATE")

    def release() -> None:
        other.commit() if store.dialect != "sqlite" else other.execute("COMMIT")
        other.close()

    return release


def test_the_lane_can_be_switched_off(store: Store) -> None:
    settings = ServeSettings(database_url=store.url, insecure_no_auth=True, fast_lane=False)
    app = create_app(settings, store=store)
    assert not any(m.cls is FastLane for m in app.user_middleware)
    app = create_app(ServeSettings(database_url=store.url, insecure_no_auth=True), store=store)
    assert app.user_middleware[0].cls is FastLane  # outermost
