"""Where a collection lives: the embedded Edge folder (default) or a Qdrant server by URL."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from rag.search.payload import TEXT
from rag.search.store import CollectionInfo, VectorStore

DEFAULT_STORE_DIR = "rag_store"
DEFAULT_COLLECTION = "documents"


class ClusterSettings(BaseModel):
    """How a new collection on a Qdrant server or cluster is laid out (`[store]` / `rag ingest`
    flags; None: the server's default). Applied where the collection is created; the embedded
    stores (Edge, local mode) are one in-process shard: Edge refuses them, local mode accepts
    and ignores them (qdrant-client records none of them there).
    - shard_number, replication_factor, write_consistency_factor: Qdrant's collection params;
    - on_disk_payload: payloads on disk (read when returned), RAM for vectors and indexes only;
    - quantization "int8": scalar quantization (quantile 0.99), the quantized vectors in RAM
      (always_ram) and the float32 originals on disk (rescoring reads them);
    - bulk: a new collection is loaded without building HNSW (m=0, indexing_threshold=0, as in
      Qdrant's bulk-upload guide) and m=16 / indexing_threshold=20000 (Qdrant's defaults) are
      restored when the job ends (`optimize`), also by a rerun after a crash."""

    shard_number: int | None = Field(None, ge=1)
    replication_factor: int | None = Field(None, ge=1)
    write_consistency_factor: int | None = Field(None, ge=1)
    on_disk_payload: bool | None = None
    quantization: Literal["int8"] | None = None
    bulk: bool = False

    def is_set(self) -> bool:
        return self != ClusterSettings()


class StoreSettings(BaseModel):
    """`url` set: a Qdrant server or cluster (API key from $QDRANT_API_KEY unless given).
    `local_path` set: qdrant-client's local mode. Otherwise: Qdrant Edge under `store_dir`."""

    store_dir: str = DEFAULT_STORE_DIR
    collection: str = DEFAULT_COLLECTION
    url: str | None = None
    api_key: str | None = Field(default=None, repr=False, exclude=True)
    local_path: str | None = None
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)

    def describe(self) -> str:
        if self.url:
            return f"Qdrant server {self.url}, collection '{self.collection}'"
        if self.local_path:
            return f"qdrant-client local mode {self.local_path}, collection '{self.collection}'"
        return f"Qdrant Edge {Path(self.store_dir).resolve() / self.collection}"


def open_store(settings: StoreSettings, info: CollectionInfo | None = None,
               create: bool = False) -> VectorStore:
    """Open a collection; with `create` and `info`, create it when missing. With `info`, the
    collection's recorded encoder and chunking must match."""
    if settings.url or settings.local_path:
        from connectors.qdrant.client import ClientStore

        return ClientStore(settings.collection, info=info, create=create, url=settings.url,
                           api_key=settings.api_key, path=settings.local_path,
                           cluster=settings.cluster.model_dump())
    from connectors.qdrant.edge import EdgeStore

    if create and settings.cluster.is_set():
        from rag.errors import ConfigError

        raise ConfigError("shards, replicas, payload on disk, quantization and bulk mode are settings of a "
                          "Qdrant server or cluster (--url): the embedded Edge store is one in-process shard")

    return EdgeStore(settings.store_dir, settings.collection, info=info, create=create)


def collection_encoder(recorded_model: str, settings: StoreSettings, encoder=None):
    """The encoder to search a collection with: `encoder` when it is the model the collection
    records (vectors of another model are not comparable: ModelMismatchError), or, with none
    given, the recorded model (loaded on first use)."""
    if encoder is None:
        from rag.embed.encoder import SentenceEncoder

        return SentenceEncoder(recorded_model)
    if encoder.model_id != recorded_model:
        from rag.errors import ModelMismatchError

        raise ModelMismatchError(f"{settings.describe()} was built with {recorded_model}, not {encoder.model_id}: "
                                 "search it with the same encoder")
    return encoder


def collection_texts(settings: StoreSettings) -> list[str]:
    """The chunk texts stored in a collection (for `rag adapt`)."""
    vs = open_store(settings)
    try:
        return [t for _, payload in vs.payloads([TEXT]) if (t := payload.get(TEXT))]
    finally:
        vs.close()


def collection_points(settings: StoreSettings, fields: tuple[str, ...] = (TEXT,), batch: int = 1024):
    """(point ids, payloads with `fields`, stored vectors L2-normalised) of a collection, read
    back without encoding (for `rag mine` and `rag cluster` over a collection)."""
    import numpy as np

    vs = open_store(settings)
    try:
        ids, payloads = [], []
        for pid, payload in vs.payloads(list(fields)):
            ids.append(pid)
            payloads.append(payload or {})
        vectors = np.zeros((len(ids), vs.info.dimension), dtype=np.float32)
        row = {i: k for k, i in enumerate(ids)}
        for start in range(0, len(ids), batch):
            for h in vs.retrieve(ids[start:start + batch], with_vectors=True):
                vectors[row[h.id]] = h.vector
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return ids, payloads, vectors / np.clip(norms, 1e-12, None)
    finally:
        vs.close()


def collection_vectors(settings: StoreSettings, batch: int = 1024):
    """(chunk texts, stored vectors, L2-normalised) of a collection."""
    _, payloads, vectors = collection_points(settings, ("text",), batch)
    return [p.get("text", "") for p in payloads], vectors
