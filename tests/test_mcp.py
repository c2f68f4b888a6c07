"""The MCP tools as MCP clients see them, driven by the official SDK's own client: over stdio,
`python -m pipelines.cli mcp` launched as a subprocess on a small store made here; over
streamable HTTP, `/mcp` inside a real `rag serve` on 127.0.0.1 behind a server key and keys per
client. The passages must be those `rag search --json` prints (run before any server holds the
store). Every wait is bounded."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_ingest import cli_env, write
from pipelines.config import RagConfig
from pipelines.server.app import create_app, serve_in_background
from pipelines.server.options import ServeOptions
from pipelines.stores import StoreSettings
from rag.models import page_label

pytest.importorskip("mcp", reason="needs the mcp SDK (the mcp extra)")

from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

TOOLS = {"search", "ask", "list_collections", "list_documents", "get_passage"}
DOCS = {"garden.txt": " ".join(
    f"Garden note {i}: tomatoes need full sun, regular watering and a stake by week {i + 3}; basil grows "
    f"well beside them and marigolds keep pests away from bed {i}." for i in range(8)),
    "bread.md": "# Sourdough\n\nA sourdough starter is fed with equal weights of flour and water. The dough "
                "rises overnight in a cool kitchen and is baked at 250 degrees for forty minutes."}
NOTES = {"tea.txt": "Green tea is steeped at 70 to 80 degrees Celsius for two to three minutes. "
                    "Black tea takes boiling water and four minutes."}
QUERY = "How much sun and water do tomatoes need?"
KEY, KEY_ENV = "mcp-server-key-0123456789", "RAG_TEST_MCP_KEY"
NOTES_KEY = "notes-team-key-0123456789"
CALL_TIMEOUT = 120


@pytest.fixture(scope="module")
def stores(tmp_path_factory, encoder):
    """Collections docs (several chunks per file) and notes; what `rag search --json` prints for
    QUERY, taken before any server holds the store; a copy of the store for the HTTP server."""
    from pipelines.ingest import ingest
    from rag.ingest.chunking import Chunker

    root = tmp_path_factory.mktemp("mcp")
    write(root / "docs", DOCS)
    write(root / "notes", NOTES)
    store = root / "store"
    for name in ("docs", "notes"):
        rep = ingest([str(root / name)], encoder=encoder, chunker=Chunker(48, 8), progress=False,
                     store=StoreSettings(store_dir=str(store), collection=name))
        assert not rep.failed and rep.total_points
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "search", QUERY, "--store", str(store),
                           "--collection", "docs", "--json", "-k", "8"], env=cli_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    from pipelines.stores import open_store

    vs = open_store(StoreSettings(store_dir=str(store), collection="docs"))
    try:
        chunks = {pid: payload for pid, payload in vs.payloads(["source", "chunk_index", "text"])}
    finally:
        vs.close()
    shutil.copytree(store, root / "store_http", ignore=shutil.ignore_patterns(".rag.lock"))
    return {"root": root, "store": store, "http": root / "store_http", "expected": json.loads(done.stdout),
            "chunks": chunks}


def same_passages(found: dict, expected: dict) -> None:
    """The tool's passages are the CLI's: same chunks, ranks, scores, sources, pages and text."""
    got = [(r["id"], r["rank"], round(r["score"], 5), r["source"], r["text"]) for r in found["results"]]
    want = [(r["id"], r["rank"], round(r["score"], 5), r["source"], r["text"]) for r in expected["results"]]
    assert got == want
    assert len(got) == 8


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, CALL_TIMEOUT))


async def exercise(client: Client, expected: dict) -> dict:
    """List the tools, then call each as an assistant would; returns what came back."""
    out: dict = {}
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert len(tool.description) > 60 and tool.input_schema["type"] == "object"
        assert tool.annotations.read_only_hint is True
    assert tools["search"].input_schema["required"] == ["query"]
    assert tools["search"].input_schema["properties"]["top_k"]["maximum"] == 20  # bounded for small contexts
    out["search"] = await client.call_tool("search", {"query": QUERY, "top_k": 8})
    first = out["search"].structured_content["results"][0]
    out["passage"] = await client.call_tool("get_passage", {"chunk_id": first["id"], "neighbours": 2})
    out["ask"] = await client.call_tool("ask", {"question": QUERY})
    out["collections"] = await client.call_tool("list_collections", {})
    out["documents"] = await client.call_tool("list_documents", {})
    out["missing"] = await client.call_tool("search", {"query": QUERY, "collection": "nothing-here"})
    out["bad id"] = await client.call_tool("get_passage", {"chunk_id": "not-an-id"})
    out["unknown id"] = await client.call_tool("get_passage", {"chunk_id": "00000000-0000-0000-0000-000000000000"})
    out["too many"] = await client.call_tool("search", {"query": QUERY, "top_k": 500})
    return out


def check_answers(out: dict, expected: dict, store: Path, chunks: dict[str, dict]) -> None:
    search = out["search"]
    assert not search.is_error and search.structured_content["collection"] == "docs"
    same_passages(search.structured_content, expected)
    assert json.loads(search.content[0].text) == search.structured_content  # the text is the same JSON

    passage = out["passage"].structured_content
    first = expected["results"][0]
    assert not out["passage"].is_error and passage["id"] == first["id"] and passage["text"] == first["text"]
    assert passage["source"] == first["source"] and passage["pages"] == page_label(first["page_start"],
                                                                                  first["page_end"])
    # its neighbours: the chunks of the same file within two places, in order, with their text
    index = first["chunk_index"]
    near = sorted((c["chunk_index"], pid) for pid, c in chunks.items()
                  if c["source"] == first["source"] and 0 < abs(c["chunk_index"] - index) <= 2)
    assert [p["id"] for p in passage["before"]] == [pid for i, pid in near if i < index]
    assert [p["id"] for p in passage["after"]] == [pid for i, pid in near if i > index]
    assert len(near) >= 2 and all(p["text"] == chunks[p["id"]]["text"] for p in passage["before"] + passage["after"])

    ask = out["ask"]
    assert not ask.is_error, ask.content
    answer = ask.structured_content
    assert answer["kind"] == "extractive" and "sun" in answer["answer"]
    assert answer["sources"] and {s["source"] for s in answer["sources"]} <= {r["source"] for r in expected["results"]}
    assert answer["citations"]["valid"] and not answer["citations"]["invalid"]
    assert answer["grounding"]["unsupported"] == 0
    assert all(s["chunk_ids"] for s in answer["sources"])

    assert out["collections"].structured_content["collections"] == [
        {"name": "docs", "default": True, "chunks": len(chunks)}, {"name": "notes", "default": False, "chunks": 1}]
    documents = out["documents"].structured_content
    assert [d["source"].rsplit("/", 1)[-1] for d in documents["documents"]] == ["bread.md", "garden.txt"]
    assert documents["next_offset"] is None and documents["total"] == 2

    missing = out["missing"]
    assert missing.is_error and missing.content[0].text == (
        f"collection 'nothing-here' does not exist in {store.resolve()} "
        "(run `rag ingest` first, or check --store and --collection)")
    assert out["bad id"].is_error and "is not a chunk id" in out["bad id"].content[0].text
    assert out["unknown id"].is_error and "has no chunk" in out["unknown id"].content[0].text
    assert out["too many"].is_error and "top_k" in out["too many"].content[0].text
    for name in ("missing", "bad id", "unknown id", "too many"):
        assert "Traceback" not in out[name].content[0].text


def test_over_stdio_the_tools_give_what_the_cli_gives(stores):
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "pipelines.cli", "mcp", "--store", str(stores["store"]),
                                      "--collection", "docs", "--llm", "none"],
        env=cli_env(), cwd=str(stores["root"]))

    with open(stores["root"] / "mcp-stderr.log", "w") as log:  # the server's stderr (its model loading)
        async def session() -> dict:
            async with Client(stdio_client(params, errlog=log)) as client:
                return await exercise(client, stores["expected"])

        out = run(session())
    check_answers(out, stores["expected"], stores["store"], stores["chunks"])


def test_a_wrong_store_stops_rag_mcp_with_the_clis_message(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "mcp", "--store", str(tmp_path / "none"),
                           "--llm", "none"], env=cli_env(), capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and done.stdout == ""  # stdout is the protocol's
    assert "rag: error: collection 'documents' does not exist" in done.stderr and "Traceback" not in done.stderr


# ---------------------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def server(stores, encoder, tmp_path_factory):
    keys = tmp_path_factory.mktemp("mcp_keys") / "keys.toml"
    keys.write_text(f'[[key]]\nname = "notes-team"\nsha256 = "{hashlib.sha256(NOTES_KEY.encode()).hexdigest()}"\n'
                    'read = ["notes"]\n')
    cfg = RagConfig(store={"dir": str(stores["http"]), "collection": "docs"}, llm={"backend": "none"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, KEY)
        app = create_app(cfg, ServeOptions(server_key_env=KEY_ENV, keys_file=str(keys)), encoder=encoder)
    with serve_in_background(app) as url:
        yield url


def http_client(url: str, key: str | None) -> Client:
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=CALL_TIMEOUT)
    return Client(streamable_http_client(url + "/mcp", http_client=http))


def test_over_http_the_tools_give_what_the_cli_gives_behind_the_key(server, stores):
    import httpx

    async def session() -> dict:
        async with http_client(server, KEY) as client:
            return await exercise(client, stores["expected"])

    out = run(session())
    check_answers(out, stores["expected"], stores["http"], stores["chunks"])
    # ... and the same passages as the server's own /v1/search
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
        r = c.post("/v1/search", json={"query": QUERY, "top_k": 8})
    same_passages(out["search"].structured_content, r.json())


def test_over_http_a_call_without_the_key_is_refused(server):
    import httpx

    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    for headers in ({}, {"Authorization": "Bearer not-the-key"}):
        r = httpx.post(server + "/mcp", json=body, timeout=30,
                       headers={**headers, "Accept": "application/json, text/event-stream"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert "not-the-key" not in r.text

    async def session() -> None:
        async with http_client(server, None) as client:
            await client.list_tools()

    with pytest.raises(Exception) as refused:  # the SDK's client cannot even start a session
        run(session())
    assert not isinstance(refused.value, TimeoutError)  # refused at once, not left waiting


def test_over_http_a_key_sees_only_its_collections(server, stores):
    async def session() -> dict:
        out = {}
        async with http_client(server, NOTES_KEY) as client:
            out["collections"] = await client.call_tool("list_collections", {})
            out["search"] = await client.call_tool("search", {"query": "green tea"})
            for collection in ("docs", "nothing-here"):
                out[collection] = [await client.call_tool("search", {"query": QUERY, "collection": collection}),
                                   await client.call_tool("list_documents", {"collection": collection}),
                                   await client.call_tool("ask", {"question": QUERY, "collection": collection}),
                                   await client.call_tool("get_passage", {
                                       "chunk_id": stores["expected"]["results"][0]["id"], "collection": collection})]
        return out

    out = run(session())
    assert out["collections"].structured_content == {"collections": [{"name": "notes", "default": True,
                                                                        "chunks": 1}]}
    search = out["search"].structured_content  # no collection named: the key's default, notes
    assert search["collection"] == "notes" and search["results"][0]["source"].endswith("tea.txt")
    for theirs, missing in zip(out["docs"], out["nothing-here"]):
        assert theirs.is_error and missing.is_error
        assert theirs.content[0].text == missing.content[0].text.replace("nothing-here", "docs")
