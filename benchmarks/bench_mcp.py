"""What an MCP `search` costs over `POST /v1/search` on the same `rag serve`.

    python benchmarks/bench_mcp.py [--store DIR --collection NAME] [--calls 50] [--out /tmp/bench_mcp.json]

1. Store: DIR/NAME as it is, or (default) the repository's own Markdown (README.md, docs/,
   benchmarks/README.md) ingested into a temporary store: real prose, no download.
2. Server: `rag serve --llm none` as a subprocess on a free loopback port, behind a server key
   (both paths pay the key check), waited for on /health.
3. Calls: 5 warm-up calls each, then `--calls` rounds, each one `POST /v1/search` (httpx, one
   keep-alive connection) and one MCP `tools/call search` (the SDK's own client, one session
   over streamable HTTP) with the same query and top_k, one after the other, so both see the
   same server state. Every call is timed end to end at the client, sequentially (no load).
4. Report: p50 / p90 / max of each, and the p50 difference: what the MCP layer adds (JSON-RPC
   framing, the SDK's transport and validation, the result as text and structured content).
   Both answer the same passages (checked on every round).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

KEY, KEY_ENV = "bench-mcp-key-0123456789", "RAG_BENCH_MCP_KEY"
QUERIES = ["How do I serve the collection over HTTP?", "What does hybrid search fuse?",
           "How are uploads checked?", "Which encoder is used by default?", "How is a crash repaired?",
           "What is the grounding check?", "How fast is ingest?", "What does rag eval report?",
           "How are keys compared?", "What is document routing?"]
TOP_K = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_store(root: Path) -> tuple[Path, str]:
    files = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    folder = root / "docs"
    folder.mkdir()
    for f in files:
        if f.exists():
            (folder / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    store = root / "store"
    subprocess.run([sys.executable, "-m", "pipelines.cli", "ingest", str(folder), "--store", str(store),
                    "--collection", "docs", "--no-progress"], check=True, stdout=subprocess.DEVNULL)
    return store, "docs"


def stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"n": len(ms), "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p90_ms": round(float(np.percentile(a, 90)), 2), "max_ms": round(float(a.max()), 2)}


async def measure(url: str, calls: int) -> dict:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {KEY}"}
    http = httpx2.AsyncClient(headers=headers, timeout=60)
    rest_ms, mcp_ms = [], []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as rest, \
            Client(streamable_http_client(url + "/mcp", http_client=http)) as client:
        for i in range(5 + calls):
            query = QUERIES[i % len(QUERIES)]
            t0 = time.perf_counter()
            r = await rest.post("/v1/search", json={"query": query, "top_k": TOP_K})
            t1 = time.perf_counter()
            m = await client.call_tool("search", {"query": query, "top_k": TOP_K})
            t2 = time.perf_counter()
            r.raise_for_status()
            assert not m.is_error, m.content
            ids = [x["id"] for x in r.json()["results"]]
            assert ids == [x["id"] for x in m.structured_content["results"]], (query, ids)
            if i >= 5:
                rest_ms.append((t1 - t0) * 1000)
                mcp_ms.append((t2 - t1) * 1000)
        listed = (await rest.get("/v1/collections")).json()["data"]
    rest_s, mcp_s = stats(rest_ms), stats(mcp_ms)
    return {"chunks": next(c.get("points") for c in listed if c["default"]), "v1_search": rest_s, "mcp_search": mcp_s,
            "mcp_adds_p50_ms": round(mcp_s["p50_ms"] - rest_s["p50_ms"], 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store")
    ap.add_argument("--collection", default="documents")
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--out")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_mcp_") as tmp:
        store, collection = (Path(args.store), args.collection) if args.store else make_store(Path(tmp))
        port = free_port()
        env = {**os.environ, KEY_ENV: KEY}
        server = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--store", str(store),
                                   "--collection", collection, "--llm", "none", "--port", str(port),
                                   "--server-key-env", KEY_ENV, "--log-level", "warning"], env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    print("the server did not start", file=sys.stderr)
                    return 1
                time.sleep(0.2)
            result = asyncio.run(measure(url, args.calls))
        finally:
            server.terminate()
            server.wait(30)
    result["store"] = str(args.store or "repository Markdown (temporary)")
    result["top_k"] = TOP_K
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
