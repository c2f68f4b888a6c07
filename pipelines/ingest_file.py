"""A file while the ingest job writes it (`FileInFlight`): read and chunked, not yet settled.

The single-process job holds one per file whose chunks are pending or being written (a batch may
carry several files' chunks); the distributed job's row carries one from stage 1 through the
encoder to the writer, so it is a plain, picklable dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field

from rag.models import Chunk, Document


@dataclass
class FileInFlight:
    source: str
    file_hash: str
    had_old: bool  # the store holds another version of its source: "replaced", not "ingested"
    chunks: list[Chunk]
    warnings: list[str] = field(default_factory=list)
    ocr_pages: int = 0
    # chunks to store, recorded in each point (fewer than len(chunks) once near-duplicates are skipped)
    total: int = field(init=False)
    remaining: int = field(init=False)  # of those, not yet written: the file is settled at 0
    written: int = field(default=0, init=False)  # taken back from the job's count if the file fails
    abandoned: bool = field(default=False, init=False)  # a write of it failed for good: send no more

    def __post_init__(self) -> None:
        self.total = self.remaining = len(self.chunks)

    @classmethod
    def read(cls, source: str, doc: Document, chunks: list[Chunk], had_old: bool) -> FileInFlight:
        """The file `doc` was read from, chunked into `chunks` under `source`."""
        return cls(source, doc.file_hash, had_old, chunks, list(doc.warnings), doc.ocr_pages)

    def skip(self) -> None:
        """One of its chunks is a near-duplicate that is not stored: one fewer to write and record."""
        self.total -= 1
        self.remaining -= 1
