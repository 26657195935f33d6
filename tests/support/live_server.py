"""``prefloop serve`` as a user runs it: a subprocess on a free TCP port, for the tests that
talk to a live service from outside (the API fuzzer, the docs' shell blocks)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["LiveServer", "free_port", "live_server"]

PREFLOOP = str(Path(sys.executable).with_name("prefloop"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class LiveServer:
    url: str
    """The base URL, e.g. ``http://127.0.0.1:8123``."""
    port: int
    admin_key: str
    log: Path


@contextmanager
def live_server(
    database_url: str,
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    admin_key: str = "test-admin-key-0123456789",
    port: int | None = None,
) -> Iterator[LiveServer]:
    """Start ``prefloop serve`` on ``database_url`` (PREFLOOP_ADMIN_KEY ``admin_key``; ``env``
    adds PREFLOOP_* settings), wait until /healthz answers, and stop it afterwards."""
    port = port or free_port()
    environment = {
        **os.environ,
        "PREFLOOP_ADMIN_KEY": admin_key,
        "PREFLOOP_DATABASE_URL": database_url,
        **(env or {}),
    }
    with log.open("w") as sink:
        process = subprocess.Popen(
            [PREFLOOP, "serve", "--port", str(port), "--no-access-log"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"prefloop serve exited early:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prefloop serve did not answer in 60 s:\n{log.read_text()}")
            time.sleep(0.1)
        yield LiveServer(url=url, port=port, admin_key=admin_key, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
