"""Uploads that survive a crash: the spool of `rag serve` (pipelines/server/spool.py).

A real `rag serve` process (tests/serve_faults.py: the CLI with test hooks on its writer) is
SIGKILLed right after it answered 202, and again while a three-file job is halfway; started
again on the same store, it runs both jobs to the end under their ids, and the collection then
holds exactly what a clean ingest of the uploaded files gives. A spool that cannot be written
refuses the upload with 507 and keeps nothing of it. The decisions (what to run again, what to
forget, what a write error is) are checked directly."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from pipelines.config import RagConfig
from pipelines.server.app import create_app, serve_in_background
from pipelines.server.options import ServeOptions
from pipelines.server.spool import (RECORD, RESUMED, SPOOL_FOLDER, JobRecord, refusal, to_prune, to_resume)
from pipelines.stores import StoreSettings
from helpers_ingest import cli_env, sentences, snapshot

SERVE = Path(__file__).with_name("serve_faults.py")
CHUNKER = (48, 8)
START_TIMEOUT = 180.0


# ---------------------------------------------------------------------------- the decisions


def test_unfinished_records_run_again_in_the_order_they_came():
    a = JobRecord(id="job-" + "a" * 32, collection="docs", files=[("00.txt", "a.txt")], created=3.0)
    b = JobRecord(id="job-" + "b" * 32, collection="docs", files=[("00.txt", "b.txt")], created=1.0)
    c = JobRecord(id="job-" + "c" * 32, collection="docs", files=[], created=2.0, status="done", finished=4.0)
    assert [r.id for r in to_resume([a, b, c])] == [b.id, a.id]


def test_finished_records_are_kept_for_a_bounded_time_and_count():
    now = 1_000_000.0
    finished = [(f"job-{i}", now - i * 10) for i in range(6)]  # job-0 the newest
    assert to_prune(finished, now, keep=4, keep_seconds=1e9) == ["job-4", "job-5"]
    assert to_prune(finished, now, keep=100, keep_seconds=25) == ["job-3", "job-4", "job-5"]
    assert to_prune([], now) == []


def test_a_record_reads_back_and_never_names_a_path():
    record = JobRecord(id="job-" + "0" * 32, collection="docs", files=[("00.pdf", "Report Q3.pdf")],
                       outcomes=[{"source": "Report Q3.pdf", "status": "ingested", "chunks": 3}])
    assert JobRecord.from_json(record.to_json()) == record
    for name in ("../../etc/passwd", "/tmp/x.txt", "00.txt/..", "a.txt"):
        raw = json.loads(record.to_json())
        raw["files"] = [[name, "x.txt"]]
        with pytest.raises(ValueError):
            JobRecord.from_json(json.dumps(raw).encode())
    raw = json.loads(record.to_json())
    raw["id"] = "../job"
    with pytest.raises(ValueError):
        JobRecord.from_json(json.dumps(raw).encode())


def test_a_full_disk_and_an_unwritable_folder_are_both_507s_that_name_no_path():
    full = refusal(OSError(errno.ENOSPC, "No space left on device", "/store/.uploads/.jobs/x"))
    assert full.code == "spool_full" and "disk is full" in str(full)
    broken = refusal(OSError(errno.EROFS, "Read-only file system", "/store/.uploads/.jobs/x"))
    assert broken.code == "spool_unwritable" and "/store" not in str(broken)


# ---------------------------------------------------------------------------- a real server, killed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """`rag serve --llm none` on STORE as a subprocess (with tests/serve_faults.py's hooks from
    `env`); its output in files, so that nothing it leaves behind can hang the test on a pipe."""

    def __init__(self, store: Path, preexec_fn=None, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVE), "serve", "--store", str(store), "--collection", "docs", "--llm", "none",
             "--port", str(self.port), "--log-level", "info"],
            cwd=Path(__file__).resolve().parents[1], env=cli_env(**env), stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=preexec_fn)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"rag serve exited {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"rag serve did not start in {START_TIMEOUT} s: {self.output()}")
            time.sleep(0.2)
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()[-4000:]

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no close."""
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"rag serve did not stop on SIGINT: {self.output()}") from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.client.close()
        self.log.close()

    def upload(self, files: dict[str, str]) -> str:
        r = self.client.post("/v1/documents", files=[("file", (n, t.encode(), "text/plain")) for n, t in files.items()])
        assert r.status_code == 202, r.text
        return r.json()["job_id"]

    def job(self, job_id: str) -> dict:
        r = self.client.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait_job(self, job_id: str, seconds: float = 240) -> dict:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in ("done", "failed"):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} not finished in {seconds} s: {self.output()}")


def wait_for(path: Path, server: Serve, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert server.proc.poll() is None, server.output()
        assert time.monotonic() < deadline, f"{path.name} not reached in {seconds} s: {server.output()}"
        time.sleep(0.1)


def seeded_store(root: Path, encoder) -> tuple[Path, Path]:
    from pipelines.ingest import ingest
    from rag.ingest.chunking import Chunker

    seed = root / "seed" / "seed.txt"
    seed.parent.mkdir(parents=True)
    seed.write_text(sentences("mangrove", 8))
    ingest([str(seed)], encoder=encoder, store=StoreSettings(store_dir=str(root / "store"), collection="docs"),
           chunker=Chunker(*CHUNKER), progress=False)
    return root / "store", seed


def clean_ingest(root: Path, seed: Path, files: dict[str, str], encoder):
    """A fresh store holding the seed and `files` (label -> text), ingested once, in one job."""
    from pipelines.ingest import ingest
    from rag.ingest.chunking import Chunker

    folder = root / "clean_files"
    folder.mkdir()
    paths = []
    for label, text in files.items():
        (folder / label).write_text(text)
        paths.append(folder / label)
    settings = StoreSettings(store_dir=str(root / "clean_store"), collection="docs")
    ingest([str(seed)], encoder=encoder, store=settings, chunker=Chunker(*CHUNKER), progress=False)
    ingest([str(p) for p in paths], encoder=encoder, store=settings, chunker=Chunker(*CHUNKER), progress=False,
           labels={str(p): label for label, p in zip(files, paths)})
    return snapshot(settings)


def spool_of(store: Path) -> dict[str, set[str]]:
    """job id -> the names in its spool folder."""
    root = store / ".uploads" / SPOOL_FOLDER
    return {d.name: {p.name for p in d.iterdir()} for d in root.iterdir()} if root.is_dir() else {}


def test_jobs_killed_after_202_and_halfway_finish_after_a_restart(tmp_path, encoder):
    store, seed = seeded_store(tmp_path, encoder)
    settings = StoreSettings(store_dir=str(store), collection="docs")
    job_a_files = {"a1.txt": sentences("alpha", 14), "a2.md": "# Beta\n\n" + sentences("beta", 12)}
    job_b_files = {"b1.txt": sentences("gamma", 10), "a1.txt": sentences("alpha", 14, start=40),
                   "b2.txt": sentences("delta", 12)}

    # 1. Killed right after the 202 (the writer held: the job cannot have started).
    hold = tmp_path / "hold"
    hold.touch()
    server = Serve(store, RAG_TEST_HOLD=str(hold))
    try:
        job_a = server.upload(job_a_files)
        assert server.job(job_a)["status"] == "queued"
        server.kill()
    finally:
        server.close()
    assert spool_of(store) == {job_a: {RECORD, "00.txt", "01.md"}}
    assert snapshot(settings).sources == {str(seed.resolve())}, "nothing of job A is stored yet"

    # 2. Restarted: job A runs again under its id. Then job B (three files, one of them a new
    #    version of a1.txt) is killed once its first file is settled, the others not.
    paused = tmp_path / "paused"
    server = Serve(store, RAG_TEST_PAUSE_AFTER="b1.txt", RAG_TEST_PAUSED=str(paused))
    try:
        done_a = server.wait_job(job_a)
        assert done_a["status"] == "done" and done_a["notes"] == [RESUMED], done_a
        assert {o["source"]: o["status"] for o in done_a["outcomes"]} == {"a1.txt": "ingested", "a2.md": "ingested"}
        job_b = server.upload(job_b_files)
        wait_for(paused, server)
        assert server.job(job_b)["status"] == "running"
        server.kill()
    finally:
        server.close()
    assert spool_of(store)[job_a] == {RECORD}, "a settled job's files are removed"
    assert spool_of(store)[job_b] == {RECORD, "00.txt", "01.txt", "02.txt"}
    clean = clean_ingest(tmp_path, seed, {**job_a_files, **job_b_files}, encoder)
    halfway = snapshot(settings)
    assert "b1.txt" in halfway.sources and halfway.points != clean.points, "the kill came halfway through job B"
    assert len(halfway.versions("a1.txt")) == 2 or "b2.txt" not in halfway.sources

    # 3. Restarted again: job B runs again and ends; both ids answer with their outcomes.
    server = Serve(store)
    try:
        done_b = server.wait_job(job_b)
        assert done_b["status"] == "done" and done_b["notes"] == [RESUMED] and done_b["error"] is None, done_b
        outcomes = {o["source"]: o["status"] for o in done_b["outcomes"]}
        assert outcomes["b1.txt"] == "unchanged", outcomes  # stored before the kill
        assert set(outcomes) == set(job_b_files) and "failed" not in outcomes.values(), outcomes
        again_a = server.job(job_a)
        assert {k: again_a[k] for k in ("status", "outcomes", "notes")} == \
            {k: done_a[k] for k in ("status", "outcomes", "notes")}
        server.stop()
    finally:
        server.close()

    after = snapshot(settings)
    assert after.points == clean.points and after.count == clean.count == len(clean.points)
    assert spool_of(store) == {job_a: {RECORD}, job_b: {RECORD}}
    assert not any((store / ".uploads" / ".incoming").iterdir())


def test_an_unwritable_spool_refuses_the_upload_and_keeps_nothing(tmp_path, encoder):
    """The spool's folder is a file (works whoever runs the test, root included, unlike a chmod):
    the upload is a 507 in the error shape, and neither the spool, the staging folders nor the
    collection hold anything of it. The server then keeps serving, and takes uploads again once
    the folder can be written."""
    store, _ = seeded_store(tmp_path, encoder)
    settings = StoreSettings(store_dir=str(store), collection="docs")
    before = snapshot(settings)
    uploads = store / ".uploads"
    uploads.mkdir()
    (uploads / SPOOL_FOLDER).write_text("not a folder")
    cfg = RagConfig(store={"dir": str(store), "collection": "docs"}, llm={"backend": "none"})
    app = create_app(cfg, ServeOptions(), encoder=encoder)
    with serve_in_background(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        files = [("file", ("n1.txt", sentences("north", 6).encode(), "text/plain")),
                 ("file", ("n2.md", sentences("south", 6).encode(), "text/markdown"))]
        r = c.post("/v1/documents", files=files)
        assert r.status_code == 507, r.text
        error = r.json()["error"]
        assert error["code"] == "spool_unwritable" and "not kept" in error["message"], error
        assert str(store) not in error["message"]
        assert {p.relative_to(uploads).as_posix() for p in uploads.rglob("*") if p.is_file()} == {SPOOL_FOLDER}
        assert c.get("/v1/documents").json()["data"][0]["source"].endswith("seed.txt")
        assert c.post("/v1/search", json={"query": "mangrove"}).status_code == 200

        if os.geteuid() != 0:  # a read-only folder too (root writes through a chmod)
            (uploads / SPOOL_FOLDER).unlink()
            (uploads / SPOOL_FOLDER).mkdir(mode=0o500)
            r = c.post("/v1/documents", files=files)
            assert r.status_code == 507 and r.json()["error"]["code"] == "spool_unwritable", r.text
            assert list((uploads / SPOOL_FOLDER).iterdir()) == []
            (uploads / SPOOL_FOLDER).chmod(0o700)
            (uploads / SPOOL_FOLDER).rmdir()

        (uploads / SPOOL_FOLDER).unlink(missing_ok=True)  # repaired: the next upload is taken
        r = c.post("/v1/documents", files=files)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        deadline = time.monotonic() + 120
        while (job := c.get(f"/v1/jobs/{job_id}").json())["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert job["status"] == "done", job
    assert snapshot(settings).sources == before.sources | {"n1.txt", "n2.md"}


FILE_LIMIT = 256 * 1024  # bytes any one file of the server process may grow to (RLIMIT_FSIZE)


def small_files_only() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


def test_a_disk_that_fills_while_the_upload_arrives_refuses_it_and_keeps_nothing(tmp_path, encoder):
    """A real write failure halfway through a file: `rag serve` runs with RLIMIT_FSIZE (Python
    ignores SIGXFSZ, so a write past the limit fails with EFBIG, as one on a full disk fails
    with ENOSPC). The upload is a 507 'spool_full', its received part is removed, and a small
    upload right after it is taken."""
    store, _ = seeded_store(tmp_path, encoder)
    settings = StoreSettings(store_dir=str(store), collection="docs")
    before = snapshot(settings)
    server = Serve(store, preexec_fn=small_files_only)
    try:
        big = ("Tide tables and harbour notes. " * 12_000)[:FILE_LIMIT + 50_000]
        r = server.client.post("/v1/documents", files=[("file", ("small.txt", b"A short note.", "text/plain")),
                                                       ("file", ("big.txt", big.encode(), "text/plain"))])
        assert r.status_code == 507, r.text
        assert r.json()["error"]["code"] == "spool_full" and "disk is full" in r.json()["error"]["message"]
        uploads = store / ".uploads"
        assert [p for p in uploads.rglob("*") if p.is_file()] == []
        job = server.wait_job(server.upload({"after.txt": sentences("after", 5)}))
        assert job["status"] == "done", job
        server.stop()
    finally:
        server.close()
    assert snapshot(settings).sources == before.sources | {"after.txt"}


# ---------------------------------------------------------------------------- several workers on one spool

HOLDER = """
import sys, uuid
from pathlib import Path
sys.path.insert(0, {root!r})
from pipelines.server.spool import NEW_PREFIX, Claim, JobRecord, Spool
spool = Spool(Path({spool!r}))
upload = Path({spool!r}).parent / "kelp.txt"
upload.write_text("Kelp forests shelter sea otters.")
record = JobRecord(id=f"job-{{uuid.uuid4().hex}}", collection="docs", files=[("00.txt", "kelp.txt")])
paths, claim = spool.accept(record, [upload])            # accepted, queued, held: this worker's job
building = spool.root / f"{{NEW_PREFIX}}job-{{uuid.uuid4().hex}}"
building.mkdir()
held = Claim.take(building)                              # an upload this worker is spooling right now
print(record.id, building.name, flush=True)
sys.stdin.read()                                         # held until killed
"""


def test_a_job_another_live_worker_holds_is_not_run_or_swept_here_until_that_worker_dies(tmp_path):
    """`rag serve --workers N`: a starting worker runs again only the unfinished jobs no live
    worker holds. Another process (a worker) accepts a job and is spooling a second upload, and
    stays alive: a writer starting on the same spool neither runs its job nor removes the folder
    being built, and answers the job's id from its record. Once that process is SIGKILLed, the
    next start claims the job and runs it again, and sweeps the folder it left."""
    from pipelines.server.jobs import DocumentWriter
    from pipelines.server.spool import Spool

    root = tmp_path / "uploads" / SPOOL_FOLDER
    root.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=str(Path(__file__).parents[1]), spool=str(root))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        job_id, building = holder.stdout.readline().split()
        asked: list[str] = []

        def collection(name: str):  # what running a job asks first: recorded, then refused
            asked.append(name)
            raise RuntimeError("this test's writer has no collection")

        writer = DocumentWriter(collection, Spool(root))
        writer.start()
        writer.call(lambda: None).result(30)  # whatever was queued at start has run
        assert asked == []
        seen = writer.job(job_id)
        assert seen is not None and seen.view()["status"] == "queued"
        assert (root / building).is_dir()
        assert json.loads((root / job_id / RECORD).read_text())["resumed"] == 0
        writer.stop()
    finally:
        holder.kill()
        holder.wait(10)

    writer = DocumentWriter(collection, Spool(root))
    writer.start()
    writer.call(lambda: None).result(30)
    writer.stop()
    assert asked == ["docs"]  # run again here, once
    record = json.loads((root / job_id / RECORD).read_text())
    assert record["resumed"] == 1 and record["status"] == "failed"
    assert not (root / building).exists()


def test_a_job_settled_by_its_worker_while_another_starts_stays_settled(tmp_path):
    """The starting writer reads the records, and the job's worker settles it before the writer
    claims it (the claim is then free): the writer must take the record as it is now, done, not
    run it again from its stale copy (which would rewrite it queued and fail it for its removed
    files)."""
    from dataclasses import replace

    from pipelines.server.jobs import DocumentWriter
    from pipelines.server.spool import Spool

    root = tmp_path / "uploads" / SPOOL_FOLDER
    upload = tmp_path / "kelp.txt"
    upload.write_text("Kelp forests shelter sea otters.")
    record = JobRecord(id="job-" + "ab" * 16, collection="docs", files=[("00.txt", "kelp.txt")])
    _, claim = Spool(root).accept(record, [upload])
    claim.release()  # its worker, about to settle it

    class SettledMeanwhile(Spool):
        def load(self):
            records = super().load()  # read while the job is still queued ...
            Spool(root).settle(replace(record, status="done", finished=time.time()))  # ... then settled
            return records

    asked: list[str] = []
    writer = DocumentWriter(lambda name: asked.append(name), SettledMeanwhile(root))
    writer.start()
    writer.call(lambda: None).result(30)
    writer.stop()
    on_disk = json.loads((root / record.id / RECORD).read_text())
    assert asked == [] and (on_disk["status"], on_disk["resumed"]) == ("done", 0)
    assert writer.job(record.id).view()["status"] == "done"
