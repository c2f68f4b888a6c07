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

A child process loads and chunks files while this one encodes and writes, so the encoder is not
left waiting on pypdf (`pipelines.ingest_loader`). A batch of chunks may hold several files'
chunks: each file is a `FileInFlight` until its last chunk is written, and is then settled by
the write step both this job and the distributed one use (`pipelines.ingest_writes`).

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from threading import Event
from typing import Literal

import numpy as np

from connectors.qdrant.retry import WriteRetry
from pipelines.ingest_file import FileInFlight
from pipelines.ingest_job import IngestJob, open_for_writing, optimize
from pipelines.ingest_loader import IDLE, LoaderProcess, load_and_chunk
from pipelines.ingest_near_duplicates import NearDuplicates
from pipelines.ingest_report import FileOutcome, IngestReport, NearDuplicate, Status, unreadable
from pipelines.ingest_writes import FileWrites
from pipelines.stores import StoreSettings
from pipelines.writer import StoreWriter
from rag.embed.chunks import encode_chunks
from rag.embed.encoder import SentenceEncoder
from rag.errors import LoadError, StoreWriteError
from rag.ingest.chunking import Chunker, chunk_id
from rag.ingest.loaders import DEFAULT_INCLUDE, find_files, source_name
from rag.ingest.pdf import DEFAULT_OCR, OcrMode
from rag.models import Chunk, Document
from rag.search.store import TextIndexSettings, VectorStore, is_complete
from rag.tracing import OFF, span, start

# What other modules import from here; the report's models, the store's opening and the loader
# live in their own modules (pipelines.ingest_*).
__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_DUP_THRESHOLD", "FileOutcome", "IngestReport", "NearDuplicate", "Status",
           "check_file", "ingest", "ingest_documents", "list_files", "load_and_chunk", "open_for_writing", "optimize",
           "remove_sources"]

DEFAULT_BATCH_SIZE = 128  # chunks per encode and write
DEFAULT_DUP_THRESHOLD = 0.95  # cosine at which a chunk counts as a near-duplicate

# A file of the loader, under its source: (source, document, chunks, why it failed), or IDLE.
Item = tuple[str, Document | None, list[Chunk], str | None]


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
    remove: Iterable[str] = (),
    stop: Event | None = None,
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
    from 0.5 s); a file whose write still fails is reported failed and the job goes on.
    remove: sources to delete once the files are written ("pruned" outcomes; `rag ingest
    --watch` passes the files deleted or renamed away).
    stop: once set, no further file is started; the files whose chunks are in hand are written
    and settled, the rest left as they are (no outcome) for a later run."""
    encoder = encoder or SentenceEncoder()
    chunker = chunker or Chunker()
    if labels and prune:
        raise ValueError("prune compares sources with the files on disk: not with labels")
    named = {source_name(Path(k)): v for k, v in (labels or {}).items()}

    def name(p: Path) -> str:
        return named.get(source_name(p)) or source_name(p)

    with IngestJob(store or StoreSettings(), progress) as job:
        report = job.report
        files = list_files(paths, include, exclude, name, report)
        loader = LoaderProcess(encoder.model, chunker, ocr) if files else None  # its imports overlap the store's
        try:
            with job.collection(encoder, chunker, text_index, vector_store) as vs:
                write = StoreWriter(vs, write_retry)
                dedup = NearDuplicates(vs, near_duplicates, dup_threshold, report) if near_duplicates else None
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
                    path_of = {name(p): str(p) for p, _ in todo}
                    _run(items, len(todo), {name(p): old for p, old in todo}, encoder, write, report,
                         batch_size, progress, dedup, stop, job.trace,
                         lambda src: loader.stages.pop(path_of.get(src, ""), []))
                if stop is not None and stop.is_set():
                    return job.report  # what was asked of the store but not done waits for the next run
                if prune:
                    _prune(paths, files, vs, write, report)
                remove_sources(remove, write, report)
        finally:
            if loader is not None:
                loader.close()
    return job.report


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


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _relabel(src: str, doc: Document | None, chunks: list[Chunk], reason: str | None) -> Item:
    """An item of the loader under the source `src` (its resolved path unless labelled): the
    document and its chunks say that source, and the chunk ids are derived from it."""
    if doc is None or doc.source == src:
        return src, doc, chunks, reason
    doc = doc.model_copy(update={"source": src})
    chunks = [c.model_copy(update={"source": src, "id": chunk_id(src, c.char_start, c.char_end, c.text)})
              for c in chunks]
    return src, doc, chunks, reason


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
    chunker = chunker or Chunker()
    with IngestJob(store or StoreSettings(), progress) as job, job.collection(encoder, chunker, text_index) as vs:
        todo: list[Document] = []
        had_old: dict[str, bool] = {}
        for doc in docs:
            versions = vs.file_versions(doc.source)
            if is_complete(versions, doc.file_hash):
                job.report.outcomes.append(FileOutcome(source=doc.source, status="unchanged",
                                                       chunks=versions[0].points))
            else:
                todo.append(doc)
                had_old[doc.source] = bool(versions)
        items = ((d.source, d, chunker.split(d, encoder), None) for d in todo)
        _run(items, len(todo), had_old, encoder, StoreWriter(vs, write_retry), job.report, batch_size, progress)
    return job.report


def _run(items: Iterable[Item | str], total: int, had_old: Mapping[str, bool], encoder: SentenceEncoder,
         write: StoreWriter, report: IngestReport, batch_size: int, progress: bool,
         dedup: NearDuplicates | None = None, stop: Event | None = None, trace=OFF,
         stages: Callable[[str], list[tuple[str, int, int]]] | None = None) -> None:
    """Encode and write the chunks of `items` in batches of `batch_size` chunks, which may hold
    several files' chunks (with near-duplicates skipped, whole files: a file's chunk count,
    recorded in every point, must be final before its first point is written). A file is
    settled once all its chunks are written; a batch that fails for good fails the files it
    carried, and only those (`FileWrites`), and their other chunks are not sent. Once `stop` is
    set no further file is started. `trace`: the job's span, parent of a span per file (its load
    and chunk stages as the loader timed them, `stages(source)`) and per batch encoded and written."""
    from pipelines.render import ingest_progress

    pending: list[Chunk] = []
    in_flight: dict[str, FileInFlight] = {}  # by source: files with chunks pending or being written
    whole_files = dedup is not None and dedup.action == "skip"
    file_spans: dict[str, object] = {}  # by source: the span of each file in flight

    def begin_file(src: str, doc: Document | None, chunks: list[Chunk]) -> None:
        traced = file_spans[src] = start("rag.ingest.file", trace, **{
            "rag.ingest.source": src, "rag.ingest.chunks": len(chunks),
            "rag.ingest.ocr_pages": doc.ocr_pages if doc is not None else None})
        for stage, began, ended in stages(src) if stages is not None and traced is not OFF else ():
            start(f"rag.ingest.{stage}", traced, began, **({"rag.ingest.ocr_pages": doc.ocr_pages}
                                                          if stage == "load" and doc is not None else {})).end(ended)

    def end_file(src: str, outcome: str) -> None:
        traced = file_spans.pop(src, OFF)
        traced.set("rag.ingest.outcome", outcome)
        traced.end()

    def flush_batch(writes: FileWrites) -> None:
        if not pending:
            return
        batch = pending[:]
        pending.clear()
        carried = {"rag.ingest.chunks": len(batch), "rag.ingest.sources": list(dict.fromkeys(c.source for c in batch))}
        with trace.current(), span("rag.ingest.encode", **carried):
            vectors, units = encode_chunks(encoder, batch)
        emptied: list[FileInFlight] = []
        if dedup is not None:
            keep = dedup.check(batch, vectors)
            if not all(keep):  # "skip": whole files are in the batch, so their counts are final here
                for c, k in zip(batch, keep):
                    if not k:
                        in_flight[c.source].skip()
                emptied = [f for f in (in_flight[s] for s in dict.fromkeys(c.source for c in batch)) if f.total == 0]
                batch = [c for c, k in zip(batch, keep) if k]
                vectors = vectors[np.asarray(keep)]
                units = None if units is None else [u for u, k in zip(units, keep) if k]
        with trace.current(), span("rag.ingest.write", **carried):
            done = writes.upsert(batch, vectors, units, in_flight) if batch else []
            for f in emptied + done:
                writes.settle(f)
        for f in list(in_flight.values()):
            if f.abandoned or not f.remaining:  # settled or failed: nothing more of it comes
                del in_flight[f.source]
                end_file(f.source, "failed" if f.abandoned else "written")

    with ingest_progress(total, enabled=progress) as bar:
        writes = FileWrites(write, report, bar)
        for item in items:
            if item is IDLE:  # the loader has nothing ready: encode what we hold meanwhile
                flush_batch(writes)
                continue
            if stop is not None and stop.is_set():
                break  # the files in hand are written below; the rest are not started
            src, doc, chunks, reason = item
            begin_file(src, doc, chunks)
            if doc is None or not chunks:
                report.outcomes.append(unreadable(src, reason))
                end_file(src, "failed")
                bar.advance_file()
                continue
            f = in_flight[src] = FileInFlight.read(src, doc, chunks, had_old[src])
            for c in chunks:
                if f.abandoned:  # a batch holding its first chunks failed for good
                    break
                pending.append(c)
                if len(pending) >= batch_size and not whole_files:
                    flush_batch(writes)
            if len(pending) >= batch_size and whole_files:
                flush_batch(writes)
        flush_batch(writes)
        for src in list(file_spans):  # stopped before its chunks were all in hand
            end_file(src, "not finished")


def _prune(paths: Sequence[str | Path], files: list[Path], vs: VectorStore, write: StoreWriter,
           report: IngestReport) -> None:
    """Delete chunks of files that no longer exist, or that lie under the walked folders but are
    no longer selected by the include/exclude globs."""
    present = {source_name(p) for p in files}
    roots = [source_name(Path(p)) + "/" for p in paths if Path(p).is_dir()]
    gone = [src for src in sorted(vs.sources() - present)
            if not Path(src).exists() or any(src.startswith(r) for r in roots)]
    remove_sources(gone, write, report)


def remove_sources(sources: Iterable[str], write: StoreWriter, report: IngestReport) -> None:
    """Delete every point of `sources` (files gone or no longer selected): a "pruned" outcome
    each, or "failed" when the delete fails for good (the next prune or watch tries again).
    Used by `--prune` and by `rag ingest --watch` (`pipelines.watch`)."""
    for src in sources:
        try:
            write.delete_source(src)
        except StoreWriteError as e:
            report.outcomes.append(FileOutcome(source=src, status="failed", reason=(
                f"could not be pruned: {e.reason}; the next run with --prune tries again")))
            continue
        report.outcomes.append(FileOutcome(source=src, status="pruned"))
