"""`/mcp` inside `rag serve`: the MCP tools (pipelines.mcp_tools) over MCP's streamable HTTP
transport, on the server's own state, so they share its encoder, open collections and LLM slots
(no second model in memory).

The route sits behind the same middlewares as the API: the key check (a request without a key
is a 401 before the MCP layer sees it), the body limit and the client's share. Each tool asks
the key's Grant (RequireKey put it on the request's scope) which collections it may touch, so
a key of `--keys FILE` sees only its own there too. The transport is stateless with JSON
responses: every POST is complete in itself (no session to keep, so any worker can take it).
On loopback the SDK's DNS-rebinding check stays on (a web page elsewhere cannot drive a local
server through a browser); on another address the key does that job.

Without the `mcp` extra there is no /mcp route, and the log says so.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from pipelines.server.access import EVERYTHING, grant_of
from pipelines.server.security import is_loopback

logger = logging.getLogger("pipelines.server")
MCP_PATH = "/mcp"


def caller_grant(ctx: Any):
    """The Grant of the HTTP request a tool call came in (every collection without one)."""
    request = getattr(ctx.request_context, "request", None)
    scope = getattr(request, "scope", None)
    return grant_of(scope) if scope is not None else EVERYTHING


def add_mcp_route(app, state, host: str) -> contextlib.AbstractAsyncContextManager:
    """Mount the MCP tools at /mcp on `app`; returns what the app's lifespan must run around
    serving (the SDK's session manager)."""
    try:
        from mcp.server.transport_security import TransportSecuritySettings
        from starlette.routing import Route

        from pipelines.mcp_tools import build_mcp_server
    except ImportError as e:
        logger.info("no %s route: the mcp extra is not installed (%s missing)", MCP_PATH, e.name)
        return contextlib.nullcontext()
    server = build_mcp_server(state, grant_of=caller_grant)
    security = None if is_loopback(host) else TransportSecuritySettings(enable_dns_rebinding_protection=False)
    transport = server.streamable_http_app(streamable_http_path=MCP_PATH, stateless_http=True, json_response=True,
                                           transport_security=security, host=host)
    app.router.routes.append(Route(MCP_PATH, endpoint=transport))  # an ASGI app: every method goes to it
    return server.session_manager.run()
