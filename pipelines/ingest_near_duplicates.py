"""Near-duplicate chunks of an ingest job (`near_duplicates="flag"` or `"skip"`): a chunk whose
cosine similarity to an earlier chunk of the job, or to a chunk of another source already in the
collection, is at least the threshold is listed in the report, and with "skip" not written."""

from __future__ import annotations

import numpy as np

from pipelines.ingest_report import IngestReport, NearDuplicate
from rag.embed.similarity import best_earlier
from rag.models import Chunk
from rag.search.payload import CHUNK_INDEX, SOURCE, TEXT
from rag.search.store import Leg, QuerySpec, VectorStore


class NearDuplicates:
    """Finds chunks that are near-duplicates of an earlier chunk of the job (same batch) or of a
    chunk of another source in the collection (which holds the job's earlier batches)."""

    def __init__(self, store: VectorStore, action: str, threshold: float, report: IngestReport,
                 examples: int = 20, depth: int = 10):
        if action not in ("flag", "skip"):
            raise ValueError(f"near-duplicate action must be flag or skip, not {action!r}")
        if not 0 < threshold <= 1:
            raise ValueError("near-duplicate threshold must be a cosine in (0, 1]")
        self.store, self.action, self.threshold, self.report = store, action, threshold, report
        self.examples, self.depth = examples, depth
        report.near_duplicate_action, report.near_duplicate_threshold = action, threshold

    def check(self, chunks: list[Chunk], vectors: np.ndarray) -> list[bool]:
        """True for each chunk to keep (all of them when flagging); records the duplicates.

        The vectors are those indexed, made with the chunk's document context when the collection
        has it, so the same passage under two titles scores lower than without (measured: a
        boilerplate sentence under "2023 Q3 AAPL" and "2022 Q3 NVDA" 0.87, under "a" and "b"
        0.95). A chunk whose text repeats an earlier one's (case and spacing aside) is therefore
        a duplicate whatever its score: in this batch, or among its `depth` nearest points of
        another source in the collection."""
        n, found = len(chunks), [None] * len(chunks)
        match, sims = best_earlier(vectors, block=1024)  # earlier chunks of this batch
        for i in np.nonzero(sims >= self.threshold)[0]:
            j = int(match[i])
            found[int(i)] = (chunks[j].source, chunks[j].chunk_index, float(sims[i]))
        first: dict[str, int] = {}
        for i, c in enumerate(chunks):
            j = first.setdefault(_same_text_key(c.text), i)
            if j != i and found[i] is None:
                found[i] = (chunks[j].source, chunks[j].chunk_index, float(vectors[i] @ vectors[j]))
        todo = [i for i in range(n) if found[i] is None]
        if todo and self.store.count():
            specs = [QuerySpec(legs=[Leg(kind="dense", vector=vectors[i].tolist(), limit=self.depth)],
                               limit=self.depth, with_payload=True) for i in todo]
            for i, hits in zip(todo, self.store.query_batch(specs)):
                key = _same_text_key(chunks[i].text)
                for h in hits:
                    if h.payload.get(SOURCE) == chunks[i].source:
                        continue
                    if h.score >= self.threshold or _same_text_key(h.payload.get(TEXT, "")) == key:
                        found[i] = (h.payload.get(SOURCE, ""), int(h.payload.get(CHUNK_INDEX, -1)), h.score)
                        break
        keep = []
        for c, f in zip(chunks, found):
            keep.append(f is None or self.action == "flag")
            if f is None:
                continue
            self.report.near_duplicates += 1
            if len(self.report.near_duplicate_examples) < self.examples:
                self.report.near_duplicate_examples.append(NearDuplicate(
                    source=c.source, chunk_index=c.chunk_index, duplicate_of=f[0], duplicate_of_chunk=f[1],
                    similarity=round(f[2], 4), text=c.text[:200]))
        return keep


def _same_text_key(text: str) -> str:
    """What two chunks' texts must share to be the same passage: case and spacing aside."""
    return " ".join(text.lower().split())
