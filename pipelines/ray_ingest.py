"""The ingest job on a Ray cluster: the same files, chunk ids, payloads and report as
`pipelines.ingest.ingest`, with loading and encoding fanned out over the cluster's cores and GPUs.

One row per file through the whole job (`Row`, carrying the file as a `FileInFlight`), so that
a file's chunk count is known before its first point is written and its old version is deleted
only after its new one is complete:
- the driver lists the files, opens (creates) the collection and its indexes, and reads the
  versions the store holds of each source (metadata only);
- stage 1, a CPU task per file (`prepare_file`): hash, the unchanged-check against those
  versions, load, clean, chunk. A bad file becomes a "failed" row with its reason, never an
  exception. Workers read the file from storage the cluster shares: its bytes never travel
  through Ray's object store, only its chunks do;
- stage 2, a pool of encoder actors (`EncoderActor`: the model loaded once per actor; one GPU
  each when the cluster has GPUs). Stage 1's result goes to the actor by reference, not
  through the driver;
- stage 3, the writers, through the single-process job's write-and-settle step
  (`pipelines.ingest_writes.FileWrites`: a file's points upserted in batches, wait=True for a
  server, then its other versions deleted; the same outcomes and reasons).
  With a Qdrant server or cluster (`url`): a pool of writer actors (`WriterActor`, one per
  encoder actor by default), each with its own client, writing in parallel; they take the
  encoder's rows by reference, so vectors go from encoder to writer without passing through the
  driver. The embedded stores (Qdrant Edge, qdrant-client local mode) are single-process: by
  default the driver, which owns the store, writes every file; `writers=1` hands the store to
  one writer actor instead (the driver closes it first and reopens it at the end); more than
  one is refused.

Faults: a stage-1 task whose worker dies is retried by Ray (`max_retries`); an encoder or
writer actor that dies is restarted and its call retried (`max_restarts`, `max_task_retries`; a
writer reopens the store, and repeating its upserts and deletes is harmless). The file is
then simply redone: deterministic ids make that safe. A transient store error is retried with
backoff by the writer; a file whose write still fails is reported failed, what was written of
it deleted again, and the job goes on. A killed driver is resumed by running the same command
again: finished files are then "unchanged". (tests/test_ray_ingest.py kills each of these.)
The job's start and end (report, collection, index, count) are `pipelines.ingest_job.IngestJob`'s.

Ray is imported here only: `pip install -e ".[ray]"`; the single-process job never imports it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from connectors.qdrant.retry import WriteRetry
from pipelines.ingest import DEFAULT_BATCH_SIZE, check_file, list_files
from pipelines.ingest_file import FileInFlight
from pipelines.ingest_job import IngestJob
from pipelines.ingest_loader import load_and_chunk
from pipelines.ingest_report import FileOutcome, IngestReport, unreadable
from pipelines.ingest_writes import FileWrites
from pipelines.stores import StoreSettings, open_store
from pipelines.writer import StoreWriter
from rag.embed.chunks import encode_chunks
from rag.embed.encoder import SentenceEncoder
from rag.errors import ConfigError
from rag.ingest.chunking import Chunker
from rag.ingest.loaders import DEFAULT_INCLUDE, source_name
from rag.ingest.pdf import DEFAULT_OCR, OcrMode
from rag.search.store import TextIndexSettings, VectorStore

STAGE1_RETRIES = 3  # a stage-1 task whose worker died is run again this many times
ACTOR_RESTARTS = 3  # an encoder or writer actor that died is restarted this many times (its call retried)
STAGE_SECONDS = ("stage1_s", "stage2_s", "write_s")  # seconds each stage's workers spent, summed (stats)


@dataclass
class Row:
    """One file through the job. Stage 1 makes it: its outcome when there is nothing to write
    (unchanged, unreadable, no text), else the file to write; stage 2 adds the file's vectors;
    stage 3 writes and settles the file, and hands back the outcome and the points written
    (without the file, which need not travel back)."""

    source: str
    outcome: FileOutcome | None = None
    file: FileInFlight | None = None
    vectors: np.ndarray | None = None
    unit_vectors: list[np.ndarray] | None = None  # per chunk, in a collection with sentence vectors
    chunks_written: int = 0
    stage1_s: float = 0.0  # seconds each stage spent on it (STAGE_SECONDS)
    stage2_s: float = 0.0
    write_s: float = 0.0


def _ray():
    try:
        import ray
    except ImportError:
        raise ConfigError('--ray needs Ray: pip install -e ".[ray]"') from None
    return ray


@lru_cache(maxsize=4)
def _counter(model: str, max_seq_length: int):
    """One tokenizer per worker process and model (a worker runs many stage-1 tasks)."""
    from rag.embed.encoder import TokenCounter

    return TokenCounter(model, max_seq_length)


def prepare_file(path: str, source: str, versions: list, chunker_cfg: dict, model: str,
                 max_seq_length: int, ocr: OcrMode) -> Row:
    """Stage 1 for one file: the unchanged-check against the `versions` the store holds of its
    source, then load and chunk."""
    t0 = time.perf_counter()
    done, had_old = check_file(Path(path), source, versions)
    if done is None:
        doc, chunks, reason = load_and_chunk(path, source, Chunker.from_dict(chunker_cfg),
                                             _counter(model, max_seq_length), ocr)
        if doc is not None and chunks:
            return Row(source, file=FileInFlight.read(source, doc, chunks, had_old),
                       stage1_s=time.perf_counter() - t0)
        done = unreadable(source, reason)
    return Row(source, outcome=done, stage1_s=time.perf_counter() - t0)


class EncoderActor:
    """Stage 2: holds one encoder (loaded once, on the actor's GPU when it has one) and adds
    the vectors of a row's chunks to it; a row without chunks passes through."""

    def __init__(self, encoder_cfg: dict):
        self.encoder = SentenceEncoder.from_dict(encoder_cfg)
        self.encoder.warm_up()

    def pid(self) -> int:
        return os.getpid()

    def encode(self, row: Row) -> Row:
        t0 = time.perf_counter()
        if row.file is not None:
            row.vectors, row.unit_vectors = encode_chunks(self.encoder, row.file.chunks)
        row.stage2_s = time.perf_counter() - t0
        return row


class WriterActor:
    """Stage 3 in a pool: holds one open collection (its own client of a Qdrant server, or the
    embedded store handed over by the driver) and writes a row's file as the driver would, with
    the same retries; a row that already has its outcome passes through."""

    def __init__(self, settings: StoreSettings, retry: WriteRetry | None, batch_size: int):
        self.store = open_store(settings)
        self.writer = StoreWriter(self.store, retry)
        self.batch_size = batch_size

    def pid(self) -> int:
        return os.getpid()

    def write(self, row: Row) -> Row:
        from pipelines.render import ingest_progress

        t0 = time.perf_counter()
        part = IngestReport(collection="")
        if row.file is None:
            part.outcomes.append(row.outcome)
        else:
            with ingest_progress(0, enabled=False) as no_bar:  # the driver shows the job's progress
                FileWrites(self.writer, part, no_bar).write_file(row.file, row.vectors, row.unit_vectors,
                                                                self.batch_size)
        return Row(row.source, outcome=part.outcomes[0], chunks_written=part.chunks_written, stage1_s=row.stage1_s,
                   stage2_s=row.stage2_s, write_s=time.perf_counter() - t0)

    def close(self) -> None:
        self.store.flush()
        self.store.close()


def _connect(address: str | None):
    """(ray, whether this call started it): the running Ray of this process, the cluster at
    `address` ("auto": the one `ray start` runs here), or a new local one on this machine's CPUs."""
    ray = _ray()
    if ray.is_initialized():
        return ray, False
    if address and address != "local":
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(include_dashboard=False, log_to_driver=False)
    return ray, True


def ingest_ray(
    paths: Sequence[str | Path],
    encoder: SentenceEncoder | None = None,
    store: StoreSettings | None = None,
    chunker: Chunker | None = None,
    include: Iterable[str] = DEFAULT_INCLUDE,
    exclude: Iterable[str] = (),
    text_index: TextIndexSettings | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    *,
    address: str | None = None,
    encoders: int | None = None,
    ocr: OcrMode = DEFAULT_OCR,
    stats: dict[str, float] | None = None,
    write_retry: WriteRetry | None = None,
    vector_store=None,
    writers: int | None = None,
) -> IngestReport:
    """`ingest` on Ray (see the module's docstring). address: a Ray cluster ("auto", or
    "HOST:PORT"; None: the Ray this process already runs, else a new local one). encoders: how
    many encoder actors (default: one per GPU, else one per two CPUs, at least one). stats: a dict
    to fill with the seconds spent starting Ray and in each stage (summed over workers), for the
    benchmark. write_retry and vector_store: as in `ingest` (a collection already open, written
    through and neither created nor closed here). writers: writer actors (default: one per
    encoder actor with a Qdrant server, `url`; none, the driver writes, with an embedded store,
    which takes one at most)."""
    encoder = encoder or SentenceEncoder()
    store_settings = store or StoreSettings()
    chunker = chunker or Chunker()
    stats = {} if stats is None else stats
    with IngestJob(store_settings, progress) as job:
        report = job.report
        files = list_files(paths, include, exclude, source_name, report)
        wanted_writers = _writers_wanted(store_settings, vector_store is not None, writers)  # before Ray starts
        t0 = time.perf_counter()
        ray, started_ray = _connect(address)
        stats["ray_start_s"] = time.perf_counter() - t0
        try:
            n_encoders, gpus = _pool_size(ray, encoders)
            n_writers = n_encoders if wanted_writers is None else wanted_writers
            with job.collection(encoder, chunker, text_index, vector_store) as vs:
                stages = _Stages(ray, encoder, chunker, n_encoders, gpus, ocr)
                if n_writers:
                    versions = {source_name(p): vs.file_versions(source_name(p)) for p in files}
                    with job.handed_over():  # an embedded store: the writer actor opens it now
                        _run_writers(ray, stages, files, versions, store_settings, n_writers, write_retry, report,
                                     batch_size, progress, stats)
                else:
                    _run(ray, stages, files, vs, report, batch_size, progress, stats, StoreWriter(vs, write_retry))
        finally:
            if started_ray:
                ray.shutdown()
    return job.report


def _pool_size(ray, encoders: int | None) -> tuple[int, float]:
    """(encoder actors, GPUs per actor)."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if encoders is None:
        encoders = gpus or max(1, int(resources.get("CPU", 1)) // 2)
    return max(1, encoders), (1.0 if gpus else 0.0)


def _writers_wanted(settings: StoreSettings, store_given: bool, writers: int | None) -> int | None:
    """Writer actors for the job: 0, the driver writes; None, one per encoder actor (the default
    with a Qdrant server). A setting the store cannot take is refused."""
    if writers is not None and writers < 0:
        raise ConfigError("--ray-writers must be >= 0")
    if store_given:
        if writers:
            raise ConfigError("writer actors open the collection themselves: give store settings, not an open store")
        return 0
    if writers is None:
        return None if settings.url else 0
    if writers > 1 and not settings.url:
        raise ConfigError(f"{settings.describe()} is written by one process: --ray-writers 1 at most (the "
                          "store handed to one writer actor); parallel writers need a Qdrant server (--url)")
    return writers


class _Stages:
    """Stages 1 and 2 as Ray runs them: the load/chunk task and the encoder actors."""

    def __init__(self, ray, encoder: SentenceEncoder, chunker: Chunker, n_encoders: int, gpus: float,
                 ocr: OcrMode):
        actor = ray.remote(EncoderActor).options(num_cpus=0 if gpus else 1, num_gpus=gpus,
                                                 max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS)
        cfg = encoder.to_dict()
        self.encoders = [actor.remote(cfg) for _ in range(n_encoders)]
        self.stage1 = ray.remote(prepare_file).options(num_cpus=1, max_retries=STAGE1_RETRIES)
        self.args = (chunker.to_dict(), encoder.model, encoder.max_seq_length, ocr)
        self.window = 2 * n_encoders + int(ray.cluster_resources().get("CPU", 1))  # rows in flight at most

    def load(self, path: str, src: str, versions: list):
        return self.stage1.remote(path, src, versions, *self.args)

    def reset(self, stats: dict, n_writers: int) -> None:
        for key in STAGE_SECONDS:
            stats[key] = 0.0
        stats["encoders"] = len(self.encoders)
        stats["writers"] = n_writers


def _run(ray, stages: _Stages, files: list[Path], vs: VectorStore, report: IngestReport, batch_size: int,
         progress: bool, stats: dict, write: StoreWriter) -> None:
    """Stages 1 and 2 on Ray, stage 3 here: the driver writes each file as its row arrives."""
    from ray.util import ActorPool

    from pipelines.render import ingest_progress

    pool = ActorPool(stages.encoders)
    todo = [(str(p), source_name(p)) for p in files]

    def submit(path: str, src: str) -> None:
        row = stages.load(path, src, vs.file_versions(src))
        pool.submit(lambda a, r: a.encode.remote(r), row)

    stages.reset(stats, 0)
    with ingest_progress(len(todo), enabled=progress) as bar:
        writes = FileWrites(write, report, bar)
        for path, src in todo[:stages.window]:
            submit(path, src)
        queued = todo[stages.window:]
        while pool.has_next():
            row: Row = pool.get_next_unordered()
            if queued:
                submit(*queued.pop(0))
            stats["stage1_s"] += row.stage1_s
            stats["stage2_s"] += row.stage2_s
            if row.file is None:
                report.outcomes.append(row.outcome)
                bar.advance_file()
            else:
                t0 = time.perf_counter()
                writes.write_file(row.file, row.vectors, row.unit_vectors, batch_size)
                stats["write_s"] += time.perf_counter() - t0


def _run_writers(ray, stages: _Stages, files: list[Path], versions: dict, settings: StoreSettings, n_writers: int,
                 retry: WriteRetry | None, report: IngestReport, batch_size: int, progress: bool,
                 stats: dict) -> None:
    """All three stages on Ray: each file's row goes from its load task to an encoder actor and
    on to a writer actor by reference (round robin); the driver only collects the outcomes."""
    from pipelines.render import ingest_progress

    actor = ray.remote(WriterActor).options(num_cpus=0, max_restarts=ACTOR_RESTARTS,
                                            max_task_retries=ACTOR_RESTARTS)
    writers = [actor.remote(settings, retry, batch_size) for _ in range(n_writers)]
    todo = [(str(p), source_name(p)) for p in files]
    pending: list = []
    submitted = 0

    def submit(path: str, src: str) -> None:
        nonlocal submitted
        encoder = stages.encoders[submitted % len(stages.encoders)]
        encoded = encoder.encode.remote(stages.load(path, src, versions[src]))
        pending.append(writers[submitted % n_writers].write.remote(encoded))
        submitted += 1

    stages.reset(stats, n_writers)
    try:
        with ingest_progress(len(todo), enabled=progress) as bar:
            for path, src in todo[:stages.window]:
                submit(path, src)
            queued = todo[stages.window:]
            while pending:
                done, pending[:] = ray.wait(pending, num_returns=1)
                row: Row = ray.get(done[0])
                if queued:
                    submit(*queued.pop(0))
                for key in STAGE_SECONDS:
                    stats[key] += getattr(row, key)
                report.outcomes.append(row.outcome)
                report.chunks_written += row.chunks_written
                bar.advance_chunks(row.chunks_written)
                bar.advance_file()
    finally:
        try:
            ray.get([w.close.remote() for w in writers])  # flushed and closed: an embedded store unlocked
        finally:
            for w in writers:
                ray.kill(w)

