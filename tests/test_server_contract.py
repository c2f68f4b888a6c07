"""The OpenAPI document of `rag serve` tells the truth: schemathesis (the `st` command, as a user
runs it) fuzzes a real server on 127.0.0.1, behind a key, with every check on
(`--checks all`: server errors, status codes, content types, response headers and schemas,
valid data accepted, invalid data refused, auth enforced, Allow on 405, ...), a bounded number
of examples per operation and a fixed seed; any finding fails the test. The few checks of the
document itself that need no fuzzer are below it.

    pytest tests/test_server_contract.py     (it prints the generated requests and findings)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from pipelines.config import RagConfig
from pipelines.server.app import create_app, serve_in_background
from pipelines.server.contract import ROUTE_ERRORS
from pipelines.server.options import ServeOptions
from pipelines.stores import StoreSettings

KEY, KEY_ENV = "test-contract-key-0123456789", "RAG_TEST_CONTRACT_KEY"
EXAMPLES = int(os.environ.get("RAG_CONTRACT_EXAMPLES", "50"))  # per operation and phase
SEED = 23
CONFIG = Path(__file__).with_name("schemathesis.toml")
ST = Path(sys.executable).with_name("st")


@pytest.fixture(scope="module")
def server(tmp_path_factory, encoder):
    from pipelines.ingest import ingest
    from rag.ingest.chunking import Chunker

    root = tmp_path_factory.mktemp("contract")
    (root / "seed").mkdir()
    (root / "seed" / "note.txt").write_text("Mangrove forests protect coastlines from storm surges. "
                                            "Sea grass meadows store carbon in their roots.")
    ingest([str(root / "seed")], encoder=encoder, store=StoreSettings(store_dir=str(root / "store"), collection="docs"),
           chunker=Chunker(48, 8), progress=False)
    cfg = RagConfig(store={"dir": str(root / "store"), "collection": "docs"}, llm={"backend": "none"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, KEY)
        app = create_app(cfg, ServeOptions(server_key_env=KEY_ENV, max_upload_bytes=200_000,
                                           max_requests_per_client=64), encoder=encoder)
    with serve_in_background(app) as url:
        yield {"url": url, "root": root}


def test_schemathesis_finds_nothing_with_every_check_on(server, tmp_path):
    report = tmp_path / "report.ndjson"
    command = [str(ST), "--config-file", str(CONFIG), "run", f"{server['url']}/openapi.json", "--checks", "all",
               "--max-examples", str(EXAMPLES),
               "--seed", str(SEED), "--workers", "1", "-H", f"Authorization: Bearer {KEY}",
               "--request-timeout", "60", "--generation-database", "none", "--no-color",
               "--report", "ndjson", "--report-ndjson-path", str(report)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    (tmp_path / "st_output.txt").write_text(done.stdout + done.stderr)
    print("\n".join(line[:400] for line in (done.stdout + done.stderr).splitlines()))
    requests = 0
    for line in report.read_text().splitlines():
        event = json.loads(line)
        if "ScenarioFinished" in event:
            requests += len(event["ScenarioFinished"].get("recorder", {}).get("interactions", {}))
    summary = re.findall(r"(?m)^.*(?:test cases|passed|failed|error).*$", done.stdout)
    print(f"generated requests (from the report): {requests}; {' | '.join(summary[-4:])}")
    assert done.returncode == 0, "schemathesis found something (its output is printed above)"
    assert requests > 100


def test_every_route_documents_its_errors_in_the_one_shape(server):
    spec = httpx.get(f"{server['url']}/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert set(spec["components"]["schemas"]["ErrorResponse"]["properties"]) == {"error"}
    for (method, path), own in ROUTE_ERRORS.items():
        responses = spec["paths"][path][method]["responses"]
        assert "422" not in responses
        for status in {401, 429, 500} | own:
            assert responses[str(status)]["content"]["application/json"]["schema"] == \
                {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)
        assert spec["paths"][path][method]["security"] == [{"serverKey": []}]
    upload = spec["paths"]["/v1/documents"]["post"]
    form = upload["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["file"]["items"]["format"] == "binary"
    assert ".docx" in form["properties"]["file"]["description"]
    assert {"413", "415", "507"} <= set(upload["responses"])


def test_a_wrong_method_lists_every_method_of_the_path_in_allow(server):
    with httpx.Client(base_url=server["url"], headers={"Authorization": f"Bearer {KEY}"}) as c:
        for path, allowed in (("/v1/documents", "GET, HEAD, POST"), ("/v1/collections", "GET, HEAD, POST"),
                              ("/v1/chat/completions", "POST"), ("/v1/documents/abc", "DELETE")):
            for method in ("PUT", "PATCH", "OPTIONS"):
                r = c.request(method, path)
                assert r.status_code == 405 and r.headers["allow"] == allowed, (method, path, r.headers)
                assert set(r.json()) == {"error"}
        r = c.post("/v1/search", json={"query": ""})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"


def test_every_success_answer_is_documented_and_matches_its_schema(server):
    """Each route's success has a named schema (a generated client gets types, not a free-form
    object), and a whole round the fuzzer cannot walk (an upload, its job polled to the end, the
    document listed and deleted, a collection made and removed, a search) answers exactly that
    schema: every body validated against the served document."""
    import jsonschema

    from helpers_ingest import wait_job

    headers = {"Authorization": f"Bearer {KEY}"}
    spec = httpx.get(f"{server['url']}/openapi.json", headers=headers).json()
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            ok = [s for s in op["responses"] if s.startswith("2")]
            assert len(ok) == 1, (method, path, ok)
            schema = op["responses"][ok[0]]["content"]["application/json"]["schema"]
            assert set(schema) == {"$ref"}, (method, path, schema)

    def check(r: httpx.Response, method: str, path: str) -> dict:
        ref = spec["paths"][path][method]["responses"][str(r.status_code)]["content"]["application/json"]["schema"]
        body = r.json()
        jsonschema.Draft202012Validator({**ref, "components": spec["components"]}).validate(body)
        return body

    with httpx.Client(base_url=server["url"], headers=headers, timeout=60) as c:
        check(c.get("/health"), "get", "/health")
        r = c.post("/v1/documents", files=[("file", ("kelp.md", b"# Kelp\n\nKelp forests shelter sea otters.\n"))])
        assert r.status_code == 202, r.text
        job_id = check(r, "post", "/v1/documents")["job_id"]
        assert wait_job(c, job_id)["status"] == "done"
        job = check(c.get(f"/v1/jobs/{job_id}"), "get", "/v1/jobs/{job_id}")
        assert job["outcomes"][0]["status"] == "ingested"
        listed = check(c.get("/v1/documents"), "get", "/v1/documents")
        doc = next(d for d in listed["data"] if d["source"] == "kelp.md")
        hits = check(c.post("/v1/search", json={"query": "sea otters", "explain": True}), "post", "/v1/search")
        assert hits["results"][0]["source"] == "kelp.md"
        r = c.delete(f"/v1/documents/{doc['id']}")
        assert r.status_code == 200 and check(r, "delete", "/v1/documents/{doc_id}")["chunks"] >= 1
        r = c.post("/v1/collections", json={"name": "reef"})
        assert r.status_code == 201 and check(r, "post", "/v1/collections")["points"] == 0
        assert {d["id"] for d in check(c.get("/v1/collections"), "get", "/v1/collections")["data"]} >= {"docs", "reef"}
        r = c.delete("/v1/collections/reef")
        assert r.status_code == 200 and check(r, "delete", "/v1/collections/{name}")["deleted"] is True
