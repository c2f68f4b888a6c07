"""`GET /metrics` of `rag serve`: a real uvicorn server in front of the fake OpenAI-compatible LLM
(real sockets), scraped after a known set of requests and parsed with prometheus-client's own
parser. Two apps in one process keep their counts apart (a registry each)."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers_ingest import write
from llm_fake_server import FakeLLMServer
from pipelines.config import RagConfig
from pipelines.server.app import create_app, serve_in_background
from pipelines.server.options import ServeOptions
from pipelines.stores import StoreSettings

KEY, KEY_ENV = "metrics-test-key-0123456789", "RAG_TEST_METRICS_KEY"
DOCS = {"apple.md": "# Revenue\n\nApple reported total net sales of $81.8 billion for the quarter ended July 1, "
                    "2023. iPhone net sales were $39.7 billion in the third quarter.",
        "garden.txt": "Tomatoes need full sun and regular watering. Basil grows well next to tomatoes."}
ANSWER = "iPhone net sales were $39.7 billion in the third quarter [1]."


@pytest.fixture(scope="module")
def store(tmp_path_factory, encoder):
    from pipelines.ingest import ingest
    from rag.ingest.chunking import Chunker

    root = tmp_path_factory.mktemp("metrics")
    write(root / "docs", DOCS)
    rep = ingest([str(root / "docs")], encoder=encoder, store=StoreSettings(store_dir=str(root / "store"), collection="docs"),
                 chunker=Chunker(48, 8), progress=False)
    assert not rep.failed
    return root / "store"


def client(url: str, key: str | None = KEY) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=60)


def scrape(c: httpx.Client) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    r = c.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_answers_encoder_and_jobs(store, encoder):
    with FakeLLMServer(answer=ANSWER) as llm, pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, KEY)
        cfg = RagConfig(store={"dir": str(store), "collection": "docs"},
                        llm={"backend": "openai", "base_url": llm.openai_url, "model": "fake-model",
                             "timeout": 10, "max_retries": 0})
        app = create_app(cfg, ServeOptions(server_key_env=KEY_ENV, max_concurrent_generations=2), encoder=encoder)
        other = create_app(cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"backend": "none"})}),
                           ServeOptions(), encoder=encoder)
        assert other.state.metrics.registry is not app.state.metrics.registry
        with serve_in_background(app) as url:
            with client(url, key=None) as anonymous:
                assert anonymous.get("/metrics").status_code == 401  # behind the API's key
                assert anonymous.get("/health").status_code == 200
            with client(url) as c:
                for q in ("iPhone net sales", "tomato watering"):
                    assert c.post("/v1/search", json={"query": q}).status_code == 200
                assert c.post("/v1/search", json={"nope": 1}).status_code == 400
                assert c.get("/no/such/route/1").status_code == 404
                assert c.get("/no/such/route/2").status_code == 404
                r = c.post("/v1/chat/completions", json={"messages": [{"role": "user",
                                                                       "content": "What were iPhone net sales?"}]})
                assert r.status_code == 200, r.text
                answer = r.json()
                r = c.post("/v1/documents", files=[("file", ("tea.txt", b"Green tea steeps at 80 degrees.",
                                                             "text/plain"))])
                assert r.status_code == 202, r.text
                job_id = r.json()["job_id"]
                deadline = time.monotonic() + 120
                while c.get(f"/v1/jobs/{job_id}").json()["status"] not in ("done", "failed"):
                    assert time.monotonic() < deadline, "upload job did not finish"
                    time.sleep(0.2)
                m = scrape(c)

    search_ok = dict(method="POST", route="/v1/search", status="200")
    assert value(m, "rag_http_requests_total", **search_ok) == 2
    assert value(m, "rag_http_request_duration_seconds_count", **search_ok) == 2
    assert value(m, "rag_http_request_duration_seconds_sum", **search_ok) > 0
    assert value(m, "rag_http_request_duration_seconds_bucket", le="+Inf", **search_ok) == 2
    assert value(m, "rag_http_requests_total", method="POST", route="/v1/search", status="400") == 1
    assert value(m, "rag_http_requests_total", method="GET", route="unmatched", status="404") == 2  # no raw paths
    assert value(m, "rag_http_requests_total", method="GET", route="/metrics", status="401") == 1
    assert value(m, "rag_http_requests_total", method="GET", route="/health", status="200") == 1
    assert value(m, "rag_http_requests_total", method="POST", route="/v1/chat/completions", status="200") == 1
    assert not any("/no/such" in str(labels) for _, labels in m)

    usage = answer["usage"]
    backend = answer["backend"]
    assert value(m, "rag_llm_tokens_total", backend=backend, type="prompt") == usage["prompt_tokens"] > 0
    assert value(m, "rag_llm_tokens_total", backend=backend, type="completion") == usage["completion_tokens"] > 0
    assert value(m, "rag_answers_total", kind="generated", citations="valid") == 1
    sentences = answer["grounding"]["sentences"]
    assert sentences
    assert value(m, "rag_grounding_sentences_total", verdict="unsupported") == answer["grounding"]["unsupported"]
    assert value(m, "rag_grounding_sentences_total", verdict="supported") == (
        len(sentences) - answer["grounding"]["unsupported"])

    model = encoder.model_id
    assert value(m, "rag_encoder_queue_depth", model=model) == 0  # nothing waiting after the requests
    passes = value(m, "rag_encoder_pass_texts_count", model=model)
    assert passes >= 3  # the warm-up, the two searches, the chat's retrieval
    assert value(m, "rag_encoder_pass_texts_bucket", model=model, le="+Inf") == passes
    assert value(m, "rag_encoder_pass_texts_sum", model=model) >= passes
    assert value(m, "rag_encoder_bulk_slices_total", model=model) >= 1  # the upload's chunks
    assert value(m, "rag_generation_slots") == 2 and value(m, "rag_generations_in_flight") == 0
    assert value(m, "rag_upload_jobs", state="done") == 1
    assert value(m, "rag_upload_jobs", state="queued") == value(m, "rag_upload_jobs", state="failed") == 0
    assert other.state.metrics.registry.get_sample_value(
        "rag_http_requests_total", {"method": "POST", "route": "/v1/search", "status": "200"}) is None
