"""Traces of ingest, search and answers: a tiny facade over OpenTelemetry that costs nothing unless
tracing is turned on. The core imports only this module; `opentelemetry` is imported when
`enable()` is called (by `pipelines.tracing.configure`, or by a program that set up its own
tracer provider), never before.

    from rag.tracing import span

    with span("rag.search", **{"rag.search.mode": mode}) as s:
        ...
        s.set("rag.search.results", len(results))

Off, `span` returns one shared object whose methods do nothing: a function call and a global
read per span. On, it is a real span, current for the block (so the spans opened inside it are
its children), ended and marked as an error if the block raises.

A span that outlives a block (an answer streamed by a generator, whose blocks are suspended at
each `yield`) is made with `start` and ended with `end()`; it is never left current across a
`yield`, but made current for the blocks between them with `with handle.current(): ...`.
"""

from __future__ import annotations

from typing import Any

_tracer: Any = None  # an opentelemetry Tracer once enabled


def enable(tracer_provider: Any = None) -> bool:
    """Trace from now on, with `tracer_provider` (default: OpenTelemetry's global one). False, and
    still off, when opentelemetry is not installed."""
    global _tracer
    try:
        from opentelemetry import trace
    except ImportError:
        return False
    _tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("rag")
    return True


def disable() -> None:
    global _tracer
    _tracer = None


def enabled() -> bool:
    return _tracer is not None


def tracer() -> Any:
    """The OpenTelemetry Tracer spans are made with (None while off), for code that needs the
    SDK's own API (the server's span per request, a child of the caller's trace)."""
    return _tracer


class _Off:
    """The span of disabled tracing."""

    __slots__ = ()

    def __enter__(self) -> _Off:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def set(self, key: str, value: Any) -> None:
        return None

    def update(self, **attributes: Any) -> None:
        return None

    def end(self, end_time: int | None = None) -> None:
        return None

    def current(self) -> _Off:
        return self


OFF = _Off()


class _Started:
    """A span started with `start`: not current until `current()` makes it so for a block."""

    __slots__ = ("span",)

    def __init__(self, name: str, parent: _Started | None, start_time: int | None, attributes: dict[str, Any]):
        from opentelemetry import trace

        context = trace.set_span_in_context(parent.span) if isinstance(parent, _Started) else None
        self.span = _tracer.start_span(name, context=context, attributes=_clean(attributes), start_time=start_time)

    def set(self, key: str, value: Any) -> None:
        if value is not None:
            self.span.set_attribute(key, _value(value))

    def update(self, **attributes: Any) -> None:
        self.span.set_attributes(_clean(attributes))

    def end(self, end_time: int | None = None) -> None:
        self.span.end(end_time=end_time)

    def current(self):
        from opentelemetry import trace

        return trace.use_span(self.span, end_on_exit=False)


def start(name: str, parent: Any = None, start_time: int | None = None, **attributes: Any) -> _Started | _Off:
    """A span started now, or at `start_time` (epoch nanoseconds: a stage timed elsewhere), the
    child of `parent` (a span from `start`) or else of the current span; ended by `end()`."""
    if _tracer is None:
        return OFF
    return _Started(name, parent, start_time, attributes)


class _On:
    __slots__ = ("_cm", "span")

    def __init__(self, name: str, attributes: dict[str, Any]):
        self._cm = _tracer.start_as_current_span(name, attributes=_clean(attributes))
        self.span = None

    def __enter__(self) -> _On:
        self.span = self._cm.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._cm.__exit__(*exc)

    def set(self, key: str, value: Any) -> None:
        if value is not None:
            self.span.set_attribute(key, _value(value))

    def update(self, **attributes: Any) -> None:
        self.span.set_attributes(_clean(attributes))


def span(name: str, **attributes: Any) -> _On | _Off:
    """A span named `name` for a `with` block (attributes: OpenTelemetry names, written with
    `**{"gen_ai.request.model": ...}`; None values are left out)."""
    if _tracer is None:
        return OFF
    return _On(name, attributes)


def _value(v: Any) -> Any:
    if isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, (list, tuple)):
        return [x if isinstance(x, (str, bool, int, float)) else str(x) for x in v]
    return str(v)


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: _value(v) for k, v in attributes.items() if v is not None}
