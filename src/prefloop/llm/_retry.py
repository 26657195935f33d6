"""Exponential backoff with full jitter, capped."""

from __future__ import annotations

import random
from dataclasses import dataclass

from prefloop.errors import InvalidInputError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to wait before retrying a failed LLM call."""

    max_retries: int = 3
    """Retries after the first attempt (0 = never retry)."""
    backoff_initial: float = 0.5
    """Seconds: the upper end of the first wait; it doubles on each retry."""
    backoff_max: float = 20.0
    """Seconds: no wait is longer than this, ``Retry-After`` included."""

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise InvalidInputError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.backoff_initial < 0 or self.backoff_max < 0:
            raise InvalidInputError(
                f"backoff times must be >= 0, got initial={self.backoff_initial}, "
                f"max={self.backoff_max}"
            )

    def delay(self, retry: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based).

        "Full jitter" (Brooker, *Exponential Backoff and Jitter*, AWS Architecture Blog 2015):
        a uniform draw below the capped exponential, so that clients that failed together do
        not retry together. A server's ``Retry-After`` is a floor, still capped.
        """
        ceiling = min(self.backoff_max, self.backoff_initial * 2.0**retry)
        wait = rng.uniform(0.0, ceiling)
        if retry_after is not None and retry_after > 0:
            wait = max(wait, retry_after)
        return min(wait, self.backoff_max)
