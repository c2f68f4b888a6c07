"""`rag serve --watch DIR`: the served default collection kept equal to folders, as `rag ingest
DIR --watch` keeps one (`pipelines.watch.follow`: the same debounce, decisions and ingest job),
but every write made through the server's one writer (`jobs.DocumentWriter.call`), in turn with
uploads and deletions, while searches go on. Each file's outcome is logged. Stopped (the file
in hand finished) before the writer stops at shutdown."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from rag.ingest.loaders import DEFAULT_INCLUDE

if TYPE_CHECKING:
    from pipelines.server.state import ServerState

logger = logging.getLogger("pipelines.server")
STOP_SECONDS = 60.0


class FolderWatch:
    def __init__(self, state: ServerState, paths: list[str]):
        self.state, self.paths = state, list(paths)
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> FolderWatch:
        self._thread = threading.Thread(target=self._run, name="rag-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        from pipelines.ingest import ingest
        from pipelines.watch import StoredSources, follow
        from rag.ingest.chunking import Chunker

        try:
            served = self.state.collection(None)
            info = served.handle.info
            args = dict(encoder=served.encoder, store=served.settings, vector_store=served.handle, progress=False,
                        stop=self.stop_event, chunker=Chunker(info.chunk_size, info.chunk_overlap, context=info.context,
                                                             sentence_vectors=info.sentence_vectors))

            def write(**job) -> None:  # one ingest job, in the writer's turn
                report = self.state.writer.call(lambda: ingest(**args, **job)).result()
                for o in report.outcomes:
                    if o.status != "unchanged":
                        logger.info("watch: %s %s%s", o.status, o.source, f" ({o.reason})" if o.reason else "")

            follow(self.paths, served.settings, DEFAULT_INCLUDE, (), lambda: write(paths=self.paths, prune=True),
                   lambda todo: write(paths=todo.ingest, remove=todo.remove), lambda: StoredSources(served.handle),
                   self.stop_event)
        except Exception:
            logger.exception("watching %s stopped", ", ".join(self.paths))
