"""A store whose calls run one at a time: how the server shares qdrant-client's local mode.

Requests search from worker threads, and the writer thread writes meanwhile. Qdrant Edge and
qdrant-client's remote client take that; local mode is plain Python over in-memory structures, so
the server wraps it in `SerialisedStore`, which takes one re-entrant lock around every call of the
VectorStore protocol (rag.search.store). The wrapper names each method: a method the protocol
gains has to be added here, where it gets the lock, instead of slipping through unlocked.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np

from rag.models import Chunk
from rag.search.store import CollectionInfo, FileVersion, Hit, QuerySpec, VectorStore


class SerialisedStore:
    """`store`, each call under one lock. A listing (`payloads`) takes the lock for each step,
    so a long scan lets searches run between its pages."""

    def __init__(self, store: VectorStore):
        self._store = store
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ attributes
    @property
    def name(self) -> str:
        return self._store.name

    @property
    def info(self) -> CollectionInfo:
        return self._store.info

    @property
    def revision(self) -> int | None:
        return self._store.revision

    @property
    def sole_writer(self) -> bool:
        return self._store.sole_writer

    # ------------------------------------------------------------------ writes
    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray, file_chunks: dict[str, int],
               unit_vectors: Sequence[np.ndarray] | None = None) -> None:
        with self._lock:
            self._store.upsert(chunks, vectors, file_chunks, unit_vectors)

    def delete_other_versions(self, source: str, keep_hash: str) -> None:
        with self._lock:
            self._store.delete_other_versions(source, keep_hash)

    def delete_version(self, source: str, file_hash: str) -> None:
        with self._lock:
            self._store.delete_version(source, file_hash)

    def delete_source(self, source: str) -> None:
        with self._lock:
            self._store.delete_source(source)

    def flush(self) -> None:
        with self._lock:
            self._store.flush()

    def optimize(self) -> None:
        with self._lock:
            self._store.optimize()

    def close(self) -> None:
        with self._lock:
            self._store.close()

    # ------------------------------------------------------------------ reads
    def file_versions(self, source: str) -> list[FileVersion]:
        with self._lock:
            return self._store.file_versions(source)

    def sources(self) -> set[str]:
        with self._lock:
            return self._store.sources()

    def payloads(self, fields: list[str]) -> Iterator[tuple[str, dict]]:
        with self._lock:
            pages = self._store.payloads(fields)
        while True:
            with self._lock:
                item = next(pages, None)
            if item is None:
                return
            yield item

    def count(self) -> int:
        with self._lock:
            return self._store.count()

    def query_batch(self, specs: list[QuerySpec]) -> list[list[Hit]]:
        with self._lock:
            return self._store.query_batch(specs)

    def retrieve(self, ids: list[str], with_vectors: bool = False) -> list[Hit]:
        with self._lock:
            return self._store.retrieve(ids, with_vectors)

    def unit_vectors(self, ids: list[str]) -> dict[str, np.ndarray]:
        with self._lock:
            return self._store.unit_vectors(ids)
