"""`rag ingest ... --watch` that writes what the collection holds after each of the watcher's
ingest jobs (tests/test_watch.py), injected from outside the watcher by wrapping the ingest call
of `pipelines.watch` in this process only. Snapshot N (N.json in SNAPDIR: point id -> [source,
file hash, chunk count], and the engine's count) is written before job N's report is printed,
so a test that has read N report lines can read N snapshots.

    python tests/watch_probe.py SNAPDIR ARGS...
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path


def probe(snapdir: Path) -> None:
    import pipelines.watch as watch
    from helpers_ingest import snapshot, snapshot_of

    jobs = 0
    real = watch.ingest

    @functools.wraps(real)
    def ingest_and_snapshot(*args, **kwargs):
        nonlocal jobs
        report = real(*args, **kwargs)
        vs = kwargs.get("vector_store")
        snap = snapshot_of(vs) if vs is not None else snapshot(kwargs["store"])
        jobs += 1
        (snapdir / f"{jobs}.json").write_text(json.dumps({"points": snap.points, "count": snap.count}))
        return report

    watch.ingest = ingest_and_snapshot


if __name__ == "__main__":  # not in the loader process, which imports this file as its parent's main
    here = Path(__file__).resolve().parent
    sys.path[:0] = [str(here.parent), str(here)]  # this checkout's pipelines, and the test helpers
    probe(Path(sys.argv[1]))
    from pipelines.cli import main

    sys.exit(main(sys.argv[2:]))
