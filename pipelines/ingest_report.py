"""What an ingest job reports: one outcome per file, the chunks written, the near-duplicates
found. Its own module so that the job's parts (the write-and-settle step, the job's start and
end, the near-duplicate check) can fill it without importing the job itself."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Status = Literal["ingested", "replaced", "unchanged", "failed", "pruned"]


class FileOutcome(BaseModel):
    source: str
    status: Status
    chunks: int = 0
    reason: str | None = None
    warnings: list[str] = Field(default_factory=list)
    ocr_pages: int = Field(0, description="pages whose text was read by OCR")


class NearDuplicate(BaseModel):
    source: str
    chunk_index: int
    duplicate_of: str = Field(description="source of the earlier, similar chunk")
    duplicate_of_chunk: int
    similarity: float
    text: str = Field(description="start of the chunk's text")


class IngestReport(BaseModel):
    collection: str
    outcomes: list[FileOutcome] = Field(default_factory=list)
    chunks_written: int = 0
    seconds: float = 0.0
    total_points: int = 0
    near_duplicate_action: Literal["flag", "skip"] | None = None
    near_duplicate_threshold: float | None = None
    near_duplicates: int = Field(0, description="chunks found to be near-duplicates (flagged or skipped)")
    near_duplicate_examples: list[NearDuplicate] = Field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in ("ingested", "replaced", "unchanged", "failed", "pruned")}
        for o in self.outcomes:
            out[o.status] += 1
        return out

    @property
    def failed(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def chunks_per_second(self) -> float:
        return self.chunks_written / self.seconds if self.seconds else 0.0


def unreadable(source: str, reason: str | None) -> FileOutcome:
    """The outcome of a file that gave nothing to write: it could not be read (`reason`), or its
    text was empty after clean-up."""
    return FileOutcome(source=source, status="failed", reason=reason or "no text to index after clean-up")
