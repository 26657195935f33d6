"""Helpers of the web app's tests: a seeded task, sign-in, reading what the store holds."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from prefloop.bandit import check_state
from prefloop.serve import create_api_key, ops
from prefloop.store import Feedback, Store
from prefloop.store.models import Task


def seed_task(
    store: Store,
    name: str = "diary",
    *,
    inputs: int = 6,
    per_input: int = 3,
    arms: tuple[str, ...] = ("terse", "vivid", "plain"),
    output: str = "A windy day at {place} ({arm}, draft {n}).",
    seed: int = 0,
) -> list[str]:
    """A task whose arms each produced outputs for ``inputs`` places, ``per_input`` per place;
    the generation ids, oldest first."""
    with store.session() as session:
        ops.create_task(session, name, input_fields=["place"], rubric="Is it **vivid**?")
        for arm in arms:
            ops.create_arm(session, name, arm, template=f"{arm}: {{place}}")
    made = []
    for i in range(inputs):
        for n in range(per_input):
            with store.session() as session:
                chosen = ops.select_arm(
                    session, name, inputs={"place": f"place {i}"}, seed=seed + 100 * i + n
                )
                text = output.format(place=f"place {i}", arm=chosen.arm.name, n=n)
                ops.complete_generation(session, chosen.generation_id, output=text)
                made.append(chosen.generation_id)
    return made


def make_keys(store: Store, *names: tuple[str, str]) -> dict[str, str]:
    """``{name: key}`` for each ``(name, role)``."""
    with store.session() as session:
        return {name: create_api_key(session, name=name, role=role).key for name, role in names}


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page has no CSRF field"
    return found.group(1)


def sign_in(client: TestClient, key: str) -> None:
    page = client.get("/app/login").text
    answer = client.post(
        "/app/login", data={"csrf": csrf_of(page), "key": key}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text


def form_action(page: str) -> str:
    found = re.search(r'id="label-form"[^>]*action="([^"]+)"', page)
    assert found, "the page shows no item"
    return found.group(1)


def messages(page: str) -> list[str]:
    return re.findall(r'role="(?:status|alert)"[^>]*>([^<]*)', page)


def app_events(store: Store) -> list[Feedback]:
    """The feedback events the web app stored (their idempotency keys name a lease)."""
    with store.session(readonly=True) as session:
        rows = session.scalars(
            select(Feedback)
            .where(Feedback.idempotency_key.like("app-lease-%"))
            .order_by(Feedback.id)
        ).all()
        session.expunge_all()
        return list(rows)


def bandit_matches_recomputation(store: Store, task: str = "diary") -> tuple[Any, Any]:
    with store.session(readonly=True) as session:
        loaded = session.scalar(select(Task).where(Task.name == task))
        assert loaded is not None
        check = check_state(session, loaded)
        return check.stored, check.recomputed
