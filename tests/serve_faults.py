"""`rag serve ARGS` with two test hooks on its one writer, set by environment variables, so that
a test can SIGKILL a real server at a known point of an upload's life (tests/test_server_spool.py).
Injected from outside, in this process only, by wrapping the writer's methods, as
tests/kill_after_writes.py wraps the store writes of `rag ingest`.

    RAG_TEST_HOLD=PATH      every ingest job waits, before it starts, while PATH exists
    RAG_TEST_PAUSE_AFTER=S  once the file labelled S is settled in the store (its other versions
                            deleted: its points are all written), the writer touches
    RAG_TEST_PAUSED=PATH    PATH and stops there for good (the test then SIGKILLs the server,
                            with the job's other files not yet settled)

    python tests/serve_faults.py serve ARGS...
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path


def install() -> None:
    from pipelines.server.jobs import DocumentWriter
    from pipelines.writer import StoreWriter

    hold = os.environ.get("RAG_TEST_HOLD")
    if hold:
        ingest = DocumentWriter._ingest

        @functools.wraps(ingest)
        def held(self, job):
            while Path(hold).exists():
                time.sleep(0.05)
            return ingest(self, job)

        DocumentWriter._ingest = held

    pause_after, paused = os.environ.get("RAG_TEST_PAUSE_AFTER"), os.environ.get("RAG_TEST_PAUSED")
    if pause_after and paused:
        settle = StoreWriter.delete_other_versions

        @functools.wraps(settle)
        def settled(self, source, keep_hash, *args, **kwargs):
            result = settle(self, source, keep_hash, *args, **kwargs)
            if source == pause_after:
                Path(paused).touch()
                while True:  # the writer stops here; the test kills the process
                    time.sleep(3600)
            return result

        StoreWriter.delete_other_versions = settled


if __name__ == "__main__":  # not in the loader process, which imports this file as its parent's main
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pipelines
    install()
    from pipelines.cli import main

    sys.exit(main(sys.argv[1:]))
