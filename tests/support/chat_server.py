"""A real chat-completions server on 127.0.0.1 for tests (the OpenAI protocol, no network).

It stands in for what is outside the machine (OpenAI, vLLM, Ollama, llama.cpp servers): a
stdlib HTTP server in a thread, on a random free port, answering

* ``POST /v1/chat/completions`` — an OpenAI chat completion with ``usage`` (tokens counted as
  whitespace-separated words), honouring ``stop`` and ``max_tokens`` (in those words);
* ``GET /v1/models`` — one model, :attr:`ChatServer.model`.

What a chat request gets is decided, in this order, by

1. the script: a queue of behaviours, one taken per chat request (:meth:`ChatServer.script`,
   :meth:`reply_next`, :meth:`fail_next`, :meth:`stall_next`, :meth:`garbage_next`);
2. otherwise the responder, a callable ``messages -> behaviour`` (default: :func:`echo`,
   which answers ``"echo: <last user message>"``).

A behaviour is a ``str`` (the reply text) or one of :class:`Reply`, :class:`Fail` (an HTTP error
status, e.g. 429/500/503/400, optionally with ``Retry-After``), :class:`Stall` (wait, then
answer normally — longer than the client's timeout makes it time out), :class:`Garbage` (a 200
whose body is not a completion: ``not-json``, ``no-choices``, ``empty-choices``,
``no-message``). Every request is recorded in :attr:`ChatServer.requests`; a responder that
raises gets the request a 500 and its exception lands in :attr:`ChatServer.responder_errors`.

Usage::

    from tests.support.chat_server import ChatServer, Fail

    with ChatServer.start(responder=lambda messages: "a diary entry") as server:
        backend = OpenAIChatBackend(base_url=server.url, api_key="test", model=server.model)
        server.fail_next(503, times=2)          # two 503s, then the responder answers
        backend.complete(...)
        assert len(server.chat_requests) == 3

In pytest, take the ``chat_server`` fixture (import it into a conftest.py:
``from tests.support.chat_server import chat_server  # noqa: F401``); it yields a running
server with the echo responder and closes it after the test.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import pytest

__all__ = [
    "Behaviour",
    "ChatServer",
    "Fail",
    "Garbage",
    "RecordedRequest",
    "Reply",
    "Responder",
    "Stall",
    "chat_server",
    "echo",
]


@dataclass(frozen=True)
class Reply:
    """A normal completion. Token counts default to whitespace word counts."""

    text: str
    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class Fail:
    """An HTTP error answer with an OpenAI-style error body."""

    status: int
    message: str = "scripted failure"
    retry_after: float | None = None


@dataclass(frozen=True)
class Stall:
    """Wait ``seconds`` (or until the server closes), then answer ``then`` (default: respond)."""

    seconds: float
    then: str | Reply | None = None


@dataclass(frozen=True)
class Garbage:
    """A 200 answer that is not a valid chat completion."""

    kind: Literal["not-json", "no-choices", "empty-choices", "no-message"] = "not-json"


Behaviour = str | Reply | Fail | Stall | Garbage
Responder = Callable[[list[dict[str, Any]]], Behaviour]


def echo(messages: list[dict[str, Any]]) -> str:
    """The default responder: ``"echo: "`` and the last user message."""
    users = [m.get("content", "") for m in messages if m.get("role") == "user"]
    return f"echo: {users[-1] if users else ''}"


@dataclass
class RecordedRequest:
    """One request the server saw (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    time: float = field(default_factory=time.monotonic)

    @property
    def messages(self) -> list[dict[str, Any]]:
        if isinstance(self.body, dict):
            return list(self.body.get("messages") or [])
        return []


class ChatServer:
    """A running chat-completions server; make one with :meth:`start` (a context manager)."""

    def __init__(self, *, responder: Responder = echo, model: str = "test-chat-model") -> None:
        self.responder = responder
        self.model = model
        self.requests: list[RecordedRequest] = []
        self.responder_errors: list[BaseException] = []
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def start(cls, *, responder: Responder = echo, model: str = "test-chat-model") -> ChatServer:
        server = cls(responder=responder, model=model)
        server._serve()
        return server

    # -- what tests call -------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The base URL an OpenAI client takes (``http://127.0.0.1:PORT/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def port(self) -> int:
        assert self._httpd is not None, "the server is not running"
        return int(self._httpd.server_address[1])

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours; each chat request takes the next one before the responder."""
        with self._lock:
            self._script.extend(behaviours)

    def reply_next(self, *texts: str) -> None:
        self.script(*texts)

    def fail_next(self, status: int, times: int = 1, *, retry_after: float | None = None) -> None:
        self.script(*[Fail(status, retry_after=retry_after) for _ in range(times)])

    def stall_next(self, seconds: float, times: int = 1) -> None:
        self.script(*[Stall(seconds) for _ in range(times)])

    def garbage_next(
        self,
        kind: Literal["not-json", "no-choices", "empty-choices", "no-message"] = "not-json",
        times: int = 1,
    ) -> None:
        self.script(*[Garbage(kind) for _ in range(times)])

    def pending(self) -> int:
        """How many scripted behaviours are still queued."""
        with self._lock:
            return len(self._script)

    def close(self) -> None:
        self._closing.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> ChatServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the server ------------------------------------------------------------------------
    def _serve(self) -> None:
        handler = _make_handler(self)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _next_behaviour(self, messages: list[dict[str, Any]]) -> Behaviour:
        with self._lock:
            if self._script:
                return self._script.popleft()
        return self.responder(messages)


def _words(text: str) -> int:
    return len(text.split())


def _completion_body(server: ChatServer, request: dict[str, Any], reply: Reply) -> dict[str, Any]:
    text, finish = reply.text, reply.finish_reason
    stops = request.get("stop") or []
    for stop in [stops] if isinstance(stops, str) else stops:
        if stop and stop in text:
            text, finish = text[: text.index(stop)], "stop"
    max_tokens = request.get("max_tokens") or request.get("max_completion_tokens")
    if isinstance(max_tokens, int) and _words(text) > max_tokens:
        text, finish = " ".join(text.split()[:max_tokens]), "length"
    prompt_words = sum(_words(str(m.get("content", ""))) for m in request.get("messages") or [])
    prompt_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else prompt_words
    completion_tokens = (
        reply.completion_tokens if reply.completion_tokens is not None else _words(text)
    )
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model") or server.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _make_handler(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # silence the access log
            return

        def _send(
            self,
            status: int,
            body: bytes,
            content_type: str = "application/json",
            headers: dict[str, str] | None = None,
        ) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                self.close_connection = True

        def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(obj).encode(), headers=headers)

        def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
            kind = "rate_limit_exceeded" if status == 429 else "scripted_error"
            self._send_json(
                status,
                {"error": {"message": message, "type": kind, "param": None, "code": None}},
                headers,
            )

        def _headers(self) -> dict[str, str]:
            return {key.lower(): value for key, value in self.headers.items()}

        def do_GET(self) -> None:
            server._record(RecordedRequest("GET", self.path, self._headers(), None))
            if self.path.rstrip("/").endswith("/models"):
                self._send_json(
                    200,
                    {
                        "object": "list",
                        "data": [
                            {"id": server.model, "object": "model", "created": 0, "owned_by": "t"}
                        ],
                    },
                )
            else:
                self._error(404, f"no route GET {self.path}")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                body = None
            server._record(RecordedRequest("POST", self.path, self._headers(), body))
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._error(404, f"no route POST {self.path}")
                return
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                self._error(400, "the body must be JSON with a 'messages' list")
                return
            try:
                behaviour = server._next_behaviour(body["messages"])
            except Exception as exc:  # a bug in a test's responder: answer 500, keep it
                server.responder_errors.append(exc)
                self._error(500, f"the test responder raised {exc!r}")
                return
            self._answer(body, behaviour)

        def _answer(self, request: dict[str, Any], behaviour: Behaviour) -> None:
            if isinstance(behaviour, str):
                behaviour = Reply(behaviour)
            if isinstance(behaviour, Stall):
                server._closing.wait(behaviour.seconds)
                then = behaviour.then
                self._answer(
                    request, then if then is not None else server.responder(request["messages"])
                )
            elif isinstance(behaviour, Fail):
                headers = {}
                if behaviour.retry_after is not None:
                    headers["Retry-After"] = f"{behaviour.retry_after:g}"
                self._error(behaviour.status, behaviour.message, headers)
            elif isinstance(behaviour, Garbage):
                self._garbage(request, behaviour)
            else:
                self._send_json(200, _completion_body(server, request, behaviour))

        def _garbage(self, request: dict[str, Any], garbage: Garbage) -> None:
            if garbage.kind == "not-json":
                self._send(200, b"<html>502 Bad Gateway</html>", content_type="text/html")
                return
            body = _completion_body(server, request, Reply("unused"))
            if garbage.kind == "no-choices":
                del body["choices"]
            elif garbage.kind == "empty-choices":
                body["choices"] = []
            else:  # no-message
                del body["choices"][0]["message"]
            self._send_json(200, body)

    return Handler


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    """A running :class:`ChatServer` with the echo responder, closed after the test."""
    with ChatServer.start() as server:
        yield server
