"""Fixtures of the service tests: an app on the ``store`` fixture (SQLite and PostgreSQL) with
one key per role, and helpers to seed tasks and count rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from prefloop.llm import ChatBackend, OpenAIChatBackend, RetryPolicy
from prefloop.serve import ROLES, ServeSettings, create_api_key, create_app
from prefloop.store import Arm, BanditDecision, Feedback, Generation, PolicyState, Store, Task
from prefloop.store.models import ApiKey
from tests.support.chat_server import ChatServer, chat_server  # noqa: F401

TABLES = (Task, Arm, Generation, Feedback, BanditDecision, PolicyState, ApiKey)
TEMPLATES = {
    "terse": "Diary, one line: {place}.",
    "vivid": "Write a vivid diary entry about {place} with {company}.",
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests configure the service themselves; nothing leaks in from the environment."""
    for name in ("PREFLOOP_ADMIN_KEY", "PREFLOOP_INSECURE_NO_AUTH", "PREFLOOP_MAX_BODY_BYTES"):
        monkeypatch.delenv(name, raising=False)


def row_counts(store: Store) -> dict[str, int]:
    with store.session(readonly=True) as session:
        return {
            table.__tablename__: int(session.scalar(select(func.count()).select_from(table)) or 0)
            for table in TABLES
        }


@dataclass
class Api:
    """A TestClient on a fresh app, a key per role, and shortcuts."""

    client: TestClient
    store: Store
    keys: dict[str, str]

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def call(self, method: str, path: str, role: str = "admin", **kwargs: Any) -> Any:
        headers = {**self.auth(role), **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def seed(self, task: str = "diary", arms: dict[str, str] = TEMPLATES) -> None:
        """A task with input fields place and company and the given prompt arms (via HTTP)."""
        answer = self.call(
            "POST", "/v1/tasks", json={"name": task, "input_fields": ["place", "company"]}
        )
        assert answer.status_code == 201, answer.text
        for name, template in arms.items():
            answer = self.call(
                "POST", f"/v1/tasks/{task}/arms", json={"name": name, "template": template}
            )
            assert answer.status_code == 201, answer.text

    def select(self, task: str = "diary", role: str = "client", **fields: Any) -> dict[str, Any]:
        body = {"task": task, "inputs": {"place": "Jeju", "company": "my sister"}, **fields}
        answer = self.call("POST", "/v1/select", role, json=body)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def complete(self, generation_id: str, output: str = "A windy day.") -> None:
        answer = self.call(
            "POST", f"/v1/generations/{generation_id}/output", "client", json={"output": output}
        )
        assert answer.status_code == 200, answer.text

    def rate(self, generation_id: str, value: float, **headers: str) -> Any:
        body = {
            "task": "diary",
            "event": {"kind": "rating", "generation_id": generation_id, "value": value},
        }
        return self.call("POST", "/v1/feedback", "client", json=body, headers=headers)


AppFactory = Callable[..., Api]


@pytest.fixture
def make_api(store: Store) -> Iterator[AppFactory]:
    """Build an app on ``store`` with a key per role; keyword arguments go to ServeSettings."""
    clients: list[TestClient] = []
    with store.session() as session:
        keys = {role: create_api_key(session, name=f"{role}-key", role=role).key for role in ROLES}

    def build(backend: ChatBackend | None = None, **settings: Any) -> Api:
        config = ServeSettings(database_url=store.url, **{"key_cache_seconds": 0, **settings})
        client = TestClient(create_app(config, store=store, backend=backend))
        client.__enter__()
        clients.append(client)
        return Api(client=client, store=store, keys=keys)

    yield build
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def api(make_api: AppFactory) -> Api:
    return make_api()


def chat_backend(server: ChatServer) -> OpenAIChatBackend:
    """The real OpenAI-compatible backend pointed at the local chat server, fast retries."""
    return OpenAIChatBackend(
        base_url=server.url,
        api_key="test",
        model=server.model,
        timeout=5,
        retry=RetryPolicy(max_retries=1, backoff_initial=0.01, backoff_max=0.02),
    )
