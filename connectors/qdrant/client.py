"""Qdrant server or cluster through qdrant-client (by URL and API key), with the same collection
schema as the embedded Edge store. `path=` opens qdrant-client's local mode (same API; used by
the tests). The collection's metadata records the encoder, as Edge's rag_collection.json does."""

from __future__ import annotations

import os
import warnings

from connectors.qdrant.base import QdrantStoreBase
from rag.errors import CollectionNotFoundError, ConfigError, StoreLockedError
from rag.search.payload import DENSE, UNITS, payload_indexes, text_field
from rag.search.store import CollectionInfo, TextIndexSettings


def text_index_params(settings: TextIndexSettings):
    from qdrant_client import models

    tokenizers = {"word": models.TokenizerType.WORD, "whitespace": models.TokenizerType.WHITESPACE,
                  "multilingual": models.TokenizerType.MULTILINGUAL}
    return models.TextIndexParams(
        type=models.TextIndexType.TEXT,
        tokenizer=tokenizers[settings.tokenizer],
        lowercase=settings.lowercase,
        ascii_folding=settings.ascii_folding,
        min_token_len=settings.min_token_len,
        max_token_len=settings.max_token_len,
        stemmer=(models.SnowballParams(type=models.Snowball.SNOWBALL,
                                       language=models.SnowballLanguage.ENGLISH)
                 if settings.stemmer == "english" else None),
        stopwords=models.Language.ENGLISH if settings.stopwords == "english" else None,
        scoring=models.TextScoringParams(type=models.TextScoringType.BM25),
    )


BULK_RESTORE = {"m": 16, "indexing_threshold": 20000}  # Qdrant's defaults, restored after a bulk load


def collection_params(cluster: dict, models) -> dict:
    """create_collection's keyword arguments for the cluster settings `cluster` (the fields of
    pipelines.stores.ClusterSettings; None: the server's default). int8: scalar quantization,
    quantile 0.99, quantized vectors always in RAM, originals on disk (Qdrant's "memory
    optimisation with quantization" recipe); bulk: HNSW not built during the load (m=0,
    indexing_threshold=0, Qdrant's bulk-upload guide)."""
    m = models
    out = {k: cluster[k] for k in ("shard_number", "replication_factor", "write_consistency_factor",
                                   "on_disk_payload") if cluster.get(k) is not None}
    if cluster.get("quantization") == "int8":
        out["quantization_config"] = m.ScalarQuantization(scalar=m.ScalarQuantizationConfig(
            type=m.ScalarType.INT8, quantile=0.99, always_ram=True))
    if cluster.get("bulk"):
        out["hnsw_config"] = m.HnswConfigDiff(m=0)
        out["optimizers_config"] = m.OptimizersConfigDiff(indexing_threshold=0)
    return out


def not_found_message(name: str) -> str:
    """What opening a missing collection says (the server says the same of one a key may not see)."""
    return f"collection '{name}' does not exist on the Qdrant server"


class ClientStore(QdrantStoreBase):
    """A collection on a Qdrant server (url, api_key; the key defaults to $QDRANT_API_KEY and is
    never printed) or in qdrant-client's local mode (path)."""

    def __init__(self, name: str, info: CollectionInfo | None = None, create: bool = True,
                 url: str | None = None, api_key: str | None = None, path: str | None = None,
                 timeout: int = 30, cluster: dict | None = None):
        from qdrant_client import QdrantClient, models

        if not (url or path):
            raise ConfigError("ClientStore needs a Qdrant url or a local-mode path")
        self._m = models
        self.name = name
        self.local = path is not None
        self.sole_writer = self.local  # local mode locks its folder; a server may have other writers
        self.cluster = cluster or {}
        try:
            self._client = (QdrantClient(path=path) if self.local else
                            QdrantClient(url=url, api_key=api_key or os.environ.get("QDRANT_API_KEY"),
                                         timeout=timeout))
        except RuntimeError as e:  # local mode: "Storage folder ... is already accessed by another instance"
            if "already accessed" in str(e):
                raise StoreLockedError(f"store {path} is open in another process") from e
            raise
        try:
            if self._client.collection_exists(name):
                meta = self._client.get_collection(name).config.metadata or {}
                if "rag" not in meta:
                    raise ConfigError(f"collection '{name}' exists but was not made by rag (no metadata)")
                self._adopt(CollectionInfo.model_validate(meta["rag"]), info)
            elif create and info is not None:
                self.info = info
                self._create()
            else:
                raise CollectionNotFoundError(not_found_message(name))
        except BaseException:
            self.close()  # a refused open must not keep the client (in local mode: the folder's lock)
            raise

    def _create(self) -> None:
        m = self._m
        on_disk = True if self.cluster.get("quantization") else None
        vectors = {DENSE: m.VectorParams(size=self.info.dimension, distance=m.Distance.COSINE, on_disk=on_disk)}
        if self.info.sentence_vectors:  # a chunk's unit vectors, scored by their best match
            # Scored only on candidates, by id (rag.search.units): no HNSW graph (m=0).
            vectors[UNITS] = m.VectorParams(
                size=self.info.dimension, distance=m.Distance.COSINE, on_disk=on_disk,
                multivector_config=m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM),
                hnsw_config=m.HnswConfigDiff(m=0))
        self._client.create_collection(
            self.name,
            vectors_config=vectors,
            metadata={"rag": self.info.model_dump(mode="json"), "rag_cluster": self.cluster},
            **collection_params(self.cluster, m),
        )
        with warnings.catch_warnings():  # local mode: "payload indexes have no effect"
            warnings.simplefilter("ignore", UserWarning)
            for field, schema in payload_indexes(text_index_params(self.info.text_index),
                                                 m.PayloadSchemaType.KEYWORD, m.PayloadSchemaType.INTEGER,
                                                 self.info.context):
                self._client.create_payload_index(self.name, field, schema)

    # ------------------------------------------------------------------ filters
    def _filter(self, must, must_not=None):
        return self._m.Filter(must=must, must_not=must_not)

    def _match(self, key, value):
        m = self._m
        return m.FieldCondition(key=key, match=m.MatchValue(value=value))

    def _match_any(self, key, values):
        m = self._m
        return m.FieldCondition(key=key, match=m.MatchAny(any=values))

    def _range(self, key, gte, lte):
        m = self._m
        return m.FieldCondition(key=key, range=m.Range(gte=gte, lte=lte))

    def _has_id(self, ids):
        return self._m.HasIdCondition(has_id=list(ids))

    # ------------------------------------------------------------------ writes
    def _point(self, point_id, vectors, payload):
        return self._m.PointStruct(id=point_id, vector=vectors, payload=payload)

    def _upsert_points(self, points):
        self._client.upsert(self.name, points, wait=True)

    def _delete(self, flt):
        self._client.delete(self.name, self._m.FilterSelector(filter=flt), wait=True)

    # ------------------------------------------------------------------ reads
    def _scroll_page(self, flt, fields, offset, limit):
        return self._client.scroll(self.name, scroll_filter=flt, limit=limit, offset=offset,
                                   with_payload=fields, with_vectors=False)

    def _count(self):
        return self._client.count(self.name, exact=True).count

    def _retrieve(self, ids, with_vector):
        return self._client.retrieve(self.name, ids, with_payload=True, with_vectors=with_vector)

    # ------------------------------------------------------------------ queries
    def _dense_leg(self, vector):
        return {"query": vector, "using": DENSE}

    def _units_leg(self, vector):
        return {"query": [vector], "using": UNITS}

    def _text_leg(self, text):
        return {"query": self._m.TextQuery(text=text), "using": text_field(self.info.context)}

    def _rrf(self, k, weights):
        m = self._m
        return m.RrfQuery(rrf=m.Rrf(k=k, weights=weights))

    def _dbsf(self):
        m = self._m
        return m.FusionQuery(fusion=m.Fusion.DBSF)

    def _prefetch(self, limit, flt, leg):
        return self._m.Prefetch(limit=limit, filter=flt, **leg)

    def _query_request(self, limit, flt, with_payload, with_vector, query, prefetches=None):
        return self._m.QueryRequest(limit=limit, prefetch=prefetches, filter=flt,
                                    with_payload=with_payload, with_vector=with_vector, **query)

    def _send_queries(self, requests):
        return [r.points for r in self._client.query_batch_points(self.name, requests)]

    # ------------------------------------------------------------------ lifecycle
    def flush(self) -> None:
        pass  # the server persists each acknowledged write (wait=True)

    def optimize(self) -> None:
        """The server's optimizers run in the background; after a bulk load, HNSW is switched
        back on (Qdrant then builds it in the background)."""
        if self.cluster.get("bulk"):
            m = self._m
            self._client.update_collection(
                self.name, hnsw_config=m.HnswConfigDiff(m=BULK_RESTORE["m"]),
                optimizers_config=m.OptimizersConfigDiff(indexing_threshold=BULK_RESTORE["indexing_threshold"]))

    def close(self) -> None:
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            client.close()
