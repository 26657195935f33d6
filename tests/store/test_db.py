"""Opening stores, migrations, transactions (store/db.py) on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from prefloop.errors import InvalidInputError, StoreVersionError
from prefloop.store import DEFAULT_DATABASE_URL, Store, Task, database_url
from prefloop.store.db import head_revision
from prefloop.store.models import Base


def test_database_url_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFLOOP_DATABASE_URL", raising=False)
    assert database_url() == DEFAULT_DATABASE_URL == "sqlite:///prefloop.db"
    monkeypatch.setenv("PREFLOOP_DATABASE_URL", "sqlite:///from-env.db")
    assert database_url() == "sqlite:///from-env.db"
    assert database_url("sqlite:///given.db") == "sqlite:///given.db"
    # the bare schemes mean psycopg2 to SQLAlchemy; prefloop installs psycopg 3
    assert database_url("postgres://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "not a database URL"),
        ("mysql://u@h/db", "unsupported database 'mysql'"),
    ],
)
def test_bad_urls_are_named(url: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        Store.open(url)


def test_an_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot open the database"):
        Store.open(f"sqlite:///{tmp_path / 'no' / 'such' / 'folder.db'}")
    with pytest.raises(InvalidInputError, match=r"postgres:\*\*\*@"):
        Store.open("postgresql+psycopg://postgres:secret@127.0.0.1:1/x")


def test_open_creates_every_table_at_the_head_revision(store: Store) -> None:
    assert store.revision() == head_revision()
    with store.session(readonly=True) as s:
        for table in Base.metadata.sorted_tables:
            assert s.scalar(select(func.count()).select_from(table)) == 0


def test_without_upgrade_a_new_database_is_refused(store_url: str) -> None:
    with pytest.raises(StoreVersionError, match="prefloop init"):
        Store.open(store_url, upgrade=False)
    with Store.open(store_url) as created:
        assert created.revision() == head_revision()
    with Store.open(store_url, upgrade=False) as reopened:
        assert reopened.revision() == head_revision()


def test_a_store_from_a_newer_prefloop_is_refused(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'from_the_future'"))
    with pytest.raises(StoreVersionError, match="newer prefloop"):
        Store.open(store.url)


def test_a_session_commits_or_rolls_back_as_a_whole(store: Store) -> None:
    with store.session() as s:
        s.add(Task(name="kept"))
    with pytest.raises(RuntimeError), store.session() as s:
        s.add(Task(name="lost"))
        s.flush()
        raise RuntimeError("boom")
    with store.session(readonly=True) as s:
        assert s.scalars(select(Task.name)).all() == ["kept"]


def test_sqlite_readers_do_not_wait_for_a_writer(sqlite_store: Store) -> None:
    """A write transaction holds SQLite's write lock from BEGIN; reads go on meanwhile."""
    with sqlite_store.session() as s:
        s.add(Task(name="committed"))
    writing = threading.Event()
    release = threading.Event()

    def writer() -> None:
        with sqlite_store.session() as s:
            s.add(Task(name="pending"))
            s.flush()
            writing.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert writing.wait(10)
        with sqlite_store.session(readonly=True) as s:
            assert s.scalars(select(Task.name)).all() == ["committed"]
    finally:
        release.set()
        thread.join()
    with sqlite_store.session(readonly=True) as s:
        assert sorted(s.scalars(select(Task.name))) == ["committed", "pending"]


def test_sqlite_settings(sqlite_store: Store) -> None:
    with sqlite_store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    assert sqlite_store.dialect == "sqlite"


def _pool_two_and_kill_one(store: Store) -> int:
    """Leave two connections in the pool, the next one handed out dead (the server dropped it,
    as a restart would); returns how many were terminated."""
    with store.session() as first, store.session() as second:
        first.execute(text("SELECT 1"))
        second.execute(text("SELECT 1"))
    with store.engine.connect() as other:  # the pool hands out the oldest first
        return int(
            other.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend'"
                )
            ).scalar_one()
        )


@pytest.mark.postgres
def test_an_idle_dead_postgres_connection_is_replaced(
    postgres_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pooled connections idle longer than PING_AFTER_IDLE_S are pinged before use, so one the
    server dropped meanwhile is replaced instead of failing the next transaction."""
    from prefloop.store import db
    from tests.conftest import fresh_postgres_url

    store = Store.open(fresh_postgres_url(postgres_admin_url))
    try:
        assert _pool_two_and_kill_one(store) == 1
        monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)  # every checkout counts as idle
        with store.session() as s:
            assert s.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        store.close()


@pytest.mark.postgres
def test_a_recently_used_connection_is_not_pinged(
    postgres_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection back in the pool for less than PING_AFTER_IDLE_S is handed out unpinged
    (the round trip a busy service saves); one that died meanwhile fails its transaction with
    the connection marked invalid, which the service retries."""
    from sqlalchemy.exc import OperationalError

    from prefloop.store import db
    from tests.conftest import fresh_postgres_url

    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 3600.0)  # however slow this machine is
    store = Store.open(fresh_postgres_url(postgres_admin_url))
    try:
        assert _pool_two_and_kill_one(store) == 1
        with pytest.raises(OperationalError) as caught, store.session() as s:
            s.execute(text("SELECT 1"))
        assert caught.value.connection_invalidated
        with store.session() as s:  # the pool replaced it
            assert s.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        store.close()
