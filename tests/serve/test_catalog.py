"""The per-process cache of tasks and active arms (serve/catalog.py) behind select and feedback."""

from __future__ import annotations

import time

from prefloop.store import repo
from tests.serve.conftest import Api, AppFactory


def _chosen(api: Api, times: int = 12) -> set[str]:
    return {api.select()["arm"]["name"] for _ in range(times)}


def test_a_change_through_the_service_applies_at_once(make_api: AppFactory) -> None:
    api = make_api(catalog_cache_seconds=3600)  # only invalidation can make the change visible
    api.seed()
    assert _chosen(api) <= {"terse", "vivid"}  # fills the cache
    assert api.call("POST", "/v1/tasks/diary/arms/terse/retire").status_code == 200
    assert _chosen(api) == {"vivid"}
    added = api.call("POST", "/v1/tasks/diary/arms", json={"name": "calm", "template": "{place}"})
    assert added.status_code == 201, added.text
    api.call("PUT", "/v1/tasks/diary/arms/vivid/labels", json={"labels": ["retired"]})
    assert _chosen(api) == {"calm"}


def test_a_change_made_elsewhere_applies_after_the_cache_time(make_api: AppFactory) -> None:
    api = make_api(catalog_cache_seconds=0.3)
    api.seed()
    _chosen(api, 2)
    with api.store.session() as s:  # as the CLI or another worker would
        task = repo.get_task(s, "diary")
        repo.set_labels(repo.get_arm(s, task, "vivid"), ["retired"])
    time.sleep(0.35)
    assert _chosen(api) == {"terse"}


def test_without_a_cache_every_request_reads_the_store(make_api: AppFactory) -> None:
    api = make_api(catalog_cache_seconds=0)
    api.seed()
    _chosen(api, 2)
    with api.store.session() as s:
        task = repo.get_task(s, "diary")
        repo.set_labels(repo.get_arm(s, task, "terse"), ["retired"])
    assert _chosen(api) == {"vivid"}
    generation = api.select()["generation_id"]
    api.complete(generation)
    assert api.rate(generation, 1).status_code == 201


def test_a_rejected_request_does_not_spoil_the_cache(make_api: AppFactory) -> None:
    """The request that fills the cache fails (its transaction rolls back): the cached task and
    arms must stay readable for the next requests."""
    api = make_api(catalog_cache_seconds=3600)
    api.seed()
    body = {"task": "diary", "inputs": {"place": "Jeju"}}  # 'company' is missing
    rejected = api.call("POST", "/v1/select", "client", json=body)
    assert rejected.status_code == 409 and "company" in rejected.text
    generation = api.select()["generation_id"]
    api.complete(generation)
    assert api.rate(generation, 1).status_code == 201
