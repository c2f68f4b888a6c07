"""The process-wide state of `rag serve`: the one owner of the store, the encoder and the LLM.

The embedded store is held by one process (an exclusive lock per collection folder), so the
server opens each collection once, keeps it open for its lifetime, and every request reads
through the same handle; a second process (`rag ingest` on that collection) gets the store's
StoreLockedError naming this process's pid. The default collection is opened at start-up, so a
missing or locked store stops `rag serve` before it listens; other collections of the store
folder open on their first request.

Concurrency. Requests run their retrieval in worker threads (`asyncio.to_thread`):
- Qdrant Edge answers concurrent queries from several threads (its shard is Rust behind its own
  locks; checked with 6 threads x 400 queries, and by tests/test_server.py's concurrent
  searches, which must all equal the single-threaded result). qdrant-client's remote client is
  thread-safe; its local mode is plain Python, so its calls are serialised.
- The encoder runs one call at a time behind `EncoderGate` (encoding.py): searches' queries go
  first and are embedded together, long calls (extracts, uploads) are cut into slices, so a
  search waits for a slice, not for a whole extractive answer or upload batch.
- The LLM is behind an asyncio semaphore (generation.py): as many generations at a time as the
  backend declares it serves well (1 for an in-process model), at most
  `--max-concurrent-generations` (default 4). The slot is taken only around the LLM call, so
  retrieval and extractive answers never wait for it.
- Writes (uploads, deletions) run one at a time, in order, in the server's writer (jobs.py).

Nothing here retrieves, prompts or checks answers: a request gets the server's pipeline derived
for it (`RagPipeline.derive`: its search goes to the open collection with the request's mode and
top_k, its LLM through the gate, its settings the request's), and the pipeline does the rest.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.answer import RagPipeline, Searcher
from pipelines.config import RagConfig
from pipelines.server.encoding import EncoderGate
from pipelines.server.generation import GatedLLM, generation_slots
from pipelines.server.jobs import DocumentWriter
from pipelines.server.options import ServeOptions
from pipelines.server.serialised import SerialisedStore
from pipelines.server.spool import SPOOL_FOLDER, Spool
from pipelines.stores import StoreSettings, collection_encoder, open_store
from rag.embed.cache import VectorCache
from rag.errors import RagError
from rag.models import Passage
from rag.search.retrieval import Retriever, SearchResponse

logger = logging.getLogger("pipelines.server")


@dataclass
class Served:
    """One open collection: its store handle, its encoder and a retriever over both."""

    name: str
    settings: StoreSettings
    store: Any
    encoder: Any
    retriever: Retriever
    search_top_k: int
    handle: Any = None  # what reads and writes go through (the store, serialised in local mode)
    # The vectors of the sentences extracts were picked from, shared by every request's answer.
    sentence_cache: VectorCache = field(default_factory=VectorCache)

    def search(self, query: str, top_k: int | None = None, filters=None, mode: str | None = None,
               explain: bool = False) -> SearchResponse:
        """What `rag search` does: the top 10 (or retrieval.top_k) by default."""
        return self.retriever.search(query, top_k=top_k or self.search_top_k, filters=filters, mode=mode,
                                     explain=explain)

    def searcher(self, mode: str | None = None, top_k: int | None = None) -> Searcher:
        """A pipeline's search over this collection with one request's mode and top_k (when
        given: else the pipeline's)."""

        def search(query: str, pipeline_top_k: int | None, filters=None) -> SearchResponse:
            return self.retriever.search(query, top_k=top_k or pipeline_top_k, filters=filters, mode=mode)

        return search

    def warm_up(self) -> None:
        """Run what a first search runs before any request does: the document router's index
        (read from every payload), the encoder's first passes on its thread, the store's first
        queries. Measured on a 1960-chunk collection: the first search took 547 ms, the next
        twenty 16-48 ms, against 17 ms once warm."""
        for query in WARM_UP_QUERIES:
            self.retriever.search_batch([query], top_k=1)


# Queries of a short and a long question's length (the encoder's first passes at each size).
WARM_UP_QUERIES = ("warm up",
                   "How did the total revenue of the largest segment change between the two most recent "
                   "quarters, and which reasons does the report give for the change?")


class ServerState:
    """The pipeline built once from the config (so `llm = "auto"` is resolved once, and said
    with every answer), the open collections, and the generation slots."""

    def __init__(self, config: RagConfig, options: ServeOptions | None = None, *, encoder: Any = None):
        self.config, self.options = config, options or ServeOptions()
        self._given_encoder = encoder
        self.base: RagPipeline | None = None
        self.slots: asyncio.Semaphore | None = None
        self.generation_slots = 0
        self._served: dict[str, Served] = {}
        self._encoders: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.writer = DocumentWriter(self.collection, Spool(self.uploads_dir / SPOOL_FOLDER))
        self.watching = None  # rag serve --watch (pipelines.server.watching)

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> ServerState:
        """Build the pipeline and open the default collection (idempotent)."""
        with self._lock:
            if self.base is not None:
                return self
            self.base = RagPipeline.from_config(self.config)
            self.generation_slots = generation_slots(self.base.llm, self.options.max_concurrent_generations)
            self.slots = asyncio.Semaphore(self.generation_slots) if self.base.llm is not None else None
        try:
            default = self.collection(None)
        except BaseException:
            self.close()
            raise
        try:
            default.warm_up()
        except RagError as e:  # a real request reports it; the server still starts
            logger.warning("warm-up search of collection '%s' failed: %s", default.name, e)
        self.writer.start()
        if self.options.watch:
            from pipelines.server.watching import FolderWatch

            self.watching = FolderWatch(self, self.options.watch).start()
        return self

    def close(self) -> None:
        if self.watching is not None:  # its last job, in the writer, ends first
            self.watching.stop()
            self.watching = None
        self.writer.stop()  # the writer's job ends before the stores it writes to close
        with self._lock:
            served, self._served = list(self._served.values()), {}
            self.base = None
        for s in served:
            s.store.close()
        encoders, self._encoders = list(self._encoders.values()), {}
        for gate in encoders:
            gate.close()

    def describe(self) -> str:
        """One line for the log (no secret in it: the config holds variable names only)."""
        assert self.base is not None
        default = self._served[self.default_collection]
        slots = f", {self.generation_slots} generation(s) at a time" if self.generation_slots else ""
        return f"serving {default.settings.describe()}; answers: {self.base.llm_origin}{slots}"

    # ------------------------------------------------------------------ collections
    @property
    def default_collection(self) -> str:
        return self.config.store.collection

    @property
    def uploads_dir(self) -> Path:
        """The server's own folder for uploaded files: STORE/.uploads (a hidden folder, so never
        taken for a collection)."""
        return Path(self.config.store.dir).expanduser().resolve() / ".uploads"

    def collections(self) -> list[str]:
        """Every collection of the store folder (Edge), or just the configured one (a Qdrant
        server or local mode holds collections of other programs too)."""
        from connectors.qdrant.edge import META_FILE

        store = self.config.store
        if store.url or store.local_path:
            return [store.collection]
        root = Path(store.dir).expanduser()
        names = ({p.name for p in root.iterdir() if not p.name.startswith(".") and (p / META_FILE).is_file()}
                 if root.is_dir() else set())
        return sorted(names | set(self._served))

    def pick_collection(self, asked: str | None, model: str | None, default: str | None = None) -> str:
        """The `rag.collection` asked for; else `model` when it names a collection; else the
        default (`default`: the request's key's, else the server's)."""
        default = default or self.default_collection
        if asked:
            return asked
        if model and model != default and (model in self._served or model in self.collections()):
            return model
        return default

    def collection(self, name: str | None) -> Served:
        """The open collection `name` (default: the configured one), opened on first use and
        kept open. CollectionNotFoundError, StoreLockedError, ModelMismatchError as the store says."""
        name = name or self.default_collection
        served = self._served.get(name)
        if served is not None:
            return served
        with self._lock:
            if name in self._served:
                return self._served[name]
            if self.base is None:
                raise RagError("the server is not open")
            settings = self.config.store.settings().model_copy(update={"collection": name})
            vs = open_store(settings)
            try:
                encoder = self._encoder_for(vs.info.model, settings)
                store = SerialisedStore(vs) if settings.local_path else vs
                retriever = Retriever(store, encoder, **self.base.retriever_settings)
            except BaseException:
                vs.close()
                raise
            served = Served(name=name, settings=settings, store=vs, encoder=encoder, retriever=retriever,
                            search_top_k=self.config.retrieval.search_top_k, handle=store)
            self._served[name] = served
            return served

    def forget(self, name: str) -> Served | None:
        """Stop serving collection `name` (it is being deleted): later requests open it afresh
        or find it gone. The caller closes what is returned."""
        with self._lock:
            return self._served.pop(name, None)

    def _encoder_for(self, model: str, settings: StoreSettings) -> Any:
        """The collection's recorded encoder, loaded once per model and shared (under its lock) by
        every collection built with it. An encoder given (the config's, or create_app's) must be
        the recorded one, as for RagPipeline."""
        if model not in self._encoders:  # a given encoder of another model never gets in
            given = collection_encoder(model, settings, self._given_encoder or self.base.encoder)
            if hasattr(given, "warm_up"):
                given.warm_up()  # loaded now, not on the first request
            self._encoders[model] = EncoderGate(given)
        return self._encoders[model]

    # ------------------------------------------------------------------ requests
    def request_pipeline(self, served: Served, *, loop: asyncio.AbstractEventLoop, streaming: bool,
                         mode: str | None = None, top_k: int | None = None, temperature: float | None = None,
                         max_tokens: int | None = None,
                         on_prepared: Callable[[list[Passage]], None] | None = None) -> RagPipeline:
        """The server's pipeline for one request: its search on `served` (its encoder, its
        sentence cache), its LLM behind the generation slots, its generation settings. Everything
        else is the server's pipeline as built from the config. `max_tokens` can lower the
        configured answer length, not raise it: the prompt's token budget keeps exactly that much
        room for the answer. `on_prepared` hears the prompt's passages as soon as they are chosen
        (the stream's first chunk carries them, before the LLM says anything)."""
        base = self.base
        if base is None:
            raise RagError("the server is not open")
        llm = None
        if base.llm is not None:
            assert self.slots is not None
            llm = GatedLLM(base.llm, self.slots, loop, interrupt_after_text=streaming)
        updates: dict[str, Any] = {}
        if temperature is not None:
            updates["temperature"] = temperature
        if max_tokens:
            updates["max_tokens"] = min(max_tokens, base.generation.max_tokens)
        return base.derive(encoder=served.encoder, store=served.settings, sentence_cache=served.sentence_cache,
                           searcher=served.searcher(mode, top_k), llm=llm,
                           generation=base.generation.model_copy(update=updates), on_prepared=on_prepared)
