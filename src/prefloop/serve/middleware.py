"""Two pure-ASGI middlewares: a request body limit (413) and request metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prefloop.serve.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


_NOT_JSON = {
    "error": "unsupported_media_type",
    "detail": "the body must be JSON: send it with 'Content-Type: application/json' (with curl: "
    "-H 'Content-Type: application/json'; -d alone sends a form)",
}


def _is_json(content_type: bytes | None) -> bool:
    """Whether a request's Content-Type is JSON (``application/json``, ``…+json``) or absent
    (a body without a type is read as JSON)."""
    if content_type is None:
        return True
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


class BodyLimitMiddleware:
    """Answer 413 to a body over ``max_bytes`` before the app sees any of it, and 415 to an
    API body (``/v1/…``) that is not sent as JSON (the API reads JSON bodies only; a form, e.g.
    what ``curl -d`` sends, would otherwise meet a 422 that does not say what to change; the
    web app under ``/app`` posts forms).

    A declared ``Content-Length`` over the limit is refused at once; otherwise the body is read
    (at most ``max_bytes`` + one chunk) and replayed to the app, so a chunked upload cannot slip
    past the limit either.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, size: str) -> dict[str, str]:
        return {
            "error": "too_large",
            "detail": f"the request body ({size}) is over the limit of {self.max_bytes} bytes "
            "(PREFLOOP_MAX_BODY_BYTES); send less per request",
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        content_type: bytes | None = None
        for name, value in scope.get("headers", []):
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    await _send_json(send, 413, self._too_large(f"{declared} bytes"))
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _send_json(send, 413, self._too_large(f"more than {self.max_bytes} bytes"))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and scope["path"].startswith("/v1/") and not _is_json(content_type):
            # the API reads JSON only; the web app under /app posts forms
            await _send_json(send, 415, _NOT_JSON)
            return
        await self.app(
            scope,
            replay([{"type": "http.request", "body": body, "more_body": False}], receive),
            send,
        )


def replay(messages: list[Message], then: Receive) -> Receive:
    """A ``receive`` that gives ``messages`` first, then whatever ``then`` gives."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return await then()

    return receive


class MetricsMiddleware:
    """Count every answer by method, route template and status, and time it."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(
                scope["method"], template, status, time.perf_counter() - started
            )
