"""The loop's three hot routes answered in front of FastAPI, as plain ASGI.

``POST /v1/select``, ``POST /v1/generations/{id}/output`` and ``POST /v1/feedback`` are nearly
all of a busy service's requests. Their database work on the raw hot path
(:mod:`prefloop.serve.hotpath`) costs less CPU than FastAPI's handling of the request around it
(routing, dependency solving, body and response handling: most of the event loop's time in a
profile of ``bench/bench_service.py``, docs/experiments/service-performance.md).
:class:`FastLane` answers the common case itself: a JSON body that validates against the
route's schema, a key already known to the server with the right role, and a request the hot
path handles. It runs the same code as the routes
(:func:`~prefloop.serve.routes.select_job`, :func:`~prefloop.serve.routes.output_job`,
:func:`~prefloop.serve.routes.feedback_job`) under the same retry rules; their transactions
are batched (group commit, :mod:`prefloop.serve.batching`; ``PREFLOOP_BATCH_WRITES``).

Everything else goes to the FastAPI app unchanged, with the body it read replayed: a key to
look up or refuse, a malformed body, a bad value to explain (404, 409, 422), a repeated
idempotency key to replay, a seeded decision, a body over the limit. The lane commits nothing
before handing a request over (the hot path declines with :class:`Fallback` or an input error
before its transaction commits), so the app answers exactly as it would without the lane. The
routes stay in the app and in its OpenAPI document.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

from pydantic import BaseModel

from prefloop.errors import PrefloopError
from prefloop.serve.app import Busy, ServiceContext, database_outage, outage_answer
from prefloop.serve.auth import Permission, Principal
from prefloop.serve.hotpath import Fallback, Job, conflict_keys
from prefloop.serve.middleware import ASGIApp, Message, Receive, Scope, Send, replay
from prefloop.serve.schemas import FeedbackRequest, GenerationOutput, SelectRequest

__all__ = ["FastLane"]

_M = TypeVar("_M", bound=BaseModel)

_OUTPUT_PREFIX, _OUTPUT_SUFFIX = "/v1/generations/", "/output"
OUTPUT_ROUTE = "/v1/generations/{generation_id}/output"
_JSON_HEADERS = [(b"content-type", b"application/json")]
_HEADERS = {  # the request headers the lane reads
    b"content-length": "content-length",
    b"content-type": "content-type",
    b"authorization": "authorization",
    b"x-api-key": "x-api-key",
    b"idempotency-key": "idempotency-key",
}
_DECLINED = (Fallback, PrefloopError, ValueError)  # ValueError: bad JSON, ValidationError
_FIRST_PAUSE_S, _LAST_PAUSE_S = 0.0001, 0.005
"""While a thread of this process writes (a request FastAPI answers), the lane waits on the
loop, pausing 0.1 ms, then twice as long each time up to 5 ms, and never queues behind it in a
thread. Requests sent to threads kept the lock busy for the next ones under load, and the
service then stayed in a threaded regime with three times the CPU per request."""


class _Decline(Exception):
    """The lane does not answer this request; the FastAPI app does. ``reason`` is a short
    code (a metric label: a bounded set), ``detail`` says more (statistics)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason, self.detail = reason, detail


class FastLane:
    """ASGI middleware: answer the common hot-route requests, hand the rest to ``app``."""

    def __init__(self, app: ASGIApp, *, context: ServiceContext) -> None:
        self.app = app
        self.context = context
        self.answered = 0
        """Requests the lane answered itself."""
        self.declined: Counter[str] = Counter()
        """Requests handed to the app, by reason (statistics)."""
        self.busy: Counter[str] = Counter()
        """SQLite transactions that could not run on the loop at once: another thread of this
        process was writing, or another connection held the database (statistics)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        handler: Callable[[dict[str, str], bytes], Awaitable[tuple[int, bytes]]]
        if path == "/v1/select":
            handler, route = self._select, "/v1/select"
        elif path == "/v1/feedback":
            handler, route = self._feedback, "/v1/feedback"
        elif (
            path.startswith(_OUTPUT_PREFIX)
            and path.endswith(_OUTPUT_SUFFIX)
            and "/" not in path[len(_OUTPUT_PREFIX) : -len(_OUTPUT_SUFFIX)]
            and len(path) > len(_OUTPUT_PREFIX) + len(_OUTPUT_SUFFIX)
        ):
            generation_id = path[len(_OUTPUT_PREFIX) : -len(_OUTPUT_SUFFIX)]

            async def handler(headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
                return await self._output(generation_id, headers, body)

            route = OUTPUT_ROUTE
        else:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if not headers.get("content-type", "").startswith("application/json"):
            await self.app(scope, receive, send)
            return
        try:
            declared = int(headers["content-length"])
        except (KeyError, ValueError):  # chunked or odd: the app's body limit reads it
            declared = -1
        if not 0 <= declared <= self.context.settings.max_body_bytes:
            await self.app(scope, receive, send)
            return
        read = await _read_body(receive)
        if read is None:  # the client went away: no one to answer
            return
        body: list[Message] = [{"type": "http.request", "body": read, "more_body": False}]
        if len(read) != declared:
            await self.app(scope, replay(body, receive), send)
            return
        started = time.perf_counter()
        try:
            status, payload = await handler(headers, read)
        except _Decline as declined:
            self.declined[declined.detail] += 1
            self.context.metrics.count_fast_lane(route, "handed_over", declined.reason)
            await self.app(scope, replay(body, receive), send)
            return
        except Exception as exc:  # after the retries: an outage is a 503, anything else a 500
            kind = database_outage(exc)
            if kind is None:
                self._observe(route, 500, started)
                raise
            await outage_answer(kind)(scope, receive, send)
            self._observe(route, 503, started)
            return
        except BaseException:  # the server's 500
            self._observe(route, 500, started)
            raise
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        self.answered += 1
        self._observe(route, status, started)
        self.context.metrics.count_fast_lane(route, "answered")

    def _observe(self, route: str, status: int, started: float) -> None:
        self.context.metrics.observe_request("POST", route, status, time.perf_counter() - started)

    # -- the three routes ----------------------------------------------------------------------
    async def _select(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        from prefloop.serve.routes import select_job

        ctx = self.context
        await self._principal(headers, Permission.SELECT)
        request = _parse(SelectRequest, body)
        if request.seed is not None:
            raise _Decline("seeded", "a seeded decision")
        response, arm = await self._write(lambda: select_job(ctx, request))
        ctx.metrics.count_decision(request.task, arm)
        return 200, response.model_dump_json().encode()

    async def _output(
        self, generation_id: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        from prefloop.serve.routes import output_job

        ctx = self.context
        await self._principal(headers, Permission.SELECT)
        request = _parse(GenerationOutput, body)
        answer = await self._write(
            lambda: output_job(ctx, generation_id, request), conflict_keys([generation_id], None)
        )
        return 200, answer.model_dump_json().encode()

    async def _feedback(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        from prefloop.serve.routes import IDEMPOTENCY_KEY_MAX_LENGTH, feedback_event, feedback_job

        ctx = self.context
        who = await self._principal(headers, Permission.FEEDBACK)
        key = headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH:
            # the route's Header() explains
            raise _Decline("idempotency_key", "an Idempotency-Key of a bad length")
        request = _parse(FeedbackRequest, body)
        try:
            event = feedback_event(request, who, key)
        except PrefloopError:
            raise _Decline("invalid_event", "an invalid event") from None
        keys = conflict_keys(_generations(event), event.idempotency_key)
        answer = await self._write(lambda: feedback_job(ctx, request.task, event), keys)
        ctx.metrics.count_feedback(request.task, event.kind, duplicate=answer.duplicate)
        return (200 if answer.duplicate else 201), answer.model_dump_json().encode()

    # -- helpers ---------------------------------------------------------------------------------
    async def _principal(self, headers: dict[str, str], permission: Permission) -> Principal:
        """The key's principal if it may do ``permission``, found as the routes' dependency
        finds it (:func:`~prefloop.serve.routes.principal_for`: a key not remembered, or no
        longer, is looked up in a thread), so the lane keeps answering when the remembered keys
        expire. A missing, unknown or forbidden key goes to the app, which explains."""
        from prefloop.serve.routes import presented_key, principal_for

        key = presented_key(headers.get("authorization"), headers.get("x-api-key"))
        principal = await principal_for(self.context, key)
        if principal is None or not principal.may(permission):
            raise _Decline("api_key", "a key to refuse")
        return principal

    async def _write(self, make: Callable[[], Job], keys: Collection[str] = ()) -> Any:
        """The job ``make`` builds, on the hot path: in the next group-commit batch where
        batching is on (the default, see :mod:`~prefloop.serve.batching`), else at once on the
        loop where that cannot wait (SQLite, see
        :meth:`~prefloop.serve.app.ServiceContext.hot_now`), else in a write thread. Declined
        when the hot path declines or refuses an input (nothing was committed: the app runs
        the request again and answers)."""
        hot = self.context.hot

        def raw() -> Any:
            return hot.run(make())

        try:
            if self.context.batcher is not None:
                return await self.context.batcher.submit(make, keys)
            if not self.context.writes_on_loop:
                return await self.context.hot_write(raw, None)
            pause = _FIRST_PAUSE_S
            while True:
                try:
                    return self.context.hot_now(raw)
                except Busy as busy:
                    self.busy["thread" if busy.thread else "database"] += 1
                    if not busy.thread:  # another process writes: wait for it in a thread
                        return await self.context.hot_write(raw, None)
                await asyncio.sleep(pause)  # a thread of the app's path: let it finish
                pause = min(2 * pause, _LAST_PAUSE_S)
        except _DECLINED as exc:
            raise _Decline(type(exc).__name__, f"{type(exc).__name__}: {exc}") from None


def _generations(event: Any) -> list[str | None]:
    """The generations a feedback event is about."""
    found = [getattr(event, name, None) for name in ("generation_id", "other_generation_id")]
    return found + list(getattr(event, "generation_ids", None) or [])


def _parse(model: type[_M], body: bytes) -> _M:
    """``body`` validated as FastAPI validates a JSON body (``json.loads``, then the model)."""
    try:
        return model.model_validate(json.loads(body))
    except ValueError:  # bad JSON or a ValidationError: the app's 422 explains
        raise _Decline("malformed_body", "a malformed body") from None


def _headers(scope: Scope) -> dict[str, str]:
    """The request headers the lane reads (the first of each, as Starlette's ``get``)."""
    found: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        wanted = _HEADERS.get(name.lower())
        if wanted is not None and wanted not in found:
            found[wanted] = value.decode("latin-1")
    return found


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None when the client went away first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
