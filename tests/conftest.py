"""Shared fixtures: a store on SQLite and, where a server can be had, on PostgreSQL.

Every test that takes ``store`` runs once per database. PostgreSQL comes from
``PREFLOOP_TEST_POSTGRES_URL`` (an admin URL; each test gets its own database) or from a
throwaway cluster started here when Debian's postgresql binaries are installed. With
``PREFLOOP_REQUIRE_POSTGRES=1`` (set by ``.ci/run``) a missing server is an error, not a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from prefloop.store import Store
from tests.support import postgres
from tests.support.tiny_adapter import tiny_models

__all__ = ["tiny_models"]  # a tiny Llama and two adapters on it, built once per session

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data(name: str) -> Path:
    """A dataset from ../shared/data; a clear failure (not a skip) when it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.fail(
            f"{path} is missing: the tests read ../shared/data beside the repository "
            "(see ../shared/data/README.md)"
        )
    return path


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    url = os.environ.get("PREFLOOP_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    required = os.environ.get("PREFLOOP_REQUIRE_POSTGRES") == "1"
    if postgres.find_bindir() is None:
        if required:
            pytest.fail("PREFLOOP_REQUIRE_POSTGRES=1 but no PostgreSQL binaries are installed")
        pytest.skip(
            "PostgreSQL not installed (apt-get install postgresql) and "
            "PREFLOOP_TEST_POSTGRES_URL not set"
        )
    try:
        cluster = postgres.start_cluster()
    except Exception as exc:
        if required:
            pytest.fail(f"could not start a throwaway PostgreSQL cluster: {exc}")
        pytest.skip(f"could not start a throwaway PostgreSQL cluster: {exc}")
    try:
        yield cluster.admin_url
    finally:
        cluster.stop()


def fresh_postgres_url(admin_url: str) -> str:
    """Create an empty database on the server and return its URL."""
    name = f"prefloop_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh, empty database: SQLite in a temporary folder, or PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'prefloop.db'}"
    admin_url = request.getfixturevalue("postgres_admin_url")
    return fresh_postgres_url(admin_url)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A fresh store with the current schema, once on SQLite and once on PostgreSQL."""
    opened = Store.open(store_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    """A fresh SQLite store, for tests that do not depend on the database."""
    opened = Store.open(f"sqlite:///{tmp_path / 'prefloop.db'}")
    try:
        yield opened
    finally:
        opened.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many PostgreSQL tests ran, so CI output shows they really did."""
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for outcome in counts:
        for report in terminalreporter.stats.get(outcome, []):
            if "postgres" in getattr(report, "keywords", {}) and report.when in ("call", "setup"):
                if outcome == "passed" and report.when != "call":
                    continue
                counts[outcome] += 1
    terminalreporter.write_line(
        f"PostgreSQL tests: {counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['skipped']} skipped"
    )
