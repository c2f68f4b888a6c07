"""One base, several engines: what the Qdrant Edge and qdrant-client stores share.

Both engines hold the same schema (rag.search.payload) and answer the same requests; they
differ only in how a filter, a query or a point is spelled and which call sends it. So the
store's logic (which points a write makes, which filter a delete uses, how a QuerySpec becomes a
request, how paged reads and hits are read back) lives here once, over small primitives that
each engine implements with its own API (as qdrant-client's QdrantBase does for its local and
remote clients). Opening, locking, index creation and closing stay with each engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, Self

import numpy as np

from rag.errors import ConfigError
from rag.models import Chunk
from rag.search.payload import DENSE, FILE_CHUNKS, FILE_HASH, SOURCE, UNITS, chunk_payload
from rag.search.store import (CollectionInfo, Condition, FileVersion, Hit, Leg, QuerySpec, VectorStore,
                              check_compatible, context_mismatch, sentence_vectors_mismatch,
                              versions_from_payloads)

SCROLL_PAGE = 1024


class QdrantStoreBase(VectorStore, ABC):
    """The VectorStore protocol over one Qdrant collection, whatever engine holds it. It keeps a
    revision (every write and delete below moves it); whether it is the sole writer is each
    engine's to say (the embedded store and local mode lock their folder; a Qdrant server may
    have other writers)."""

    name: str
    info: CollectionInfo
    revision: int = 0

    def _adopt(self, recorded: CollectionInfo, wanted: CollectionInfo | None) -> None:
        """Take the collection's recorded info, refusing a `wanted` one it does not match."""
        if wanted is not None:
            check_compatible(self.name, recorded, wanted)
        self.info = recorded

    # ------------------------------------------------------------------ engine primitives
    @abstractmethod
    def _scroll_page(self, flt, fields: list[str], offset, limit: int) -> tuple[list, Any]:
        """One page of records (with only the payload `fields`, no vectors) and the next offset
        (None after the last page)."""

    @abstractmethod
    def _filter(self, must: list, must_not: list | None = None):
        """A filter from built conditions."""

    @abstractmethod
    def _match(self, key: str, value):
        """Condition: the payload `key` equals `value`."""

    @abstractmethod
    def _match_any(self, key: str, values: list):
        """Condition: the payload `key` is one of `values`."""

    @abstractmethod
    def _range(self, key: str, gte: float | None, lte: float | None):
        """Condition: the payload `key` lies within [gte, lte] (either end open when None)."""

    @abstractmethod
    def _has_id(self, ids: list[str]):
        """Condition: the point is one of `ids`."""

    @abstractmethod
    def _dense_leg(self, vector: list[float]) -> dict:
        """The keyword arguments that make a request or prefetch a nearest-neighbour search."""

    @abstractmethod
    def _units_leg(self, vector: list[float]) -> dict:
        """The same against the UNITS multivector (MAX_SIM: each point's best unit)."""

    @abstractmethod
    def _text_leg(self, text: str) -> dict:
        """The keyword arguments that make a request or prefetch a BM25 search of the text index."""

    @abstractmethod
    def _rrf(self, k: int, weights: list[float] | None):
        """Reciprocal-rank fusion query of the prefetches."""

    @abstractmethod
    def _dbsf(self):
        """Distribution-based score fusion query of the prefetches."""

    @abstractmethod
    def _prefetch(self, limit: int, flt, leg: dict):
        """A prefetch stage running one leg (`leg`: from _dense_leg/_text_leg)."""

    @abstractmethod
    def _query_request(self, limit: int, flt, with_payload: bool, with_vector, query: dict,
                       prefetches: list | None = None):
        """A query request; `query` holds the keyword arguments naming its query."""

    @abstractmethod
    def _send_queries(self, requests: list) -> list[list]:
        """Run built requests in one batch: the scored points of each."""

    @abstractmethod
    def _point(self, point_id: str, vectors: dict[str, list[float]], payload: dict):
        """A point to upsert."""

    @abstractmethod
    def _upsert_points(self, points: list) -> None:
        """Write points (overwriting those with the same ids), durably once it returns."""

    @abstractmethod
    def _delete(self, flt) -> None:
        """Delete every point the filter matches."""

    @abstractmethod
    def _count(self) -> int:
        """Exact number of points."""

    @abstractmethod
    def _retrieve(self, ids: list[str], with_vector) -> list:
        """Records of the given ids (with payload) that exist, in any order."""

    @abstractmethod
    def flush(self) -> None: ...

    @abstractmethod
    def optimize(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    # ------------------------------------------------------------------ writes
    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray, file_chunks: dict[str, int],
               unit_vectors: Sequence[np.ndarray] | None = None) -> None:
        context, units = self.info.context, self.info.sentence_vectors
        if any((c.context is not None) != context for c in chunks):  # never mixed, even by a script
            raise ConfigError(context_mismatch(self.name, context))
        if (unit_vectors is not None) != units or (units and any(
                not c.units or len(c.units) != len(u) for c, u in zip(chunks, unit_vectors))):
            raise ConfigError(sentence_vectors_mismatch(self.name, units))
        points = [self._point(c.id, self._vectors(v, unit_vectors[i] if units else None),
                              chunk_payload(c, file_chunks[c.source], context, units))
                  for i, (c, v) in enumerate(zip(chunks, vectors))]
        self._upsert_points(points)
        self.revision += 1

    @staticmethod
    def _vectors(vector: np.ndarray, units: np.ndarray | None) -> dict[str, list]:
        """A point's named vectors: the chunk's, and its units' multivector when it has one."""
        return {DENSE: vector.tolist()} if units is None else {DENSE: vector.tolist(), UNITS: units.tolist()}

    def delete_other_versions(self, source: str, keep_hash: str) -> None:
        self._delete(self._filter(must=[self._match(SOURCE, source)],
                                  must_not=[self._match(FILE_HASH, keep_hash)]))
        self.revision += 1

    def delete_version(self, source: str, file_hash: str) -> None:
        self._delete(self._filter(must=[self._match(SOURCE, source), self._match(FILE_HASH, file_hash)]))
        self.revision += 1

    def delete_source(self, source: str) -> None:
        self._delete(self._filter(must=[self._match(SOURCE, source)]))
        self.revision += 1

    # ------------------------------------------------------------------ reads
    def _scroll(self, flt, fields: list[str]) -> Iterator:
        """Every record the filter matches, in pages, so a large collection is never read at once."""
        offset = None
        while True:
            records, offset = self._scroll_page(flt, fields, offset, SCROLL_PAGE)
            yield from records
            if offset is None:
                break

    def file_versions(self, source: str) -> list[FileVersion]:
        flt = self._filter(must=[self._match(SOURCE, source)])
        return versions_from_payloads(r.payload for r in self._scroll(flt, [FILE_HASH, FILE_CHUNKS]))

    def sources(self) -> set[str]:
        return {(r.payload or {}).get(SOURCE, "") for r in self._scroll(None, [SOURCE])}

    def payloads(self, fields: list[str]) -> Iterator[tuple[str, dict]]:
        for r in self._scroll(None, fields):
            yield str(r.id), dict(r.payload or {})

    def count(self) -> int:
        return int(self._count())

    # ------------------------------------------------------------------ queries
    def _condition(self, c: Condition):
        if c.any is not None:
            return self._match_any(c.key, c.any)
        if c.value is not None:
            return self._match(c.key, c.value)
        return self._range(c.key, c.gte, c.lte)

    def _leg(self, leg: Leg) -> dict:
        if leg.kind == "dense":
            return self._dense_leg(leg.vector)
        return self._units_leg(leg.vector) if leg.kind == "units" else self._text_leg(leg.text)

    def _request(self, spec: QuerySpec):
        """One leg as a plain request; several as prefetches fused inside the engine. The filter
        applies to every prefetch and to the fused result."""
        must = [self._condition(c) for c in spec.filter] + ([self._has_id(spec.ids)] if spec.ids else [])
        flt = self._filter(must=must) if must else None
        with_vector = [DENSE] if spec.with_vectors else False
        if spec.fusion is None:
            (leg,) = spec.legs
            return self._query_request(min(spec.limit, leg.limit), flt, spec.with_payload, with_vector,
                                       self._leg(leg))
        fusion = self._rrf(spec.rrf_k, spec.weights) if spec.fusion == "rrf" else self._dbsf()
        prefetches = [self._prefetch(leg.limit, flt, self._leg(leg)) for leg in spec.legs]
        return self._query_request(spec.limit, flt, spec.with_payload, with_vector, {"query": fusion},
                                   prefetches)

    def query_batch(self, specs: list[QuerySpec]) -> list[list[Hit]]:
        results = self._send_queries([self._request(s) for s in specs])
        return [[_hit(p) for p in points] for points in results]

    def retrieve(self, ids: list[str], with_vectors: bool = False) -> list[Hit]:
        records = self._retrieve(list(ids), [DENSE] if with_vectors else False)
        by_id = {str(r.id): r for r in records}
        return [_hit(by_id[i], 0.0) for i in ids if i in by_id]

    def unit_vectors(self, ids: list[str]) -> dict[str, np.ndarray]:
        if not self.info.sentence_vectors or not ids:
            return {}
        return {str(r.id): np.asarray(r.vector[UNITS], dtype=np.float32)
                for r in self._retrieve(list(ids), [UNITS]) if (r.vector or {}).get(UNITS)}

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _hit(point, score: float | None = None) -> Hit:
    """A Hit from a scored point (its own score) or a record (`score` given)."""
    vec = point.vector
    if isinstance(vec, dict):
        vec = vec.get(DENSE)
    return Hit(id=str(point.id), score=float(point.score if score is None else score),
               payload=dict(point.payload or {}),
               vector=list(vec) if vec is not None else None)
