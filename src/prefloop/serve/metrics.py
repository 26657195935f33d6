"""Counters and a latency histogram in the Prometheus text format (version 0.0.4).

Small and dependency-free: one :class:`Metrics` object per app, guarded by a lock because routes
run in a thread pool. With several uvicorn workers each process keeps its own numbers (a scrape
reaches one worker); run one worker per scrape target or sum in Prometheus.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _render_labels(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    pairs = [*labels, extra] if extra is not None else list(labels)
    if not pairs:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in pairs) + "}"


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Metrics:
    """The service's metrics; :meth:`render` gives the ``/metrics`` page."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[Labels, int] = defaultdict(int)
        self._latency_counts: dict[Labels, list[int]] = {}
        self._latency_sums: dict[Labels, float] = defaultdict(float)
        self._feedback: dict[Labels, int] = defaultdict(int)
        self._decisions: dict[Labels, int] = defaultdict(int)
        self._llm_failures: dict[Labels, int] = defaultdict(int)
        self._fast_lane: dict[Labels, int] = defaultdict(int)
        self._handed_over: dict[Labels, int] = defaultdict(int)
        self._batches: dict[Labels, int] = defaultdict(int)
        self._batched: dict[Labels, int] = defaultdict(int)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        labels: Labels = (("method", method), ("route", route), ("status", str(status)))
        latency_labels: Labels = (("method", method), ("route", route))
        index = bisect.bisect_left(LATENCY_BUCKETS_S, seconds)
        with self._lock:
            self._requests[labels] += 1
            counts = self._latency_counts.setdefault(
                latency_labels, [0] * (len(LATENCY_BUCKETS_S) + 1)
            )
            counts[index] += 1
            self._latency_sums[latency_labels] += seconds

    def count_feedback(self, task: str, kind: str, *, duplicate: bool) -> None:
        labels: Labels = (("task", task), ("kind", kind), ("duplicate", str(duplicate).lower()))
        with self._lock:
            self._feedback[labels] += 1

    def count_decision(self, task: str, arm: str) -> None:
        with self._lock:
            self._decisions[(("task", task), ("arm", arm))] += 1

    def count_llm_failure(self, task: str, error: str) -> None:
        with self._lock:
            self._llm_failures[(("task", task), ("error", error))] += 1

    def count_fast_lane(self, route: str, outcome: str, reason: str | None = None) -> None:
        """A hot-route request the fast lane ``answered`` or ``handed_over`` to FastAPI (for
        ``reason``: a short code or the class of the error to explain)."""
        with self._lock:
            self._fast_lane[(("route", route), ("outcome", outcome))] += 1
            if reason is not None:
                self._handed_over[(("route", route), ("reason", reason))] += 1

    def count_batch(self, size: int) -> None:
        """A group-commit transaction that carried ``size`` requests."""
        with self._lock:
            self._batches[()] += 1
            self._batched[()] += size

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            self._render_counter(
                lines,
                "prefloop_http_requests_total",
                "HTTP requests answered, by method, route template and status.",
                self._requests,
            )
            lines.append(
                "# HELP prefloop_http_request_duration_seconds "
                "Time from the request's arrival to its answer."
            )
            lines.append("# TYPE prefloop_http_request_duration_seconds histogram")
            for labels, counts in sorted(self._latency_counts.items()):
                cumulative = 0
                for bound, count in zip((*LATENCY_BUCKETS_S, float("inf")), counts, strict=True):
                    cumulative += count
                    le = _render_labels(labels, ("le", _number(bound)))
                    lines.append(f"prefloop_http_request_duration_seconds_bucket{le} {cumulative}")
                plain = _render_labels(labels)
                total = self._latency_sums[labels]
                lines.append(f"prefloop_http_request_duration_seconds_sum{plain} {total!r}")
                lines.append(f"prefloop_http_request_duration_seconds_count{plain} {cumulative}")
            self._render_counter(
                lines,
                "prefloop_feedback_events_total",
                "Feedback events received, by task and kind (duplicates: repeated keys).",
                self._feedback,
            )
            self._render_counter(
                lines,
                "prefloop_bandit_decisions_total",
                "Arms chosen by the bandit, by task and arm.",
                self._decisions,
            )
            self._render_counter(
                lines,
                "prefloop_llm_failures_total",
                "LLM calls of /v1/generate that failed (stored as failed generations).",
                self._llm_failures,
            )
            self._render_counter(
                lines,
                "prefloop_fast_lane_requests_total",
                "Hot-route requests the fast lane answered, or handed over to FastAPI (a key "
                "to refuse, an error to explain, a duplicate to replay, ...).",
                self._fast_lane,
            )
            self._render_counter(
                lines,
                "prefloop_fast_lane_handed_over_total",
                "Hot-route requests handed over to FastAPI, by reason: api_key (to look up or "
                "refuse), malformed_body, seeded, idempotency_key (bad length), invalid_event, or "
                "the hot path's: Fallback (a case it leaves to the ORM path, e.g. a repeated "
                "idempotency key or a policy's first decision) or an error class to explain.",
                self._handed_over,
            )
            self._render_counter(
                lines,
                "prefloop_write_batches_total",
                "Group-commit transactions of the fast lane (see PREFLOOP_BATCH_WRITES).",
                self._batches,
            )
            self._render_counter(
                lines,
                "prefloop_write_batch_requests_total",
                "Requests those transactions carried (divided by the batches: the mean size).",
                self._batched,
            )
        return "\n".join(lines) + "\n"

    @staticmethod
    def _render_counter(
        lines: list[str], name: str, help_text: str, values: dict[Labels, int]
    ) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} counter")
        for labels, value in sorted(values.items()):
            lines.append(f"{name}{_render_labels(labels)} {value}")
