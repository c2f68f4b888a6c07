"""Writing a file's points and settling it: the one place that decides the outcome of a file
that reached the store ("ingested", "replaced", or "failed" with what its failed write left),
used by the single-process job (`pipelines.ingest`) and both writers of the distributed job
(`pipelines.ray_ingest`: the driver, `WriterActor`).

The order that makes a crash at any point repairable: a file's new points are upserted first
(in batches, through `StoreWriter`'s retries), its other versions deleted last, so until then
its old copy stays searchable. What a write that fails for good leaves (see `pipelines.writer`):
- an upsert: every file the batch carried fails, its other chunks are not sent, and what was
  written of its new version is deleted again; if that delete fails too, the partial copy stays,
  as after a crash, for the next run to replace;
- the delete of the other versions: the new version is whole and stays beside the old one until
  the next run deletes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from pipelines.ingest_file import FileInFlight
from pipelines.ingest_report import FileOutcome, IngestReport
from pipelines.writer import StoreWriter
from rag.errors import StoreWriteError
from rag.models import Chunk

ALL_SKIPPED = "every chunk was a near-duplicate: nothing of this file is stored"


class Progress(Protocol):
    def advance_chunks(self, n: int) -> None: ...

    def advance_file(self) -> None: ...


class FileWrites:
    """Writes files' points through `write` and settles each file into `report` (its outcome,
    the job's chunk count) and `bar` (a file done once its outcome is decided)."""

    def __init__(self, write: StoreWriter, report: IngestReport, bar: Progress):
        self.write, self.report, self.bar = write, report, bar

    def upsert(self, chunks: list[Chunk], vectors: np.ndarray, unit_vectors: list[np.ndarray] | None,
               files: Mapping[str, FileInFlight]) -> list[FileInFlight]:
        """Write one batch, the chunks of one or more of `files` (by source), with their vectors
        (and their unit vectors, one array per chunk, or None). Returns the files
        whose last chunk it wrote, in that order, for the caller to `settle`. If it fails for
        good, each file it carried fails instead, and is marked abandoned."""
        carried = [files[s] for s in dict.fromkeys(c.source for c in chunks)]
        try:
            self.write.upsert(chunks, vectors, {f.source: f.total for f in carried}, unit_vectors)
        except StoreWriteError as e:
            for f in carried:
                self._fail_upsert(f, e)
            return []
        self.report.chunks_written += len(chunks)
        self.bar.advance_chunks(len(chunks))
        done = []
        for c in chunks:
            f = files[c.source]
            f.written += 1
            f.remaining -= 1
            if f.remaining == 0:
                done.append(f)
        return done

    def settle(self, f: FileInFlight) -> None:
        """A file whose points are all written (or all skipped as near-duplicates): its other
        versions deleted, last, and its outcome recorded."""
        try:
            self.write.delete_other_versions(f.source, f.file_hash)
        except StoreWriteError as e:
            self._record(FileOutcome(source=f.source, status="failed", chunks=f.total, reason=delete_failed_reason(e)))
            return
        notes = f.warnings + [ALL_SKIPPED] if f.total == 0 else f.warnings
        self._record(FileOutcome(source=f.source, status="replaced" if f.had_old else "ingested", chunks=f.total,
                                 warnings=notes, ocr_pages=f.ocr_pages))

    def write_file(self, f: FileInFlight, vectors: np.ndarray, unit_vectors: list[np.ndarray] | None,
                   batch_size: int) -> None:
        """One file on its own (the distributed job): its points in batches, then settled."""
        files = {f.source: f}
        for start in range(0, len(f.chunks), batch_size):
            part = slice(start, start + batch_size)
            units = None if unit_vectors is None else unit_vectors[part]
            for done in self.upsert(f.chunks[part], vectors[part], units, files):
                self.settle(done)
            if f.abandoned:
                return

    def _fail_upsert(self, f: FileInFlight, err: StoreWriteError) -> None:
        f.abandoned = True
        self.report.chunks_written -= f.written
        f.written = 0
        try:
            self.write.delete_version(f.source, f.file_hash)
            cleanup = None
        except StoreWriteError as again:
            cleanup = again
        self._record(FileOutcome(source=f.source, status="failed", reason=upsert_failed_reason(err, cleanup)))

    def _record(self, outcome: FileOutcome) -> None:
        self.report.outcomes.append(outcome)
        self.bar.advance_file()


def upsert_failed_reason(err: StoreWriteError, cleanup: StoreWriteError | None) -> str:
    """Why a file whose points could not all be written failed, and what the delete of its
    partial new version (`cleanup`: its error, None when it worked) left."""
    if cleanup is None:
        after = "nothing of this version was kept (an older version, if any, is unchanged)"
    else:
        after = f"its partial copy could not be removed ({cleanup.reason}): the next run replaces it"
    return f"{err.reason}; {after}"


def delete_failed_reason(err: StoreWriteError) -> str:
    """Why a file whose new version is stored whole but whose older versions could not be
    deleted failed."""
    return (f"its new version is stored, but deleting its older versions failed: {err.reason}; "
            "the next run deletes them")
