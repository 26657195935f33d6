"""The service's settings, read from the environment (prefix ``PREFLOOP_``).

No secret has a default: the admin key comes from ``PREFLOOP_ADMIN_KEY`` or not at all, and a
server with neither that nor a key in the store refuses to start unless it is told
``insecure_no_auth`` (local development only).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from prefloop.store.db import DEFAULT_DATABASE_URL


class ServeSettings(BaseSettings):
    """How ``prefloop serve`` runs. Every field is also ``PREFLOOP_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="PREFLOOP_", extra="ignore", frozen=True)

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="The store: sqlite:///FILE or postgresql+psycopg://user:pass@host/db.",
    )
    admin_key: SecretStr | None = Field(
        default=None,
        description="An admin API key accepted besides the keys in the store (no default).",
    )
    insecure_no_auth: bool = Field(
        default=False,
        description="Accept every request as admin without a key. Local development only.",
    )
    max_body_bytes: int = Field(
        default=64 * 1024,
        gt=0,
        description="Requests with a larger body are answered 413 before any work is done.",
    )
    llm_backend: Literal["openai", "local"] = Field(
        default="openai",
        description="The backend of /v1/generate: openai (any OpenAI-compatible server, "
        "configured by PREFLOOP_LLM_BASE_URL, PREFLOOP_LLM_API_KEY, PREFLOOP_LLM_MODEL) or "
        "local (a transformers model, PREFLOOP_LLM_LOCAL_MODEL; default SmolLM2-135M).",
    )
    default_policy: str = Field(
        default="default",
        min_length=1,
        description="The bandit policy used when a request names none.",
    )
    key_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a verified store key is remembered (a revoked key stops working "
        "after at most this long). 0 looks every key up on every request.",
    )
    metrics_require_key: bool = Field(
        default=False,
        description="GET /metrics answers only requests with a key that may read (any role): "
        "its series name tasks and arms. Off: no key needed (a Prometheus scraper inside "
        "your network).",
    )
    catalog_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        description="How long a task and its active arms are remembered by each server "
        "process (changes made through this process apply at once; ones made elsewhere, e.g. "
        "by the CLI, after at most this long). 0 reads them on every request.",
    )
    propensity_refresh: float = Field(
        default=0.05,
        ge=0,
        description="Thompson sampling's selection probabilities (1000 posterior draws) are "
        "computed again once an arm's rewards moved by more than this fraction of its count "
        "since the last computation (an arm with fewer than 1/this rewards: at each reward); "
        "in between decisions reuse them (batched Thompson sampling). 0: at every change.",
    )
    write_threads: int | None = Field(
        default=None,
        gt=0,
        description="Worker threads that run the select, output and feedback transactions "
        "FastAPI answers (the fast lane's run in the group-commit thread, see batch_writes). "
        "Default: 4 on PostgreSQL (they queue on the policy's state row anyway); 40 on SQLite, "
        "which writes one transaction at a time in any case.",
    )
    fast_lane: bool = Field(
        default=True,
        description="Answer the common case of POST /v1/select, /v1/generations/{id}/output "
        "and /v1/feedback before FastAPI's routing (same code, same answers; anything else, "
        "e.g. an error to explain, still goes through FastAPI). False: FastAPI answers all.",
    )
    writes_on_loop: bool | None = Field(
        default=None,
        description="With batch_writes off: run the fast lane's transactions on the event "
        "loop, on a connection that does not wait for locks (SQLite: while no other thread of "
        "the process writes), else in a write thread. Default: on SQLite only. On PostgreSQL "
        "the loop would sit idle during the round trips: measured, it used less CPU per "
        "request but served fewer.",
    )
    batch_writes: bool = Field(
        default=True,
        description="Group commit: the fast lane's transactions that arrive while one runs "
        "wait and then run together in one transaction (one BEGIN, one lock and one write of "
        "the policy's state, one COMMIT; each request is answered after it commits). Measured "
        "with 64 clients: 0.75x of a bare endpoint's throughput on PostgreSQL (0.2x without), "
        "0.93x on SQLite (0.68x without). False: one transaction per request (see "
        "writes_on_loop).",
    )
    batch_max: int = Field(
        default=64,
        gt=0,
        description="The most requests one group-commit transaction carries.",
    )
    gc_freeze: bool = Field(
        default=True,
        description="At start-up, move the objects that exist then (imports, the app: about "
        "120,000) out of Python's garbage collector's reach (gc.freeze), so that its full "
        "collections stop walking them, which lowers the p99 under saturation "
        "(docs/experiments/service-performance.md).",
    )
    opentelemetry: bool = Field(
        default=False,
        description="FastAPI's native OpenTelemetry spans and metrics (with your providers "
        "configured). Off by default: it costs CPU on every request even with none configured; "
        "prefloop's own /metrics is always on.",
    )
    transaction_retries: int = Field(
        default=3,
        ge=0,
        description="How often a request is retried after a serialization failure or a "
        "concurrent duplicate (nothing of the failed attempt is kept).",
    )
    app_session_minutes: int = Field(
        default=720,
        gt=0,
        description="How long a web app (/app) sign-in lasts before the labeler signs in again.",
    )
    app_secure_cookie: bool | None = Field(
        default=None,
        description="Mark the web app's cookies Secure (HTTPS only). Default: when the request "
        "came over HTTPS.",
    )
