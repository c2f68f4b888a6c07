"""Traces (rag.tracing, an optional extra): an ingest, a search, an answer through the fake
OpenAI-compatible LLM (real sockets) and a server request, recorded by the OpenTelemetry SDK's
in-memory exporter, with the spans' names, parents and attributes checked. Off, nothing is
imported and nothing recorded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from helpers_ingest import edge_settings, write  # noqa: E402
from llm_fake_server import FakeLLMServer  # noqa: E402
from rag import tracing  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCS = {"apple.md": "# Revenue\n\nApple reported total net sales of $81.8 billion for the quarter. "
                    "iPhone net sales were $39.7 billion in the third quarter.",
        "garden.txt": "Tomatoes need full sun and regular watering. Basil grows well next to tomatoes."}
ANSWER = "iPhone net sales were $39.7 billion in the third quarter [1]."


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()
        provider.shutdown()


def by_name(finished, name: str) -> list:
    return [s for s in finished if s.name == name]


def one(finished, name: str):
    found = by_name(finished, name)
    assert len(found) == 1, (name, [s.name for s in finished])
    return found[0]


def children(finished, parent) -> list[str]:
    return sorted(s.name for s in finished if s.parent is not None and s.parent.span_id == parent.context.span_id)


def test_ingest_search_and_answer_spans(tmp_path, encoder, spans):
    from connectors.llm.openai import OpenAICompatibleBackend
    from pipelines.answer import RagPipeline
    from pipelines.ingest import ingest
    from pipelines.stores import open_store
    from rag.ingest.chunking import Chunker
    from rag.search.retrieval import Retriever

    write(tmp_path / "docs", DOCS)
    settings = edge_settings(tmp_path / "store")
    report = ingest([tmp_path / "docs"], encoder=encoder, store=settings, chunker=Chunker(48, 8), progress=False)
    assert not report.failed
    done = spans.get_finished_spans()
    job = one(done, "rag.ingest")
    assert job.attributes["rag.ingest.files.ingested"] == 2
    assert job.attributes["rag.ingest.chunks_written"] == report.chunks_written
    files = by_name(done, "rag.ingest.file")
    assert sorted(f.attributes["rag.ingest.source"] for f in files) == sorted(
        str((tmp_path / "docs" / n).resolve()) for n in DOCS)
    for f in files:
        assert f.parent.span_id == job.context.span_id
        assert f.attributes["rag.ingest.outcome"] == "written" and f.attributes["rag.ingest.chunks"] >= 1
        assert children(done, f) == ["rag.ingest.chunk", "rag.ingest.load"]  # timed in the loader process
        load = next(s for s in done if s.name == "rag.ingest.load" and s.parent.span_id == f.context.span_id)
        assert load.attributes["rag.ingest.ocr_pages"] == 0 and load.end_time >= load.start_time
    assert {"rag.ingest.encode", "rag.ingest.write"} <= set(children(done, job))
    encoded = by_name(done, "rag.ingest.encode")
    assert sum(s.attributes["rag.ingest.chunks"] for s in encoded) == report.chunks_written
    spans.clear()

    vs = open_store(settings)
    try:
        Retriever(vs, encoder, mode="hybrid", route="auto").search("iPhone net sales", top_k=2)
    finally:
        vs.close()
    done = spans.get_finished_spans()
    search = one(done, "rag.search")
    assert search.attributes["rag.search.mode"] == "hybrid" and search.attributes["rag.search.top_k"] == 2
    assert search.attributes["rag.search.results"] == 2
    assert children(done, search) == ["rag.search.encode", "rag.search.fusion", "rag.search.legs",
                                      "rag.search.routing"]
    legs = one(done, "rag.search.legs")
    assert legs.attributes["rag.search.legs"] == ("dense", "text")
    # sentence vectors: the candidates' units are scored by id and fused client-side, in this span
    assert one(done, "rag.search.fusion").attributes["rag.search.units"] is True
    spans.clear()

    with FakeLLMServer(answer=ANSWER) as llm:
        backend = OpenAICompatibleBackend("fake-model", llm.openai_url, timeout=10, max_retries=0)
        with RagPipeline(encoder=encoder, store=settings, retriever={"top_k": 2}, llm=backend) as pipe:
            answer = pipe.ask("What were iPhone net sales?")
    assert answer.kind == "generated"
    done = spans.get_finished_spans()
    root = one(done, "rag.answer")
    assert root.parent is None and {s.context.trace_id for s in done} == {root.context.trace_id}
    assert children(done, root) == ["chat fake-model", "rag.answer.grounding", "rag.answer.prompt", "rag.search"]
    call = one(done, "chat fake-model")
    assert call.attributes["gen_ai.operation.name"] == "chat"
    assert call.attributes["gen_ai.request.model"] == "fake-model"
    assert call.attributes["gen_ai.usage.input_tokens"] == answer.prompt_tokens > 0
    assert call.attributes["gen_ai.usage.output_tokens"] > 0
    assert call.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    grounding = one(done, "rag.answer.grounding")
    assert grounding.attributes["rag.grounding.sentences"] == len(answer.support)
    assert grounding.attributes["rag.grounding.unsupported"] == len(answer.unsupported)
    assert root.attributes["rag.answer.kind"] == "generated"
    assert root.attributes["rag.answer.citations_valid"] == answer.citations_valid


def test_server_spans_carry_the_requests_trace_id(tmp_path, encoder, spans):
    from pipelines.config import RagConfig
    from pipelines.ingest import ingest
    from pipelines.server.app import create_app, serve_in_background
    from rag.ingest.chunking import Chunker

    write(tmp_path / "docs", DOCS)
    assert not ingest([tmp_path / "docs"], encoder=encoder, store=edge_settings(tmp_path / "store"),
                      chunker=Chunker(48, 8), progress=False).failed
    cfg = RagConfig(store={"dir": str(tmp_path / "store"), "collection": "docs"}, llm={"backend": "none"})
    app = create_app(cfg, encoder=encoder)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with serve_in_background(app) as url:
        spans.clear()  # the warm-up search at start-up
        r = httpx.post(f"{url}/v1/chat/completions", timeout=60,
                       json={"messages": [{"role": "user", "content": "What were iPhone net sales?"}]},
                       headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
        assert r.status_code == 200, r.text
        assert r.headers["traceparent"].startswith(f"00-{trace_id}-")
    done = spans.get_finished_spans()
    server = one(done, "POST /v1/chat/completions")
    assert f"{server.context.trace_id:032x}" == trace_id
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["http.route"] == "/v1/chat/completions"
    for name in ("rag.answer", "rag.search", "rag.answer.prompt", "rag.answer.grounding"):
        assert f"{one(done, name).context.trace_id:032x}" == trace_id, name
    assert one(done, "rag.answer").parent.span_id == server.context.span_id


def test_off_by_default_imports_nothing_and_records_nothing():
    code = ("import sys; import pipelines.ingest, pipelines.answer, rag.search.retrieval, pipelines.cli.app; "
            "from rag import tracing; "
            "assert tracing.span('x') is tracing.OFF and tracing.start('y') is tracing.OFF; "
            "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
