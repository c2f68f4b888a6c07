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
- The LLM is behind an asyncio semaphore: 1 generation at a time for an in-process model (the
  local backend), `--max-concurrent-generations` (default 4) for a network backend. The slot is
  taken only around the LLM call, so retrieval and extractive answers never wait for it.

Nothing here retrieves, prompts or checks answers: a request gets a `RequestPipeline`, a
RagPipeline whose search goes to the server's open collection, and the pipeline does the rest.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from pipelines.answer import RagPipeline
from pipelines.config import RagConfig
from pipelines.server.encoding import EncoderGate
from pipelines.server.security import (DEFAULT_HOST, DEFAULT_NETWORK_GENERATIONS, DEFAULT_PORT, MAX_BODY_BYTES,
                                       MAX_CHATS_PER_CLIENT, MAX_REQUESTS_PER_CLIENT, MAX_UPLOAD_BYTES,
                                       read_server_key)
from pipelines.stores import StoreSettings, collection_encoder, open_store
from rag.answer.llm import GenerationSettings
from rag.embed.cache import VectorCache
from rag.errors import LLMConnectionError, LLMError, RagError
from rag.models import Passage
from rag.search.retrieval import Retriever, SearchResponse


class ServeOptions(BaseModel):
    """How `rag serve` listens (the RagConfig says what it serves). The key itself is never held
    here: only the name of the variable that holds it."""

    host: str = DEFAULT_HOST
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    server_key_env: str | None = None
    workers: int = Field(1, ge=1)
    max_concurrent_generations: int | None = Field(None, ge=1, description="network backends; "
                                                   f"default {DEFAULT_NETWORK_GENERATIONS}")
    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(MAX_BODY_BYTES, ge=1024)
    max_upload_bytes: int = Field(MAX_UPLOAD_BYTES, ge=1, description="per uploaded file (--max-upload-mb)")
    max_requests_per_client: int = Field(MAX_REQUESTS_PER_CLIENT, ge=1)
    max_chats_per_client: int = Field(MAX_CHATS_PER_CLIENT, ge=1)
    log_level: str = "info"

    def server_key(self) -> str | None:
        return read_server_key(self.server_key_env)


class GenerationInterrupted(RagError):
    """The LLM failed after part of a streamed answer had gone to the client. Not an LLMError on
    purpose: the pipeline answers an LLMError with extracts, which here would be spliced onto
    half an answer the client already shows; the client gets an error chunk instead."""


class Serialised:
    """`obj` with the named calls (all, when `calls` is None) taken one at a time."""

    def __init__(self, obj: Any, calls: frozenset[str] | None = None):
        self._obj, self._calls, self._lock = obj, calls, threading.RLock()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._obj, name)
        if not callable(value) or (self._calls is not None and name not in self._calls):
            return value

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)

        return locked


class GatedLLM:
    """The served LLM backend: every call first takes a generation slot of the server's
    semaphore. `generate` is called from worker threads (ChatSession.rewrite) and waits for its
    slot on the server's event loop; the async calls wait in the loop itself. The backend's
    stream is closed with the call (`aclosing`), whoever stops iterating: the end of the answer,
    an error, or a client that left (its task is cancelled)."""

    def __init__(self, inner: Any, slots: asyncio.Semaphore, loop: asyncio.AbstractEventLoop,
                 interrupt_after_text: bool):
        self.inner, self.slots, self.loop = inner, slots, loop
        self.interrupt_after_text = interrupt_after_text

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def context_window(self) -> int:
        return self.inner.context_window

    def __getattr__(self, name: str) -> Any:  # to_dict, count_tokens (a local model's), ...
        return getattr(self.inner, name)

    @contextlib.contextmanager
    def _slot_from_thread(self) -> Iterator[None]:
        future = asyncio.run_coroutine_threadsafe(self.slots.acquire(), self.loop)
        while True:
            try:
                future.result(timeout=0.5)
                break
            except TimeoutError:
                if self.loop.is_closed() or not self.loop.is_running():
                    future.cancel()
                    raise LLMConnectionError("the server is shutting down") from None
        try:
            yield
        finally:
            self.loop.call_soon_threadsafe(self.slots.release)

    def generate(self, messages: Sequence[Any], settings: GenerationSettings | None = None):
        with self._slot_from_thread():
            return self.inner.generate(messages, settings)

    def stream(self, messages: Sequence[Any], settings: GenerationSettings | None = None) -> Iterator[str]:
        with self._slot_from_thread():
            yield from self.inner.stream(messages, settings)

    async def agenerate(self, messages: Sequence[Any], settings: GenerationSettings | None = None):
        async with self.slots:
            return await self.inner.agenerate(messages, settings)

    async def astream(self, messages: Sequence[Any], settings: GenerationSettings | None = None) -> AsyncIterator[str]:
        async with self.slots:
            sent = False
            async with contextlib.aclosing(self.inner.astream(messages, settings)) as pieces:
                try:
                    async for piece in pieces:
                        sent = sent or bool(piece)
                        yield piece
                except LLMError as e:
                    if sent and self.interrupt_after_text:
                        raise GenerationInterrupted(f"the answer stopped part-way: {e}") from e
                    raise


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


class RequestPipeline(RagPipeline):
    """One request's RagPipeline: the server's prompt assembler, backend and generation
    settings, its search going to the server's open collection with this request's mode and
    top_k. `on_prepared` hears the prompt's passages as soon as they are chosen (the stream's
    first chunk carries them, before the LLM says anything)."""

    def __init__(self, base: RagPipeline, served: Served, llm: Any, generation: GenerationSettings,
                 mode: str | None = None, top_k: int | None = None,
                 on_prepared: Callable[[list[Passage]], None] | None = None):
        super().__init__(encoder=served.encoder, store=served.settings, chunker=base.chunker,
                         retriever=base.retriever_settings, prompt=base.prompt, llm=llm, generation=generation,
                         fallback_to_extracts=base.fallback_to_extracts, llm_origin=base.llm_origin,
                         sentence_cache=served.sentence_cache)
        self.served, self.mode, self.top_k, self.on_prepared = served, mode, top_k, on_prepared

    def search(self, query: str, top_k: int | None = None, filters=None) -> SearchResponse:
        return self.served.retriever.search(query, top_k=self.top_k or top_k, filters=filters, mode=self.mode)

    def prepare(self, *args: Any, **kwargs: Any):
        prompt, response = super().prepare(*args, **kwargs)
        if self.on_prepared is not None:
            self.on_prepared(prompt.passages)
        return prompt, response

    def close(self) -> None:
        """Nothing to release: the store belongs to the server."""


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
        self.writer = DocumentWriter(self)

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> ServerState:
        """Build the pipeline and open the default collection (idempotent)."""
        with self._lock:
            if self.base is not None:
                return self
            self.base = RagPipeline.from_config(self.config)
            self.generation_slots = self._slot_count(self.base.llm)
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
        return self

    def close(self) -> None:
        self.writer.stop()  # the writer's job ends before the stores it writes to close
        with self._lock:
            served, self._served = list(self._served.values()), {}
            self.base = None
        for s in served:
            s.store.close()
        encoders, self._encoders = list(self._encoders.values()), {}
        for gate in encoders:
            gate.close()

    def _slot_count(self, llm: Any) -> int:
        from connectors.llm.http import HttpLLMBackend

        if llm is None:
            return 0
        if not isinstance(llm, HttpLLMBackend):
            return 1  # an in-process model generates one answer at a time
        return self.options.max_concurrent_generations or DEFAULT_NETWORK_GENERATIONS

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

    def pick_collection(self, asked: str | None, model: str | None) -> str:
        """The `rag.collection` asked for; else `model` when it names a collection; else the default."""
        if asked:
            return asked
        if model and model != self.default_collection and (model in self._served or model in self.collections()):
            return model
        return self.default_collection

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
                store = Serialised(vs) if settings.local_path else vs
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
                         on_prepared: Callable[[list[Passage]], None] | None = None) -> RequestPipeline:
        """A pipeline for one request. `max_tokens` can lower the configured answer length, not
        raise it: the prompt's token budget keeps exactly that much room for the answer."""
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
        return RequestPipeline(base, served, llm, base.generation.model_copy(update=updates), mode=mode,
                               top_k=top_k, on_prepared=on_prepared)


# ---------------------------------------------------------------------------- the one writer

logger = logging.getLogger("pipelines.server")
KEEP_JOBS = 1000  # finished jobs remembered for GET /v1/jobs/{id} (the oldest are forgotten)
STOP_SECONDS = 30.0  # how long shutdown waits for the job that is running


def document_id(source: str) -> str:
    """The stable id of a source in the API: a digest of its label, never a path to open."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:32]


class DocumentNotFoundError(RagError):
    """No source of the collection has this id (404)."""


class Job:
    """One ingest job: the files it was given (staged path, label), then its outcomes."""

    def __init__(self, collection: str, files: list[tuple[Path, str]], outcomes: list[Any] | None = None):
        self.id = f"job-{uuid.uuid4().hex}"
        self.collection, self.files = collection, files
        self.status = "queued"  # queued, running, done, failed
        self.outcomes: list[Any] = list(outcomes or [])  # FileOutcome
        self.chunks_written = 0
        self.total_points: int | None = None
        self.error: str | None = None
        self.created, self.started, self.finished = time.time(), None, None

    def view(self) -> dict[str, Any]:
        return {"job_id": self.id, "status": self.status, "collection": self.collection,
                "files": [label for _, label in self.files],
                "outcomes": [o.model_dump(mode="json") for o in self.outcomes],
                "chunks_written": self.chunks_written, "total_points": self.total_points, "error": self.error,
                "created": self.created, "started": self.started, "finished": self.finished}


class DocumentWriter:
    """The one writer of the server's open collections: a thread that takes write tasks from a
    queue, one at a time, in the order they came (ingest jobs, deletions). Reads (searches,
    chats, the document list) do not go through it and keep running while it writes: Qdrant
    Edge takes concurrent reads during a write (tests/test_server_documents.py searches in a
    loop during an upload), and qdrant-client's local mode serialises its calls anyway.

    An ingest job is `pipelines.ingest.ingest` on the server's open handle (`vector_store=`), so
    it is the CLI's job: unchanged files are skipped by hash, a file's new chunks are written
    before its old version is deleted, the loader process reads and chunks. Its staged files are
    deleted when it ends, done or failed."""

    def __init__(self, state: ServerState):
        self.state = state
        self._tasks: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._jobs: dict[str, Job] = {}
        self._jobs_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="rag-writer", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._tasks.put(None)
        thread.join(timeout)
        if thread.is_alive():
            logger.warning("the ingest job still running after %.0f s is abandoned at shutdown", timeout)
        for job in self.jobs():  # queued, never started: say so, drop their files
            if job.status == "queued":
                self._end(job, "failed", "the server stopped before this job ran")

    def _loop(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            try:
                task()
            except Exception:  # a task reports its own failure; this is the last line
                logger.exception("a write task failed")

    # ------------------------------------------------------------------ jobs
    def jobs(self) -> list[Job]:
        with self._jobs_lock:
            return list(self._jobs.values())

    def job(self, job_id: str) -> Job | None:
        with self._jobs_lock:
            return self._jobs.get(job_id)

    def submit(self, collection: str, files: list[tuple[Path, str]]) -> Job:
        """Queue an ingest of `files` ((staged path, source label)) into `collection`."""
        if self._thread is None:
            raise RagError("the server is not open")
        job = Job(collection, files)
        with self._jobs_lock:
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if j.finished is not None]
            for old in finished[:max(0, len(self._jobs) - KEEP_JOBS)]:
                del self._jobs[old.id]
        self._tasks.put(lambda: self._ingest(job))
        return job

    def _ingest(self, job: Job) -> None:
        from pipelines.ingest import ingest
        from rag.ingest.chunking import Chunker

        job.status, job.started = "running", time.time()
        try:
            served = self.state.collection(job.collection)
            info = served.handle.info
            report = ingest([p for p, _ in job.files], encoder=served.encoder, store=served.settings,
                            chunker=Chunker(info.chunk_size, info.chunk_overlap, context=info.context), progress=False,
                            vector_store=served.handle, labels={str(p): label for p, label in job.files})
        except Exception as e:
            if not isinstance(e, RagError):
                logger.exception("ingest job %s failed", job.id)
            self._end(job, "failed", str(e) if isinstance(e, RagError) else
                      "the ingest job failed (the server log has the details)")
            return
        job.outcomes.extend(report.outcomes)
        job.chunks_written, job.total_points = report.chunks_written, report.total_points
        self._end(job, "done")

    def _end(self, job: Job, status: str, error: str | None = None) -> None:
        for path, _ in job.files:
            with contextlib.suppress(OSError):
                path.unlink()
        job.status, job.error, job.finished = status, error, time.time()

    # ------------------------------------------------------------------ other writes
    def call(self, write: Callable[[], Any]) -> concurrent.futures.Future:
        """Run `write` in its turn, after the writes queued before it; its result (or exception)
        is the future's."""
        if self._thread is None:
            raise RagError("the server is not open")
        future: concurrent.futures.Future = concurrent.futures.Future()

        def task() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(write())
            except BaseException as e:
                future.set_exception(e)

        self._tasks.put(task)
        return future

    def delete(self, collection: str, doc_id: str) -> concurrent.futures.Future:
        """Remove the source whose id is `doc_id`, in its turn after the writes queued before it.
        The future's result: {"id", "source", "chunks"} (chunks removed)."""

        def write() -> dict[str, Any]:
            vs = self.state.collection(collection).handle
            source = next((s for s in vs.sources() if document_id(s) == doc_id), None)
            if source is None:
                raise DocumentNotFoundError(f"collection '{collection}' has no document {doc_id} "
                                            "(GET /v1/documents lists their ids)")
            chunks = sum(v.points for v in vs.file_versions(source))
            vs.delete_source(source)
            vs.flush()
            return {"id": doc_id, "source": source, "chunks": chunks}

        return self.call(write)


def environment_settings(config: RagConfig, options: ServeOptions) -> str:
    """Config and options as JSON for worker processes (`--workers N`): uvicorn starts each from
    an import string, so they travel in the environment. No secret is in them."""
    import json

    return json.dumps({"config": config.model_dump(mode="json"), "options": options.model_dump(mode="json")})


def settings_from_environment(variable: str) -> tuple[RagConfig, ServeOptions]:
    import json

    data = json.loads(os.environ[variable])
    return RagConfig(**data["config"]), ServeOptions(**data["options"])
