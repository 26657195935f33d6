"""Opening a store: the engine, sessions and schema migrations.

SQLite (the default, ``sqlite:///prefloop.db``) runs in WAL mode with foreign keys on and a busy
timeout, so several processes can share one file. PostgreSQL is selected by URL
(``postgresql+psycopg://user:pass@host/db``, needs ``pip install prefloop[postgres]``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from prefloop.errors import InvalidInputError, StoreVersionError

DEFAULT_DATABASE_URL = "sqlite:///prefloop.db"
SQLITE_BUSY_TIMEOUT_MS = 30_000
PING_AFTER_IDLE_S = 1.0
"""A pooled PostgreSQL connection idle for longer is pinged before use (see make_engine)."""
_MIGRATIONS = Path(__file__).with_name("migrations")


def database_url(url: str | None = None) -> str:
    """The URL to use: ``url`` if given, else ``PREFLOOP_DATABASE_URL``, else the default."""
    chosen = url or os.environ.get("PREFLOOP_DATABASE_URL") or DEFAULT_DATABASE_URL
    if chosen.startswith("postgresql://") or chosen.startswith("postgres://"):
        # psycopg 3 is the driver prefloop installs; SQLAlchemy's bare scheme means psycopg2.
        chosen = "postgresql+psycopg://" + chosen.split("://", 1)[1]
    return chosen


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with a terse message
        raise InvalidInputError(
            f"not a database URL: {url!r}; use e.g. sqlite:///prefloop.db or "
            "postgresql+psycopg://user:password@localhost:5432/prefloop"
        ) from exc
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; take the write lock at BEGIN so
        # concurrent writers queue on the busy timeout instead of failing on lock upgrade.
        event.listen(engine, "connect", _disable_pysqlite_begin)
        event.listen(engine, "begin", _begin_immediate)
        return engine
    if parsed.get_backend_name() == "postgresql":
        try:
            engine = create_engine(url, pool_size=10, max_overflow=20)
        except ModuleNotFoundError as exc:
            raise InvalidInputError(
                "PostgreSQL needs the psycopg driver: pip install 'prefloop[postgres]'"
            ) from exc
        event.listen(engine, "checkin", _note_return)
        event.listen(engine, "checkout", _ping_if_idle(engine))
        return engine
    raise InvalidInputError(
        f"unsupported database {parsed.get_backend_name()!r} in {url!r}: prefloop supports "
        "sqlite:///FILE and postgresql+psycopg://…"
    )


def _note_return(_dbapi_connection: Any, record: Any) -> None:
    record.info["returned_at"] = time.monotonic()


def _ping_if_idle(engine: Engine) -> Callable[[Any, Any, Any], None]:
    """Check a pooled PostgreSQL connection that sat idle before handing it out.

    SQLAlchemy's ``pool_pre_ping`` pings at every checkout: a round trip per transaction, a
    fifth of a busy service's. A connection returned less than :data:`PING_AFTER_IDLE_S` ago
    was working then and is handed out as it is; an older one is pinged, and a dead one is
    replaced (raising DisconnectionError makes the pool connect afresh).
    """

    def ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned_at = record.info.get("returned_at")
        if returned_at is not None and time.monotonic() - returned_at < PING_AFTER_IDLE_S:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(f"a pooled connection is dead: {exc}") from exc
        if not alive:
            raise DisconnectionError("a pooled connection is dead")

    return ping


def _disable_pysqlite_begin(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None


def _begin_immediate(conn: Any) -> None:
    if conn.get_execution_options().get("prefloop_readonly"):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    script = ScriptDirectory.from_config(_alembic_config(DEFAULT_DATABASE_URL))
    head = script.get_current_head()
    assert head is not None, "prefloop ships at least one migration"
    return head


class Store:
    """A prefloop database. Open it with :meth:`Store.open`; use :meth:`session` for work.

    >>> store = Store.open("sqlite:///:memory:")  # doctest: +SKIP
    >>> with store.session() as s:  # commits on success, rolls back on error
    ...     ...
    """

    def __init__(self, *, url: str, engine: Engine) -> None:
        self.url = url
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(
            engine.execution_options(prefloop_readonly=True), expire_on_commit=False
        )

    @classmethod
    def open(cls, url: str | None = None, *, upgrade: bool = True) -> Store:
        """Open the store at ``url`` (see :func:`database_url`).

        With ``upgrade`` (the default) a new database gets the schema and a store made by an
        older prefloop is migrated to this version's schema. A store made by a newer prefloop
        raises :class:`StoreVersionError`.
        """
        resolved = database_url(url)
        store = cls(url=resolved, engine=make_engine(resolved))
        try:
            current = store.revision()
        except OperationalError as exc:
            store.close()
            shown = make_url(resolved).render_as_string(hide_password=True)
            raise InvalidInputError(
                f"cannot open the database at {shown}: {exc.orig}. Check the URL, that the "
                "folder of a SQLite file exists, and that a PostgreSQL server is running"
            ) from None
        head = head_revision()
        if current != head:
            script = ScriptDirectory.from_config(_alembic_config(resolved))
            known = {rev.revision for rev in script.walk_revisions()}
            if current is not None and current not in known:
                store.close()
                raise StoreVersionError(
                    f"the database at {resolved!r} is at schema revision {current!r}, which this "
                    "prefloop does not know: it was made by a newer prefloop. Upgrade prefloop "
                    "(pip install -U prefloop) or point PREFLOOP_DATABASE_URL elsewhere."
                )
            if upgrade:
                store.upgrade()
            else:
                store.close()
                raise StoreVersionError(
                    f"the database at {resolved!r} is at revision {current!r}, not {head!r}; "
                    "run `prefloop init` to create or upgrade it"
                )
        return store

    def revision(self) -> str | None:
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def upgrade(self, revision: str = "head") -> None:
        cfg = _alembic_config(self.url)
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Session]:
        """A session in one transaction: committed when the block ends, rolled back on error.

        ``readonly=True`` is for work that only reads: on SQLite it does not take the write lock
        (writers take it at BEGIN so that concurrent writers queue instead of failing).
        """
        factory = self._read_sessions if readonly else self._sessions
        with factory() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
