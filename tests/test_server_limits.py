"""`rag serve`: each client's share of the server (429 with Retry-After) and collection
management, on a real uvicorn on loopback in front of the fake OpenAI-compatible LLM. Every
request loop is bounded in count and time."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from helpers_ingest import write
from llm_fake_server import FakeLLMServer, Fault
from pipelines.config import RagConfig
from pipelines.server.app import create_app, serve_in_background
from pipelines.server.security import matching_key, split_keys
from pipelines.server.options import ServeOptions
from pipelines.stores import StoreSettings

KEYS, KEY_ENV = ("first-client-key-0123", "second-client-key-4567"), "RAG_TEST_LIMIT_KEYS"
ANSWER = "Green tea is steeped at 70 to 80 degrees Celsius [1]."
ASK = {"stream": True, "messages": [{"role": "user", "content": "How hot is the water for green tea?"}]}


@pytest.fixture(scope="module")
def store(tmp_path_factory, encoder):
    from pipelines.ingest import ingest
    from rag.ingest.chunking import Chunker

    root = tmp_path_factory.mktemp("limits")
    write(root / "notes", {"tea.txt": "Green tea is steeped at 70 to 80 degrees Celsius for two to three minutes. "
                                      "Black tea takes boiling water and four minutes."})
    rep = ingest([str(root / "notes")], encoder=encoder, progress=False, chunker=Chunker(48, 8),
                 store=StoreSettings(store_dir=str(root / "store"), collection="notes"))
    assert rep.total_points
    return root


@pytest.fixture(scope="module")
def fake_llm():
    with FakeLLMServer(answer=ANSWER, chunk_chars=8) as server:
        yield server


@pytest.fixture(scope="module")
def server(store, encoder, fake_llm):
    """Two client keys; each may have 3 requests and 2 chats in flight."""
    cfg = RagConfig(store={"dir": str(store / "store"), "collection": "notes"},
                    llm={"backend": "openai", "base_url": fake_llm.openai_url, "model": "fake-model", "timeout": 20,
                         "max_retries": 0})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, ",".join(KEYS))
        app = create_app(cfg, ServeOptions(server_key_env=KEY_ENV, max_requests_per_client=3,
                                           max_chats_per_client=2, max_concurrent_generations=8), encoder=encoder)
    with serve_in_background(app) as url:
        yield url


def client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_several_keys_in_one_variable_each_is_a_client():
    assert split_keys(" a-key , other-key,,") == ("a-key", "other-key")
    keys = [k.encode() for k in KEYS]
    assert matching_key(KEYS[1].encode(), keys) == 1 and matching_key(b"nope", keys) is None
    assert matching_key(None, keys) is None


def hold_streams(url: str, key: str, n: int, started: threading.Barrier | None = None) -> list[threading.Thread]:
    """`n` streamed chats of `key` that stay open until the LLM's stall ends."""
    def run():
        with client(url, key) as c, c.stream("POST", "/v1/chat/completions", json=ASK) as r:
            assert r.status_code == 200
            for _ in r.iter_lines():
                pass

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def wait_for_llm_requests(fake_llm, n: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(r.method == "POST" for r in fake_llm.requests) < n:
        assert time.monotonic() < deadline, "the held chats never reached the LLM"
        time.sleep(0.05)


def test_a_client_over_its_share_gets_429_with_retry_after_and_others_do_not(server, fake_llm):
    before = sum(r.method == "POST" for r in fake_llm.requests)
    fake_llm.push(Fault(stall_after=1, hang=3.0), Fault(stall_after=1, hang=3.0))
    held = hold_streams(server, KEYS[0], 2)
    wait_for_llm_requests(fake_llm, before + 2)  # both chats are in flight, stalled in the LLM
    with client(server, KEYS[0]) as c:
        third = c.post("/v1/chat/completions", json={**ASK, "stream": False})
        search = c.post("/v1/search", json={"query": "green tea"})  # the 3rd request: still allowed
    assert third.status_code == 429 and third.headers["retry-after"] == "1"
    err = third.json()["error"]
    assert err["code"] == "rate_limit_exceeded" and err["type"] == "rate_limit_error"
    assert "chat completions in flight" in err["message"] and KEYS[0] not in err["message"]
    assert search.status_code == 200
    with client(server, KEYS[1]) as c:  # another key has a share of its own
        other = c.post("/v1/chat/completions", json={**ASK, "stream": False})
    assert other.status_code == 200 and other.json()["choices"][0]["message"]["content"] == ANSWER
    for t in held:
        t.join(30)
    with client(server, KEYS[0]) as c:  # the places came back when the streams ended
        again = c.post("/v1/chat/completions", json={**ASK, "stream": False})
    assert again.status_code == 200


def test_requests_in_flight_are_capped_too(server, fake_llm):
    before = sum(r.method == "POST" for r in fake_llm.requests)
    fake_llm.push(Fault(stall_after=1, hang=3.0), Fault(stall_after=1, hang=3.0))
    held = hold_streams(server, KEYS[1], 2)
    wait_for_llm_requests(fake_llm, before + 2)
    statuses = []
    stop = threading.Event()

    def slow_list():  # a third request in flight: the document list, repeated until told
        with client(server, KEYS[1]) as c:
            while not stop.is_set():
                statuses.append(c.get("/v1/documents").status_code)

    lister = threading.Thread(target=slow_list)
    lister.start()
    try:
        refused = 0
        with client(server, KEYS[1]) as c:
            for _ in range(200):  # bounded: one of these overlaps a list request
                r = c.post("/v1/search", json={"query": "black tea"})
                assert r.status_code in (200, 429)
                if r.status_code == 429:
                    refused += 1
                    assert "requests in flight" in r.json()["error"]["message"]
                    break
    finally:
        stop.set()
        lister.join(30)
        for t in held:
            t.join(30)
    assert refused == 1
    assert all(s in (200, 429) for s in statuses)
    with client(server, KEYS[1]) as c:
        assert c.get("/health").status_code == 200
        assert c.post("/v1/search", json={"query": "black tea"}).status_code == 200


def test_collections_are_listed_created_and_deleted(server, store):
    with client(server, KEYS[0]) as c:
        listed = c.get("/v1/collections").json()
        assert [(d["id"], d["default"]) for d in listed["data"]] == [("notes", True)]
        assert listed["data"][0]["points"] > 0 and listed["data"][0]["model"]
        made = c.post("/v1/collections", json={"name": "reports"})
        assert made.status_code == 201, made.text
        assert made.json()["points"] == 0 and made.json()["chunk_size"] == listed["data"][0]["chunk_size"]
        assert c.post("/v1/collections", json={"name": "reports"}).json()["error"]["code"] == "collection_exists"
        assert c.post("/v1/collections", json={"name": "../x"}).status_code == 400
        assert {m["id"] for m in c.get("/v1/models").json()["data"]} == {"notes", "reports"}
        # an upload into the new collection, then searched there
        up = c.post("/v1/documents", data={"collection": "reports"},
                    files={"file": ("q3.txt", b"Quarterly revenue grew by twelve percent in the third quarter.",
                                    "text/plain")})
        assert up.status_code == 202, up.text
        job = up.json()["job_id"]
        for _ in range(200):
            state = c.get(f"/v1/jobs/{job}").json()
            if state["status"] in ("done", "failed"):
                break
            time.sleep(0.1)
        assert state["status"] == "done", state
        hits = c.post("/v1/search", json={"query": "quarterly revenue", "collection": "reports"}).json()
        assert hits["results"] and hits["results"][0]["source"] == "q3.txt"
        # delete: the default is refused, the new one goes with its folder, an unknown one is a 404
        assert c.delete("/v1/collections/notes").json()["error"]["code"] == "default_collection"
        gone = c.delete("/v1/collections/reports")
        assert gone.status_code == 200 and gone.json()["deleted"] and gone.json()["points"] == 1
        assert not (store / "store" / "reports").exists()
        assert not [p for p in (store / "store").iterdir() if p.name.startswith(".deleting")]
        assert c.delete("/v1/collections/reports").status_code == 404
        assert c.post("/v1/search", json={"query": "revenue", "collection": "reports"}).status_code == 404
        assert [d["id"] for d in c.get("/v1/collections").json()["data"]] == ["notes"]


def test_html_and_docx_uploads_are_ingested(server, tmp_path):
    import docx

    d = docx.Document()
    d.add_heading("Pumpkin harvest", level=1)
    d.add_paragraph("The pumpkin harvest weighed 412 kilograms this autumn.")
    d.save(tmp_path / "harvest.docx")
    page = (b"<html><head><title>Orchard</title><script>var x = 'dropped';</script></head>"
            b"<body><h1>Apples</h1><p>The orchard picked 9,300 apples in September.</p></body></html>")
    with client(server, KEYS[0]) as c:
        assert c.post("/v1/collections", json={"name": "formats"}).status_code == 201
        try:
            up = c.post("/v1/documents", data={"collection": "formats"},
                        files=[("file", ("orchard.html", page, "text/html")),
                               ("file", ("harvest.docx", (tmp_path / "harvest.docx").read_bytes(),
                                         "application/octet-stream"))])
            assert up.status_code == 202, up.text
            for _ in range(300):
                state = c.get(f"/v1/jobs/{up.json()['job_id']}").json()
                if state["status"] in ("done", "failed"):
                    break
                time.sleep(0.1)
            assert sorted((o["source"], o["status"]) for o in state["outcomes"]) == [
                ("harvest.docx", "ingested"), ("orchard.html", "ingested")], state
            hits = c.post("/v1/search", json={"query": "how many apples", "collection": "formats"}).json()
            assert hits["results"][0]["source"] == "orchard.html" and "9,300" in hits["results"][0]["text"]
            assert "dropped" not in " ".join(h["text"] for h in hits["results"])
        finally:
            assert c.delete("/v1/collections/formats").status_code == 200
