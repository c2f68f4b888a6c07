"""Document management in `rag serve`, as a client sees it: a real uvicorn server on loopback
(extracts, llm = none, behind a key) over real embedded collections. Uploads go through the
server's one writer while searches keep running; every loop is bounded in count and time."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from helpers_ingest import wait_job
from pipelines.config import RagConfig
from pipelines.server.app import create_app, serve_in_background
from pipelines.server.documents import sanitise_label
from pipelines.server.jobs import document_id
from pipelines.server.options import ServeOptions
from pipelines.server.spool import RECORD
from pipelines.stores import StoreSettings

KEY, KEY_ENV = "test-documents-key-0123456789", "RAG_TEST_DOCUMENTS_KEY"
LIMIT = 60_000  # bytes per uploaded file in these tests
ALPHA = ("The lighthouse keeper logged the tide tables every morning at dawn. "
         "Fog horns sounded twice a minute when the visibility dropped below one mile.")
BETA = ("# Sourdough\n\nA sourdough starter is fed with equal weights of flour and water. "
        "The dough rises overnight in a cool kitchen.\n\n# Baking\n\nBake at 250 degrees for forty minutes.")
PDF_LINES = [["Quarterly zeppelin freight volumes rose by twelve percent.", "Helium prices stayed flat."],
             ["The airship fleet flew four hundred routes."]]
LIVE = {f"live{i}.txt": " ".join(f"Report {i} section {k}: the {w} committee met on day {k} and approved "
                                   f"budget line {i * 100 + k}." for k, w in
                                   enumerate(["harbour", "railway", "orchard", "museum", "bridge", "library",
                                              "canal", "stadium", "market", "school"] * 3))
        for i in range(3)}
CHUNKER = (48, 8)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, encoder):
    """Store with collections docs (one note, ingested by the CLI's job) and live (empty), and a
    server on it with a key and a small upload limit."""
    from pipelines.ingest import ingest
    from rag.ingest.chunking import Chunker

    root = tmp_path_factory.mktemp("server_documents")
    store = root / "store"
    (root / "seed").mkdir()
    (root / "seed" / "seed.txt").write_text("Mangrove forests protect coastlines from storm surges.")
    for name, paths in (("docs", [str(root / "seed")]), ("live", [])):
        ingest(paths, encoder=encoder, store=StoreSettings(store_dir=str(store), collection=name),
               chunker=Chunker(*CHUNKER), progress=False)
    cfg = RagConfig(store={"dir": str(store), "collection": "docs"}, llm={"backend": "none"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, KEY)
        app = create_app(cfg, ServeOptions(server_key_env=KEY_ENV, max_upload_bytes=LIMIT), encoder=encoder)
    with serve_in_background(app) as url:
        yield {"url": url, "root": root, "store": store, "app": app}


def client(url: str, key: str | None = KEY) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=60)


def error_of(r: httpx.Response) -> dict:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code"}, body
    return body["error"]


def upload(c: httpx.Client, files: list[tuple[str, bytes]], collection: str | None = None) -> httpx.Response:
    return c.post("/v1/documents", files=[("file", (name, data, "application/octet-stream")) for name, data in files],
                  data={"collection": collection} if collection else None)


def documents(c: httpx.Client, collection: str | None = None) -> dict[str, int]:
    r = c.get("/v1/documents", params={"collection": collection} if collection else None)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert all(d["id"] == document_id(d["source"]) for d in data)
    return {d["source"]: d["chunks"] for d in data}


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def uploaded_files(store: Path) -> set[Path]:
    """The uploads folder's files besides the records of settled jobs (kept, without their files)."""
    return {p for p in files_under(store / ".uploads") if p.name != RECORD}


def point_ids(vs) -> list[str]:
    return [pid for pid, _ in vs.payloads(["source"])]


# ---------------------------------------------------------------------------- uploads and jobs


def test_upload_texts_and_a_pdf_then_list_search_and_reupload(setup, pdf_bytes):
    files = [("alpha.txt", ALPHA.encode()), ("beta.md", BETA.encode()), ("zeppelin.pdf", pdf_bytes(PDF_LINES))]
    with client(setup["url"]) as c:
        r = upload(c, files)
        assert r.status_code == 202, r.text
        accepted = r.json()
        assert accepted["status"] == "queued" and accepted["collection"] == "docs"
        assert [f["source"] for f in accepted["files"]] == ["alpha.txt", "beta.md", "zeppelin.pdf"]
        job = wait_job(c, accepted["job_id"])
        assert job["status"] == "done" and job["error"] is None, job
        outcomes = {o["source"]: o for o in job["outcomes"]}
        assert set(outcomes) == {"alpha.txt", "beta.md", "zeppelin.pdf"}
        assert all(o["status"] == "ingested" and o["chunks"] > 0 for o in outcomes.values()), outcomes
        assert job["chunks_written"] == sum(o["chunks"] for o in outcomes.values())

        listed = documents(c)
        assert {k: v for k, v in listed.items() if k in outcomes} == {k: o["chunks"] for k, o in outcomes.items()}
        assert len(listed) == 4 and any(s.endswith("seed.txt") for s in listed)

        for query, source in (("lighthouse fog horns", "alpha.txt"), ("zeppelin freight volumes", "zeppelin.pdf")):
            hits = c.post("/v1/search", json={"query": query, "top_k": 3}).json()["results"]
            assert hits and hits[0]["source"] == source, hits

        again = wait_job(c, upload(c, [files[0]]).json()["job_id"])
        assert [(o["source"], o["status"]) for o in again["outcomes"]] == [("alpha.txt", "unchanged")]
        assert again["chunks_written"] == 0
        changed = wait_job(c, upload(c, [("alpha.txt", (ALPHA + " The keeper retired in 1950.").encode())])
                           .json()["job_id"])
        assert [o["status"] for o in changed["outcomes"]] == ["replaced"]
        assert documents(c)["alpha.txt"] == changed["outcomes"][0]["chunks"]
        assert c.get("/v1/jobs/job-nope").status_code == 404
    # the staged copies are gone once their jobs ended; nothing lies outside the uploads folder
    assert uploaded_files(setup["store"]) == set()


def test_an_upload_while_searches_run_loses_and_duplicates_nothing(setup, encoder, tmp_path):
    """Ingest through the server's writer while a thread searches in a loop: every search is a
    200, and the collection then holds exactly the points of a clean CLI ingest of the same files."""
    from pipelines.ingest import ingest
    from pipelines.stores import open_store
    from rag.ingest.chunking import Chunker

    statuses: list[int] = []
    stop = threading.Event()

    def search_loop() -> None:
        deadline = time.monotonic() + 8
        with client(setup["url"]) as c:
            while not stop.is_set() and time.monotonic() < deadline and len(statuses) < 400:
                for collection in ("live", "docs"):
                    statuses.append(c.post("/v1/search", json={"query": "committee budget",
                                                               "collection": collection}).status_code)

    searcher = threading.Thread(target=search_loop)
    searcher.start()
    try:
        with client(setup["url"]) as c:
            time.sleep(0.3)
            r = upload(c, [(n, t.encode()) for n, t in LIVE.items()], collection="live")
            assert r.status_code == 202, r.text
            job = wait_job(c, r.json()["job_id"])
    finally:
        stop.set()
        searcher.join(30)
    assert job["status"] == "done" and all(o["status"] == "ingested" for o in job["outcomes"]), job
    assert len(statuses) >= 4 and set(statuses) == {200}, statuses

    served = setup["app"].state.rag.collection("live")
    live_ids = point_ids(served.handle)
    clean = write_files(tmp_path / "clean", LIVE)
    ingest(list(clean.values()), encoder=encoder, store=StoreSettings(store_dir=str(tmp_path / "fresh"),
           collection="live"), chunker=Chunker(*CHUNKER), progress=False,
           labels={str(p): name for name, p in clean.items()})
    vs = open_store(StoreSettings(store_dir=str(tmp_path / "fresh"), collection="live"))
    try:
        clean_ids = point_ids(vs)
    finally:
        vs.close()
    assert len(live_ids) == len(set(live_ids)) == len(clean_ids) == job["chunks_written"]
    assert set(live_ids) == set(clean_ids)


def write_files(folder: Path, files: dict[str, str]) -> dict[str, Path]:
    folder.mkdir(parents=True)
    out = {}
    for name, text in files.items():
        (folder / name).write_text(text)
        out[name] = folder / name
    return out


def test_delete_removes_a_documents_chunks(setup):
    with client(setup["url"]) as c:
        job = wait_job(c, upload(c, [("tide.txt", b"Spring tides follow the new and the full moon.")]).json()["job_id"])
        assert job["outcomes"][0]["status"] == "ingested"
        before = documents(c)
        doc = document_id("tide.txt")
        r = c.delete(f"/v1/documents/{doc}")
        assert r.status_code == 200, r.text
        assert r.json()["source"] == "tide.txt" and r.json()["chunks"] == before["tide.txt"]
        after = documents(c)
        assert "tide.txt" not in after and after == {k: v for k, v in before.items() if k != "tide.txt"}
        hits = c.post("/v1/search", json={"query": "spring tides moon", "filters": ["source=tide.txt"]}).json()
        assert hits["results"] == []
        assert error_of(c.delete(f"/v1/documents/{doc}"))["code"] == "document_not_found"
        assert c.delete("/v1/documents/../../etc").status_code == 404
        assert c.delete(f"/v1/documents/{doc}", params={"collection": "nope"}).status_code == 404


# ---------------------------------------------------------------------------- refused input


def test_bad_uploads_are_refused_and_write_nothing(setup, pdf_bytes):
    root = setup["root"]
    before_files, big = files_under(root), b"a" * (LIMIT + 1)
    with client(setup["url"]) as c:
        before_docs = documents(c)
        cases = [
            ([("big.txt", big)], None, 413, "file_too_large"),
            ([("ok.txt", b"fine text"), ("big.md", big)], None, 413, "file_too_large"),
            ([("tool.exe", b"MZ\x90\x00")], None, 415, "unsupported_file_type"),
            ([("noext", b"text")], None, 415, "unsupported_file_type"),
            ([("fake.pdf", b"this is not a pdf at all")], None, 415, "unsupported_file_content"),
            ([("latin.txt", "caf\u00e9".encode("latin-1"))], None, 415, "unsupported_file_content"),
            ([("nul.txt", b"text\x00more")], None, 415, "unsupported_file_content"),
            ([("report.docx", b"<html>not a zip</html>")], None, 415, "unsupported_file_content"),
            ([("page.html", b"<p>bin\x00ary</p>")], None, 415, "unsupported_file_content"),
            ([("a.txt", b"one"), ("a.txt", b"two")], None, 400, "duplicate_file"),
            ([("ok.txt", b"fine text")], "nope", 404, "collection_not_found"),
            ([("ok.txt", b"fine text")], "../etc", 400, "invalid_request"),
            ([("ok.pdf", pdf_bytes(PDF_LINES))], "nope", 404, "collection_not_found"),
        ]
        for files, collection, status, code in cases:
            r = upload(c, files, collection)
            assert r.status_code == status, (files[0][0], r.text)
            err = error_of(r)
            assert err["code"] == code, err
            if status in (413, 415):  # the message names the file refused
                assert files[-1][0] in err["message"], err
        assert error_of(c.post("/v1/documents", data={"collection": "docs"}))["code"] == "invalid_request"
        assert c.post("/v1/documents", json={"file": "x"}).status_code == 400
        # Content-Length alone says too much: refused before any byte of the body is read
        host, port = setup["url"].removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /v1/documents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
                      + b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 999999999999\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 413")
        assert documents(c) == before_docs
    assert files_under(root) == before_files


def test_a_name_with_a_path_is_only_a_label(setup):
    store, root = setup["store"], setup["root"]
    outside = {root.parent / "escaped.txt", root / "escaped.txt", store / "escaped.txt"}
    with client(setup["url"]) as c:
        r = upload(c, [("../../escaped.txt", b"Kelp forests grow fastest in cold water.")])
        assert r.status_code == 202, r.text
        assert r.json()["files"] == [{"source": "escaped.txt", "id": document_id("escaped.txt")}]
        job = wait_job(c, r.json()["job_id"])
        assert [(o["source"], o["status"]) for o in job["outcomes"]] == [("escaped.txt", "ingested")]
        assert documents(c)["escaped.txt"] >= 1
    assert not any(p.exists() for p in outside)
    assert not any(p.name == "escaped.txt" for p in root.rglob("*"))
    assert uploaded_files(store) == set()
    assert sanitise_label("..\\..\\win\\x.md") == "x.md" and sanitise_label("/etc/.hidden.txt") == "hidden.txt"
    assert sanitise_label("a\x00b\nc.txt") == "abc.txt" and sanitise_label("..") == ""


def test_document_routes_need_the_key(setup):
    for key in (None, "wrong-key-" + "x" * 20):
        with client(setup["url"], key=key) as c:
            for r in (upload(c, [("ok.txt", b"fine")]), c.get("/v1/documents"), c.get("/v1/jobs/job-x"),
                      c.delete(f"/v1/documents/{document_id('alpha.txt')}")):
                assert r.status_code == 401, r.text
                assert error_of(r)["code"] == "invalid_api_key"
    with client(setup["url"]) as c:
        assert isinstance(documents(c), dict)
        assert c.get("/v1/documents", params={"collection": "nope"}).status_code == 404


def test_the_upload_limit_is_a_command_option(tmp_path, capsys):
    from pipelines.cli.app import build_parser, main
    from pipelines.cli.serve import serve_options

    parse = build_parser().parse_args
    _, options = serve_options(parse(["serve", "--max-upload-mb", "0.5", "--llm", "none"]))
    assert options.max_upload_bytes == 500_000
    assert serve_options(parse(["serve", "--llm", "none"]))[1].max_upload_bytes == 25_000_000
    assert main(["serve", "--max-upload-mb", "0", "--store", str(tmp_path / "none")]) == 2
    assert "--max-upload-mb 0: give a size above 0" in capsys.readouterr().err
