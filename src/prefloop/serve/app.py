"""The FastAPI application: :func:`create_app` wires settings, store, auth, metrics and routes."""

from __future__ import annotations

import asyncio
import gc
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from prefloop.bandit.online import PolicyCache
from prefloop.errors import ConflictError, InvalidInputError, NotFoundError, PrefloopError
from prefloop.feedback.events import CONFLICTING_FIELDS
from prefloop.llm import ModelArms
from prefloop.llm.base import ChatBackend
from prefloop.serve.auth import Authenticator, count_active_keys
from prefloop.serve.batching import WriteBatcher
from prefloop.serve.catalog import Catalog
from prefloop.serve.hotpath import Fallback, HotPath, no_wait
from prefloop.serve.metrics import Metrics
from prefloop.serve.middleware import BodyLimitMiddleware, MetricsMiddleware
from prefloop.serve.schemas import PATH_NAME_PATTERN
from prefloop.serve.settings import ServeSettings
from prefloop.store import Store
from prefloop.store.text import NAME_PATTERN, NO_NUL_PATTERN

log = logging.getLogger("prefloop.serve")
T = TypeVar("T")

POSTGRES_WRITE_THREADS = 4
"""Default ``write_threads`` on PostgreSQL: more requests per second for less CPU than
FastAPI's 40 threads (docs/experiments/service-performance.md)."""

_RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock (PostgreSQL)


class Busy(Exception):
    """:meth:`ServiceContext.hot_now` could not run without waiting (nothing was committed);
    ``thread`` when only another thread of this process was writing."""

    def __init__(self, reason: str, *, thread: bool = False) -> None:
        super().__init__(reason)
        self.thread = thread


class ServeConfigError(PrefloopError):
    """The server cannot start as configured (e.g. no API key and no --insecure-no-auth)."""


@dataclass
class ServiceContext:
    """What the routes share: one per app, kept on ``app.state.prefloop``."""

    settings: ServeSettings
    store: Store
    metrics: Metrics
    authenticator: Authenticator
    backend_factory: Callable[[], ChatBackend]
    catalog: Catalog
    policies: PolicyCache
    model_arms: ModelArms = field(default_factory=ModelArms)
    """The model arms /v1/generate serves on this machine (each model loads once)."""
    web: Any = field(default=None, repr=False)
    """The web app's state (:mod:`prefloop.serve.web`), set when it is installed."""
    _backend: ChatBackend | None = field(default=None, repr=False)
    _backend_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _write_lock: threading.Lock | None = field(default=None, repr=False)
    _write_pool: ThreadPoolExecutor | None = field(default=None, repr=False)
    hot: HotPath = field(init=False, repr=False)
    writes_on_loop: bool = field(init=False)
    batcher: WriteBatcher | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.hot = HotPath(self.store.engine, lambda: self.store.session(readonly=True))
        # SQLite runs one write transaction at a time (BEGIN IMMEDIATE). Left to SQLite, the
        # waiting threads poll with growing sleeps (its busy handler), so the lock sits idle
        # while they sleep and latency piles up; queueing them here hands it over at once.
        # Other processes (more workers, the CLI) still meet SQLite's busy timeout.
        if self.store.dialect == "sqlite":
            self._write_lock = threading.Lock()
        on_loop = self.settings.writes_on_loop
        self.writes_on_loop = self.store.dialect == "sqlite" if on_loop is None else on_loop
        """Whether :meth:`hot_now` runs transactions (``PREFLOOP_WRITES_ON_LOOP``)."""
        if self.settings.batch_writes:
            self.batcher = WriteBatcher(
                self.hot,
                lambda run: self.hot_transaction(run, None),
                max_jobs=self.settings.batch_max,
                on_batch=self.metrics.count_batch,
            )
        else:
            self.batcher = None
        """Group commit of the fast lane's transactions (``PREFLOOP_BATCH_WRITES``)."""

    def backend(self) -> ChatBackend:
        """The LLM backend of /v1/generate, made on first use (a local model loads slowly)."""
        with self._backend_lock:
            if self._backend is None:
                try:
                    self._backend = self.backend_factory()
                except InvalidInputError as exc:  # e.g. PREFLOOP_LLM_API_KEY is not set
                    raise ServeConfigError(
                        f"the LLM backend of /v1/generate is not configured: {exc}; or use "
                        "/v1/select and call your own LLM"
                    ) from exc
            return self._backend

    def transaction(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one transaction; retry it after a lost race (nothing half-kept).

        A concurrent insert of the same unique value (two requests with one idempotency key),
        a PostgreSQL serialization failure or a connection found dead (the database restarted)
        rolls the whole attempt back and runs it again, at most ``transaction_retries`` times;
        the retry then sees the winner's row, or gets a new connection.
        """
        attempts = self.settings.transaction_retries + 1
        for attempt in range(attempts):
            try:
                with self._writing(), self.store.session() as session:
                    return work(session)
            except (IntegrityError, OperationalError) as exc:
                if attempt + 1 == attempts or not _retryable(exc):
                    raise
                log.info("retrying a transaction after %s", type(exc.orig).__name__)
        raise AssertionError("unreachable")

    def start_writing(self) -> None:
        """Make the pool of write threads :meth:`write` and :meth:`hot_write` run on."""
        if self._write_pool is not None:
            return
        threads = self.settings.write_threads
        if threads is None:
            threads = POSTGRES_WRITE_THREADS if self.store.dialect == "postgresql" else 40
        self._write_pool = ThreadPoolExecutor(threads, thread_name_prefix="prefloop-write")

    def stop_writing(self) -> None:
        """Wait for the write threads' transactions, then end the threads."""
        pool, self._write_pool = self._write_pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        if self.batcher is not None:
            self.batcher.close()

    async def _in_write_thread(self, function: Callable[..., T], *args: Any) -> T:
        if self._write_pool is None:
            self.start_writing()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._write_pool, function, *args)

    async def write(self, work: Callable[[Session], T]) -> T:
        """:meth:`transaction` in a worker thread, as FastAPI runs a ``def`` route, but with at
        most ``write_threads`` of them at once (40, FastAPI's pool size, on SQLite by default).

        The loop's routes all write, and on PostgreSQL every decision and reward locks the
        policy's state row, so their transactions queue anyway: forty threads waiting on one
        another there cost CPU (each round trip gives up the GIL and competes to get it back)
        for nothing. Other routes (e.g. /v1/generate, which waits for an LLM) keep FastAPI's
        pool, so they cannot hold these up. A plain executor, not anyio's ``to_thread``: the
        hop costs about half the CPU (measured in the service benchmark's profile).
        """
        return await self._in_write_thread(self.transaction, work)

    def hot_transaction(self, raw: Callable[[], T], work: Callable[[Session], T] | None) -> T:
        """``raw`` (a :class:`~prefloop.serve.hotpath.HotPath` transaction) with the retry
        rules of :meth:`transaction`; when it declines (:class:`Fallback`, nothing committed)
        ``work`` runs on the ORM path instead, or the :class:`Fallback` propagates when there
        is no ``work``."""
        attempts = self.settings.transaction_retries + 1
        for attempt in range(attempts):
            try:
                with self._writing():
                    return raw()
            except Fallback:
                if work is None:
                    raise
                break
            except (IntegrityError, OperationalError) as exc:
                if attempt + 1 == attempts or not _retryable(exc):
                    raise
                log.info("retrying a transaction after %s", type(exc.orig).__name__)
        assert work is not None
        return self.transaction(work)

    def hot_now(self, raw: Callable[[], T]) -> T:
        """``raw`` at once on the calling thread, the event loop, when nothing makes it wait.

        The hot path's transactions are short: a fraction of a millisecond on SQLite, two or
        three pipelined round trips on PostgreSQL. Running them on the loop costs less CPU than
        handing them to threads, whose fight over the GIL cost about a millisecond per request
        under load (service benchmark); on PostgreSQL the loop then idles during the round
        trips, so by default only SQLite runs here (``PREFLOOP_WRITES_ON_LOOP``). They run on a
        connection of their own that does not wait for locks: SQLite's busy timeout is 0,
        PostgreSQL's ``lock_timeout`` 2 ms, and on SQLite no other thread of this process may
        be writing. :class:`Busy` when any of that fails: nothing was committed, and the
        caller runs it in a write thread (:meth:`hot_write`), or waits for this process's
        thread to finish."""
        if not self.writes_on_loop:
            raise Busy("switched off")
        lock = self._write_lock
        if lock is not None and not lock.acquire(blocking=False):
            raise Busy("another thread is writing", thread=True)
        try:
            with no_wait():
                return raw()
        except (IntegrityError, OperationalError) as exc:  # locked, or a lost race: retry there
            raise Busy(str(exc)) from exc
        finally:
            if lock is not None:
                lock.release()

    async def hot_write(self, raw: Callable[[], T], work: Callable[[Session], T] | None) -> T:
        """:meth:`hot_transaction` in a write thread (see :meth:`write`)."""
        return await self._in_write_thread(self.hot_transaction, raw, work)

    def changing_catalog(self, work: Callable[[Session], T]) -> T:
        """:meth:`transaction` for work that changes tasks or arms: the catalog cache is
        cleared after it commits (and after a failure, which may have changed nothing)."""
        try:
            return self.transaction(work)
        finally:
            self.catalog.invalidate()

    def _writing(self) -> AbstractContextManager[object]:
        return self._write_lock if self._write_lock is not None else nullcontext()

    def read(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in a read-only transaction (again once on a connection found dead)."""
        try:
            with self.store.session(readonly=True) as session:
                return work(session)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        with self.store.session(readonly=True) as session:
            return work(session)


def _retryable(exc: IntegrityError | OperationalError) -> bool:
    if isinstance(exc, IntegrityError) or exc.connection_invalidated:  # a dead pooled connection
        return True
    return getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def _backend_factory(kind: str) -> Callable[[], ChatBackend]:
    """The backend of ``PREFLOOP_LLM_BACKEND`` configured by ``PREFLOOP_LLM_*``."""
    from prefloop.llm import make_backend

    return lambda: make_backend(kind)


def _check_auth_configured(settings: ServeSettings, store: Store) -> None:
    if settings.insecure_no_auth:
        log.warning(
            "AUTHENTICATION IS OFF (--insecure-no-auth): every request is treated as admin. "
            "Use this only on a machine no one else can reach."
        )
        return
    if settings.admin_key is not None:
        return
    with store.session(readonly=True) as session:
        if count_active_keys(session) > 0:
            return
    raise ServeConfigError(
        "no API key is configured: create one with `prefloop keys create --role admin --name "
        "me`, or set PREFLOOP_ADMIN_KEY; for local development only, pass --insecure-no-auth "
        "(PREFLOOP_INSECURE_NO_AUTH=1)"
    )


RETRY_AFTER_S = {"unavailable": 1, "read_only": 30, "disk_full": 30}
"""The ``Retry-After`` of each kind of database outage (seconds)."""
_OUTAGE_SQLSTATES = {
    "25006": "read_only",  # read_only_sql_transaction
    "53100": "disk_full",
    "53000": "disk_full",  # insufficient_resources
    "57P01": "unavailable",  # admin_shutdown: the server is restarting
    "57P02": "unavailable",  # crash_shutdown
    "57P03": "unavailable",  # cannot_connect_now: starting up or shutting down
}
_OUTAGE_DETAIL = {
    "unavailable": "the database does not answer (restarting?): send the request again "
    "shortly; send feedback with the same Idempotency-Key, so that it is stored once even if "
    "this attempt reached the database before the connection broke",
    "read_only": "the database is read-only: writes are refused until it is writable again "
    "(reads still work); nothing of this request was stored",
    "disk_full": "the database's disk is full: writes are refused until space is freed (reads "
    "still work); nothing of this request was stored",
}


def _driver_errors() -> tuple[type[Exception], ...]:
    errors: list[type[Exception]] = [sqlite3.Error]
    try:
        import psycopg
    except ImportError:  # the postgres extra is not installed
        pass
    else:
        errors.append(psycopg.Error)
    return tuple(errors)


_DRIVER_ERRORS = _driver_errors()


def database_outage(exc: BaseException) -> str | None:
    """The kind of outage a database error means (``unavailable``, ``read_only``,
    ``disk_full``), or None for an error of the request itself (a bug: a 500)."""
    orig: BaseException | None
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        invalidated = exc.connection_invalidated
    elif isinstance(exc, _DRIVER_ERRORS):  # raised before SQLAlchemy could wrap it (connect)
        orig, invalidated = exc, False
    else:
        return None
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in _OUTAGE_SQLSTATES:
        return _OUTAGE_SQLSTATES[sqlstate]
    message = str(orig).lower()
    if "readonly database" in message or "read-only" in message:
        return "read_only"
    if "disk is full" in message or "no space left" in message:
        return "disk_full"
    if invalidated or (sqlstate or "").startswith("08"):
        return "unavailable"
    if type(orig).__name__ == "OperationalError" and (
        "connection" in message or "server closed" in message or "terminating" in message
    ):
        return "unavailable"
    return None


def outage_answer(kind: str) -> JSONResponse:
    """503 with ``Retry-After`` for a database outage of ``kind``."""
    response = _error(503, kind, _OUTAGE_DETAIL[kind])
    response.headers["Retry-After"] = str(RETRY_AFTER_S[kind])
    return response


def _error(status: int, kind: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": kind, "detail": detail, **extra})


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotFoundError)
    async def not_found(_request: Request, exc: NotFoundError) -> JSONResponse:
        return _error(404, "not_found", str(exc))

    @app.exception_handler(InvalidInputError)
    async def invalid(_request: Request, exc: InvalidInputError) -> JSONResponse:
        # the request passed the schema (a 422 says it did not), so what it asks contradicts
        # what the store holds (the task's input fields or scale, a pending generation) or
        # another part of the request: a conflict, named by the message
        return _error(409, "conflict", str(exc))

    @app.exception_handler(ConflictError)
    async def conflict(_request: Request, exc: ConflictError) -> JSONResponse:
        return _error(409, "conflict", str(exc))

    async def database_error(_request: Request, exc: Exception) -> Response:
        kind = database_outage(exc)
        if kind is None:
            raise exc  # a bug: the server's 500, logged with its traceback
        log.warning("database outage (%s): %s", kind, exc)
        return outage_answer(kind)

    errors: tuple[type[Exception], ...] = (DBAPIError, *_DRIVER_ERRORS)
    for error in errors:
        app.add_exception_handler(error, database_error)

    @app.exception_handler(ServeConfigError)
    async def not_configured(_request: Request, exc: ServeConfigError) -> JSONResponse:
        return _error(503, "not_configured", str(exc))

    @app.exception_handler(RequestValidationError)
    async def malformed(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": [str(part) for part in err.get("loc", ())],
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
            for err in exc.errors()
        ]
        if errors and all(e["type"] == CONFLICTING_FIELDS for e in errors):
            # a rule between two fields that the schema cannot state: valid by the schema
            return _error(409, "conflict", _explain(errors), errors=errors)
        return _error(422, "invalid", _explain(errors), errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {400: "malformed", 401: "unauthorized", 403: "forbidden", 404: "not_found"}
        detail = str(exc.detail)
        if exc.status_code == 400 and detail == "There was an error parsing the body":
            detail = (
                "the body is not JSON (or not UTF-8 text): send one JSON object with "
                "'Content-Type: application/json'"
            )
        response = _error(exc.status_code, kinds.get(exc.status_code, "http"), detail)
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        if exc.status_code == 405:
            allowed = _allowed_methods(request)
            response = _error(
                405, "method", f"{request.method} is not allowed here; use {', '.join(allowed)}"
            )
            response.headers["Allow"] = ", ".join(allowed)
        return response


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers at the request's path (Starlette's 405
    names only the first route that matched the path)."""
    methods: set[str] = set()
    for route in _leaf_routes(request.app.router.routes):
        match, _scope = route.matches(request.scope)
        if match != Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


def _leaf_routes(routes: list[Any]) -> Iterator[Any]:
    for route in routes:
        included = getattr(route, "original_router", None)  # an included router (FastAPI)
        if included is not None:
            yield from _leaf_routes(included.routes)
        else:
            yield route


_PATTERNS = {
    NO_NUL_PATTERN: "text may not contain the NUL character (\\u0000): the store cannot hold it",
    PATH_NAME_PATTERN: "a task's or arm's name is part of URLs: no slash (/), no NUL "
    "character (\\u0000), and not only white space",
    NAME_PATTERN: "a name needs a character that is not white space, and no NUL character "
    "(\\u0000)",
}


def _explain(errors: list[dict[str, Any]]) -> str:
    """One line for a 422: each wrong field and why. Where a union (e.g. a JSON value) was
    tried member by member, only the members' real complaints are told, and a NUL character
    (which the store cannot hold) is named as such."""
    told = [e for e in errors if e["type"] == "string_pattern_mismatch"] or errors
    lines: list[str] = []
    for error in told:
        message = error["msg"]
        if error["type"] == "string_pattern_mismatch":
            message = _PATTERNS.get(message.split("'", 1)[-1].rstrip("'"), message)
        line = f"{'.'.join(error['loc'])}: {message}"
        if line not in lines:
            lines.append(line)
    return "; ".join(lines) or "the request is malformed"


def create_app(
    settings: ServeSettings | None = None,
    *,
    store: Store | None = None,
    backend: ChatBackend | Callable[[], ChatBackend] | None = None,
) -> FastAPI:
    """The prefloop web service.

    ``settings`` default to the environment (``PREFLOOP_*``). ``store`` defaults to opening
    ``settings.database_url`` (and is closed with the app); ``backend`` (a backend or a
    factory) defaults to the OpenAI-compatible backend configured by ``PREFLOOP_LLM_*``.
    Raises :class:`ServeConfigError` when no API key is configured and auth is not switched off.
    """
    from prefloop.serve.routes import document_security, router

    settings = settings or ServeSettings()
    owns_store = store is None
    opened = store or Store.open(settings.database_url)
    try:
        _check_auth_configured(settings, opened)
    except Exception:
        if owns_store:
            opened.close()
        raise
    if backend is None:
        backend_factory = _backend_factory(settings.llm_backend)
    elif isinstance(backend, ChatBackend):
        fixed = backend
        backend_factory = lambda: fixed  # noqa: E731
    else:
        backend_factory = backend
    admin_key = settings.admin_key.get_secret_value() if settings.admin_key else None
    metrics = Metrics()
    context = ServiceContext(
        settings=settings,
        store=opened,
        metrics=metrics,
        authenticator=Authenticator(
            opened, admin_key=admin_key, cache_seconds=settings.key_cache_seconds
        ),
        backend_factory=backend_factory,
        catalog=Catalog(ttl=settings.catalog_cache_seconds),
        policies=PolicyCache(refresh=settings.propensity_refresh),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        context.start_writing()
        if settings.gc_freeze:
            # the ~120,000 objects of the imports and the app never become garbage, yet every
            # full collection walked them (~60 ms, a pause every request waiting then sees)
            gc.collect()
            gc.freeze()
        yield
        if settings.gc_freeze:
            gc.unfreeze()
        context.stop_writing()
        context.hot.close()
        if owns_store:
            opened.close()

    off = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(
        telemetry=None if settings.opentelemetry else off,  # type: ignore[arg-type]
        title="prefloop",
        summary="Serve prompts as bandit arms, collect human feedback, see which arm wins.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.prefloop = context
    _install_error_handlers(app)
    app.include_router(router)
    document_security(app)
    from prefloop.serve.web import install_web_app

    install_web_app(app, context)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if settings.fast_lane:
        from prefloop.serve.fastlane import FastLane

        app.add_middleware(FastLane, context=context)  # outermost: before the others
    return app


def app_from_env() -> FastAPI:
    """The factory ``prefloop serve`` hands uvicorn (``--factory``): settings from the env."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    return create_app(ServeSettings())
