"""Who may talk to `rag serve`, and how much: the bind rule, the key check, the body limit.

- Bind: loopback (127.0.0.1, ::1, localhost) by default. Any other address is reachable from
  other machines, so it is refused unless a server key is configured (`check_bind`). The
  embedded store is owned by one process, so more than one worker needs a Qdrant server
  (`check_workers`).
- Key: `Authorization: Bearer KEY` on every route but GET /health and the web page's own files
  (GET /, its script and style: the page asks for the key and sends it with each API call).
  The comparison is `hmac.compare_digest` on SHA-256 digests, so neither the content nor the
  length of the key leaks through timing. The key is read from the
  variable `--server-key-env` names, held in memory only, and never logged or echoed: the 401
  says a key is missing or wrong, never what was sent (uvicorn's access log has no headers).
- Body: JSON endpoints take at most 1 MB (413 otherwise), checked on Content-Length and on the
  bytes actually received, before any parsing.
- Share: each client (its key, or its address when the server has no key) may have at most
  `--max-requests-per-client` API requests and `--max-chats-per-client` chat completions in
  flight (a streamed answer counts until its last byte); one more is answered 429 with
  Retry-After, so one client cannot fill the generation queue or the worker threads for all.
  The variable may hold several keys separated by commas, one per client.
- Keys per client (`--keys FILE`, keys.py): each key's SHA-256 is compared the same way, and
  the request carries the key's Grant (which collections it may read and write, its own
  limits) on to the routes.

The middlewares are plain ASGI (no FastAPI import here), so the CLI can run the bind rule
without loading the web stack.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from pipelines.server.keys import GRANT_SCOPE_KEY, Grant, find_grant, server_key_grants
from rag.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"  # this machine only
DEFAULT_PORT = 8000
MAX_BODY_BYTES = 1_000_000
MAX_UPLOAD_BYTES = 25_000_000  # per uploaded file: 25 MB
DEFAULT_NETWORK_GENERATIONS = 4  # answers a network LLM generates at once (a local model: 1)
MAX_REQUESTS_PER_CLIENT = 32  # API requests one client may have in flight
MAX_CHATS_PER_CLIENT = 8  # chat completions one client may have in flight (streams included)
RETRY_AFTER_SECONDS = 1
CHAT_ROUTE = ("POST", "/v1/chat/completions")
CLIENT_SCOPE_KEY = "rag.client"  # set by RequireKey: which key (by number) the request carries
#: Routes that need no key: the health probe (load balancers, `curl`) and the web page (its script
#: and style are added by the app).
OPEN_ROUTES = frozenset({("GET", "/health"), ("GET", "/")})

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """True only for addresses that other machines cannot reach. A name other than localhost is
    not resolved: what it points to can change, so it counts as reachable."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def read_server_key(env_name: str | None) -> str | None:
    """The server key from the variable `env_name` names (None when no variable is named). A
    named but unset or empty variable is an error: serving without the key that was meant to
    protect the server would be worse than not starting."""
    if not env_name:
        return None
    key = os.environ.get(env_name, "")
    if not key.strip():
        raise ConfigError(f"--server-key-env {env_name}: the variable is not set or empty "
                          f"(export {env_name}=... with the key clients will send as 'Bearer KEY')")
    return key


def split_keys(value: str | None) -> tuple[str, ...]:
    """The keys a server key variable holds: one, or several separated by commas (one per
    client, so each has its own share of the server)."""
    return tuple(k.strip() for k in (value or "").split(",") if k.strip())


def check_bind(host: str, key: str | None) -> None:
    """Refuse a non-loopback address without a server key (the CLI exits 2 on it)."""
    if not is_loopback(host) and not key:
        raise ConfigError(
            f"refusing to listen on {host}: other machines could reach the server, and no server key "
            "is set. Set one with --server-key-env NAME (the variable NAME holds the key clients send "
            "as 'Authorization: Bearer KEY'), or listen on 127.0.0.1")


def check_workers(store, workers: int) -> None:
    """More than one worker process needs a store that several processes can share: a Qdrant
    server (--url). The embedded store (and qdrant-client's local mode) is held by one process."""
    if workers < 1:
        raise ConfigError(f"--workers {workers}: give 1 or more")
    if workers > 1 and not store.url:
        raise ConfigError(
            f"--workers {workers}: the embedded store is opened by one process at a time, so every "
            "worker but the first would fail to open it. Use --workers 1 (requests are served "
            "concurrently within it), or a Qdrant server with --url")


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" and token.strip() else None
    return None


def key_matches(supplied: bytes | None, key: bytes) -> bool:
    if supplied is None:
        return False
    return hmac.compare_digest(hashlib.sha256(supplied).digest(), hashlib.sha256(key).digest())


def matching_key(supplied: bytes | None, keys: Iterable[bytes]) -> int | None:
    """The number of the key `supplied` is, or None. Every key is compared (no early exit), so
    the time taken says nothing about which one matched, or how many there are to try."""
    found = None
    for i, key in enumerate(keys):
        if key_matches(supplied, key) and found is None:
            found = i
    return found


async def send_error(send: Send, status: int, message: str, code: str,
                     headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """An OpenAI-shaped error response, from a middleware (before the app ran)."""
    from pipelines.server.schemas import error_json

    body = error_json(status, message, code)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class RequireKey:
    """401 unless the request carries a server key (routes in OPEN_ROUTES excepted). `key`: the
    variable's value, one key or several separated by commas, each for every collection;
    `grants`: the keys of `--keys FILE` ((digest, Grant), keys.py). The request's scope is marked
    with the key's number (never the key), for LimitPerClient, and with its Grant, for the
    routes (access.py)."""

    def __init__(self, app: ASGIApp, key: str | None = None, open_routes: frozenset[tuple[str, str]] = OPEN_ROUTES,
                 grants: Iterable[tuple[bytes, Grant]] = ()):
        self.app, self.open_routes = app, open_routes
        self._keys = [*server_key_grants(split_keys(key)), *grants]
        if not self._keys:
            raise ConfigError("the server key is empty")
        self._numbers = {id(grant): i for i, (_, grant) in enumerate(self._keys, start=1)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in self.open_routes:
            return await self.app(scope, receive, send)
        grant = find_grant(bearer_token(scope.get("headers", ())), self._keys)
        if grant is None:
            return await send_error(send, 401, "missing or wrong API key: send the server key as "
                                    "'Authorization: Bearer KEY'", "invalid_api_key",
                                    [(b"www-authenticate", b'Bearer realm="rag"')])
        scope[CLIENT_SCOPE_KEY] = f"key #{self._numbers[id(grant)]}"
        scope[GRANT_SCOPE_KEY] = grant
        return await self.app(scope, receive, send)


def client_of(scope: Scope) -> str:
    """Who a request is for the per-client limits: its key's number, else its address."""
    marked = scope.get(CLIENT_SCOPE_KEY)
    if marked:
        return marked
    client = scope.get("client")
    return f"address {client[0]}" if client else "address unknown"


class LimitPerClient:
    """429 with Retry-After when a client already has `max_requests` API requests, or (for a
    chat completion) `max_chats` chats, in flight. Counted until the response's last byte, so
    a streamed answer holds its place while it streams. The web page's files and /health are
    not counted. Plain counters on the event loop (one thread): no lock is needed."""

    def __init__(self, app: ASGIApp, max_requests: int = MAX_REQUESTS_PER_CLIENT,
                 max_chats: int = MAX_CHATS_PER_CLIENT, retry_after: int = RETRY_AFTER_SECONDS):
        self.app, self.max_requests, self.max_chats, self.retry_after = app, max_requests, max_chats, retry_after
        self.requests: dict[str, int] = {}
        self.chats: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (scope["path"].startswith("/v1/") or scope["path"] == "/mcp"):
            return await self.app(scope, receive, send)
        who = client_of(scope)
        is_chat = (scope["method"], scope["path"]) == CHAT_ROUTE
        grant = scope.get(GRANT_SCOPE_KEY)  # a key of --keys FILE may have limits of its own
        max_requests = getattr(grant, "max_requests", None) or self.max_requests
        max_chats = getattr(grant, "max_chats", None) or self.max_chats
        if self.requests.get(who, 0) >= max_requests:
            return await self._refuse(send, f"too many requests in flight for this client ({max_requests} "
                                      "at most): retry when one has finished")
        if is_chat and self.chats.get(who, 0) >= max_chats:
            return await self._refuse(send, f"too many chat completions in flight for this client "
                                      f"({max_chats} at most): retry when one has finished")
        counters = [self.requests] + ([self.chats] if is_chat else [])
        for c in counters:
            c[who] = c.get(who, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            for c in counters:
                c[who] -= 1
                if not c[who]:
                    del c[who]

    async def _refuse(self, send: Send, message: str) -> None:
        await send_error(send, 429, message, "rate_limit_exceeded",
                         [(b"retry-after", str(self.retry_after).encode())])


class LimitBody:
    """413 for a request body over `limit` bytes. The body is read here (it is small: JSON) and
    handed on whole; later `receive` calls go to the server, so disconnects are still seen."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        too_large = f"the request body is larger than {self.limit:,} bytes"
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await send_error(send, 400, "Content-Length is not a number", "invalid_request")
            if int(declared) > self.limit:
                return await send_error(send, 413, too_large, "request_too_large")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await send_error(send, 413, too_large, "request_too_large")
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
