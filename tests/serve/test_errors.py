"""Rejected requests: 404, 409, 413, 422 with a message naming the problem, nothing written."""

from __future__ import annotations

from typing import Any

import pytest

from tests.serve.conftest import Api, AppFactory, row_counts


def _rejected(api: Api, answer: object, status: int, *needles: str) -> None:
    assert answer.status_code == status, answer.text  # type: ignore[attr-defined]
    body = answer.json()  # type: ignore[attr-defined]
    assert set(body) >= {"error", "detail"}
    for needle in needles:
        assert needle in body["detail"], (needle, body)


@pytest.fixture
def seeded(api: Api) -> Api:
    api.seed()
    return api


def test_unknown_ids_are_404_and_write_nothing(seeded: Api) -> None:
    api = seeded
    before = row_counts(api.store)
    select = api.call("POST", "/v1/select", "client", json={"task": "nope", "inputs": {}})
    _rejected(api, select, 404, "'nope'", "diary")
    _rejected(api, api.rate("gen_missing", 1), 404, "gen_missing")
    _rejected(api, api.call("GET", "/v1/generations/gen_missing"), 404, "gen_missing")
    output = api.call("POST", "/v1/generations/gen_x/output", "client", json={"output": "t"})
    _rejected(api, output, 404, "gen_x")
    _rejected(api, api.call("POST", "/v1/tasks/diary/arms/ghost/retire"), 404, "ghost")
    _rejected(api, api.call("GET", "/v1/stats?task=nope"), 404, "nope")
    assert row_counts(api.store) == before


def test_invalid_values_are_422_and_write_nothing(seeded: Api) -> None:
    """422: the body breaks the OpenAPI schema (the message names the field)."""
    api = seeded
    before = row_counts(api.store)
    malformed = api.call(
        "POST", "/v1/feedback", "client", json={"task": "diary", "event": {"kind": "stars"}}
    )
    _rejected(api, malformed, 422, "event")
    assert malformed.json()["errors"], "a malformed body lists its wrong fields"
    bad_scale = api.call("POST", "/v1/tasks", json={"name": "t2", "scale": [1, 1]})
    _rejected(api, bad_scale, 422, "once")
    nul = api.call("POST", "/v1/tasks", json={"name": "t\u0000"})
    _rejected(api, nul, 422, "NUL")
    slash = api.call("POST", "/v1/tasks", json={"name": "a/b"})
    _rejected(api, slash, 422, "slash")
    typed = {"task": "diary", "inputs": {}, "params": {"temperature": True}}
    _rejected(api, api.call("POST", "/v1/generate", json=typed), 422, "temperature")
    as_text = {"task": "diary", "seed": "5"}
    _rejected(api, api.call("POST", "/v1/select", json=as_text), 422, "seed")
    tokens = {"output": "x", "completion_tokens": 2**40}
    too_many = api.call("POST", "/v1/generations/gen_x/output", "client", json=tokens)
    _rejected(api, too_many, 422, "completion_tokens")
    both = api.call(
        "POST", "/v1/tasks/diary/arms", json={"name": "x", "template": "a", "model_ref": "m"}
    )
    _rejected(api, both, 422, "not both")
    assert row_counts(api.store) == before


def test_values_that_contradict_the_store_are_409_and_write_nothing(seeded: Api) -> None:
    """409: valid by the schema, but not for this task (its input fields, its scale)."""
    api = seeded
    chosen = api.select()
    api.complete(chosen["generation_id"])
    before = row_counts(api.store)
    _rejected(api, api.rate(chosen["generation_id"], 0.3), 409, "0.3")
    missing_input = api.call(
        "POST", "/v1/select", "client", json={"task": "diary", "inputs": {"place": "Jeju"}}
    )
    _rejected(api, missing_input, 409, "company")
    same = {"kind": "pairwise", "a": chosen["generation_id"], "b": chosen["generation_id"]}
    pair = api.call(
        "POST", "/v1/feedback", "client", json={"task": "diary", "event": {**same, "winner": "a"}}
    )
    _rejected(api, pair, 409, "two different")
    assert row_counts(api.store) == before


def test_a_body_sent_as_a_form_is_415_saying_to_send_json(seeded: Api) -> None:
    api = seeded
    before = row_counts(api.store)
    form = api.call("POST", "/v1/tasks", content=b'{"name": "t3"}',
                    headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    _rejected(api, form, 415, "Content-Type: application/json")
    typed = api.call("POST", "/v1/tasks", content=b'{"name": "t3"}',
                     headers={"Content-Type": "application/json; charset=utf-8"})  # fmt: skip
    assert typed.status_code == 201, typed.text
    assert row_counts(api.store)["tasks"] == before["tasks"] + 1


def test_405_lists_every_method_of_the_path(seeded: Api) -> None:
    answer = seeded.call("DELETE", "/v1/tasks/diary/arms")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET, POST" and "GET, POST" in answer.json()["detail"]


def test_feedback_about_a_pending_generation_says_to_report_the_output(seeded: Api) -> None:
    api = seeded
    chosen = api.select()
    before = row_counts(api.store)
    _rejected(api, api.rate(chosen["generation_id"], 1), 409, "pending", "/output")
    assert row_counts(api.store) == before


def test_conflicts_are_409(seeded: Api) -> None:
    api = seeded
    _rejected(api, api.call("POST", "/v1/tasks", json={"name": "diary"}), 409, "diary")
    again = api.call("POST", "/v1/tasks/diary/arms", json={"name": "terse", "template": "t"})
    _rejected(api, again, 409, "terse")
    chosen = api.select()
    api.complete(chosen["generation_id"])
    before = row_counts(api.store)
    twice = api.call(
        "POST", f"/v1/generations/{chosen['generation_id']}/output", "client", json={"output": "b"}
    )
    _rejected(api, twice, 409, "already ok")
    reused = api.rate(chosen["generation_id"], 1, **{"Idempotency-Key": "k1"})
    assert reused.status_code == 201
    other = api.rate(chosen["generation_id"], -1, **{"Idempotency-Key": "k1"})
    _rejected(api, other, 409, "k1")
    assert row_counts(api.store) == {**before, "feedback": before["feedback"] + 1}


def test_idempotency_header_and_field_must_agree(seeded: Api) -> None:
    api = seeded
    chosen = api.select()
    api.complete(chosen["generation_id"])
    body = {
        "task": "diary",
        "event": {"kind": "rating", "generation_id": chosen["generation_id"], "value": 1,
                  "idempotency_key": "field-key"},
    }  # fmt: skip
    answer = api.call(
        "POST", "/v1/feedback", "client", json=body, headers={"Idempotency-Key": "hdr"}
    )
    _rejected(api, answer, 409, "hdr", "field-key")


def test_bodies_over_the_limit_are_413_and_write_nothing(make_api: AppFactory) -> None:
    api = make_api(max_body_bytes=2048)
    api.seed()
    before = row_counts(api.store)
    big = {"task": "diary", "inputs": {"place": "x" * 3000, "company": "y"}}
    answer = api.call("POST", "/v1/select", "client", json=big)
    _rejected(api, answer, 413, "2048", "PREFLOOP_MAX_BODY_BYTES")

    def chunks():  # no Content-Length: the limit must hold for a streamed body too
        for _ in range(10):
            yield b'{"task": "diary", "inputs": {"place": "' + b"z" * 400

    streamed = api.client.post(
        "/v1/select",
        content=chunks(),
        headers={**api.auth("client"), "Content-Type": "application/json"},
    )
    _rejected(api, streamed, 413, "2048")
    small = api.call(
        "POST",
        "/v1/select",
        "client",
        json={"task": "diary", "inputs": {"place": "a", "company": "b"}},
    )
    assert small.status_code == 200
    assert row_counts(api.store)["generations"] == before["generations"] + 1


def test_a_database_restart_costs_no_request(make_api: AppFactory, monkeypatch: Any) -> None:
    """PostgreSQL drops every connection (as a restart does) while the pool holds them: the
    next requests, reads and writes, are retried on new connections instead of failing."""
    from sqlalchemy import text

    from prefloop.store import db

    api = make_api(insecure_no_auth=True)  # no key look-up: the write meets the dead connection
    if api.store.dialect != "postgresql":
        pytest.skip("SQLite has no server connections to lose")
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 3600.0)  # no ping: the retry must do it
    api.seed()
    chosen = api.select()
    with api.store.session() as first, api.store.session() as second:  # two in the pool
        first.execute(text("SELECT 1"))
        second.execute(text("SELECT 1"))
    with api.store.engine.connect() as conn:  # the older one; the other is dropped
        killed = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            )
        ).scalar_one()
    assert killed >= 1
    api.complete(chosen["generation_id"])  # a write on a dead pooled connection: retried
    assert api.rate(chosen["generation_id"], 1).status_code == 201
    assert api.call("GET", "/v1/tasks", "labeler").status_code == 200
