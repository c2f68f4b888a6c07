"""Qdrant server or cluster through qdrant-client (by URL and API key), with the same collection
schema as the embedded Edge store. `path=` opens qdrant-client's local mode (same API; used by
the tests). The collection's metadata records the encoder, as Edge's rag_collection.json does."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np

from connectors.qdrant.edge import check_compatible
from connectors.qdrant.schema import (DENSE, INTEGER_FIELDS, KEYWORD_FIELDS, TEXT_FIELD,
                                      chunk_payload)
from rag.errors import CollectionNotFoundError, ConfigError, StoreLockedError
from rag.models import Chunk
from rag.search.store import (CollectionInfo, Condition, FileVersion, Hit, QuerySpec, TextIndexSettings,
                       versions_from_payloads)


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


class ClientStore:
    """A collection on a Qdrant server (url, api_key; the key defaults to $QDRANT_API_KEY and is
    never printed) or in qdrant-client's local mode (path)."""

    def __init__(self, name: str, info: CollectionInfo | None = None, create: bool = True,
                 url: str | None = None, api_key: str | None = None, path: str | None = None,
                 timeout: int = 30):
        from qdrant_client import QdrantClient, models

        if not (url or path):
            raise ConfigError("ClientStore needs a Qdrant url or a local-mode path")
        self._m = models
        self.name = name
        self.local = path is not None
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
                recorded = CollectionInfo.model_validate(meta["rag"])
                if info is not None:
                    check_compatible(name, recorded, info)
                self.info = recorded
            elif create and info is not None:
                self.info = info
                self._create()
            else:
                raise CollectionNotFoundError(f"collection '{name}' does not exist on the Qdrant server")
        except BaseException:
            self.close()  # a refused open must not keep the client (in local mode: the folder's lock)
            raise

    def _create(self) -> None:
        m = self._m
        self._client.create_collection(
            self.name,
            vectors_config={DENSE: m.VectorParams(size=self.info.dimension, distance=m.Distance.COSINE)},
            metadata={"rag": self.info.model_dump(mode="json")},
        )
        with warnings.catch_warnings():  # local mode: "payload indexes have no effect"
            warnings.simplefilter("ignore", UserWarning)
            self._client.create_payload_index(self.name, TEXT_FIELD, text_index_params(self.info.text_index))
            for f in KEYWORD_FIELDS:
                self._client.create_payload_index(self.name, f, m.PayloadSchemaType.KEYWORD)
            for f in INTEGER_FIELDS:
                self._client.create_payload_index(self.name, f, m.PayloadSchemaType.INTEGER)

    def _match(self, key, value):
        m = self._m
        return m.FieldCondition(key=key, match=m.MatchValue(value=value))

    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray, file_chunks: dict[str, int]) -> None:
        m = self._m
        points = [m.PointStruct(id=c.id, vector={DENSE: v.tolist()},
                                payload=chunk_payload(c, file_chunks[c.source]))
                  for c, v in zip(chunks, vectors)]
        self._client.upsert(self.name, points, wait=True)

    def delete_other_versions(self, source: str, keep_hash: str) -> None:
        m = self._m
        flt = m.Filter(must=[self._match("source", source)], must_not=[self._match("file_hash", keep_hash)])
        self._client.delete(self.name, m.FilterSelector(filter=flt), wait=True)

    def delete_source(self, source: str) -> None:
        m = self._m
        self._client.delete(self.name, m.FilterSelector(filter=m.Filter(must=[self._match("source", source)])),
                            wait=True)

    def _scroll(self, flt, fields: list[str]):
        offset = None
        while True:
            records, offset = self._client.scroll(self.name, scroll_filter=flt, limit=1024, offset=offset,
                                                  with_payload=fields, with_vectors=False)
            yield from records
            if offset is None:
                break

    def file_versions(self, source: str) -> list[FileVersion]:
        flt = self._m.Filter(must=[self._match("source", source)])
        return versions_from_payloads(r.payload for r in self._scroll(flt, ["file_hash", "file_chunks"]))

    def sources(self) -> set[str]:
        return {(r.payload or {}).get("source", "") for r in self._scroll(None, ["source"])}

    def payloads(self, fields: list[str]):
        for r in self._scroll(None, fields):
            yield str(r.id), dict(r.payload or {})

    def count(self) -> int:
        return int(self._client.count(self.name, exact=True).count)

    def _condition(self, c: Condition):
        m = self._m
        if c.any is not None:
            return m.FieldCondition(key=c.key, match=m.MatchAny(any=c.any))
        if c.value is not None:
            return m.FieldCondition(key=c.key, match=m.MatchValue(value=c.value))
        return m.FieldCondition(key=c.key, range=m.Range(gte=c.gte, lte=c.lte))

    def _request(self, spec: QuerySpec):
        m = self._m
        flt = m.Filter(must=[self._condition(c) for c in spec.filter]) if spec.filter else None
        with_vectors = [DENSE] if spec.with_vectors else False

        def leg_args(leg):
            if leg.kind == "dense":
                return {"query": leg.vector, "using": DENSE}
            return {"query": m.TextQuery(text=leg.text), "using": TEXT_FIELD}

        if spec.fusion is None:
            (leg,) = spec.legs
            return m.QueryRequest(limit=min(spec.limit, leg.limit), filter=flt, with_payload=spec.with_payload,
                                  with_vector=with_vectors, **leg_args(leg))
        fusion = (m.RrfQuery(rrf=m.Rrf(k=spec.rrf_k, weights=spec.weights)) if spec.fusion == "rrf"
                  else m.FusionQuery(fusion=m.Fusion.DBSF))
        prefetch = [m.Prefetch(limit=leg.limit, filter=flt, **leg_args(leg)) for leg in spec.legs]
        return m.QueryRequest(limit=spec.limit, query=fusion, prefetch=prefetch, filter=flt,
                              with_payload=spec.with_payload, with_vector=with_vectors)

    def query_batch(self, specs: list[QuerySpec]) -> list[list[Hit]]:
        responses = self._client.query_batch_points(self.name, [self._request(s) for s in specs])
        return [[_hit(p, p.score) for p in r.points] for r in responses]

    def retrieve(self, ids: list[str], with_vectors: bool = False) -> list[Hit]:
        records = self._client.retrieve(self.name, list(ids), with_payload=True,
                                        with_vectors=[DENSE] if with_vectors else False)
        by_id = {str(r.id): r for r in records}
        return [_hit(by_id[i], 0.0) for i in ids if i in by_id]

    def flush(self) -> None:
        pass  # the server persists each acknowledged write (wait=True)

    def optimize(self) -> None:
        pass  # the server's optimizers run in the background

    def close(self) -> None:
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            client.close()

    def __enter__(self) -> ClientStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _hit(point, score: float) -> Hit:
    vec = point.vector.get(DENSE) if isinstance(point.vector, dict) else point.vector
    return Hit(id=str(point.id), score=float(score), payload=dict(point.payload or {}),
               vector=list(vec) if vec is not None else None)
