"""The configuration file: one TOML file, validated with pydantic, that builds the same pipeline as
the Python API and gives the `rag` commands their defaults (flags still win).

Each field's default is the component's own constant (the chunker's chunk size, the backend's
timeout ...), and each command-line option reads its default from its field
(`pipelines.cli.options`), so a default is written once.

```toml
[store]
dir = "rag_store"          # or url = "http://qdrant:6333" (API key from $QDRANT_API_KEY)
collection = "documents"

[encoder]
model = "sentence-transformers/all-MiniLM-L6-v2"

[chunking]
size = 256
overlap = 32
context = true             # document title and section in front of what is embedded and indexed
sentence_vectors = true    # each sentence of a chunk embedded too; the dense leg scores the best one

[ingest]
exclude = ["drafts/*"]
near_duplicates = "flag"        # or "skip"
ocr = "auto"                    # PDF pages without a text layer read by OCR; or "off", "force" (all)
write_retries = 3               # a store write failing with a transient error is tried again, after
write_backoff = 0.5             #   0.5, 1, 2 ... s (with jitter, at most write_backoff_max)

[retrieval]
mode = "hybrid"
top_k = 8
rerank = "models/my-cross-encoder"  # a cross-encoder folder: rerank the first rerank_depth candidates
rerank_depth = 20
route = "auto"                  # document routing ("Apple's ... Q1 2023" searches that filing); "off"

[prompt]
max_answer_tokens = 512
template = "my_template.toml"   # keys system and user, with {context} and {question}

[llm]
backend = "openai"              # auto, openai, ollama, local (SmolLM2, offline) or none (extracts)
base_url = "http://127.0.0.1:8080/v1"
model = "smollm2"
api_key_env = "OPENAI_API_KEY"  # the name of the variable, never the key
```
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connectors.llm.registry import BACKEND_NAMES
from connectors.qdrant.retry import (DEFAULT_WRITE_BACKOFF, DEFAULT_WRITE_BACKOFF_MAX, DEFAULT_WRITE_RETRIES,
                                     WriteRetry)
from pipelines.ingest import DEFAULT_BATCH_SIZE, DEFAULT_DUP_THRESHOLD
from pipelines.stores import DEFAULT_COLLECTION, DEFAULT_STORE_DIR, ClusterSettings, StoreSettings
from rag.answer.llm import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, GenerationSettings
from rag.answer.prompt import DEFAULT_MARGIN, DEFAULT_MAX_PASSAGES
from rag.embed.encoder import DEFAULT_MODEL
from rag.errors import ConfigError
from rag.ingest.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE
from rag.ingest.loaders import DEFAULT_INCLUDE
from rag.ingest.pdf import DEFAULT_OCR, OcrMode
from rag.search.fusion import DEFAULT_RRF_K
from rag.search.rerank import DEFAULT_RERANK_DEPTH
from rag.search.units import DEFAULT_UNIT_WEIGHT
from rag.search.retrieval import DEFAULT_CANDIDATES, DEFAULT_FUSION, DEFAULT_ROUTE, DEFAULT_TOP_K

Backend = Literal[BACKEND_NAMES]  # the registry's names: a backend added there is accepted here
_GENERATION = GenerationSettings()  # its field defaults are the answer defaults


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoreConfig(_Section):
    dir: str = DEFAULT_STORE_DIR
    collection: str = DEFAULT_COLLECTION
    url: str | None = None
    local_path: str | None = None
    # A new collection on a Qdrant server or cluster (pipelines.stores.ClusterSettings).
    shard_number: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None
    on_disk_payload: bool | None = None
    quantization: Literal["int8"] | None = None
    bulk: bool = False

    def settings(self) -> StoreSettings:
        cluster = ClusterSettings(shard_number=self.shard_number, replication_factor=self.replication_factor,
                                  write_consistency_factor=self.write_consistency_factor,
                                  on_disk_payload=self.on_disk_payload, quantization=self.quantization,
                                  bulk=self.bulk)
        return StoreSettings(store_dir=self.dir, collection=self.collection, url=self.url,
                             local_path=self.local_path, cluster=cluster)


class EncoderConfig(_Section):
    model: str = DEFAULT_MODEL
    device: str | None = None

    def build(self):
        from rag.embed.encoder import SentenceEncoder

        return SentenceEncoder(self.model, device=self.device)


class ChunkingConfig(_Section):
    size: int = Field(DEFAULT_CHUNK_SIZE, ge=16)
    overlap: int = Field(DEFAULT_CHUNK_OVERLAP, ge=0)
    context: bool = Field(True, description="document context (title, section) embedded and indexed "
                          "with each chunk; fixed per collection")
    sentence_vectors: bool = Field(True, description="each chunk's sentences and lines embedded "
                                   "beside it, the dense leg scoring the best one; fixed per collection")

    def build(self):
        from rag.ingest.chunking import Chunker

        return Chunker(self.size, self.overlap, context=self.context, sentence_vectors=self.sentence_vectors)


class IngestConfig(_Section):
    include: list[str] = Field(default_factory=lambda: list(DEFAULT_INCLUDE))
    exclude: list[str] = Field(default_factory=list)
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1)
    stemming: bool = Field(True, description="new collections: English stemming and stop words in BM25")
    near_duplicates: Literal["flag", "skip"] | None = None
    dup_threshold: float = Field(DEFAULT_DUP_THRESHOLD, gt=0, le=1)
    ocr: OcrMode = Field(DEFAULT_OCR, description="PDF pages read by OCR: auto (no text layer), off, force (all)")
    write_retries: int = Field(DEFAULT_WRITE_RETRIES, ge=0, description="times a store write failing with a "
                               "transient error (refused, reset, timeout, HTTP 429/502/503/504) is tried again")
    write_backoff: float = Field(DEFAULT_WRITE_BACKOFF, ge=0, description="seconds before the first retry, "
                                 "doubled for each further one (with jitter)")
    write_backoff_max: float = Field(DEFAULT_WRITE_BACKOFF_MAX, ge=0, description="longest wait between retries")

    def write_retry(self) -> WriteRetry:
        return WriteRetry(retries=self.write_retries, backoff=self.write_backoff, backoff_max=self.write_backoff_max)


class RetrievalConfig(_Section):
    mode: Literal["dense", "bm25", "hybrid"] = "hybrid"
    fusion: Literal["rrf", "wsf", "dbsf"] = DEFAULT_FUSION
    rrf_k: int = Field(DEFAULT_RRF_K, ge=1)
    weights: tuple[float, float] | None = Field(None, description="fusion weights (dense, BM25); None: the "
                                               "collection's default, 2,1 with sentence vectors, else 1,1")
    candidates: int = Field(DEFAULT_CANDIDATES, ge=1)
    unit_weight: float = Field(DEFAULT_UNIT_WEIGHT, ge=0, le=1, description="collections with sentence "
                               "vectors: the chunk vector's share of the dense score, the rest its best unit's")
    top_k: int | None = Field(None, ge=1, description="None: 10 results for rag search; "
                              "prompt.max_passages for answers")
    mmr: float | None = Field(None, ge=0, le=1)
    rerank: str | None = Field(None, description="cross-encoder model folder (sentence-transformers "
                               "CrossEncoder layout) that reranks the fused candidates; None: no reranking")
    rerank_depth: int = Field(DEFAULT_RERANK_DEPTH, ge=1, description="fused candidates the cross-encoder rescores")
    route: Literal["auto", "off"] = Field(DEFAULT_ROUTE, description="document routing: auto restricts a query "
                                          "that names documents (company, quarter) to them; off searches all")

    @property
    def search_top_k(self) -> int:
        """How many results a search shows (rag search, the server's /v1/search)."""
        return self.top_k or DEFAULT_TOP_K

    def settings(self) -> dict[str, Any]:
        """Keyword arguments of rag.search.retrieval.Retriever (top_k is the caller's)."""
        return {"mode": self.mode, "fusion": self.fusion, "rrf_k": self.rrf_k, "weights": self.weights,
                "candidates": self.candidates, "mmr_lambda": self.mmr, "reranker": self.build_reranker(),
                "rerank_depth": self.rerank_depth, "route": self.route, "unit_weight": self.unit_weight}

    def build_reranker(self):
        """The cross-encoder of `rerank` (not loaded until its first use), or None."""
        if not self.rerank:
            return None
        from rag.search.rerank import CrossEncoderReranker

        return CrossEncoderReranker(self.rerank)


class PromptConfig(_Section):
    template: str | None = Field(None, description="TOML file with system/user, or a text file (user)")
    max_answer_tokens: int = Field(_GENERATION.max_tokens, ge=16)
    max_passages: int = Field(DEFAULT_MAX_PASSAGES, ge=1)
    context_window: int | None = Field(None, ge=256, description="default: the backend's window")
    margin: float = Field(DEFAULT_MARGIN, ge=0, lt=0.5)


class LLMConfig(_Section):
    backend: Backend = Field("auto", description="auto: the LLM configured here or in the environment, "
                             "else extracts (see connectors.llm.registry.resolve_backend)")
    model: str | None = Field(None, description="model name on the server, or a local folder / .gguf")
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = Field(DEFAULT_TIMEOUT, gt=0)
    max_retries: int = Field(DEFAULT_MAX_RETRIES, ge=0)
    context_window: int | None = Field(None, ge=256)
    temperature: float = Field(_GENERATION.temperature, ge=0)
    device: str | None = None


class RagConfig(_Section):
    store: StoreConfig = Field(default_factory=StoreConfig)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    source: str | None = Field(None, exclude=True, description="the file it was read from")

    def get(self, path: str) -> Any:
        """The value at a dotted path such as "chunking.size"."""
        section, name = path.split(".")
        return getattr(getattr(self, section), name)

    def is_set(self, path: str) -> bool:
        """Whether the config file gave this value (rather than the field's default)."""
        section, name = path.split(".")
        return section in self.model_fields_set and name in getattr(self, section).model_fields_set


def validate_config(data: dict[str, Any], where: str) -> RagConfig:
    """A RagConfig, or a ConfigError naming `where` (the file, or the command-line options) and
    the first bad field."""
    try:
        return RagConfig(**data)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"{where}: [{field}] {first['msg']}"
                          + (f" ({len(e.errors()) - 1} more problem(s))" if len(e.errors()) > 1 else "")) from None


def load_config(path: str | Path) -> RagConfig:
    """Read and validate a TOML config file. Relative paths in it (store dir, template, a local
    model folder) are taken relative to the file's folder."""
    p = Path(path).expanduser()
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"config {p}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config {p}: not valid TOML: {e}") from None
    cfg = validate_config(data, f"config {p}")
    base = p.resolve().parent
    cfg.source = str(p)
    if not Path(cfg.store.dir).is_absolute():
        cfg.store.dir = str(base / cfg.store.dir)
    if cfg.store.local_path and not Path(cfg.store.local_path).is_absolute():
        cfg.store.local_path = str(base / cfg.store.local_path)
    if cfg.prompt.template and not Path(cfg.prompt.template).is_absolute():
        cfg.prompt.template = str(base / cfg.prompt.template)
    for section, attr in ((cfg.encoder, "model"), (cfg.llm, "model")):
        value = getattr(section, attr)
        if value and (value.startswith("./") or value.startswith("../")):
            setattr(section, attr, str(base / value))
    return cfg
