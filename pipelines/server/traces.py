"""The server's span per request, when tracing is on (`rag.tracing`): named by method and route
template, a child of the caller's trace when the request carries a W3C `traceparent` header, and
current while the request is handled, so the search and answer spans made for it (in worker
threads and tasks, which copy the context) share its trace id. The response says that trace id
in `traceparent`. Off, the middleware passes requests straight through."""

from __future__ import annotations

from typing import Any

from rag import tracing


class TraceRequests:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not tracing.enabled():
            return await self.app(scope, receive, send)
        from opentelemetry import propagate, trace

        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        parent = propagate.extract(headers)
        with tracing.tracer().start_as_current_span(scope["method"], context=parent,  # renamed once routed
                                          kind=trace.SpanKind.SERVER,
                                          attributes={"http.request.method": scope["method"]}) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)

            async def traced_send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                    message = {**message, "headers": [*message.get("headers", []),
                                                      *((k.encode("latin-1"), v.encode("latin-1"))
                                                        for k, v in carrier.items())]}
                await send(message)

            try:
                await self.app(scope, receive, traced_send)
            finally:
                route = scope.get("route")
                if route is not None:  # the template, once routing found it (never the raw path)
                    span.update_name(f"{scope['method']} {route.path}")
                    span.set_attribute("http.route", route.path)
