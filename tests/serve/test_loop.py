"""The loop through HTTP: tasks and arms, select → output → feedback → stats, idempotency."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import select

from prefloop.store import BanditDecision, Feedback, Generation
from tests.serve.conftest import Api


@pytest.fixture
def seeded(api: Api) -> Api:
    api.seed()
    return api


def test_tasks_and_arms_create_list_label_retire(seeded: Api) -> None:
    api = seeded
    tasks = api.call("GET", "/v1/tasks", "labeler").json()
    assert [t["name"] for t in tasks] == ["diary"]
    assert tasks[0]["scale"] == [-1.0, -0.5, 0.0, 0.5, 1.0]
    arms = api.call("GET", "/v1/tasks/diary/arms", "labeler").json()
    assert [(a["name"], a["labels"], a["retired"]) for a in arms] == [
        ("terse", ["candidate"], False),
        ("vivid", ["candidate"], False),
    ]
    child = api.call(
        "POST",
        "/v1/tasks/diary/arms",
        json={"name": "vivid2", "template": "{place}!", "parent": "vivid"},
    ).json()
    assert child["parent_id"] == arms[1]["id"]
    promoted = api.call("PUT", "/v1/tasks/diary/arms/vivid/labels", json={"labels": ["production"]})
    assert promoted.json()["labels"] == ["production"]
    retired = api.call("POST", "/v1/tasks/diary/arms/terse/retire").json()
    assert retired["retired"] and "candidate" not in retired["labels"]
    chosen = {api.select(seed=s)["arm"]["name"] for s in range(12)}
    assert "terse" not in chosen and chosen <= {"vivid", "vivid2"}


def test_select_logs_a_decision_and_a_pending_generation(seeded: Api) -> None:
    api = seeded
    chosen = api.select(end_user="user-7", context={"device": "phone"})
    assert chosen["arm"]["name"] in ("terse", "vivid")
    assert "Jeju" in chosen["prompt"]
    assert 0 < chosen["propensity"] <= 1
    with api.store.session(readonly=True) as session:
        generation = session.get(Generation, chosen["generation_id"])
        decision = session.get(BanditDecision, chosen["decision_id"])
        assert generation is not None and decision is not None
        assert generation.status == "pending" and generation.output is None
        assert generation.decision_id == decision.id and generation.arm_id == decision.arm_id
        assert generation.end_user == "user-7" and decision.end_user == "user-7"
        assert generation.prompt == chosen["prompt"]
    api.complete(chosen["generation_id"], "Sunny on Jeju.")
    stored = api.call("GET", f"/v1/generations/{chosen['generation_id']}", "labeler").json()
    assert (stored["status"], stored["output"]) == ("ok", "Sunny on Jeju.")


def test_feedback_moves_the_stats(seeded: Api) -> None:
    api = seeded
    rewards: dict[str, list[float]] = {"terse": [], "vivid": []}
    for i in range(8):
        chosen = api.select(seed=i)
        api.complete(chosen["generation_id"])
        value = 1.0 if chosen["arm"]["name"] == "vivid" else -0.5
        answer = api.rate(chosen["generation_id"], value)
        assert answer.status_code == 201, answer.text
        change = answer.json()["reward_changes"]
        assert [(c["generation_id"], c["old"], c["new"]) for c in change] == [
            (chosen["generation_id"], None, value)
        ]
        rewards[chosen["arm"]["name"]].append(value)
    stats = api.call("GET", "/v1/stats?task=diary", "labeler").json()
    by_arm = {arm["arm"]: arm for arm in stats["arms"]}
    for name, values in rewards.items():
        assert by_arm[name]["count"] == len(values)
        if values:
            arm = by_arm[name]
            assert arm["raw_mean_reward"] == pytest.approx(sum(values) / len(values))
            low, high = arm["interval"]
            assert low <= arm["mean_reward"] <= high, "the mean lies inside its own interval"
    assert sum(arm["share"] for arm in stats["arms"]) == pytest.approx(1.0)
    if rewards["vivid"] and rewards["terse"]:
        assert stats["best_arm"] == "vivid"
    assert 0 <= stats["best_probability"] <= 1


def test_repeated_idempotency_key_stores_once(seeded: Api) -> None:
    api = seeded
    chosen = api.select()
    api.complete(chosen["generation_id"])
    first = api.rate(chosen["generation_id"], 1, **{"Idempotency-Key": "tap-1"})
    second = api.rate(chosen["generation_id"], 1, **{"Idempotency-Key": "tap-1"})
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["duplicate"] is False and second.json()["duplicate"] is True
    assert first.json()["feedback_id"] == second.json()["feedback_id"]
    assert second.json()["reward_changes"] == []
    in_field = {
        "task": "diary",
        "event": {"kind": "rating", "generation_id": chosen["generation_id"], "value": 1,
                  "idempotency_key": "tap-1"},
    }  # fmt: skip
    third = api.call("POST", "/v1/feedback", "client", json=in_field)
    assert third.status_code == 200 and third.json()["duplicate"] is True
    with api.store.session(readonly=True) as session:
        assert len(session.scalars(select(Feedback)).all()) == 1
    stats = api.call("GET", "/v1/stats?task=diary").json()
    assert sum(arm["count"] for arm in stats["arms"]) == 1


def test_every_feedback_kind_is_accepted(seeded: Api) -> None:
    api = seeded
    ids = []
    for _ in range(4):
        chosen = api.select()
        api.complete(chosen["generation_id"], f"text {random.random()}")
        ids.append(chosen["generation_id"])
    events = [
        {"kind": "rating", "generation_id": ids[0], "value": 0.5},
        {"kind": "thumbs", "generation_id": ids[1], "up": False},
        {"kind": "regenerate", "generation_id": ids[2]},
        {"kind": "pairwise", "a": ids[0], "b": ids[1], "winner": "a"},
        {"kind": "ranking", "generation_ids": ids[:3], "ranks": [1, 2, 2]},
        {"kind": "edit", "generation_id": ids[3], "final_text": "my own words"},
    ]
    for event in events:
        answer = api.call("POST", "/v1/feedback", "client", json={"task": "diary", "event": event})
        assert answer.status_code == 201, (event["kind"], answer.text)
    edit = answer.json()
    assert edit["derived_ids"], "an edit derives an auto-rating"
    metrics = api.client.get("/metrics").text
    for event in events:
        assert f'kind="{event["kind"]}"' in metrics


def test_one_rating_reports_the_posterior_mean_inside_its_interval(seeded: Api) -> None:
    """The issue's case: one rating of 1 reported a mean of 1.0 outside [-0.49, 0.87]."""
    api = seeded
    chosen = api.select()
    api.complete(chosen["generation_id"])
    assert api.rate(chosen["generation_id"], 1).status_code == 201
    stats = api.call("GET", "/v1/stats?task=diary", "labeler").json()
    arm = next(a for a in stats["arms"] if a["count"] == 1)
    # Dirichlet(1/2) on the levels -1, -0.5, 0, 0.5, 1 after one 1: weights (.5,.5,.5,.5,1.5)/3.5
    assert arm["mean_reward"] == pytest.approx((-0.5 - 0.25 + 0.25 + 1.5) / 3.5)
    assert arm["raw_mean_reward"] == 1.0
    low, high = arm["interval"]
    assert low < arm["mean_reward"] < high < 1.0
