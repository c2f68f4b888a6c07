"""The ingest job's one write step, shared by the single-process job (`pipelines.ingest`) and the
distributed job's writer (the Ray driver, `pipelines.ray_ingest`): every store write of a job
goes through a `StoreWriter`.

A write that fails with a transient error (connection refused or reset, a timeout, HTTP
429/502/503/504 or their gRPC codes) is tried again after a backoff; `connectors.qdrant.retry`
decides which errors those are and how long to wait, apart from this loop. Each retry is logged
as a warning naming the file(s) and the cause; when the attempts run out the writer raises
StoreWriteError naming them, and the job marks those files failed (with the reasons below) and
goes on. Repeating a write that did land before its error is harmless: chunk ids are
deterministic, and the writes are upserts and deletes by filter. Any other error is raised as
it is, at once, and stops the job as before.

What a failure leaves, so that nothing is partial or duplicated and the order "a file's old
version is deleted only after its new one is complete" holds:
- an upsert fails for good: the file's other chunks are not sent, and what was written of its
  new version is deleted again (`delete_version`): the store holds what it held before the job,
  its older version, if any, complete and searchable. If that delete fails too, the partial copy
  stays, as after a crash, and the next run sees it as incomplete and replaces it;
- deleting the older versions fails for good: the new version is complete and stays; both are
  in the store (again as after a crash) until the next run deletes the old one.
"""

from __future__ import annotations

import logging
import os
import signal
import time

from connectors.qdrant.retry import WriteRetry
from rag.errors import StoreWriteError
from rag.search.store import VectorStore

logger = logging.getLogger(__name__)

# Test hook for the crash-safety tests: SIGKILL this process after N store writes.
FAULT_ENV = "RAG_FAULT_KILL_AFTER_WRITES"


class StoreWriter:
    """`writer("upsert", chunks, vectors, totals)`, `writer("delete_other_versions", src, hash)` ...:
    the store's write method of that name, retried as the module's docstring says. Counts
    writes; SIGKILLs the process after $RAG_FAULT_KILL_AFTER_WRITES of them."""

    def __init__(self, store: VectorStore, retry: WriteRetry | None = None, sleep=time.sleep):
        self.store = store
        self.retry = retry or WriteRetry()
        self.sleep = sleep
        self.writes = 0
        limit = os.environ.get(FAULT_ENV)
        self.kill_after = int(limit) if limit else None

    def __call__(self, method: str, *args) -> None:
        attempt = 0
        while True:
            try:
                getattr(self.store, method)(*args)
                break
            except Exception as exc:
                decision = self.retry.decide(attempt, exc)
                if not (decision.retry or decision.exhausted):
                    raise  # not transient
                files = ", ".join(write_sources(method, args))
                if decision.exhausted:
                    tries = attempt + 1
                    err = StoreWriteError(write_sources(method, args), f"store write failed after {tries} "
                                          f"attempt{'s' if tries > 1 else ''} ({decision.cause})")
                    logger.error("%s", err)
                    raise err from exc
                logger.warning("%s: store write (%s) failed (%s); retrying in %.2f s (attempt %d of %d)",
                               files, method, decision.cause, decision.delay, attempt + 2, self.retry.attempts)
                self.sleep(decision.delay)
                attempt += 1
        self.writes += 1
        if self.kill_after is not None and self.writes >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)


def write_sources(method: str, args: tuple) -> list[str]:
    """The files a write concerns: the sources of an upsert's chunks, else its first argument."""
    if method == "upsert":
        return list(dict.fromkeys(c.source for c in args[0]))
    return [str(args[0])]


def upsert_failed_reason(write: StoreWriter, src: str, file_hash: str, err: StoreWriteError) -> str:
    """The failure reason of a file whose points could not all be written, after deleting again
    what was written of this version of it (see the module's docstring)."""
    try:
        write("delete_version", src, file_hash)
        after = "nothing of this version was kept (an older version, if any, is unchanged)"
    except StoreWriteError as again:
        after = f"its partial copy could not be removed ({again.reason}): the next run replaces it"
    return f"{err.reason}; {after}"


def delete_failed_reason(err: StoreWriteError) -> str:
    """The failure reason of a file whose new version is stored whole but whose older versions
    could not be deleted."""
    return (f"its new version is stored, but deleting its older versions failed: {err.reason}; "
            "the next run deletes them")
