"""`rag serve` as its clients see it: a real uvicorn server on loopback, driven by the official
openai client and by httpx, over a real embedded collection. Two servers: one answering with
extracts behind a key, one in front of the fake OpenAI-compatible LLM (tests/llm_fake_server.py,
real sockets) with one generation slot. Every request loop is bounded in count and time."""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from helpers_ingest import cli_env, rag_command, write
from llm_fake_server import FakeLLMServer, Fault, _Handler
from pipelines.config import RagConfig
from pipelines.server.app import create_app, serve_in_background
from pipelines.server.options import ServeOptions
from pipelines.stores import StoreSettings

KEY, KEY_ENV = "test-server-key-0123456789", "RAG_TEST_SERVER_KEY"
ORIGIN = "http://localhost:3000"
DOCS = {
    "apple.md": "# Revenue\n\nApple reported total net sales of $81.8 billion for the quarter ended July 1, 2023. "
                "iPhone net sales were $39.7 billion in the third quarter. Services revenue reached $21.2 billion.\n\n"
                "# Risks\n\nThe company faces risks from supply chain disruptions and foreign exchange rates.",
    "sbert.txt": "Sentence-BERT fine-tunes BERT in a siamese network on natural language inference data. "
                 "Mean pooling of the token embeddings works best.",
    "garden.txt": "Tomatoes need full sun and regular watering. Basil grows well next to tomatoes.",
}
NOTES = {"tea.txt": "Green tea is steeped at 70 to 80 degrees Celsius for two to three minutes. "
                    "Black tea takes boiling water and four minutes."}
QUERIES = [("What were iPhone net sales?", {}), ("tomato watering", {"mode": "bm25", "top_k": 2}),
           ("pooling", {"filters": ["source=sbert.txt"]})]
ANSWER = "iPhone net sales were $39.7 billion in the third quarter [1]."


class WatchedLLM(FakeLLMServer):
    """The fake LLM, noting when a client it was streaming to had hung up (its next write failed)."""

    def start(self) -> WatchedLLM:
        super().start()
        self.client_gone = threading.Event()
        fake = self

        class Handler(_Handler):
            def _stream(self, events, ctype, fault):
                try:
                    super()._stream(events, ctype, fault)
                except (BrokenPipeError, ConnectionResetError):
                    fake.client_gone.set()
                    raise

        Handler.fake = self
        self._httpd.RequestHandlerClass = Handler
        return self

    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def established_to(port: int) -> int:
    """Open TCP connections (this machine) whose far end is loopback `port`: the server's
    connection to the LLM while it streams from it."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                count += 1
    return count


@pytest.fixture(scope="module")
def stores(tmp_path_factory, encoder):
    """Collections docs, notes and busy in store A (with the search results expected for QUERIES,
    taken before any server holds the store), and a copy of them as store B."""
    from pipelines.ingest import ingest
    from pipelines.stores import open_store
    from rag.ingest.chunking import Chunker
    from rag.search.retrieval import Retriever

    root = tmp_path_factory.mktemp("server")
    write(root / "docs", DOCS)
    write(root / "notes", NOTES)
    a = root / "store_a"
    for name, folder in (("docs", "docs"), ("notes", "notes"), ("busy", "notes")):
        rep = ingest([str(root / folder)], encoder=encoder, store=StoreSettings(store_dir=str(a), collection=name),
                     chunker=Chunker(48, 8), progress=False)
        assert not rep.failed and rep.total_points
    vs = open_store(StoreSettings(store_dir=str(a), collection="docs"))
    try:
        retriever = Retriever(vs, encoder, top_k=10)
        expected = []
        for q, kw in QUERIES:
            filters = [f.replace("sbert.txt", str(root / "docs" / "sbert.txt")) for f in kw.get("filters", [])]
            expected.append(({**kw, "filters": filters} if filters else kw,
                             retriever.search(q, top_k=kw.get("top_k"), mode=kw.get("mode"), filters=filters)
                             .model_dump(mode="json")))
    finally:
        vs.close()
    shutil.copytree(a, root / "store_b", ignore=shutil.ignore_patterns(".rag.lock"))
    return {"root": root, "a": a, "b": root / "store_b", "expected": expected}


@pytest.fixture(scope="module")
def server_a(stores, encoder):
    """Extracts (llm = none), a server key, CORS for one origin; collections docs (the default),
    notes and busy. One extra route fails the way a bug would."""
    cfg = RagConfig(store={"dir": str(stores["a"]), "collection": "docs"}, llm={"backend": "none"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, KEY)
        app = create_app(cfg, ServeOptions(server_key_env=KEY_ENV, cors_origins=[ORIGIN]), encoder=encoder)

    async def broken() -> None:
        raise RuntimeError("a detail the client must not see")

    app.add_api_route("/v1/broken", broken)
    with serve_in_background(app) as url:
        yield url


@pytest.fixture(scope="module")
def fake_llm():
    with WatchedLLM(answer=ANSWER, chunk_chars=6) as server:
        yield server


@pytest.fixture(scope="module")
def server_b(stores, encoder, fake_llm):
    """`llm = auto` with a base URL: the fake LLM, its model found by listing; one generation at a time."""
    cfg = RagConfig(store={"dir": str(stores["b"]), "collection": "docs"},
                    llm={"backend": "auto", "base_url": fake_llm.openai_url, "timeout": 10, "max_retries": 0})
    app = create_app(cfg, ServeOptions(max_concurrent_generations=1), encoder=encoder)
    with serve_in_background(app) as url:
        yield url


def client(url: str, key: str | None = KEY) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=30)


def sse_events(response: httpx.Response) -> list:
    """The data of each server-sent event, JSON-decoded ("[DONE]" kept as a string)."""
    out = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
        if len(out) > 500:
            raise AssertionError("runaway stream")
    return out


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code"}, body
    assert "Traceback" not in body["error"]["message"]
    return body["error"]


# ---------------------------------------------------------------------------- routes and errors


def test_health_needs_no_key_and_models_lists_the_collections(server_a):
    with client(server_a, key=None) as c:
        assert c.get("/health").json() == {"status": "ok"}
    with client(server_a) as c:
        models = c.get("/v1/models").json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["busy", "docs", "notes"]
    assert all(m["object"] == "model" for m in models["data"])


def test_every_route_but_health_needs_the_key_and_the_key_is_never_echoed(server_a):
    wrong = "wrong-key-" + "x" * 20
    for key in (None, wrong):
        with client(server_a, key=key) as c:
            for r in (c.get("/v1/models"), c.post("/v1/search", json={"query": "pooling"}),
                      c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}),
                      c.get("/no/such/route")):
                assert r.status_code == 401, r.text
                err = error_of(r)
                assert err["type"] == "authentication_error" and err["code"] == "invalid_api_key"
                assert wrong not in r.text and KEY not in r.text
                assert r.headers["www-authenticate"].startswith("Bearer")
    with client(server_a, key=None) as c:  # a scheme other than Bearer
        assert c.get("/v1/models", headers={"Authorization": f"Basic {KEY}"}).status_code == 401


def test_search_returns_what_rag_search_json_prints(server_a, stores):
    with client(server_a) as c:
        for (query, kw), (sent, expected) in zip(QUERIES, stores["expected"]):
            r = c.post("/v1/search", json={"query": query, **sent})
            assert r.status_code == 200, r.text
            assert r.json() == expected
        r = c.post("/v1/search", json={"query": "green tea", "collection": "notes", "top_k": 1})
        assert [Path(h["source"]).name for h in r.json()["results"]] == ["tea.txt"]


def test_errors_have_the_openai_shape(server_a):
    with client(server_a) as c:
        r = c.post("/v1/chat/completions", content=b'{"messages": [', headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and error_of(r)["code"] == "invalid_json"
        r = c.post("/v1/chat/completions", json={"model": "docs"})
        assert r.status_code == 400 and error_of(r)["message"].startswith("messages: ")
        r = c.post("/v1/search", json={"query": "x", "topk": 3})  # ours: typos are refused, not ignored
        assert r.status_code == 400 and "topk" in error_of(r)["message"]
        r = c.post("/v1/search", json={"query": "x", "filters": ["colour=red"]})
        assert r.status_code == 400 and "unknown filter key 'colour'" in error_of(r)["message"]
        for body in ({"messages": [{"role": "user", "content": "hi"}], "rag": {"collection": "nope"}},):
            r = c.post("/v1/chat/completions", json=body)
            assert r.status_code == 404 and error_of(r)["code"] == "collection_not_found"
            assert "collection 'nope' does not exist" in error_of(r)["message"]
        r = c.post("/v1/search", json={"query": "x", "collection": "nope"})
        assert r.status_code == 404 and error_of(r)["type"] == "not_found_error"
        r = c.post("/v1/search", json={"query": "x", "collection": "../store_b/docs"})
        assert r.status_code == 400  # a collection name, never a path
        r = c.get("/v1/nothing-here")
        assert r.status_code == 404 and error_of(r)["message"] == "no route GET /v1/nothing-here"
        r = c.get("/v1/search")
        assert r.status_code == 405 and error_of(r)
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "assistant", "content": "hello"}]})
        assert r.status_code == 400 and "no user message" in error_of(r)["message"]
        for blank in ("", " \n\u3000", [{"type": "image_url"}], [{"type": "text", "text": " "}]):
            r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": blank}]})
            assert r.status_code == 400 and "needs text" in error_of(r)["message"], blank
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "", "content": "hi"}]})
        assert r.status_code == 400 and error_of(r)["message"].startswith("messages.0.role")
        big = {"messages": [{"role": "user", "content": "x" * 1_100_000}]}
        r = c.post("/v1/chat/completions", json=big)
        assert r.status_code == 413 and error_of(r)["code"] == "request_too_large"


def test_an_unexpected_failure_is_a_generic_500_logged_on_the_server(server_a, caplog):
    with caplog.at_level("ERROR", logger="pipelines.server"), client(server_a) as c:
        r = c.get("/v1/broken")
    assert r.status_code == 500 and error_of(r)["code"] == "internal_error"
    assert "must not see" not in r.text and "RuntimeError" not in r.text
    assert any("GET /v1/broken failed" in rec.getMessage() and rec.exc_info for rec in caplog.records)


def test_a_collection_another_process_holds_is_a_503_until_it_lets_go(server_a, stores):
    from pipelines.stores import open_store

    holder = open_store(StoreSettings(store_dir=str(stores["a"]), collection="busy"))  # like `rag ingest` would
    try:
        with client(server_a) as c:
            r = c.post("/v1/search", json={"query": "green tea", "collection": "busy"})
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        err = error_of(r)
        assert err["code"] == "store_busy" and "is open in another process (pid" in err["message"]
    finally:
        holder.close()
    with client(server_a) as c:
        assert c.post("/v1/search", json={"query": "green tea", "collection": "busy"}).status_code == 200


def test_cors_only_for_the_origins_given(server_a, server_b):
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    with client(server_a, key=None) as c:
        r = c.options("/v1/chat/completions", headers=preflight)  # browsers send no key on a preflight
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
        r = c.options("/v1/chat/completions", headers={**preflight, "Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers
    with client(server_b, key=None) as c:
        r = c.post("/v1/search", json={"query": "pooling"}, headers={"Origin": ORIGIN})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


# ---------------------------------------------------------------------------- chat with extracts


def test_openai_client_gets_an_answer_with_sources_citations_and_grounding(server_a):
    oa = openai.OpenAI(base_url=f"{server_a}/v1", api_key=KEY, max_retries=0, timeout=60)
    question = [{"role": "user", "content": "What were iPhone net sales?"}]
    done = oa.chat.completions.create(model="docs", messages=question, temperature=0, user="ignored-field",
                                      extra_body={"rag": {"top_k": 3}})
    text = done.choices[0].message.content
    assert "$39.7 billion" in text and re.search(r"\[\d+\]", text)
    assert done.choices[0].finish_reason == "stop" and done.model == "docs" and done.object == "chat.completion"
    extra = done.model_extra
    sources = extra["sources"]
    assert 1 <= len(sources) <= 3 and set(sources[0]) == {"n", "source", "pages", "chunk_ids", "text", "score"}
    cited = extra["citations"]["valid"]
    assert cited and extra["citations"]["invalid"] == []
    assert any("$39.7 billion" in s["text"] and s["n"] in cited for s in sources)
    assert extra["grounding"]["unsupported"] == 0 and extra["grounding"]["sentences"]
    assert extra["backend"] == "extractive" and "extracts" in extra["backend_origin"]
    assert done.usage.prompt_tokens > 0 and done.usage.completion_tokens > 0
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens

    # streamed: the same answer in pieces, sources first, the checks and usage last
    chunks = list(oa.chat.completions.create(model="docs", stream=True, stream_options={"include_usage": True},
                                             messages=question, extra_body={"rag": {"top_k": 3}}))
    assert all(ch.object == "chat.completion.chunk" and isinstance(ch.choices, list) for ch in chunks)
    assert chunks[0].model_extra["sources"] == sources and chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert streamed == text
    last_choice = [ch for ch in chunks if ch.choices][-1]
    assert last_choice.choices[0].finish_reason == "stop"
    assert last_choice.model_extra["citations"]["valid"] == cited and last_choice.model_extra["grounding"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == done.usage.completion_tokens


def test_rag_options_pick_collection_mode_top_k_and_filters(server_a, stores):
    with client(server_a) as c:
        r = c.post("/v1/chat/completions", json={"model": "notes", "messages": [
            {"role": "user", "content": "How hot should the water be for green tea?"}]})
        body = r.json()
        assert r.status_code == 200 and body["model"] == "notes"
        assert "70 to 80 degrees" in body["choices"][0]["message"]["content"]
        sbert = str(stores["root"] / "docs" / "sbert.txt")
        r = c.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": [
            {"role": "user", "content": "Which pooling works best?"}],
            "rag": {"mode": "bm25", "top_k": 1, "filters": {"source": sbert}}})
        body = r.json()
        assert body["model"] == "docs" and [s["source"] for s in body["sources"]] == [sbert]
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}],
                                                 "rag": {"mode": "fuzzy"}})
        assert r.status_code == 400 and "rag.mode" in error_of(r)["message"]


def test_a_follow_up_is_rewritten_against_the_earlier_question(server_a):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What were iPhone net sales?"},
                {"role": "assistant", "content": "iPhone net sales were $39.7 billion [1]."},
                {"role": "user", "content": "And services?"}]
    with client(server_a) as c:
        body = c.post("/v1/chat/completions", json={"messages": messages}).json()
    assert body["standalone_question"] == "And services? (follow-up to: What were iPhone net sales?)"
    assert "$21.2 billion" in body["choices"][0]["message"]["content"]
    assert any("system message" in n for n in body["notes"])


def test_concurrent_searches_and_answers_agree(server_a, stores):
    (query, sent), expected = QUERIES[0], stores["expected"][0][1]

    def search(_):
        with client(server_a) as c:
            return c.post("/v1/search", json={"query": query, **sent}).json()

    def answer(_):
        with client(server_a) as c:
            return c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": query}]}).json()

    with ThreadPoolExecutor(8) as pool:
        searches = list(pool.map(search, range(16)))
        answers = list(pool.map(answer, range(8)))
    assert all(s == expected for s in searches)
    assert len({a["choices"][0]["message"]["content"] for a in answers}) == 1


def test_search_latency_on_a_small_collection(server_a):
    times = []
    with client(server_a) as c:
        for _ in range(50):
            t0 = time.perf_counter()
            assert c.post("/v1/search", json={"query": "What were iPhone net sales?"}).status_code == 200
            times.append(time.perf_counter() - t0)
    times.sort()
    print(f"/v1/search x50: p50 {times[24] * 1000:.1f} ms, p99 {times[48] * 1000:.1f} ms")
    assert times[24] < 2.0


def test_the_served_store_is_held_and_rag_ingest_says_by_whom(server_a, stores):
    done = subprocess.run(rag_command() + ["ingest", str(stores["root"] / "notes"), "--store", str(stores["a"]),
                                           "--collection", "docs", "--no-progress"],
                          env=cli_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 2, done.stderr
    assert f"is open in another process (pid {os.getpid()}); wait for it to finish" in done.stderr
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------------- chat through an LLM


def test_generated_answer_through_the_llm_with_sources(server_b, fake_llm):
    oa = openai.OpenAI(base_url=f"{server_b}/v1", api_key="unused", max_retries=0, timeout=60)
    before = len(fake_llm.requests)
    question = [{"role": "user", "content": "What were iPhone net sales?"}]
    done = oa.chat.completions.create(model="docs", messages=question)
    assert done.choices[0].message.content == ANSWER
    extra = done.model_extra
    assert extra["backend"] == "openai-compatible" and extra["kind"] == "generated"
    assert "configured base URL" in extra["backend_origin"] and "model fake-model" in extra["backend_origin"]
    text = done.choices[0].message.content
    spans = extra["citations"]["spans"]
    assert extra["citations"]["valid"] == [1] and extra["citations"]["invalid"] == []
    assert spans and all(text[s["start"]:s["end"]].startswith("[") and s["passages"] == [1] for s in spans)
    assert extra["grounding"]["unsupported"] == 0
    assert "$39.7 billion" in extra["sources"][0]["text"]
    sent = [r for r in fake_llm.requests[before:] if r.method == "POST"]
    assert len(sent) == 1 and sent[0].body["stream"] is True
    assert "What were iPhone net sales?" in sent[0].body["messages"][-1]["content"]

    chunks = list(oa.chat.completions.create(model="docs", stream=True, messages=question))
    pieces = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert len(pieces) > 3 and "".join(pieces) == ANSWER
    assert chunks[0].model_extra["sources"] == extra["sources"]
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].model_extra["citations"]["valid"] == [1]


def test_an_llm_failure_mid_stream_ends_with_an_error_chunk_then_done(server_b, fake_llm):
    fake_llm.push(Fault.cut(after_chunks=2))
    with client(server_b) as c, c.stream("POST", "/v1/chat/completions", json={
            "stream": True, "messages": [{"role": "user", "content": "What were iPhone net sales?"}]}) as r:
        assert r.status_code == 200
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    error = events[-2]
    assert error["object"] == "chat.completion.chunk" and error["choices"][0]["finish_reason"] == "error"
    assert error["error"]["type"] == "upstream_error" and error["error"]["code"] == "llm_interrupted"
    assert "stream was cut" in error["error"]["message"]
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-2]) == ANSWER[:12]

    fake_llm.push(Fault.cut(after_chunks=2))
    oa = openai.OpenAI(base_url=f"{server_b}/v1", api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(openai.APIError, match="stream was cut"):
        list(oa.chat.completions.create(model="docs", stream=True,
                                        messages=[{"role": "user", "content": "What were iPhone net sales?"}]))


def test_an_llm_down_before_any_text_falls_back_to_extracts(server_b, fake_llm):
    fake_llm.push(Fault.error(503, "overloaded"))
    with client(server_b) as c, c.stream("POST", "/v1/chat/completions", json={
            "stream": True, "messages": [{"role": "user", "content": "What were iPhone net sales?"}]}) as r:
        events = sse_events(r)
    last = events[-2]
    assert events[-1] == "[DONE]" and last["choices"][0]["finish_reason"] == "stop"
    assert last["backend"] == "extractive" and any("LLM failed" in n and "HTTP 503" in n for n in last["notes"])
    assert "$39.7 billion" in "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1])


def test_a_client_that_leaves_stops_the_generation(server_b, fake_llm):
    fake_llm.client_gone.clear()
    fake_llm.push(Fault(stall_after=2, hang=4.0))  # two pieces, then the LLM thinks for 4 s
    streaming = None
    with client(server_b) as c, c.stream("POST", "/v1/chat/completions", json={
            "stream": True, "messages": [{"role": "user", "content": "What were iPhone net sales?"}]}) as r:
        got = ""
        for line in r.iter_lines():
            if line.startswith("data: {"):
                got += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
            if len(got) >= 12:
                streaming = established_to(fake_llm.port())  # the server's stream from the LLM
                break
        r.close()  # the client hangs up (httpx closes the connection of an unfinished response)
        left = time.monotonic()
        while established_to(fake_llm.port()) and time.monotonic() - left < 3.0:
            time.sleep(0.05)
        closed_after = time.monotonic() - left
    assert streaming == 1
    assert established_to(fake_llm.port()) == 0, "the server still holds its stream from the LLM"
    assert closed_after < 3.0  # while the LLM is still stalled: at once, not at its next piece
    assert fake_llm.client_gone.wait(10)  # and the LLM's next write found nobody reading
    # the generation slot came back: the next answer is not stuck behind the abandoned one
    with client(server_b) as c:
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "iPhone net sales?"}]},
                   timeout=20)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == ANSWER


def test_generations_wait_for_a_slot_but_searches_do_not(server_b, fake_llm):
    fake_llm.push(Fault(stall_after=1, hang=1.5))
    before = len(fake_llm.requests)
    ask = {"messages": [{"role": "user", "content": "What were iPhone net sales?"}]}

    def chat(_):
        with client(server_b) as c:
            return c.post("/v1/chat/completions", json=ask).json()

    with ThreadPoolExecutor(2) as pool:
        answers = pool.map(chat, range(2))
        time.sleep(0.5)  # one generation is stalled in the LLM now, the other waits for the slot
        t0 = time.perf_counter()
        with client(server_b) as c:
            assert c.post("/v1/search", json={"query": "pooling"}).status_code == 200
        search_seconds = time.perf_counter() - t0
        answers = list(answers)
    assert [a["choices"][0]["message"]["content"] for a in answers] == [ANSWER, ANSWER]
    first, second = [r.at for r in fake_llm.requests[before:] if r.method == "POST"]
    assert second - first >= 1.4  # the second reached the LLM only after the first was done
    assert search_seconds < 1.0


def test_a_follow_up_is_rewritten_by_the_llm_under_the_same_slot(server_b, fake_llm):
    before = len(fake_llm.requests)
    messages = [{"role": "user", "content": "What were iPhone net sales?"},
                {"role": "assistant", "content": "They were $39.7 billion [1]."},
                {"role": "user", "content": "And in the quarter before?"}]
    with client(server_b) as c:
        body = c.post("/v1/chat/completions", json={"messages": messages}).json()
    rewrite, answer = [r.body for r in fake_llm.requests[before:] if r.method == "POST"]
    assert "stream" not in rewrite and "Last question: And in the quarter before?" in rewrite["messages"][-1]["content"]
    assert "They were $39.7 billion." in rewrite["messages"][-1]["content"]  # history without the [n]
    assert body["standalone_question"] == ANSWER  # what the (fake) LLM rewrote it to
    assert answer["stream"] is True and [m["role"] for m in answer["messages"]][:3] == ["system", "user", "assistant"]


class Declared:
    """A backend of no class the server knows (no subclass of the HTTP base): only what it
    declares sizes its slots. It is never asked to generate here."""

    name, context_window, token_counter = "declared", 2048, None

    def __init__(self, max_concurrency: int | None):
        self.max_concurrency = max_concurrency


def test_generation_slots_come_from_what_the_backend_declares():
    from connectors.llm.local import LocalTransformersBackend
    from connectors.llm.openai import OpenAICompatibleBackend
    from pipelines.server.generation import generation_slots
    from pipelines.server.security import DEFAULT_NETWORK_GENERATIONS

    network = OpenAICompatibleBackend("m", "http://127.0.0.1:9/v1")
    assert generation_slots(None, None) == 0
    assert generation_slots(LocalTransformersBackend(), None) == generation_slots(LocalTransformersBackend(), 8) == 1
    assert generation_slots(network, None) == DEFAULT_NETWORK_GENERATIONS == 4
    assert generation_slots(network, 2) == 2
    assert generation_slots(Declared(None), None) == 4 and generation_slots(Declared(None), 6) == 6
    assert generation_slots(Declared(1), 6) == 1 and generation_slots(Declared(3), 6) == 3


def test_the_server_sizes_its_slots_by_the_declaration_not_the_class(stores, encoder, monkeypatch, tmp_path):
    """A network backend of a class the server never heard of gets the network's slots; one that
    says it serves one answer at a time gets one."""
    import connectors.llm.registry as registry
    from pipelines.server.state import ServerState

    store = tmp_path / "store"
    shutil.copytree(stores["a"], store, ignore=shutil.ignore_patterns(".rag.lock"))
    llm = {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}  # never contacted
    for declared, slots in ((None, 3), (1, 1)):
        monkeypatch.setattr(registry, "make_backend", lambda settings, d=declared: Declared(d))
        state = ServerState(RagConfig(store={"dir": str(store), "collection": "docs"}, llm=llm),
                            ServeOptions(max_concurrent_generations=3), encoder=encoder)
        try:
            state.open()
            assert state.generation_slots == slots
        finally:
            state.close()


def test_every_argument_of_the_servers_pipeline_reaches_each_requests_pipeline(stores, encoder, tmp_path):
    """A request's pipeline is the server's pipeline derived with the request's searcher, LLM,
    settings and hook: every other RagPipeline argument (one added later included) is the
    server's own. Closing it leaves the server's collection open."""
    import asyncio

    from pipelines.answer import ARGUMENT_ATTRIBUTES, RagPipeline
    from pipelines.server.state import ServerState

    store = tmp_path / "store"
    shutil.copytree(stores["a"], store, ignore=shutil.ignore_patterns(".rag.lock"))
    state = ServerState(RagConfig(store={"dir": str(store), "collection": "docs"}, llm={"backend": "none"}),
                        encoder=encoder).open()
    loop = asyncio.new_event_loop()
    try:
        served = state.collection(None)
        per_request = {"encoder": served.encoder, "store": served.settings, "sentence_cache": served.sentence_cache,
                       "llm": None, "on_prepared": print}
        server_own = [n for n in inspect.signature(RagPipeline).parameters
                      if n not in {*per_request, "searcher", "generation"}]
        for name in server_own:  # a value of its own each, which only the server's pipeline holds
            setattr(state.base, ARGUMENT_ATTRIBUTES.get(name, name), object())
        one = state.request_pipeline(served, loop=loop, streaming=True, mode="dense", top_k=2, temperature=0.3,
                                     max_tokens=5, on_prepared=print)
        for name in server_own:
            attribute = ARGUMENT_ATTRIBUTES.get(name, name)
            assert getattr(one, attribute) is getattr(state.base, attribute), name
        assert all(getattr(one, n) is v for n, v in per_request.items())
        assert (one.generation.temperature, one.generation.max_tokens) == (0.3, 5)
        found = one.search("tomato watering")
        assert len(found.results) == 2 and found.mode == "dense"
        one.close()
        assert served.search("tomato watering", top_k=2, mode="dense").results == found.results
    finally:
        loop.close()
        state.close()


def test_the_gate_and_the_serialised_store_name_every_member_they_pass_on():
    """GatedLLM is an LLMBackend and SerialisedStore a VectorStore by their own methods, not by
    forwarding whatever is asked (so no call slips past the slot or the lock); every store call
    holds the lock."""
    import asyncio

    from pipelines.server.generation import GatedLLM
    from pipelines.server.serialised import SerialisedStore
    from rag.answer.llm import LLMBackend
    from rag.search.store import VectorStore

    assert not hasattr(GatedLLM, "__getattr__") and not hasattr(SerialisedStore, "__getattr__")
    gated = GatedLLM(Declared(None), asyncio.Semaphore(1), asyncio.new_event_loop(), interrupt_after_text=True)
    assert isinstance(gated, LLMBackend)
    assert (gated.name, gated.context_window, gated.max_concurrency, gated.token_counter) == ("declared", 2048, None, None)
    gated.loop.close()

    members = [m for m in dir(VectorStore) if not m.startswith("_")] + ["name", "info", "revision", "sole_writer"]
    held: list[tuple[str, bool]] = []

    class Recording:
        name, info, revision, sole_writer = "c", "info", 7, True

        def __getattr__(self, method):
            def call(*args):
                others = []
                thread = threading.Thread(target=lambda: others.append(wrapper._lock.acquire(blocking=False)))
                thread.start()
                thread.join()
                held.append((method, not others[0]))
                return iter([("1", {}), ("2", {})]) if method == "payloads" else None
            return call

    wrapper = SerialisedStore(Recording())
    for member in members:
        value = getattr(wrapper, member)
        if callable(value):
            result = value(*[None] * (len(inspect.signature(value).parameters)))
            if member == "payloads":
                assert list(result) == [("1", {}), ("2", {})]
        assert member in vars(SerialisedStore), member
    assert (wrapper.name, wrapper.info, wrapper.revision, wrapper.sole_writer) == ("c", "info", 7, True)
    assert held and all(locked for _, locked in held), held


def test_the_default_collection_is_warm_before_the_first_request(stores, encoder, tmp_path):
    """Opening the server runs a search's first steps (the router's index, encoder passes on the
    gate's thread); the first request then finds them done. Collections opened later are not."""
    from pipelines.server.state import ServerState

    store = tmp_path / "store"
    shutil.copytree(stores["a"], store, ignore=shutil.ignore_patterns(".rag.lock"))
    state = ServerState(RagConfig(store={"dir": str(store), "collection": "docs"}, llm={"backend": "none"}),
                        encoder=encoder).open()
    try:
        served = state.collection(None)
        assert served.retriever._router is not None and served.retriever._router._index is not None
        assert served.encoder.stats["urgent_passes"] >= 2
        other = state.collection("notes")
        assert other.retriever._router is None
    finally:
        state.close()


# ---------------------------------------------------------------------------- the command


def test_the_command_refuses_an_open_address_without_a_key_and_workers_with_the_embedded_store(
        tmp_path, capsys, monkeypatch):
    from pipelines.cli.app import build_parser, main
    from pipelines.cli.serve import serve_options
    from pipelines.server.security import check_bind, is_loopback
    from rag.errors import ConfigError

    assert all(is_loopback(h) for h in ("127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.com"))
    with pytest.raises(ConfigError, match="refusing to listen on 0.0.0.0"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "a-key")  # with a key: allowed (nothing is bound here)

    store = ["--store", str(tmp_path / "none")]
    assert main(["serve", "--host", "0.0.0.0", *store]) == 2
    assert "refusing to listen on 0.0.0.0" in capsys.readouterr().err
    assert main(["serve", "--server-key-env", "RAG_TEST_UNSET_KEY", *store]) == 2
    assert "RAG_TEST_UNSET_KEY: the variable is not set" in capsys.readouterr().err
    assert main(["serve", "--workers", "2", *store]) == 2
    assert "--workers 2: the embedded store is opened by one process" in capsys.readouterr().err

    monkeypatch.setenv(KEY_ENV, KEY)
    parse = build_parser().parse_args
    cfg, options = serve_options(parse(["serve", "--host", "0.0.0.0", "--server-key-env", KEY_ENV, "--workers", "2",
                                        "--url", "http://qdrant:6333", "--llm", "none"]))
    assert options.workers == 2 and cfg.store.url == "http://qdrant:6333" and KEY not in options.model_dump_json()
    assert main(["serve", "--collection", "absent", *store, "--llm", "none", "--port", "0"]) == 2
    assert "collection 'absent' does not exist" in capsys.readouterr().err


def test_the_other_commands_never_load_the_web_stack():
    code = ("import sys; from pipelines.cli.app import build_parser; build_parser(); "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'pipelines.server.app') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


@pytest.mark.slow
def test_the_chat_server_example_answers_with_its_sources(tmp_path):
    example = Path(__file__).resolve().parents[1] / "examples" / "chat_server.py"
    done = subprocess.run([sys.executable, str(example), "--llm", "none"], cwd=tmp_path, env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "A shot takes 25 to 30 seconds." in done.stdout and "cited espresso.md" in done.stdout
    assert "answered by: extractive" in done.stdout
    assert list(tmp_path.iterdir()) == []
