"""Qdrant Edge: the Qdrant engine in-process, one shard folder per collection (the embedded default).

Layout: STORE_DIR/COLLECTION/ holds the shard (segments/, wal/, edge_config.json), our
`rag_collection.json` (model, dimension, text-index settings) and a `.rag.lock` held while open.
"""

from __future__ import annotations

import fcntl
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from connectors.qdrant.schema import (DENSE, INTEGER_FIELDS, KEYWORD_FIELDS, TEXT_FIELD,
                                      chunk_payload)
from rag.errors import CollectionNotFoundError, ConfigError, ModelMismatchError, StoreLockedError
from rag.models import Chunk
from rag.search.store import (CollectionInfo, Condition, FileVersion, Hit, QuerySpec, TextIndexSettings,
                       versions_from_payloads)

META_FILE = "rag_collection.json"
LOCK_FILE = ".rag.lock"
SHARD_MARKER = "edge_config.json"


def text_index_params(settings: TextIndexSettings):
    import qdrant_edge as qe

    tokenizers = {"word": qe.TokenizerType.Word, "whitespace": qe.TokenizerType.Whitespace,
                  "multilingual": qe.TokenizerType.Multilingual}
    return qe.TextIndexParams(
        tokenizer=tokenizers[settings.tokenizer],
        lowercase=settings.lowercase,
        ascii_folding=settings.ascii_folding,
        min_token_len=settings.min_token_len,
        max_token_len=settings.max_token_len,
        stemmer=qe.SnowballParams(qe.SnowballLanguage.English) if settings.stemmer == "english" else None,
        stopwords=qe.Language.English if settings.stopwords == "english" else None,
        scoring=True,
    )


def check_compatible(name: str, recorded: CollectionInfo, wanted: CollectionInfo) -> None:
    if (recorded.model, recorded.dimension) != (wanted.model, wanted.dimension):
        raise ModelMismatchError(
            f"collection '{name}' was built with encoder '{recorded.model}' (dimension "
            f"{recorded.dimension}), not '{wanted.model}' (dimension {wanted.dimension}). "
            f"Use --model {recorded.model}, or another --collection.")
    if (recorded.chunk_size, recorded.chunk_overlap) != (wanted.chunk_size, wanted.chunk_overlap):
        raise ConfigError(
            f"collection '{name}' was chunked with chunk_size {recorded.chunk_size} and overlap "
            f"{recorded.chunk_overlap}, not {wanted.chunk_size}/{wanted.chunk_overlap}: use the "
            "recorded settings, or another --collection.")


class EdgeStore:
    """A collection in a local folder, opened by one process at a time."""

    def __init__(self, store_dir: str | Path, name: str, info: CollectionInfo | None = None,
                 create: bool = True):
        """Open (or, when `create` and `info` are given, create) collection `name`.
        With `info`, the recorded model must match; without, the recorded info is adopted."""
        import qdrant_edge as qe

        self._qe = qe
        self.name = name
        self.path = Path(store_dir).expanduser().resolve() / name
        meta_path = self.path / META_FILE
        if not meta_path.exists() and not (create and info is not None):
            raise CollectionNotFoundError(
                f"collection '{name}' does not exist in {self.path.parent} "
                "(run `rag ingest` first, or check --store and --collection)")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _acquire_lock(self.path)
        try:
            if meta_path.exists():
                recorded = CollectionInfo.model_validate_json(meta_path.read_text())
                if info is not None:
                    check_compatible(name, recorded, info)
                self.info = recorded
            else:
                self.info = info
                _write_atomic(meta_path, self.info.model_dump_json(indent=2))
            self._shard = self._open_shard()
        except BaseException:
            self._release()
            raise

    def _open_shard(self):
        qe = self._qe
        config = qe.EdgeConfig(vectors={DENSE: qe.EdgeVectorParams(
            size=self.info.dimension, distance=qe.Distance.Cosine)})
        try:
            if (self.path / SHARD_MARKER).exists():
                shard = qe.EdgeShard.load(str(self.path))
            else:
                shard = qe.EdgeShard.create(str(self.path), config)
        except Exception as e:  # the engine raises plain Exception
            if "WouldBlock" in str(e):
                raise StoreLockedError(f"store {self.path} is open in another process") from e
            raise
        # Idempotent, so a crash right after creating the shard is mended on the next open.
        have = set(shard.info().payload_schema)
        wanted = [(TEXT_FIELD, text_index_params(self.info.text_index))]
        wanted += [(f, qe.PayloadSchemaType.Keyword) for f in KEYWORD_FIELDS]
        wanted += [(f, qe.PayloadSchemaType.Integer) for f in INTEGER_FIELDS]
        missing = [(f, schema) for f, schema in wanted if f not in have]
        for field, schema in missing:
            shard.update(qe.UpdateOperation.create_field_index(field, schema))
        if missing:
            shard.flush()
        return shard

    # ------------------------------------------------------------------ filters
    def _match(self, key: str, value):
        qe = self._qe
        return qe.FieldCondition(key=key, match=qe.MatchValue(value))

    # ------------------------------------------------------------------ writes
    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray, file_chunks: dict[str, int]) -> None:
        qe = self._qe
        points = [qe.Point(c.id, {DENSE: v.tolist()}, chunk_payload(c, file_chunks[c.source]))
                  for c, v in zip(chunks, vectors)]
        self._shard.update(qe.UpdateOperation.upsert_points(points))

    def delete_other_versions(self, source: str, keep_hash: str) -> None:
        qe = self._qe
        flt = qe.Filter(must=[self._match("source", source)],
                        must_not=[self._match("file_hash", keep_hash)])
        self._shard.update(qe.UpdateOperation.delete_points_by_filter(flt))

    def delete_source(self, source: str) -> None:
        qe = self._qe
        self._shard.update(qe.UpdateOperation.delete_points_by_filter(
            qe.Filter(must=[self._match("source", source)])))

    # ------------------------------------------------------------------ reads
    def _scroll(self, flt, fields: list[str]):
        qe = self._qe
        offset = None
        while True:
            records, offset = self._shard.scroll(qe.ScrollRequest(
                offset=offset, limit=1024, filter=flt,
                with_payload=qe.PayloadSelector.Include(fields), with_vector=False))
            yield from records
            if offset is None:
                break

    def file_versions(self, source: str) -> list[FileVersion]:
        flt = self._qe.Filter(must=[self._match("source", source)])
        return versions_from_payloads(r.payload for r in self._scroll(flt, ["file_hash", "file_chunks"]))

    def sources(self) -> set[str]:
        return {(r.payload or {}).get("source", "") for r in self._scroll(None, ["source"])}

    def payloads(self, fields: list[str]):
        for r in self._scroll(None, fields):
            yield str(r.id), dict(r.payload or {})

    def count(self) -> int:
        return int(self._shard.count(self._qe.CountRequest(exact=True)))

    # ------------------------------------------------------------------ queries
    def _condition(self, c: Condition):
        qe = self._qe
        if c.any is not None:
            return qe.FieldCondition(key=c.key, match=qe.MatchAny(c.any))
        if c.value is not None:
            return qe.FieldCondition(key=c.key, match=qe.MatchValue(c.value))
        return qe.FieldCondition(key=c.key, range=qe.RangeFloat(gte=c.gte, lte=c.lte))

    def _request(self, spec: QuerySpec):
        qe = self._qe
        flt = qe.Filter(must=[self._condition(c) for c in spec.filter]) if spec.filter else None

        def leg_query(leg):
            if leg.kind == "dense":
                return qe.Query.Nearest(leg.vector, using=DENSE)
            return qe.TextQuery(TEXT_FIELD, leg.text)

        if spec.fusion is None:
            (leg,) = spec.legs
            return qe.QueryRequest(limit=min(spec.limit, leg.limit), query=leg_query(leg), filter=flt,
                                   with_payload=spec.with_payload,
                                   with_vector=[DENSE] if spec.with_vectors else False)
        fusion = (qe.Fusion.Rrf(k=spec.rrf_k, weights=spec.weights) if spec.fusion == "rrf"
                  else qe.Fusion.Dbsf())
        prefetches = [qe.Prefetch(limit=leg.limit, query=leg_query(leg), filter=flt) for leg in spec.legs]
        return qe.QueryRequest(limit=spec.limit, query=fusion, prefetches=prefetches, filter=flt,
                               with_payload=spec.with_payload,
                               with_vector=[DENSE] if spec.with_vectors else False)

    def query_batch(self, specs: list[QuerySpec]) -> list[list[Hit]]:
        qe = self._qe
        results = self._shard.query_batch(qe.QueryBatchRequest([self._request(s) for s in specs]))
        return [[_hit(p) for p in points] for points in results]

    def retrieve(self, ids: list[str], with_vectors: bool = False) -> list[Hit]:
        records = self._shard.retrieve(list(ids), with_payload=True,
                                       with_vector=[DENSE] if with_vectors else False)
        by_id = {str(r.id): r for r in records}
        return [_hit(by_id[i], 0.0) for i in ids if i in by_id]

    # ------------------------------------------------------------------ lifecycle
    def flush(self) -> None:
        self._shard.flush()

    def optimize(self) -> None:
        """Merge segments and build the HNSW index (blocking); queries on unindexed segments
        fall back to a full scan."""
        self._shard.optimize()

    def close(self) -> None:
        shard, self._shard = getattr(self, "_shard", None), None
        if shard is not None:
            shard.flush()
            shard.close()
        self._release()

    def _release(self) -> None:
        fd, self._lock_fd = getattr(self, "_lock_fd", None), None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> EdgeStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if getattr(self, "_shard", None) is not None:
            warnings.warn(f"EdgeStore {self.path} was not closed", ResourceWarning, stacklevel=1)


def _hit(point, score: float | None = None) -> Hit:
    vec = point.vector
    if isinstance(vec, dict):
        vec = vec.get(DENSE)
    return Hit(id=str(point.id), score=float(point.score if score is None else score),
               payload=dict(point.payload or {}),
               vector=list(vec) if vec is not None else None)


def _acquire_lock(folder: Path) -> int:
    """Hold an exclusive advisory lock for as long as the collection is open (released by the OS
    if the process dies). Fails at once, naming the holder, when another process has it."""
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreLockedError(
            f"store {folder} is open in another process (pid {holder}); wait for it to finish "
            "or stop it, then retry") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)

