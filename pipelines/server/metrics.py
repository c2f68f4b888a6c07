"""`GET /metrics` of `rag serve`: Prometheus' text format, from a registry of the app's own (not
prometheus-client's global one, so that several apps in one process, as in the tests, keep
their counts apart). Behind the same key as the API.

Counted as things happen:
    rag_http_requests_total{method, route, status}       every request, by route template
    rag_http_request_duration_seconds{method, route, status}   to the response's last byte
    rag_llm_tokens_total{backend, type}                  prompt and completion tokens of answers
    rag_answers_total{kind, citations}                   answers by kind (generated, extractive)
                                                         and whether their citations were valid
    rag_grounding_sentences_total{verdict}               answer sentences the grounding check
                                                         found supported or unsupported
Read when scraped (`StateCollector`):
    rag_encoder_queue_depth{model}                       calls waiting for the encoder thread
    rag_encoder_pass_texts{model}                        texts per urgent encoder pass (histogram)
    rag_encoder_bulk_slices_total{model}                 bulk (upload) slices encoded
    rag_generations_in_flight, rag_generation_slots      LLM calls holding a slot, and the slots
    rag_upload_jobs{state}                               upload jobs known, by state

One process's counts: with `--workers N` each worker has its own (a scrape reaches one of them).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter as PromCounter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from pipelines.server.state import ServerState
    from rag.models import Answer

JOB_STATES = ("queued", "running", "done", "failed")
PASS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # texts per encoder pass
UNMATCHED = "unmatched"  # the route label of a request no route took (never the raw path)


class ServerMetrics:
    """The app's registry and the metrics counted as requests and answers happen."""

    def __init__(self, state: ServerState):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = PromCounter("rag_http_requests", "HTTP requests by route template and status",
                                    ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("rag_http_request_duration_seconds",
                                 "time from a request's arrival to its response's last byte",
                                 ["method", "route", "status"], registry=self.registry)
        self.tokens = PromCounter("rag_llm_tokens", "tokens of answers' prompts and completions",
                                  ["backend", "type"], registry=self.registry)
        self.answers = PromCounter("rag_answers", "answers by kind, and whether their citations were valid",
                                   ["kind", "citations"], registry=self.registry)
        self.grounding = PromCounter("rag_grounding_sentences", "answer sentences by the grounding check's verdict",
                                     ["verdict"], registry=self.registry)
        self.registry.register(StateCollector(state))

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def answer(self, answer: Answer, completion_tokens: int) -> None:
        self.tokens.labels(answer.backend, "prompt").inc(answer.prompt_tokens)
        self.tokens.labels(answer.backend, "completion").inc(completion_tokens)
        self.answers.labels(answer.kind, "valid" if answer.citations_valid else "invalid").inc()
        unsupported = len(answer.unsupported)
        self.grounding.labels("supported").inc(len(answer.support) - unsupported)
        self.grounding.labels("unsupported").inc(unsupported)

    def exposition(self) -> tuple[bytes, str]:
        """The text format's body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class StateCollector:
    """What the server holds now, read at each scrape: the encoders' queues and pass sizes, the
    generation slots in use, the upload jobs by state."""

    def __init__(self, state: ServerState):
        self.state = state

    def describe(self) -> list:
        return []  # read at scrape time only

    def collect(self):
        depth = GaugeMetricFamily("rag_encoder_queue_depth", "calls and slices waiting for the encoder thread",
                                  labels=["model"])
        passes = HistogramMetricFamily("rag_encoder_pass_texts", "texts per urgent encoder pass", labels=["model"])
        slices = CounterMetricFamily("rag_encoder_bulk_slices", "bulk (upload) slices encoded", labels=["model"])
        for model, gate in list(self.state._encoders.items()):
            depth.add_metric([model], gate.queued)
            buckets, total = _buckets(gate.pass_texts)
            passes.add_metric([model], buckets, total)
            slices.add_metric([model], gate.stats["bulk_slices"])
        yield from (depth, passes, slices)

        slots = self.state.generation_slots
        free = getattr(self.state.slots, "_value", slots)  # asyncio.Semaphore's count of free slots
        yield GaugeMetricFamily("rag_generation_slots", "answers the LLM may generate at once", value=slots)
        yield GaugeMetricFamily("rag_generations_in_flight", "LLM calls holding a generation slot",
                                value=max(0, slots - free))

        jobs = GaugeMetricFamily("rag_upload_jobs", "upload jobs the server remembers, by state", labels=["state"])
        by_state = Counter(job.status for job in self.state.writer.jobs())
        for name in JOB_STATES:
            jobs.add_metric([name], by_state.get(name, 0))
        yield jobs


def _buckets(sizes: Counter[int]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative histogram buckets (le, count) and the sum, from passes counted by size."""
    items = list(sizes.items())
    out = [(str(float(b)), float(sum(n for size, n in items if size <= b))) for b in PASS_BUCKETS]
    out.append(("+Inf", float(sum(n for _, n in items))))
    return out, float(sum(size * n for size, n in items))


class RequestMetrics:
    """ASGI middleware, outermost: each HTTP request's route template (`UNMATCHED` when no route
    matches it, so a scan of random paths adds no series), status and time to its last byte,
    rejections by the inner middleware (key, size, rate) included: those never reach routing,
    so their route is matched here against `routes` (the app's, a live list)."""

    def __init__(self, app, metrics: ServerMetrics, routes: list | None = None):
        self.app, self.metrics, self.routes = app, metrics, routes if routes is not None else []

    def route_of(self, scope) -> str:
        route = scope.get("route")
        if route is None:
            from starlette.routing import Match

            route = next((r for r in self.routes if r.matches(scope)[0] == Match.FULL), None)
        return getattr(route, "path", UNMATCHED)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def recording_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.request(scope["method"], self.route_of(scope), status, time.perf_counter() - start)
