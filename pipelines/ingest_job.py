"""The start and end that every ingest job shares (files, documents made in memory, on Ray):
the report and its clock, and the collection the job writes to, opened (created) or, when the
caller holds it open already, checked to be built with the job's encoder and chunking; at the
end the vector index built if anything was written, flushed, counted and closed if opened here.

    with IngestJob(settings, progress) as job:
        ...                                   # job.report: failures found before the store opens
        with job.collection(encoder, chunker, text_index, vector_store) as vs:
            ...                               # write through StoreWriter(vs)
    return job.report                         # total_points and seconds set
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from pipelines.ingest_report import IngestReport
from pipelines.stores import StoreSettings, open_store
from rag.embed.encoder import SentenceEncoder
from rag.ingest.chunking import Chunker
from rag.search.store import CollectionInfo, TextIndexSettings, VectorStore, check_compatible
from rag.tracing import start


class IngestJob:
    """One job: `report` (named after `settings`' collection) and its seconds, from creation to
    the end of the `with` block."""

    def __init__(self, settings: StoreSettings, progress: bool):
        self.settings, self.progress = settings, progress
        self.report = IngestReport(collection=settings.describe())
        self.store: VectorStore | None = None
        self._started = time.perf_counter()
        self.trace = start("rag.ingest", **{"rag.ingest.collection": self.report.collection})  # ended with the job

    def __enter__(self) -> IngestJob:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.report.seconds = time.perf_counter() - self._started
        self.trace.update(**{f"rag.ingest.files.{k}": v for k, v in self.report.counts().items()},
                          **{"rag.ingest.chunks_written": self.report.chunks_written,
                             "error.type": exc_type.__name__ if exc_type else None})
        self.trace.end()

    @contextmanager
    def collection(self, encoder: SentenceEncoder, chunker: Chunker, text_index: TextIndexSettings | None = None,
                   given: VectorStore | None = None) -> Iterator[VectorStore]:
        """The collection to write to (also `self.store`): `given` (an open handle, neither created
        nor closed here) checked, else the settings' collection opened and created on first use.
        After the block: the index built if chunks were written, flushed and counted."""
        opened = given is None
        self.store = (open_for_writing(self.settings, encoder, chunker, text_index) if opened
                      else check_open_store(given, encoder, chunker))
        try:
            yield self.store
            if self.report.chunks_written:
                optimize(self.store, self.progress)
            self.store.flush()
            self.report.total_points = self.store.count()
        finally:
            if opened and self.store is not None:
                self.store.close()
            self.store = None

    @contextmanager
    def handed_over(self) -> Iterator[None]:
        """The collection written by others (Ray's writer actors) for the block: an embedded
        store, which one process at a time may open, is closed first and reopened after; a
        Qdrant server's stays open."""
        if self.settings.url:
            yield
            return
        self.store.close()
        self.store = None
        yield
        self.store = open_store(self.settings)


def open_for_writing(settings: StoreSettings, encoder: SentenceEncoder, chunker: Chunker,
                     text_index: TextIndexSettings | None) -> VectorStore:
    size, _ = chunker.limits(encoder)
    info = CollectionInfo(model=encoder.model_id, dimension=encoder.dimension,
                          text_index=text_index or TextIndexSettings(),
                          chunk_size=size, chunk_overlap=chunker.chunk_overlap, context=chunker.context,
                          sentence_vectors=chunker.sentence_vectors)
    return open_store(settings, info=info, create=True)


def check_open_store(vs: VectorStore, encoder: SentenceEncoder, chunker: Chunker) -> VectorStore:
    """An open collection to write to, if it was built with this encoder and chunking."""
    size, _ = chunker.limits(encoder)
    wanted = vs.info.model_copy(update={"model": encoder.model_id, "dimension": encoder.dimension,
                                        "chunk_size": size, "chunk_overlap": chunker.chunk_overlap,
                                        "context": chunker.context,
                                        "sentence_vectors": chunker.sentence_vectors})
    check_compatible(getattr(vs, "name", "?"), vs.info, wanted)
    return vs


def optimize(vs: VectorStore, progress: bool) -> None:
    """Build the vector index (minutes for 100k chunks on 2 cores), saying so while it runs."""
    from pipelines.render import status

    with status("building the search index (HNSW) ...", enabled=progress):
        vs.optimize()
