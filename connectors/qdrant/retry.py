"""Which store errors are worth another try, and how long to wait before it: the decisions of the
ingest job's writer (`pipelines.writer.StoreWriter`), kept apart from its I/O as connectors/llm/http.py
keeps `_after_failure` apart from its request loops. Pure: nothing here touches a store.

Transient (the server is restarting, overloaded or briefly out of reach; the same write succeeds
later, and a write that did land before the error is harmless to repeat: chunk ids are
deterministic and writes are upserts or deletes by filter):
- qdrant-client's REST errors: `ResponseHandlingException` wrapping a network failure or
  timeout of httpx (connection refused, reset or closed before the answer, connect/read/write
  timeouts), `UnexpectedResponse` with HTTP 429, 502, 503 or 504;
- its gRPC errors: `grpc.RpcError` with UNAVAILABLE (refused, reset, server going away),
  DEADLINE_EXCEEDED (the timeout) or RESOURCE_EXHAUSTED;
- `ResourceExhaustedResponse`: a 429 or RESOURCE_EXHAUSTED that says how long to wait
  (Retry-After), honoured up to `WriteRetry.max_retry_after`;
- the OS's own ConnectionError (refused, reset, aborted, broken pipe) and TimeoutError.

Not transient (retrying repeats the same failure, so the error stops the job at once, as before):
every RagError (a store held by another process, StoreLockedError; a context or model mismatch,
ConfigError), any other HTTP status (400 schema or validation, 401/403, 404, 500) or gRPC
code, an answer that does not parse (`ResponseHandlingException` wrapping a pydantic
ValidationError), and the embedded engines' errors: Qdrant Edge raises a plain Exception for
what goes wrong in the engine (disk full, a corrupt segment), and neither it nor qdrant-client's
local mode has a "busy" state: the only contention, another process holding the folder, is
refused when the store is opened (StoreLockedError).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from connectors.backoff import backoff_delay, parse_retry_after

#: HTTP statuses of a server that is overloaded, restarting or behind a proxy that lost it.
RETRY_HTTP_STATUSES = frozenset({429, 502, 503, 504})
#: gRPC status codes (names of grpc.StatusCode) with the same meaning.
RETRY_GRPC_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"})

DEFAULT_WRITE_RETRIES = 3  # 4 attempts: at most 0.5 + 1 + 2 s of backoff (4 s with the jitter's top)
DEFAULT_WRITE_BACKOFF = 0.5
DEFAULT_WRITE_BACKOFF_MAX = 8.0
DEFAULT_MAX_RETRY_AFTER = 30.0


def _network_cause(exc: BaseException) -> str | None:
    """A short name for an httpx or OS network failure, None for anything else."""
    httpx = sys.modules.get("httpx")  # an httpx error exists only once httpx is imported
    if isinstance(exc, (ConnectionError, TimeoutError)) or (httpx is not None and isinstance(
            exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError))):
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None


def transient_cause(exc: BaseException) -> str | None:
    """A short description of `exc` when it is transient (worth retrying), None when it is not.
    See the module's docstring for which are which."""
    from rag.errors import RagError

    if isinstance(exc, RagError):
        return None
    cause = _network_cause(exc)
    if cause is not None:
        return cause
    if "qdrant_client" in sys.modules:  # its errors exist only once it is imported
        from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        if isinstance(exc, ResourceExhaustedResponse):
            return f"rate limited, retry after {exc.retry_after_s} s ({exc})"
        if isinstance(exc, UnexpectedResponse):
            if exc.status_code in RETRY_HTTP_STATUSES:
                return f"HTTP {exc.status_code} {exc.reason_phrase}".rstrip()
            return None
        if isinstance(exc, ResponseHandlingException):
            return _network_cause(exc.source) if isinstance(exc.source, BaseException) else None
    grpc = sys.modules.get("grpc")
    if grpc is not None and isinstance(exc, grpc.RpcError):
        code = getattr(exc, "code", None)
        code = code() if callable(code) else None
        if code is not None and code.name in RETRY_GRPC_CODES:
            details = getattr(exc, "details", None)
            details = details() if callable(details) else ""
            return f"gRPC {code.name}" + (f": {details}" if details else "")
    return None


def retry_after(exc: BaseException) -> float | None:
    """The wait the server asked for with the error (Retry-After, or qdrant-client's
    ResourceExhaustedResponse), None when it asked for none."""
    seconds = getattr(exc, "retry_after_s", None)
    if isinstance(seconds, (int, float)):
        return max(0.0, float(seconds))
    headers = getattr(exc, "headers", None)
    if headers is not None and hasattr(headers, "get"):
        return parse_retry_after(headers.get("retry-after"))
    return None


@dataclass(frozen=True)
class Decision:
    """What to do after a failed attempt: `retry` after `delay` seconds; or not, and then
    `cause` says whether the error was transient (the attempts are used up: the caller reports
    the file(s) failed) or None (not transient: the caller raises the error as it is)."""

    retry: bool
    delay: float = 0.0
    cause: str | None = None

    @property
    def exhausted(self) -> bool:
        return not self.retry and self.cause is not None


@dataclass(frozen=True)
class WriteRetry:
    """How often, and how long apart, a store write is tried again on a transient error.
    retries: attempts after the first (0: none); backoff: the first wait, doubled each retry up to
    backoff_max, with jitter (connectors.backoff.backoff_delay); a wait the server asks for
    (Retry-After) is honoured instead, up to max_retry_after."""

    retries: int = DEFAULT_WRITE_RETRIES
    backoff: float = DEFAULT_WRITE_BACKOFF
    backoff_max: float = DEFAULT_WRITE_BACKOFF_MAX
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER

    def __post_init__(self):
        if self.retries < 0 or self.backoff < 0 or self.backoff_max < 0 or self.max_retry_after < 0:
            from rag.errors import ConfigError

            raise ConfigError("store write retries and backoff must be >= 0")

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def decide(self, attempt: int, exc: BaseException) -> Decision:
        """After attempt `attempt` (0: the first) failed with `exc`."""
        cause = transient_cause(exc)
        if cause is None:
            return Decision(retry=False)
        if attempt >= self.retries:
            return Decision(retry=False, cause=cause)
        asked = retry_after(exc)
        delay = (min(asked, self.max_retry_after) if asked is not None
                 else backoff_delay(attempt, self.backoff, self.backoff_max))
        return Decision(retry=True, delay=delay, cause=cause)
