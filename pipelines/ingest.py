"""The ingest job: files -> documents -> chunks -> vectors -> one Qdrant collection.

Idempotent and crash-safe by construction:
- a chunk's id comes from its source, position and content, so writing a file twice overwrites;
- every point records its file's hash and chunk count, so a file is "unchanged" only when the
  store holds exactly one complete copy of its current version;
- a file's new chunks are written first and its old version deleted last, so a crash at any
  point leaves a state that the next run recognises as incomplete and repairs;
- a transient store error (refused, reset, timeout, HTTP 429/502/503/504) is retried with
  backoff by the write step (`pipelines.writer`); a file whose write still fails is reported
  failed, what was written of it deleted again, and the job goes on.

A background thread loads and chunks files while the main thread encodes and writes, so the
encoder is not left waiting on pypdf.

Near-duplicate chunks (`near_duplicates="flag"` or `"skip"`): a chunk whose cosine similarity to
an earlier chunk of this job, or to a chunk of another source already in the collection, is at
least the threshold is listed in the report, and with "skip" not written. With "skip" a file's
chunks are encoded together (the batch boundary moves to the end of a file) so that its chunk
count, recorded in every point, is final before its first point is written; the check against
the collection ignores the file's own source (its old version, or a crashed run's partial copy),
so that a rerun makes the same decisions and the file is then "unchanged".
"""

from __future__ import annotations

import hashlib
import os
import queue
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from rag.ingest.chunking import Chunker, chunk_id
from rag.embed.encoder import SentenceEncoder
from rag.embed.similarity import best_earlier
from connectors.qdrant.retry import WriteRetry
from rag.errors import LoadError, StoreWriteError
from rag.ingest.loaders import DEFAULT_INCLUDE, find_files, load, source_name
from rag.ingest.pdf import DEFAULT_OCR, OcrMode
from rag.models import Chunk, Document
from rag.search.store import (CollectionInfo, Leg, QuerySpec, TextIndexSettings, VectorStore, check_compatible,
                              is_complete)
from pipelines.stores import StoreSettings, open_store
from pipelines.writer import FAULT_ENV, StoreWriter, delete_failed_reason, upsert_failed_reason  # noqa: F401

Status = Literal["ingested", "replaced", "unchanged", "failed", "pruned"]

DEFAULT_BATCH_SIZE = 128  # chunks per encode and write
DEFAULT_DUP_THRESHOLD = 0.95  # cosine at which a chunk counts as a near-duplicate


class FileOutcome(BaseModel):
    source: str
    status: Status
    chunks: int = 0
    reason: str | None = None
    warnings: list[str] = Field(default_factory=list)
    ocr_pages: int = Field(0, description="pages whose text was read by OCR")


class NearDuplicate(BaseModel):
    source: str
    chunk_index: int
    duplicate_of: str = Field(description="source of the earlier, similar chunk")
    duplicate_of_chunk: int
    similarity: float
    text: str = Field(description="start of the chunk's text")


class IngestReport(BaseModel):
    collection: str
    outcomes: list[FileOutcome] = Field(default_factory=list)
    chunks_written: int = 0
    seconds: float = 0.0
    total_points: int = 0
    near_duplicate_action: Literal["flag", "skip"] | None = None
    near_duplicate_threshold: float | None = None
    near_duplicates: int = Field(0, description="chunks found to be near-duplicates (flagged or skipped)")
    near_duplicate_examples: list[NearDuplicate] = Field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in ("ingested", "replaced", "unchanged", "failed", "pruned")}
        for o in self.outcomes:
            out[o.status] += 1
        return out

    @property
    def failed(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def chunks_per_second(self) -> float:
        return self.chunks_written / self.seconds if self.seconds else 0.0


class _NearDuplicates:
    """Finds chunks that are near-duplicates of an earlier chunk of the job (same batch) or of a
    chunk of another source in the collection (which holds the job's earlier batches)."""

    def __init__(self, store: VectorStore, action: str, threshold: float, report: IngestReport,
                 examples: int = 20, depth: int = 10):
        if action not in ("flag", "skip"):
            raise ValueError(f"near-duplicate action must be flag or skip, not {action!r}")
        if not 0 < threshold <= 1:
            raise ValueError("near-duplicate threshold must be a cosine in (0, 1]")
        self.store, self.action, self.threshold, self.report = store, action, threshold, report
        self.examples, self.depth = examples, depth
        report.near_duplicate_action, report.near_duplicate_threshold = action, threshold

    def check(self, chunks: list[Chunk], vectors: np.ndarray) -> list[bool]:
        """True for each chunk to keep (all of them when flagging); records the duplicates.

        The vectors are those indexed, made with the chunk's document context when the collection
        has it, so the same passage under two titles scores lower than without (measured: a
        boilerplate sentence under "2023 Q3 AAPL" and "2022 Q3 NVDA" 0.87, under "a" and "b"
        0.95). A chunk whose text repeats an earlier one's (case and spacing aside) is therefore
        a duplicate whatever its score: in this batch, or among its `depth` nearest points of
        another source in the collection."""
        n, found = len(chunks), [None] * len(chunks)
        match, sims = best_earlier(vectors, block=1024)  # earlier chunks of this batch
        for i in np.nonzero(sims >= self.threshold)[0]:
            j = int(match[i])
            found[int(i)] = (chunks[j].source, chunks[j].chunk_index, float(sims[i]))
        first: dict[str, int] = {}
        for i, c in enumerate(chunks):
            j = first.setdefault(_same_text_key(c.text), i)
            if j != i and found[i] is None:
                found[i] = (chunks[j].source, chunks[j].chunk_index, float(vectors[i] @ vectors[j]))
        todo = [i for i in range(n) if found[i] is None]
        if todo and self.store.count():
            specs = [QuerySpec(legs=[Leg(kind="dense", vector=vectors[i].tolist(), limit=self.depth)],
                               limit=self.depth, with_payload=True) for i in todo]
            for i, hits in zip(todo, self.store.query_batch(specs)):
                key = _same_text_key(chunks[i].text)
                for h in hits:
                    if h.payload.get("source") == chunks[i].source:
                        continue
                    if h.score >= self.threshold or _same_text_key(h.payload.get("text", "")) == key:
                        found[i] = (h.payload.get("source", ""), int(h.payload.get("chunk_index", -1)), h.score)
                        break
        keep = []
        for c, f in zip(chunks, found):
            keep.append(f is None or self.action == "flag")
            if f is None:
                continue
            self.report.near_duplicates += 1
            if len(self.report.near_duplicate_examples) < self.examples:
                self.report.near_duplicate_examples.append(NearDuplicate(
                    source=c.source, chunk_index=c.chunk_index, duplicate_of=f[0], duplicate_of_chunk=f[1],
                    similarity=round(f[2], 4), text=c.text[:200]))
        return keep


def _same_text_key(text: str) -> str:
    """What two chunks' texts must share to be the same passage: case and spacing aside."""
    return " ".join(text.lower().split())


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _loader_main(requests, out, chunker_cfg: dict, model: str, parent: int, ocr: OcrMode = DEFAULT_OCR) -> None:
    """Child process: wait for ([paths], max_seq_length[, [sources]]) on `requests`, then load and
    chunk the files, putting (path, doc, chunks, reason) on `out`, then None. A file is chunked
    under its source (a label, when it has one), since its chunks' document context names it by
    its file name. A process, not a thread:
    pypdf holds the GIL, which would stall the encoder's many small torch calls. It runs at the
    encoder's priority: niced, it starved while the encoder held both cores and the encoder then
    waited for it (1.7 s of 18 s on the arXiv PDFs); at equal priority it stays ahead, bounded by
    the queue."""
    import threading

    def watch_parent() -> None:  # the job was killed: stop, write nothing
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    # A watchdog thread rather than a check before each put: after its last put the process
    # waits, at exit, for the queue's feeder thread to flush into the pipe, which never
    # happens once the reader is dead (the loader would linger forever).
    threading.Thread(target=watch_parent, name="rag-loader-watchdog", daemon=True).start()

    from rag.embed.encoder import TokenCounter

    chunker = Chunker.from_dict(chunker_cfg)
    paths, max_seq_length, *rest = requests.get()
    sources = rest[0] if rest else [None] * len(paths)
    counter = TokenCounter(model, max_seq_length)

    for p, src in zip(paths, sources):
        out.put((p, *load_and_chunk(p, src, chunker, counter, ocr)))
    out.put(None)


def load_and_chunk(path: str | Path, source: str | None, chunker: Chunker, counter,
                   ocr: OcrMode = DEFAULT_OCR) -> tuple[Document | None, list[Chunk], str | None]:
    """(document, chunks, None), or (None, [], the reason) for a file that cannot be read: the
    per-file step of the loader process and of the distributed job's stage 1. The file is chunked
    under `source` when given (a label) and its resolved path otherwise."""
    try:
        doc = load(path, ocr=ocr)
        if source and source != doc.source:
            doc = doc.model_copy(update={"source": source})
        return doc, chunker.split(doc, counter), None
    except LoadError as e:
        return None, [], e.reason
    except Exception as e:  # a loader bug must not end the whole job
        return None, [], f"unexpected error: {type(e).__name__}: {e}"


IDLE = "idle"  # yielded by _LoaderProcess.items when no file is ready yet


class _LoaderProcess:
    """Loads and chunks files in a separate, lower-priority process. Started before the model
    loads, so that its own imports overlap that; told which files to read once the store has
    been checked."""

    def __init__(self, model: str, chunker: Chunker, ocr: OcrMode = DEFAULT_OCR):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._requests, self._out = ctx.Queue(), ctx.Queue(maxsize=8)
        self._proc = ctx.Process(target=_loader_main, daemon=True, name="rag-loader",
                                 args=(self._requests, self._out, chunker.to_dict(), model, os.getpid(), ocr))
        self._proc.start()

    def items(self, paths: list[Path], max_seq_length: int, sources: list[str] | None = None):
        """Yield (path, doc, chunks, reason) in order, and IDLE whenever nothing is ready yet
        (the caller can encode what it holds instead of waiting). `sources`: the source each
        file is chunked under (default: its resolved path)."""
        self._requests.put(([str(p) for p in paths], max_seq_length, sources))
        seen = 0
        while seen < len(paths):
            try:
                item = self._out.get(timeout=0.05)
            except queue.Empty:
                if not self._proc.is_alive():
                    for p in paths[seen:]:
                        yield (Path(p), None, [], f"loader process died (exit code {self._proc.exitcode}) "
                                                  "while reading this or an earlier file")
                    return
                yield IDLE
                continue
            if item is None:
                return
            seen += 1
            path, doc, chunks, reason = item
            yield Path(path), doc, chunks, reason

    def close(self) -> None:
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join(timeout=5)


def ingest(
    paths: Sequence[str | Path],
    encoder: SentenceEncoder | None = None,
    store: StoreSettings | None = None,
    chunker: Chunker | None = None,
    include: Iterable[str] = DEFAULT_INCLUDE,
    exclude: Iterable[str] = (),
    prune: bool = False,
    text_index: TextIndexSettings | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    near_duplicates: Literal["flag", "skip"] | None = None,
    dup_threshold: float = DEFAULT_DUP_THRESHOLD,
    *,
    vector_store: VectorStore | None = None,
    labels: Mapping[str | Path, str] | None = None,
    ocr: OcrMode = DEFAULT_OCR,
    write_retry: WriteRetry | None = None,
) -> IngestReport:
    """Ingest files and directories into a collection (created on first use). Returns the report;
    failures are in it, not raised, except for errors that stop the whole job (store, model).
    near_duplicates: "flag" (report) or "skip" (report, do not write) chunks at least
    `dup_threshold` cosine-similar to an earlier chunk of the job or of the collection.

    vector_store: a collection already open (the server's handle: the embedded store refuses a
    second open in the same process). The job writes through it in the same order, with the
    same checks (its recorded encoder and chunking must be these), and neither creates nor
    closes it; `store` then only names it in the report. labels: the source to record for
    some of the files (path -> label, e.g. an upload's original name instead of the path it was
    saved under); chunk ids follow the label, so a file ingested under the same label from any
    path gets the same ids. Files not in it keep their resolved path. Not with `prune`.
    ocr: PDF pages read by OCR, "auto" (those without a text layer), "force" (all) or "off".
    write_retry: how a store write is retried on a transient error (default: 3 retries, backoff
    from 0.5 s); a file whose write still fails is reported failed and the job goes on."""
    encoder = encoder or SentenceEncoder()
    store_settings = store or StoreSettings()
    chunker = chunker or Chunker()
    started = time.perf_counter()
    report = IngestReport(collection=store_settings.describe())
    if labels and prune:
        raise ValueError("prune compares sources with the files on disk: not with labels")
    named = {source_name(Path(k)): v for k, v in (labels or {}).items()}

    def name(p: Path) -> str:
        return named.get(source_name(p)) or source_name(p)

    files = list_files(paths, include, exclude, name, report)

    loader = _LoaderProcess(encoder.model, chunker, ocr) if files else None
    try:
        if vector_store is None:
            vs = open_for_writing(store_settings, encoder, chunker, text_index)
        else:
            vs = _check_open_store(vector_store, encoder, chunker)
    except BaseException:
        if loader is not None:
            loader.close()
        raise
    write = StoreWriter(vs, write_retry)
    try:
        dedup = _NearDuplicates(vs, near_duplicates, dup_threshold, report) if near_duplicates else None
        todo: list[tuple[Path, bool]] = []  # (path, had an earlier version)
        for p in files:
            src = name(p)
            done, had_old = check_file(p, src, vs.file_versions(src))
            if done is not None:
                report.outcomes.append(done)
            else:
                todo.append((p, had_old))
        if todo:
            items = (item if item is IDLE else _relabel(name(item[0]), *item[1:])
                     for item in loader.items([p for p, _ in todo], encoder.max_seq_length,
                                              [name(p) for p, _ in todo]))
            _run(items, len(todo), {name(p): old for p, old in todo}, encoder, write, report,
                 batch_size, progress, dedup)
        if prune:
            _prune(paths, files, vs, write, report)
        if report.chunks_written:
            optimize(vs, progress)
        vs.flush()
        report.total_points = vs.count()
    finally:
        if loader is not None:
            loader.close()
        if vector_store is None:
            vs.close()
    report.seconds = time.perf_counter() - started
    return report


def list_files(paths, include, exclude, name, report: IngestReport) -> list[Path]:
    """The files to ingest, one per source (`name(path)`); a path that cannot be walked becomes a
    failed outcome in `report`."""
    files: list[Path] = []
    for raw in paths:
        try:
            files.extend(find_files([raw], include, exclude))
        except LoadError as e:
            report.outcomes.append(FileOutcome(source=str(raw), status="failed", reason=e.reason))
    return list({name(p): p for p in files}.values())


def check_file(path: Path, src: str, versions) -> tuple[FileOutcome | None, bool]:
    """The unchanged-check of one file against the `versions` the store holds of its source:
    (an "unchanged" or "failed" outcome, False) when there is nothing to write, else (None,
    whether an older version is stored)."""
    try:
        digest = _file_hash(path)
    except OSError as e:
        return FileOutcome(source=src, status="failed", reason=f"cannot read file: {e.strerror or e}"), False
    if is_complete(versions, digest):
        return FileOutcome(source=src, status="unchanged", chunks=versions[0].points), False
    return None, any(v.file_hash != digest for v in versions)


def _relabel(src: str, doc: Document | None, chunks: list[Chunk], reason: str | None):
    """An item of the loader under the source `src` (its resolved path unless labelled): the
    document and its chunks say that source, and the chunk ids are derived from it."""
    if doc is None or doc.source == src:
        return src, doc, chunks, reason
    doc = doc.model_copy(update={"source": src})
    chunks = [c.model_copy(update={"source": src, "id": chunk_id(src, c.char_start, c.char_end, c.text)})
              for c in chunks]
    return src, doc, chunks, reason


def _check_open_store(vs: VectorStore, encoder: SentenceEncoder, chunker: Chunker) -> VectorStore:
    """An open collection to write to, if it was built with this encoder and chunking."""
    size, _ = chunker.limits(encoder)
    wanted = vs.info.model_copy(update={"model": encoder.model_id, "dimension": encoder.dimension,
                                        "chunk_size": size, "chunk_overlap": chunker.chunk_overlap,
                                        "context": chunker.context})
    check_compatible(getattr(vs, "name", "?"), vs.info, wanted)
    return vs


def optimize(vs: VectorStore, progress: bool) -> None:
    """Build the vector index (minutes for 100k chunks on 2 cores), saying so while it runs."""
    from pipelines.render import status

    with status("building the search index (HNSW) ...", enabled=progress):
        vs.optimize()


def open_for_writing(settings: StoreSettings, encoder: SentenceEncoder, chunker: Chunker,
                      text_index: TextIndexSettings | None) -> VectorStore:
    size, _ = chunker.limits(encoder)
    info = CollectionInfo(model=encoder.model_id, dimension=encoder.dimension,
                          text_index=text_index or TextIndexSettings(),
                          chunk_size=size, chunk_overlap=chunker.chunk_overlap, context=chunker.context)
    return open_store(settings, info=info, create=True)


def ingest_documents(
    docs: Iterable[Document],
    encoder: SentenceEncoder | None = None,
    store: StoreSettings | None = None,
    chunker: Chunker | None = None,
    text_index: TextIndexSettings | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    write_retry: WriteRetry | None = None,
) -> IngestReport:
    """Ingest documents made in memory (e.g. a BEIR corpus), with the same idempotency as files:
    a document whose source already holds exactly its current version is left alone."""
    encoder = encoder or SentenceEncoder()
    store_settings = store or StoreSettings()
    chunker = chunker or Chunker()
    started = time.perf_counter()
    report = IngestReport(collection=store_settings.describe())
    vs = open_for_writing(store_settings, encoder, chunker, text_index)
    try:
        todo: list[Document] = []
        had_old: dict[str, bool] = {}
        for doc in docs:
            versions = vs.file_versions(doc.source)
            if is_complete(versions, doc.file_hash):
                report.outcomes.append(FileOutcome(source=doc.source, status="unchanged",
                                                   chunks=versions[0].points))
            else:
                todo.append(doc)
                had_old[doc.source] = bool(versions)
        items = ((d.source, d, chunker.split(d, encoder), None) for d in todo)
        _run(items, len(todo), had_old, encoder, StoreWriter(vs, write_retry), report, batch_size, progress)
        if report.chunks_written:
            optimize(vs, progress)
        vs.flush()
        report.total_points = vs.count()
    finally:
        vs.close()
    report.seconds = time.perf_counter() - started
    return report


def _run(items, total: int, had_old: dict[str, bool], encoder, write, report, batch_size, progress,
         dedup: _NearDuplicates | None = None) -> None:
    """Encode and write the chunks of `items` ((source, doc, chunks, failure reason) tuples);
    a source is finished (old versions deleted, outcome recorded) once all its chunks are written.
    A write that fails for good (StoreWriteError, after the writer's retries) fails the files
    whose chunks it carried, and only those: their other chunks are not written, what was
    written of them is deleted again (`upsert_failed_reason`), and the job goes on."""
    from pipelines.render import ingest_progress

    pending: list[Chunk] = []
    remaining: dict[str, int] = {}  # chunks of each file still to be written
    totals: dict[str, int] = {}
    file_hashes: dict[str, str] = {}
    warnings: dict[str, list[str]] = {}
    ocr_pages: dict[str, int] = {}
    written: dict[str, int] = {}  # chunks of each file written so far
    abandoned: set[str] = set()  # files whose write failed for good

    def finish(src: str, bar) -> None:
        # Old versions go last: until here the old copy stays searchable.
        try:
            write("delete_other_versions", src, file_hashes[src])
        except StoreWriteError as e:
            report.outcomes.append(FileOutcome(source=src, status="failed", chunks=totals[src],
                                               reason=delete_failed_reason(e)))
            bar.advance_file()
            return
        notes = warnings.pop(src, [])
        if totals[src] == 0:
            notes = notes + ["every chunk was a near-duplicate: nothing of this file is stored"]
        report.outcomes.append(FileOutcome(source=src, status="replaced" if had_old[src] else "ingested",
                                           chunks=totals[src], warnings=notes, ocr_pages=ocr_pages.pop(src, 0)))
        bar.advance_file()

    def flush_batch(bar) -> None:
        if not pending:
            return
        vectors = encoder.encode([c.indexed_text for c in pending])  # with its context, if any
        emptied: list[str] = []
        if dedup is not None:
            keep = dedup.check(pending, vectors)
            if not all(keep):  # "skip": whole files are pending, so their counts are final here
                for c, k in zip(pending, keep):
                    if not k:
                        totals[c.source] -= 1
                        remaining[c.source] -= 1
                kept = [c for c, k in zip(pending, keep) if k]
                emptied = list(dict.fromkeys(c.source for c in pending if totals[c.source] == 0))
                pending[:] = kept
                vectors = vectors[np.asarray(keep)]
        if pending:
            try:
                write("upsert", pending, vectors, totals)
            except StoreWriteError as e:
                for src in dict.fromkeys(c.source for c in pending):
                    abandoned.add(src)
                    report.chunks_written -= written.pop(src, 0)
                    report.outcomes.append(FileOutcome(source=src, status="failed",
                                                       reason=upsert_failed_reason(write, src, file_hashes[src], e)))
                    bar.advance_file()
                pending.clear()
                for src in emptied:
                    finish(src, bar)
                return
        for c in pending:
            written[c.source] = written.get(c.source, 0) + 1
        report.chunks_written += len(pending)
        bar.advance_chunks(len(pending))
        done_now = []
        for c in pending:
            remaining[c.source] -= 1
            if remaining[c.source] == 0:
                done_now.append(c.source)
        pending.clear()
        for src in emptied + list(dict.fromkeys(done_now)):
            finish(src, bar)

    with ingest_progress(total, enabled=progress) as bar:
        for item in items:
            if item is IDLE:  # the loader has nothing ready: encode what we hold meanwhile
                flush_batch(bar)
                continue
            src, doc, chunks, reason = item
            if doc is None or not chunks:
                report.outcomes.append(FileOutcome(source=src, status="failed",
                                                   reason=reason or "no text to index after clean-up"))
                bar.advance_file()
                continue
            file_hashes[src] = doc.file_hash
            totals[src] = remaining[src] = len(chunks)
            warnings[src] = doc.warnings
            ocr_pages[src] = doc.ocr_pages
            whole_files = dedup is not None and dedup.action == "skip"
            for c in chunks:
                if src in abandoned:  # a batch holding its first chunks failed for good
                    break
                pending.append(c)
                if len(pending) >= batch_size and not whole_files:
                    flush_batch(bar)
            if len(pending) >= batch_size and whole_files:
                flush_batch(bar)
        flush_batch(bar)


def _prune(paths, files, vs, write, report) -> None:
    """Delete chunks of files that no longer exist, or that lie under the walked folders but are
    no longer selected by the include/exclude globs."""
    present = {source_name(p) for p in files}
    roots = [source_name(Path(p)) + "/" for p in paths if Path(p).is_dir()]
    for src in sorted(vs.sources() - present):
        if not Path(src).exists() or any(src.startswith(r) for r in roots):
            try:
                write("delete_source", src)
            except StoreWriteError as e:
                report.outcomes.append(FileOutcome(source=src, status="failed", reason=(
                    f"could not be pruned: {e.reason}; the next run with --prune tries again")))
                continue
            report.outcomes.append(FileOutcome(source=src, status="pruned"))
