"""The upload spool of `rag serve`: what makes an accepted upload survive a crash.

Before POST /v1/documents answers 202, the upload's files and a job record are on disk, in a
folder of the store's own: STORE/.uploads/.jobs/<job id>/ holds the files (named by the server:
00.txt, 01.pdf, ...; the client's names are only labels, in the record) and `job.json`. The
folder is built as `.new-<job id>`, every file and the record fsync'd, the folder fsync'd, and
then renamed into place in one step (and its parent fsync'd): a job folder is there whole, or
not at all. What is not renamed into place was never answered 202 and is removed at start.

The server's one writer ingests from the spool (jobs.py). When a job ends (done or failed) its
record is rewritten with the outcome (a temp file, fsync'd, renamed over the old one) and only
then are its files removed, so a crash between the two leaves a settled record and files that
the next start removes, never a queued record without its files. At start the server reads the
records: the unfinished ones run again, in the order they came, under their own ids (ingest is
idempotent: files already stored before the crash are "unchanged", a half-written one is
replaced whole), with the note RESUMED; the finished ones answer GET /v1/jobs/{id} as before.
Finished records are kept for KEEP_SECONDS and at most KEEP_JOBS of them (`to_prune`).

Several processes on one spool (`rag serve --workers N` on a Qdrant server): a job is claimed by
the process that accepted it, with an exclusive `flock` on its folder held from before the rename
until the job is settled (`Claim`). The kernel drops the lock when that process dies, however it
dies, so a starting worker runs again exactly the unfinished jobs nobody holds, a job is never run
by two workers at once, and a folder being built (`.new-*`) is not removed from under the worker
building it. A job held by another worker answers GET /v1/jobs/{id} from its record (`read`).

A spool that cannot be written (a full disk, a read-only or broken folder) refuses the upload
(`SpoolUnavailable`: 507) and keeps nothing of it. The decisions (what a record holds, which
records to run again or forget, what a write error means for the client) are pure functions
here; `Spool` does the file-system steps.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import RagError

logger = logging.getLogger("pipelines.server")

SPOOL_FOLDER = ".jobs"  # under STORE/.uploads
RECORD = "job.json"
NEW_PREFIX = ".new-"  # a job folder being built: never answered, removed at start
VERSION = 1
KEEP_JOBS = 1000  # finished jobs remembered (in memory and on disk); the oldest are forgotten
KEEP_SECONDS = 7 * 24 * 3600.0  # and for at most a week
JOB_ID = re.compile(r"^job-[0-9a-f]{32}$")  # the only names of job folders read back
RESUMED = ("resumed after restart: the server stopped before this job finished, and ran it again "
           "from its spooled files (files stored before the stop are reported 'unchanged')")
FINISHED = ("done", "failed")
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# flock's answers where the file system cannot lock (NFS without write access, some FUSE): the
# spool then works without claims, as with one worker.
UNLOCKABLE_ERRNOS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.EBADF, errno.EINVAL, errno.ENOSYS})


class SpoolUnavailable(RagError):
    """The upload could not be written to the spool (507): nothing of it was kept."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


@dataclass
class JobRecord:
    """What the spool keeps of one job: enough to run it again, and its outcome once settled."""

    id: str
    collection: str
    files: list[tuple[str, str]]  # (spooled file name, source label)
    status: str = "queued"  # queued, done, failed (running is not written: a rerun starts queued)
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    chunks_written: int = 0
    total_points: int | None = None
    error: str | None = None
    resumed: int = 0  # how many times a start ran it again

    def to_json(self) -> bytes:
        return json.dumps({"version": VERSION, **asdict(self)}, ensure_ascii=False, indent=1).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> JobRecord:
        """A record read back; ValueError when it is not one this server wrote."""
        raw = json.loads(data)
        if not isinstance(raw, dict) or raw.pop("version", None) != VERSION:
            raise ValueError("not a job record of this version")
        record = cls(**raw)
        if not JOB_ID.match(record.id) or not all(
                isinstance(f, list | tuple) and len(f) == 2 and _safe_name(f[0]) for f in record.files):
            raise ValueError("a job record with a bad id or file name")
        record.files = [(str(name), str(label)) for name, label in record.files]
        return record

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED


def _safe_name(name: Any) -> bool:
    """A spooled file's name as the server makes them (two digits and a suffix): never a path."""
    return isinstance(name, str) and re.fullmatch(r"\d{2,3}\.[a-z]{1,10}", name) is not None


def spooled_name(index: int, suffix: str) -> str:
    return f"{index:02d}{suffix.lower()}"


def to_resume(records: list[JobRecord]) -> list[JobRecord]:
    """The unfinished jobs, in the order they were accepted."""
    return sorted((r for r in records if not r.is_finished), key=lambda r: r.created)


def to_prune(finished: list[tuple[str, float]], now: float, keep: int = KEEP_JOBS,
             keep_seconds: float = KEEP_SECONDS) -> list[str]:
    """The ids of the finished jobs (id, finish time) to forget: those finished more than
    `keep_seconds` ago, and the oldest beyond the newest `keep`."""
    newest_first = sorted(finished, key=lambda f: f[1], reverse=True)
    return [job_id for i, (job_id, done) in enumerate(newest_first) if i >= keep or now - done > keep_seconds]


def refusal(error: OSError) -> SpoolUnavailable:
    """What the client is told when the spool cannot take an upload: 507 either way, the code
    saying whether the disk is full or the folder cannot be written (no path in the message)."""
    why = error.strerror or type(error).__name__
    if error.errno in FULL_ERRNOS:
        return SpoolUnavailable(f"the server's disk is full ({why}): the upload was not kept; retry later",
                                "spool_full")
    return SpoolUnavailable(f"the server cannot write its upload spool ({why}): the upload was not kept",
                            "spool_unwritable")


class Claim:
    """An exclusive flock on a job folder: this process runs the job. Released by `release`, or
    by the kernel when the process ends (a SIGKILL included). The lock is on the folder itself,
    so it survives the folder's rename from `.new-<id>` to `<id>`. Where the file system cannot
    lock, a claim holds no lock (`fd` None): one worker's rules."""

    def __init__(self, fd: int | None):
        self._fd: int | None = fd

    @classmethod
    def take(cls, folder: Path) -> Claim | None:
        """The claim of `folder`, or None when another process (or another claim here) holds it.
        OSError when the folder cannot be opened."""
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as e:
            os.close(fd)
            if e.errno in UNLOCKABLE_ERRNOS:
                _cannot_lock(folder.parent, e)
                return cls(None)
            raise
        except BaseException:
            os.close(fd)
            raise
        return cls(fd)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock

    def __del__(self):
        self.release()


_warned: set[str] = set()


def _cannot_lock(root: Path, error: OSError) -> None:
    if str(root) not in _warned:
        _warned.add(str(root))
        logger.warning("the upload spool %s cannot be locked (%s): with several workers, a job could run in "
                       "two of them", root, error.strerror or error)


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, (os.O_RDONLY | os.O_DIRECTORY) if directory else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    """`data` in `path`, whole or not at all: a temp file beside it, fsync'd, renamed over it,
    and the folder fsync'd."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_path(path.parent, directory=True)


class Spool:
    """The job folders under `root` (STORE/.uploads/.jobs)."""

    def __init__(self, root: Path):
        self.root = root

    def folder(self, job_id: str) -> Path:
        if not JOB_ID.match(job_id):
            raise ValueError(f"not a job id: {job_id[:80]!r}")
        return self.root / job_id

    def accept(self, record: JobRecord, files: list[Path]) -> tuple[list[Path], Claim]:
        """Move `files` (the upload's received files, in record.files' order) into a new job
        folder with `record`, durably; their new paths and this process's claim of the job.
        SpoolUnavailable, with nothing kept of the job (the received files are the caller's to
        remove), when the disk says no."""
        new = self.root / f"{NEW_PREFIX}{record.id}"
        moved: list[tuple[Path, Path]] = []
        claim: Claim | None = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with self._guard(fcntl.LOCK_SH):  # no sweep between making the folder and claiming it
                new.mkdir()
                claim = Claim.take(new)  # a new id's folder: nobody else can hold it
            for source, (name, _) in zip(files, record.files, strict=True):
                _fsync_path(source)
                os.replace(source, new / name)
                moved.append((source, new / name))
            _write_durably(new / RECORD, record.to_json())
            _fsync_path(new, directory=True)
            os.rename(new, self.folder(record.id))
            _fsync_path(self.root, directory=True)
        except OSError as e:
            for source, target in moved:  # back where the caller removes them
                with contextlib.suppress(OSError):
                    os.replace(target, source)
            shutil.rmtree(new, ignore_errors=True)
            if claim is not None:
                claim.release()
            raise refusal(e) from None
        return [self.folder(record.id) / name for name, _ in record.files], claim

    def claim(self, job_id: str) -> Claim | None:
        """This process's claim of a job, or None when another process runs it (or its folder is
        gone). Out of descriptors, the job is claimed without a lock (logged): better run than
        left waiting for a restart."""
        try:
            return Claim.take(self.folder(job_id))
        except FileNotFoundError:
            return None
        except OSError as e:
            logger.warning("cannot lock ingest job %s (%s): running it without a claim", job_id, e.strerror or e)
            return Claim(None)

    def read(self, job_id: str) -> JobRecord | None:
        """One job's record as the spool has it (a job another worker accepted), or None."""
        try:
            record = JobRecord.from_json((self.folder(job_id) / RECORD).read_bytes())
        except (OSError, ValueError, TypeError):
            return None
        return record if record.id == job_id else None

    def update(self, record: JobRecord) -> None:
        """Rewrite a job's record (its outcome). A failure is logged: the job then runs again at
        the next start, which is safe."""
        try:
            _write_durably(self.folder(record.id) / RECORD, record.to_json())
        except OSError as e:
            logger.warning("could not record the end of job %s in the spool (%s): it will run again at "
                           "the next start", record.id, e.strerror or e)

    def settle(self, record: JobRecord) -> None:
        """A finished job: its outcome recorded first, then its files removed."""
        self.update(record)
        self.settle_files(record)

    def forget(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def load(self) -> list[JobRecord]:
        """Every job record of the spool; folders never answered (`.new-*`) removed, and the files
        of finished jobs too (a crash between settling and removing them). An unreadable record
        is logged and left alone."""
        if not self.root.is_dir():
            return []
        records = []
        with self._guard(fcntl.LOCK_EX):
            for entry in self.root.iterdir():
                if entry.name.startswith(NEW_PREFIX):
                    self._remove_unanswered(entry)
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(NEW_PREFIX):
                continue
            if not JOB_ID.match(entry.name) or not entry.is_dir():
                continue
            try:
                record = JobRecord.from_json((entry / RECORD).read_bytes())
                if record.id != entry.name:
                    raise ValueError("the record names another job")
            except (OSError, ValueError, TypeError) as e:
                logger.warning("skipping the unreadable job record in %s: %s", entry.name, e)
                continue
            if record.is_finished:
                self.settle_files(record)
            records.append(record)
        return records

    def _remove_unanswered(self, folder: Path) -> None:
        """A `.new-*` folder left by a process that died before answering 202; not one that a
        live worker is building now (it holds the folder's claim: the guard makes sure it took
        it before any sweep could see the folder)."""
        try:
            claim = Claim.take(folder)
        except OSError:
            return
        if claim is not None:
            shutil.rmtree(folder, ignore_errors=True)
            claim.release()

    @contextlib.contextmanager
    def _guard(self, mode: int):
        """A flock on the spool folder itself: shared while a job folder is made and claimed,
        exclusive while unanswered ones are swept (so none is swept before its claim is taken)."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                fcntl.flock(fd, mode)
            except OSError as e:
                if e.errno not in UNLOCKABLE_ERRNOS:
                    raise
                _cannot_lock(self.root, e)
            yield
        finally:
            os.close(fd)

    def settle_files(self, record: JobRecord) -> None:
        for name, _ in record.files:
            with contextlib.suppress(OSError):
                (self.folder(record.id) / name).unlink()

    def missing(self, record: JobRecord) -> list[str]:
        """The labels of a job's files that are not in its folder."""
        return [label for name, label in record.files if not (self.folder(record.id) / name).is_file()]
