"""The public API: each package's ``__all__`` names what a user calls, and one name means one
thing across the packages."""

from __future__ import annotations

import importlib
from collections import defaultdict

import pytest

PACKAGES = (
    "prefloop",
    "prefloop.store",
    "prefloop.feedback",
    "prefloop.reward",
    "prefloop.bandit",
    "prefloop.loop",
    "prefloop.llm",
    "prefloop.propose",
    "prefloop.serve",
    "prefloop.demo",
    "prefloop.io",
    "prefloop.train",
)

PENDING: dict[str, str] = {}
"""Names one package may still define apart, with that package (none now)."""


def _exports() -> dict[str, list[tuple[str, object]]]:
    found: dict[str, list[tuple[str, object]]] = defaultdict(list)
    for name in PACKAGES:
        module = importlib.import_module(name)
        for exported in module.__all__:
            found[exported].append((name, getattr(module, exported)))
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_exists_once_and_is_public(package: str) -> None:
    module = importlib.import_module(package)
    names = list(module.__all__)
    assert len(names) == len(set(names)), "a name listed twice"
    assert [n for n in names if n.startswith("_") and n != "__version__"] == []
    missing = [n for n in names if not hasattr(module, n)]
    assert missing == []


def test_one_name_means_one_thing_across_packages() -> None:
    """A name exported by several packages is the same object in each (a re-export), never
    two things that share a name (Agreement, TaskStats, ProgressCallback were)."""
    clashes = {}
    for name, owners in _exports().items():
        objects = {id(obj) for package, obj in owners if PENDING.get(name) != package}
        if len(objects) > 1:
            clashes[name] = [package for package, _ in owners]
    assert clashes == {}


def test_service_internals_stay_out_of_the_package_apis() -> None:
    exported = _exports()
    for internal in ("PolicyCache", "ServiceContext", "hash_key", "ApiKey", "AppSession"):
        assert internal not in exported, internal
    # the bandit's state: compare with the log, repair; pure recompute and comparison
    bandit = importlib.import_module("prefloop.bandit")
    state = sorted(n for n in bandit.__all__ if "state" in n.lower() or n == "recompute")
    assert state == [
        "StateCheck",
        "check_state",
        "policy_from_state",
        "rebuild_state",
        "recompute",
        "state_differences",
    ]
