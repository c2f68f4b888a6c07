"""The ingest job's one write step, shared by the single-process job (`pipelines.ingest`) and the
distributed job's writers (`pipelines.ray_ingest`): every store write of a job goes through a
`StoreWriter`, whose four writes (`upsert`, `delete_other_versions`, `delete_version`,
`delete_source`) are each retried by one loop.

A write that fails with a transient error (connection refused or reset, a timeout, HTTP
429/502/503/504 or their gRPC codes) is tried again after a backoff; `connectors.qdrant.retry`
decides which errors those are and how long to wait, apart from this loop. Each retry is logged
as a warning naming the file(s) and the cause; when the attempts run out the writer raises
StoreWriteError naming them, and the job fails those files and goes on
(`pipelines.ingest_writes` decides what is left of them and their outcome). Repeating a write
that did land before its error is harmless: chunk ids are deterministic, and the writes are
upserts and deletes by filter. Any other error is raised as it is, at once, and stops the job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np

from connectors.qdrant.retry import WriteRetry
from rag.errors import StoreWriteError
from rag.models import Chunk
from rag.search.store import VectorStore

logger = logging.getLogger(__name__)


class StoreWriter:
    """The store's writes, each retried as the module's docstring says."""

    def __init__(self, store: VectorStore, retry: WriteRetry | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.store = store
        self.retry = retry or WriteRetry()
        self.sleep = sleep

    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray, file_chunks: dict[str, int],
               unit_vectors: Sequence[np.ndarray] | None = None) -> None:
        self._retry(list(dict.fromkeys(c.source for c in chunks)), "upsert",
                    lambda: self.store.upsert(chunks, vectors, file_chunks, unit_vectors))

    def delete_other_versions(self, source: str, keep_hash: str) -> None:
        self._retry([source], "delete_other_versions", lambda: self.store.delete_other_versions(source, keep_hash))

    def delete_version(self, source: str, file_hash: str) -> None:
        self._retry([source], "delete_version", lambda: self.store.delete_version(source, file_hash))

    def delete_source(self, source: str) -> None:
        self._retry([source], "delete_source", lambda: self.store.delete_source(source))

    def _retry(self, sources: list[str], what: str, call: Callable[[], None]) -> None:
        """Run `call`, the write `what` concerning the files `sources`, until it succeeds, fails
        with an error that is not transient (raised as it is), or runs out of attempts
        (StoreWriteError naming the files)."""
        attempt = 0
        while True:
            try:
                call()
                return
            except Exception as exc:
                decision = self.retry.decide(attempt, exc)
                if not (decision.retry or decision.exhausted):
                    raise  # not transient
                if decision.exhausted:
                    tries = attempt + 1
                    err = StoreWriteError(sources, f"store write failed after {tries} "
                                          f"attempt{'s' if tries > 1 else ''} ({decision.cause})")
                    logger.error("%s", err)
                    raise err from exc
                logger.warning("%s: store write (%s) failed (%s); retrying in %.2f s (attempt %d of %d)",
                               ", ".join(sources), what, decision.cause, decision.delay, attempt + 2,
                               self.retry.attempts)
                self.sleep(decision.delay)
                attempt += 1
