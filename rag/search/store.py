"""What the core needs from a vector store. Connectors (Qdrant Edge, Qdrant server) implement it;
the core never imports a connector."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from pydantic import BaseModel, Field

from rag.errors import ConfigError, ModelMismatchError
from rag.models import Chunk
from rag.search.payload import FILE_CHUNKS, FILE_HASH

SCHEMA_VERSION = 1


class TextIndexSettings(BaseModel):
    """How the BM25 text index tokenizes chunk text. Fixed when the collection is created."""

    tokenizer: Literal["word", "whitespace", "multilingual"] = "word"
    lowercase: bool = True
    ascii_folding: bool = True
    stemmer: Literal["english"] | None = "english"
    stopwords: Literal["english"] | None = "english"
    min_token_len: int | None = None
    max_token_len: int | None = 40

    @classmethod
    def plain(cls) -> TextIndexSettings:
        """Default tokenization only: no stemmer, no stop words, no folding (what qdrant-client's
        local mode can score)."""
        return cls(stemmer=None, stopwords=None, ascii_folding=False, max_token_len=None)


class CollectionInfo(BaseModel):
    """Recorded with every collection, checked when it is opened again."""

    schema_version: int = SCHEMA_VERSION
    model: str = Field(description="encoder model id the vectors were made with")
    dimension: int
    text_index: TextIndexSettings = Field(default_factory=TextIndexSettings)
    chunk_size: int = Field(description="chunk size in encoder tokens, fixed per collection")
    chunk_overlap: int
    context: bool = Field(False, description="chunks embedded and BM25-indexed with their document "
                          "context (title, section); false for every collection recorded before "
                          "the field existed, which were built without it")
    sentence_vectors: bool = Field(False, description="each chunk also holds a vector per unit "
                                   "(rag.ingest.units), scored by the dense leg; false for every "
                                   "collection recorded before the field existed")


def check_compatible(name: str, recorded: CollectionInfo, wanted: CollectionInfo) -> None:
    """Refuse to open collection `name` with another encoder or chunking than it was built with:
    its vectors and chunk boundaries would not match what is written or searched next. Shared
    by every store, so each engine refuses with the same words."""
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
    if recorded.context != wanted.context:
        raise ConfigError(context_mismatch(name, recorded.context))
    if recorded.sentence_vectors != wanted.sentence_vectors:
        raise ConfigError(sentence_vectors_mismatch(name, recorded.sentence_vectors))


def context_mismatch(name: str, recorded: bool) -> str:
    """Why chunks made with (or without) document context cannot join collection `name`, and the
    fix: its chunks and these would be embedded and BM25-indexed differently."""
    if recorded:
        return (f"collection '{name}' was built with document context (each chunk embedded and "
                "indexed with its document's title and section); these chunks have none. Ingest "
                "with context (drop --no-context, or [chunking] context = true), or use another "
                "--collection.")
    return (f"collection '{name}' was built without document context (made before it existed, or "
            "with --no-context); these chunks carry it. Ingest with --no-context (or [chunking] "
            "context = false) to add to it, or use another --collection (or delete this one and "
            "ingest again) to have context.")


def sentence_vectors_mismatch(name: str, recorded: bool) -> str:
    """Why chunks with (or without) sentence vectors cannot join collection `name`, and the fix:
    its dense leg scores every chunk alike, by its units or not at all."""
    if recorded:
        return (f"collection '{name}' was built with sentence vectors (each chunk's sentences "
                "embedded beside it); these chunks have none. Ingest with them (drop "
                "--no-sentence-vectors, or [chunking] sentence_vectors = true), or use another "
                "--collection.")
    return (f"collection '{name}' was built without sentence vectors (made before they existed, or "
            "with --no-sentence-vectors); these chunks carry them. Ingest with --no-sentence-vectors "
            "(or [chunking] sentence_vectors = false) to add to it, or use another --collection "
            "(or delete this one and ingest again) to have them.")


class FileVersion(BaseModel):
    """Points of one source file stored under one file hash."""

    file_hash: str
    points: int
    expected: int = Field(description="chunk count the file had when written (payload file_chunks)")


class VectorStore(Protocol):
    """One collection holding dense vectors, the chunk text with a BM25 index, and metadata.

    `revision` and `sole_writer` say when a cache of the collection's contents (document
    routing's descriptors) is stale. Both have defaults, which a store that inherits this class
    (as the Qdrant engines do) gets without a word: a store that keeps no revision and may
    have other writers is counted (count()) to see that it changed."""

    name: str
    info: CollectionInfo
    #: A number that changes with every write or delete made through this handle; None: not kept.
    revision: int | None = None
    #: Every write to the collection goes through this handle (a store one process holds, its
    #: folder locked), so an unchanged revision means an unchanged collection.
    sole_writer: bool = False

    def file_versions(self, source: str) -> list[FileVersion]: ...

    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray, file_chunks: dict[str, int],
               unit_vectors: Sequence[np.ndarray] | None = None) -> None:
        """Write chunks with their vectors (and, in a collection with sentence vectors, each
        chunk's unit vectors, an (units, dimension) array per chunk), overwriting same ids."""
        ...

    def delete_other_versions(self, source: str, keep_hash: str) -> None: ...

    def delete_version(self, source: str, file_hash: str) -> None:
        """Delete the points of one version of a file (a write that could not be completed)."""
        ...

    def delete_source(self, source: str) -> None: ...

    def sources(self) -> set[str]: ...

    def payloads(self, fields: list[str]) -> Iterator[tuple[str, dict]]:
        """(point id, the payload's `fields`) of every point, in pages."""
        ...

    def count(self) -> int: ...

    def query_batch(self, specs: list[QuerySpec]) -> list[list[Hit]]: ...

    def retrieve(self, ids: list[str], with_vectors: bool = False) -> list[Hit]: ...

    def unit_vectors(self, ids: list[str]) -> dict[str, np.ndarray]:
        """The unit vectors (unit length, one row per unit) of the points `ids` that have them."""
        ...

    def flush(self) -> None: ...

    def optimize(self) -> None: ...

    def close(self) -> None: ...


def is_complete(versions: list[FileVersion], file_hash: str) -> bool:
    """The store holds exactly one full copy of this version of the file and nothing else of it."""
    return (len(versions) == 1 and versions[0].file_hash == file_hash
            and versions[0].points == versions[0].expected)


def versions_from_payloads(payloads: Iterable[dict | None]) -> list[FileVersion]:
    """Group the (file_hash, file_chunks) payloads of one source's points by file hash."""
    versions: dict[str, FileVersion] = {}
    for p in payloads:
        p = p or {}
        h = p.get(FILE_HASH, "")
        v = versions.setdefault(h, FileVersion(file_hash=h, points=0, expected=int(p.get(FILE_CHUNKS, -1))))
        v.points += 1
    return list(versions.values())


# ---------------------------------------------------------------- queries


class Condition(BaseModel):
    """One payload condition: `value` (equality), `any` (one of), or a range (`gte`/`lte`)."""

    key: str
    value: str | int | None = None
    any: list[str] | list[int] | None = None
    gte: float | None = None
    lte: float | None = None


class Leg(BaseModel):
    """One retrieval leg: dense (a query vector against the chunk vectors), units (the same
    against each chunk's unit vectors, its best one: MAX_SIM) or text (BM25 over the chunk text
    index)."""

    kind: Literal["dense", "units", "text"]
    vector: list[float] | None = None
    text: str | None = None
    limit: int = Field(gt=0)


class QuerySpec(BaseModel):
    """Legs, optionally fused inside the engine (rrf with k and weights, or dbsf)."""

    legs: list[Leg]
    fusion: Literal["rrf", "dbsf"] | None = None
    rrf_k: int = 60
    weights: list[float] | None = None
    limit: int = Field(gt=0)
    filter: list[Condition] = Field(default_factory=list)
    ids: list[str] | None = Field(None, description="only these points (scoring known candidates)")
    with_payload: bool = True
    with_vectors: bool = False


@dataclass(slots=True)
class Hit:
    """One scored point. A plain dataclass: hundreds are made per hybrid query, and validation
    would cost more than the search."""

    id: str
    score: float
    payload: dict
    vector: list[float] | None = None
