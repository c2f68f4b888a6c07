"""Waiting between attempts, shared by every retry loop that talks to a server (the LLM
backends in connectors/llm/http.py, the ingest job's store writes in connectors/qdrant/retry.py):
exponential backoff with jitter, and the server's own Retry-After. Pure functions, stdlib only."""

from __future__ import annotations

import email.utils
import random
from datetime import datetime, timezone


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), None if absent
    or unreadable. A date in the past means 0."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def backoff_delay(retry: int, base: float, cap: float) -> float:
    """Exponential backoff with "equal jitter": base * 2**retry capped at `cap`, then a random
    point in its upper half, so clients that failed together do not retry together."""
    ceiling = min(cap, base * (2 ** retry))
    return ceiling * (0.5 + random.random() / 2)
