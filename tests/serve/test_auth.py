"""API keys and roles: who may do what, keys stored hashed, and refusing to run unprotected."""

from __future__ import annotations

import hashlib
import logging

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from prefloop.serve import ServeConfigError, ServeSettings, create_app, revoke_api_key
from prefloop.store import Store
from prefloop.store.models import ApiKey
from tests.serve.conftest import Api, AppFactory, row_counts

# (method, path, body) of one request per permission; the seeded task is "diary".
READ = ("GET", "/v1/stats?task=diary", None)
ADMIN = ("POST", "/v1/tasks", {"name": "another"})
SELECT = ("POST", "/v1/select", {"task": "diary", "inputs": {"place": "a", "company": "b"}})
ROLE_MAY = {
    "admin": {"read", "admin", "select"},
    "labeler": {"read"},
    "client": {"select"},
}


def test_each_role_gets_exactly_its_permissions(api: Api) -> None:
    api.seed()
    requests = {"read": READ, "admin": ADMIN, "select": SELECT}
    for role, allowed in ROLE_MAY.items():
        for permission, (method, path, body) in requests.items():
            answer = api.call(method, path, role, json=body)
            if permission in allowed:
                assert answer.status_code in (200, 201), (role, permission, answer.text)
            else:
                assert answer.status_code == 403, (role, permission, answer.text)
                assert answer.json()["error"] == "forbidden"
                assert role in answer.json()["detail"]


def test_feedback_is_open_to_every_role(api: Api) -> None:
    api.seed()
    for role in ("admin", "labeler", "client"):
        chosen = api.select()
        api.complete(chosen["generation_id"])
        body = {
            "task": "diary",
            "event": {"kind": "thumbs", "generation_id": chosen["generation_id"], "up": True},
        }
        answer = api.call("POST", "/v1/feedback", role, json=body)
        assert answer.status_code == 201, (role, answer.text)


def test_labeler_feedback_is_authored_by_the_key(api: Api) -> None:
    api.seed()
    chosen = api.select()
    api.complete(chosen["generation_id"])
    body = {
        "task": "diary",
        "event": {"kind": "rating", "generation_id": chosen["generation_id"], "value": 1},
    }
    assert api.call("POST", "/v1/feedback", "labeler", json=body).status_code == 201
    from prefloop.store import Feedback

    with api.store.session(readonly=True) as session:
        row = session.scalars(select(Feedback)).one()
        assert (row.author, row.source) == ("labeler-key", "labeler")


def test_missing_wrong_and_revoked_keys_are_401_and_write_nothing(api: Api) -> None:
    api.seed()
    before = row_counts(api.store)
    body = SELECT[2]
    missing = api.client.post("/v1/select", json=body)
    assert missing.status_code == 401 and "API key" in missing.json()["detail"]
    wrong = api.client.post("/v1/select", json=body, headers={"X-API-Key": "pfk_not-a-key"})
    assert wrong.status_code == 401 and "pfk_not-a-k" in wrong.json()["detail"]
    with api.store.session() as session:
        prefix = session.scalars(select(ApiKey.prefix).where(ApiKey.role == "client")).one()
        revoke_api_key(session, prefix)
    revoked = api.call("POST", "/v1/select", "client", json=body)
    assert revoked.status_code == 401
    assert row_counts(api.store) == before


def test_x_api_key_header_works_like_bearer(api: Api) -> None:
    answer = api.client.get("/v1/tasks", headers={"X-API-Key": api.keys["labeler"]})
    assert answer.status_code == 200


def test_keys_are_stored_as_sha256_only(api: Api) -> None:
    with api.store.session(readonly=True) as session:
        rows = session.scalars(select(ApiKey)).all()
    assert {row.role for row in rows} == {"admin", "labeler", "client"}
    for row in rows:
        key = api.keys[row.role]
        assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
        assert key.startswith(row.prefix) and len(row.prefix) < len(key) // 2


def test_admin_key_from_the_environment(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFLOOP_ADMIN_KEY", "an-admin-secret")
    app = create_app(ServeSettings(database_url=sqlite_store.url), store=sqlite_store)
    with TestClient(app) as client:
        ok = client.post("/v1/tasks", json={"name": "t"}, headers={"X-API-Key": "an-admin-secret"})
        assert ok.status_code == 201
        bad = client.post("/v1/tasks", json={"name": "u"}, headers={"X-API-Key": "an-admin-secre"})
        assert bad.status_code == 401


def test_refuses_to_start_without_any_key(sqlite_store: Store) -> None:
    with pytest.raises(ServeConfigError, match="--insecure-no-auth"):
        create_app(ServeSettings(database_url=sqlite_store.url), store=sqlite_store)


def test_insecure_mode_is_logged_and_admits_everyone(
    sqlite_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ServeSettings(database_url=sqlite_store.url, insecure_no_auth=True)
    with caplog.at_level(logging.WARNING, logger="prefloop.serve"):
        app = create_app(settings, store=sqlite_store)
    assert "AUTHENTICATION IS OFF" in caplog.text
    with TestClient(app) as client:
        assert client.post("/v1/tasks", json={"name": "t"}).status_code == 201


def test_health_metrics_and_openapi_need_no_key(make_api: AppFactory) -> None:
    api = make_api()
    for path in ("/healthz", "/metrics", "/openapi.json"):
        assert api.client.get(path).status_code == 200, path
