"""The single-process ingest job's reader: a child process that loads and chunks files while the
job's process encodes and writes, so the encoder is not left waiting on pypdf. Also the per-file
load-and-chunk step that the distributed job's stage 1 runs."""

from __future__ import annotations

import os
import queue
import time
from pathlib import Path

from rag.errors import LoadError
from rag.ingest.chunking import Chunker
from rag.ingest.loaders import load
from rag.ingest.pdf import DEFAULT_OCR, OcrMode
from rag.models import Chunk, Document


def loader_main(requests, out, chunker_cfg: dict, model: str, parent: int, ocr: OcrMode = DEFAULT_OCR) -> None:
    """Child process: wait for ([paths], max_seq_length[, [sources]]) on `requests`, then load and
    chunk the files, putting (path, doc, chunks, reason) on `out`, then None. A file is chunked
    under its source (a label, when it has one), since its chunks' document context names it by
    its file name. A process, not a thread:
    pypdf holds the GIL, which would stall the encoder's many small torch calls. It runs at the
    encoder's priority: niced, it starved while the encoder held both cores and the encoder then
    waited for it (1.7 s of 18 s on the arXiv PDFs); at equal priority it stays ahead, bounded by
    the queue."""
    import signal
    import threading

    # Ctrl-C reaches the whole process group: the job decides what an interrupt stops (a
    # watching job finishes the file in flight first) and ends this process when it closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

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
        stages: list[tuple[str, int, int]] = []
        out.put((p, *load_and_chunk(p, src, chunker, counter, ocr, stages), stages))
    out.put(None)


def load_and_chunk(path: str | Path, source: str | None, chunker: Chunker, counter,
                   ocr: OcrMode = DEFAULT_OCR, stages: list[tuple[str, int, int]] | None = None,
                   ) -> tuple[Document | None, list[Chunk], str | None]:
    """(document, chunks, None), or (None, [], the reason) for a file that cannot be read: the
    per-file step of the loader process and of the distributed job's stage 1. The file is chunked
    under `source` when given (a label) and its resolved path otherwise. `stages`, when given,
    gets ("load", start, end) and ("chunk", start, end) in epoch nanoseconds (for its trace)."""
    stages = [] if stages is None else stages
    try:
        started = time.time_ns()
        doc = load(path, ocr=ocr)
        stages.append(("load", started, time.time_ns()))
        if source and source != doc.source:
            doc = doc.model_copy(update={"source": source})
        started = time.time_ns()
        chunks = chunker.split(doc, counter)
        stages.append(("chunk", started, time.time_ns()))
        return doc, chunks, None
    except LoadError as e:
        return None, [], e.reason
    except Exception as e:  # a loader bug must not end the whole job
        return None, [], f"unexpected error: {type(e).__name__}: {e}"


IDLE = "idle"  # yielded by LoaderProcess.items when no file is ready yet


class LoaderProcess:
    """Loads and chunks files in a separate, lower-priority process. Started before the model
    loads, so that its own imports overlap that; told which files to read once the store has
    been checked."""

    def __init__(self, model: str, chunker: Chunker, ocr: OcrMode = DEFAULT_OCR):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._requests, self._out = ctx.Queue(), ctx.Queue(maxsize=8)
        self._proc = ctx.Process(target=loader_main, daemon=True, name="rag-loader",
                                 args=(self._requests, self._out, chunker.to_dict(), model, os.getpid(), ocr))
        self._proc.start()
        self.stages: dict[str, list[tuple[str, int, int]]] = {}  # path -> its load and chunk times

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
            path, doc, chunks, reason, stages = item
            self.stages[str(path)] = stages
            yield Path(path), doc, chunks, reason

    def close(self) -> None:
        if self._proc.is_alive():
            self._proc.terminate()
        self._proc.join(timeout=5)
