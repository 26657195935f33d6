"""The labelers' web app and the live dashboard, served under ``/app`` by ``prefloop serve``.

Server-rendered pages (Jinja2, every value escaped) with a little JavaScript: htmx (vendored in
``static/``, with its license) submits forms and refreshes the dashboard, and ``app.js`` adds
the keyboard. A strict Content-Security-Policy allows scripts and styles from the app only.
See docs/app.md.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from prefloop.serve.app import ServiceContext
from prefloop.serve.web import queue
from prefloop.serve.web._dashboard import TtlCache
from prefloop.serve.web._routes import CSP, WebState, render_markdown, router, word_diff

__all__ = ["CSP", "install_web_app", "queue", "render_markdown", "word_diff"]

STATS_SECONDS = 10.0
"""Seconds after which arm statistics, verdicts and plots are recounted in the background (the
dashboard polls every 10 s; what a recount costs: docs/experiments/web-app-performance.md)."""


def install_web_app(app: FastAPI, context: ServiceContext) -> None:
    """Add the ``/app`` routes and their static files to ``app``."""
    context.web = WebState(stats=TtlCache(STATS_SECONDS), plots=TtlCache(STATS_SECONDS))
    app.include_router(router)
    static = Path(__file__).with_name("static")
    app.mount("/app/static", StaticFiles(directory=static), name="app-static")
