"""Qdrant Edge: the Qdrant engine in-process, one shard folder per collection (the embedded default).

Layout: STORE_DIR/COLLECTION/ holds the shard (segments/, wal/, edge_config.json), our
`rag_collection.json` (model, dimension, text-index settings) and a `.rag.lock` held while open.
"""

from __future__ import annotations

import fcntl
import os
import warnings
from pathlib import Path

from connectors.qdrant.base import QdrantStoreBase
from rag.errors import CollectionNotFoundError, StoreLockedError
from rag.search.payload import DENSE, UNITS, payload_indexes, text_field
from rag.search.store import CollectionInfo, TextIndexSettings

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


def not_found_message(root: Path, name: str) -> str:
    """What opening a missing collection says (the server says the same of one a key may not see)."""
    return (f"collection '{name}' does not exist in {root} "
            "(run `rag ingest` first, or check --store and --collection)")


class EdgeStore(QdrantStoreBase):
    """A collection in a local folder, opened by one process at a time."""

    sole_writer = True  # the folder's lock: no other process writes while it is open

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
            raise CollectionNotFoundError(not_found_message(self.path.parent, name))
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _acquire_lock(self.path)
        try:
            if meta_path.exists():
                self._adopt(CollectionInfo.model_validate_json(meta_path.read_text()), info)
            else:
                self.info = info
                _write_atomic(meta_path, self.info.model_dump_json(indent=2))
            self._shard = self._open_shard()
        except BaseException:
            self._release()
            raise

    def _open_shard(self):
        qe = self._qe
        vectors = {DENSE: qe.EdgeVectorParams(size=self.info.dimension, distance=qe.Distance.Cosine)}
        if self.info.sentence_vectors:  # a chunk's unit vectors, scored by their best match
            # Scored only on candidates, by id (rag.search.units): no HNSW graph (m=0), which for
            # a multivector costs far more to build than the chunk vectors' own.
            vectors[UNITS] = qe.EdgeVectorParams(
                size=self.info.dimension, distance=qe.Distance.Cosine,
                multivector_config=qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim),
                hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000))
        config = qe.EdgeConfig(vectors=vectors)
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
        wanted = payload_indexes(text_index_params(self.info.text_index), qe.PayloadSchemaType.Keyword,
                                 qe.PayloadSchemaType.Integer, self.info.context)
        missing = [(f, schema) for f, schema in wanted if f not in have]
        for field, schema in missing:
            shard.update(qe.UpdateOperation.create_field_index(field, schema))
        if missing:
            shard.flush()
        return shard

    # ------------------------------------------------------------------ filters
    def _filter(self, must, must_not=None):
        return self._qe.Filter(must=must, must_not=must_not)

    def _match(self, key, value):
        qe = self._qe
        return qe.FieldCondition(key=key, match=qe.MatchValue(value))

    def _match_any(self, key, values):
        qe = self._qe
        return qe.FieldCondition(key=key, match=qe.MatchAny(values))

    def _range(self, key, gte, lte):
        qe = self._qe
        return qe.FieldCondition(key=key, range=qe.RangeFloat(gte=gte, lte=lte))

    def _has_id(self, ids):
        return self._qe.HasIdCondition(set(ids))

    # ------------------------------------------------------------------ writes
    def _point(self, point_id, vectors, payload):
        return self._qe.Point(point_id, vectors, payload)

    def _upsert_points(self, points):
        self._shard.update(self._qe.UpdateOperation.upsert_points(points))

    def _delete(self, flt):
        self._shard.update(self._qe.UpdateOperation.delete_points_by_filter(flt))

    # ------------------------------------------------------------------ reads
    def _scroll_page(self, flt, fields, offset, limit):
        qe = self._qe
        return self._shard.scroll(qe.ScrollRequest(
            offset=offset, limit=limit, filter=flt,
            with_payload=qe.PayloadSelector.Include(fields), with_vector=False))

    def _count(self):
        return self._shard.count(self._qe.CountRequest(exact=True))

    def _retrieve(self, ids, with_vector):
        return self._shard.retrieve(ids, with_payload=True, with_vector=with_vector)

    # ------------------------------------------------------------------ queries
    def _dense_leg(self, vector):
        return {"query": self._qe.Query.Nearest(vector, using=DENSE)}

    def _units_leg(self, vector):
        return {"query": self._qe.Query.Nearest([vector], using=UNITS)}

    def _text_leg(self, text):
        return {"query": self._qe.TextQuery(text_field(self.info.context), text)}

    def _rrf(self, k, weights):
        return self._qe.Fusion.Rrf(k=k, weights=weights)

    def _dbsf(self):
        return self._qe.Fusion.Dbsf()

    def _prefetch(self, limit, flt, leg):
        return self._qe.Prefetch(limit=limit, filter=flt, **leg)

    def _query_request(self, limit, flt, with_payload, with_vector, query, prefetches=None):
        return self._qe.QueryRequest(limit=limit, prefetches=prefetches, filter=flt,
                                     with_payload=with_payload, with_vector=with_vector, **query)

    def _send_queries(self, requests):
        return self._shard.query_batch(self._qe.QueryBatchRequest(requests))

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

    def __del__(self):
        if getattr(self, "_shard", None) is not None:
            warnings.warn(f"EdgeStore {self.path} was not closed", ResourceWarning, stacklevel=1)


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

