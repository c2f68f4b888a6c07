"""The server's one writer: upload (ingest) jobs and the other writes, run in order.

Uploads are answered at once with a job id (202) and ingested here in the background; document
and collection deletions wait their turn behind the uploads queued before them. The routes that
submit them are in documents.py and collections.py. With a spool (spool.py, the server's), an
upload's files and job record are on disk before the 202, the job runs from them, and a job a
crash or stop cut short runs again at the next start under the same id.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.memory import release_free_memory
from pipelines.server.spool import (JOB_ID, RESUMED, Claim, JobRecord, Spool, spooled_name, to_prune,
                                    to_resume)
from rag.errors import RagError

if TYPE_CHECKING:
    from pipelines.server.state import Served

logger = logging.getLogger("pipelines.server")
STOP_SECONDS = 30.0  # how long shutdown waits for the job that is running


def document_id(source: str) -> str:
    """The stable id of a source in the API: a digest of its label, never a path to open."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:32]


class DocumentNotFoundError(RagError):
    """No source of the collection has this id (404)."""


class Job:
    """One ingest job: the files it was given (staged path, label), then its outcomes."""

    def __init__(self, collection: str, files: list[tuple[Path, str]], outcomes: list[Any] | None = None,
                 job_id: str | None = None):
        self.id = job_id or f"job-{uuid.uuid4().hex}"
        self.collection, self.files = collection, files
        self.status = "queued"  # queued, running, done, failed
        self.outcomes: list[Any] = list(outcomes or [])  # FileOutcome
        self.chunks_written = 0
        self.total_points: int | None = None
        self.error: str | None = None
        self.created, self.started, self.finished = time.time(), None, None
        self.notes: list[str] = []
        self.resumed = 0
        self.claim: Claim | None = None  # this process's hold on the job's spool folder, until settled

    def let_go(self) -> None:
        """Release this process's claim of the job (another worker, or a later start, may run it)."""
        claim, self.claim = self.claim, None
        if claim is not None:
            claim.release()

    def record(self) -> JobRecord:
        """What the spool keeps of it; its files named by their place in the job."""
        return JobRecord(id=self.id, collection=self.collection,
                         files=[(spooled_name(i, Path(label).suffix), label)
                                for i, (_, label) in enumerate(self.files)],
                         status=self.status if self.status in ("done", "failed") else "queued",
                         created=self.created, started=self.started, finished=self.finished,
                         outcomes=[o.model_dump(mode="json") for o in self.outcomes],
                         chunks_written=self.chunks_written, total_points=self.total_points, error=self.error,
                         resumed=self.resumed)

    @classmethod
    def of(cls, record: JobRecord, folder: Path) -> Job:
        """A job read back from the spool (its files in `folder`)."""
        from pipelines.ingest_report import FileOutcome

        job = cls(record.collection, [(folder / name, label) for name, label in record.files],
                  [FileOutcome.model_validate(o) for o in record.outcomes], job_id=record.id)
        job.status, job.created, job.started, job.finished = record.status, record.created, record.started, \
            record.finished
        job.chunks_written, job.total_points, job.error = record.chunks_written, record.total_points, record.error
        job.resumed = record.resumed
        job.notes = [RESUMED] if record.resumed else []
        return job

    def view(self) -> dict[str, Any]:
        """GET /v1/jobs/{id}'s answer (schemas.JobView) as JSON-ready data."""
        from pipelines.server.schemas import JobView

        return JobView(job_id=self.id, status=self.status, collection=self.collection,
                       files=[label for _, label in self.files], outcomes=self.outcomes,
                       chunks_written=self.chunks_written, total_points=self.total_points, error=self.error,
                       created=self.created, started=self.started, finished=self.finished,
                       notes=self.notes).model_dump(mode="json")


class DocumentWriter:
    """The one writer of the server's open collections: a thread that takes write tasks from a
    queue, one at a time, in the order they came (ingest jobs, deletions). Reads (searches,
    chats, the document list) do not go through it and keep running while it writes: Qdrant
    Edge takes concurrent reads during a write (tests/test_server_documents.py searches in a
    loop during an upload), and qdrant-client's local mode serialises its calls anyway.

    An ingest job is `pipelines.ingest.ingest` on the server's open handle (`vector_store=`), so
    it is the CLI's job: unchanged files are skipped by hash, a file's new chunks are written
    before its old version is deleted, the loader process reads and chunks. Its staged files are
    deleted when it ends, done or failed (with a spool: once its outcome is recorded there).

    `spool`: where uploads are kept until their job is settled; at `start`, the jobs it holds
    unfinished are queued again (RESUMED) and its finished ones answer `job` as before. Without
    one, jobs live in memory only."""

    def __init__(self, collection: Callable[[str], Served], spool: Spool | None = None):
        self.collection = collection  # the open collection of a name (ServerState.collection)
        self.spool = spool
        self._loaded = False
        self._tasks: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._jobs: dict[str, Job] = {}
        self._jobs_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            if not self._loaded:
                self._loaded = True
                self._resume()
            self._thread = threading.Thread(target=self._loop, name="rag-writer", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._tasks.put(None)
        thread.join(timeout)
        if thread.is_alive():
            logger.warning("the ingest job still running after %.0f s is abandoned at shutdown", timeout)
        if self.spool is not None:  # queued jobs stay in the spool: the next start runs them
            if not thread.is_alive():  # (an abandoned thread still runs them: they stay claimed)
                for job in self.jobs():  # another worker's, or a writer opened again in this process
                    if job.status == "queued":
                        job.let_go()
            return
        for job in self.jobs():  # queued, never started: say so, drop their files
            if job.status == "queued":
                self._end(job, "failed", "the server stopped before this job ran")

    def _resume(self) -> None:
        """Read the spool: finished jobs are remembered, unfinished ones queued again in their order."""
        if self.spool is None:
            return
        records = self.spool.load()
        gone = set(to_prune([(r.id, r.finished or r.created) for r in records if r.is_finished], time.time()))
        self.spool.forget(sorted(gone))
        mine: list[JobRecord] = []  # unfinished and claimed here: not run by another worker now
        for record in sorted(records, key=lambda r: r.created):
            if record.id in gone:
                continue
            claim = None
            if not record.is_finished:
                claim = self.spool.claim(record.id)
                if claim is None:  # another live worker holds it: it answers from the spool
                    continue
                fresh = self.spool.read(record.id)  # as it is now: its worker may have settled it since `load`
                if fresh is None:
                    claim.release()
                    continue
                record = fresh
                if record.is_finished:
                    claim.release()
                    claim = None
                else:
                    record.resumed += 1
                    self.spool.update(record)
                    mine.append(record)
            job = Job.of(record, self.spool.folder(record.id))
            job.claim = claim
            with self._jobs_lock:
                self._jobs[job.id] = job
        for record in to_resume(mine):
            job = self._jobs[record.id]
            missing = self.spool.missing(record)
            if missing:
                self._end(job, "failed", f"resumed after restart, but its spooled files are gone: {', '.join(missing)}")
            else:
                logger.info("resuming ingest job %s (%d file(s)) after a restart", job.id, len(job.files))
                self._tasks.put(lambda job=job: self._ingest(job))

    def _loop(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            try:
                task()
            except Exception:  # a task reports its own failure; this is the last line
                logger.exception("a write task failed")
            finally:
                release_free_memory()  # what the job's encoding and writes freed (pipelines/memory.py)

    # ------------------------------------------------------------------ jobs
    def jobs(self) -> list[Job]:
        with self._jobs_lock:
            return list(self._jobs.values())

    def job(self, job_id: str) -> Job | None:
        """A job of this process, else (several workers on one spool) as its record says."""
        with self._jobs_lock:
            found = self._jobs.get(job_id)
        if found is None and self.spool is not None and JOB_ID.match(job_id):
            record = self.spool.read(job_id)
            found = Job.of(record, self.spool.folder(job_id)) if record is not None else None
        return found

    def submit(self, collection: str, files: list[tuple[Path, str]]) -> Job:
        """Queue an ingest of `files` ((staged path, source label)) into `collection`."""
        if self._thread is None:
            raise RagError("the server is not open")
        job = Job(collection, files)
        if self.spool is not None:  # SpoolUnavailable: nothing queued, nothing kept
            spooled, job.claim = self.spool.accept(job.record(), [p for p, _ in files])
            job.files = list(zip(spooled, [label for _, label in files], strict=True))
        with self._jobs_lock:
            self._jobs[job.id] = job
        self._tasks.put(lambda: self._ingest(job))
        return job

    def _ingest(self, job: Job) -> None:
        from pipelines.ingest import ingest
        from rag.ingest.chunking import Chunker

        job.status, job.started = "running", time.time()
        try:
            served = self.collection(job.collection)
            info = served.handle.info
            report = ingest([p for p, _ in job.files], encoder=served.encoder, store=served.settings,
                            chunker=Chunker(info.chunk_size, info.chunk_overlap, context=info.context,
                                            sentence_vectors=info.sentence_vectors), progress=False,
                            vector_store=served.handle, labels={str(p): label for p, label in job.files})
        except Exception as e:
            if not isinstance(e, RagError):
                logger.exception("ingest job %s failed", job.id)
            self._end(job, "failed", str(e) if isinstance(e, RagError) else
                      "the ingest job failed (the server log has the details)")
            return
        job.outcomes.extend(report.outcomes)
        job.chunks_written, job.total_points = report.chunks_written, report.total_points
        self._end(job, "done")

    def _end(self, job: Job, status: str, error: str | None = None) -> None:
        job.status, job.error, job.finished = status, error, time.time()
        if self.spool is not None:
            self.spool.settle(job.record())
            job.let_go()
        else:
            for path, _ in job.files:
                with contextlib.suppress(OSError):
                    path.unlink()
        self._prune()

    def _prune(self) -> None:
        """Forget the finished jobs beyond what is kept (spool.KEEP_JOBS, KEEP_SECONDS)."""
        with self._jobs_lock:
            gone = to_prune([(j.id, j.finished) for j in self._jobs.values() if j.finished is not None], time.time())
            for job_id in gone:
                del self._jobs[job_id]
        if self.spool is not None and gone:
            self.spool.forget(gone)

    # ------------------------------------------------------------------ other writes
    def call(self, write: Callable[[], Any]) -> concurrent.futures.Future:
        """Run `write` in its turn, after the writes queued before it; its result (or exception)
        is the future's."""
        if self._thread is None:
            raise RagError("the server is not open")
        future: concurrent.futures.Future = concurrent.futures.Future()

        def task() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(write())
            except BaseException as e:
                future.set_exception(e)

        self._tasks.put(task)
        return future

    def delete(self, collection: str, doc_id: str) -> concurrent.futures.Future:
        """Remove the source whose id is `doc_id`, in its turn after the writes queued before it.
        The future's result: {"id", "source", "chunks"} (chunks removed)."""

        def write() -> dict[str, Any]:
            vs = self.collection(collection).handle
            source = next((s for s in vs.sources() if document_id(s) == doc_id), None)
            if source is None:
                raise DocumentNotFoundError(f"collection '{collection}' has no document {doc_id} "
                                            "(GET /v1/documents lists their ids)")
            chunks = sum(v.points for v in vs.file_versions(source))
            vs.delete_source(source)
            vs.flush()
            return {"id": doc_id, "source": source, "chunks": chunks}

        return self.call(write)
