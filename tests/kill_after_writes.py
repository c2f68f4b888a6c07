"""`rag ARGS` that SIGKILLs itself once N store writes have landed: the crash-safety tests' fault
(tests/test_crash_safety.py, tests/test_ray_ingest.py), injected from outside the job by wrapping
the writes of `pipelines.writer.StoreWriter` in this process only.

    python tests/kill_after_writes.py N ARGS...
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from pathlib import Path

WRITES = ("upsert", "delete_other_versions", "delete_version", "delete_source")


def kill_after(n: int) -> None:
    """Every StoreWriter of this process counts its writes that succeed (retried ones once) and
    SIGKILLs the process at the n-th: no clean-up, no flush, no close, as a power cut would."""
    from pipelines.writer import StoreWriter

    landed = 0

    def counted(write):
        @functools.wraps(write)
        def wrapper(*args, **kwargs):
            nonlocal landed
            write(*args, **kwargs)
            landed += 1
            if landed >= n:
                os.kill(os.getpid(), signal.SIGKILL)

        return wrapper

    for name in WRITES:
        setattr(StoreWriter, name, counted(getattr(StoreWriter, name)))


if __name__ == "__main__":  # not in the loader process, which imports this file as its parent's main
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pipelines
    kill_after(int(sys.argv[1]))
    from pipelines.cli import main

    sys.exit(main(sys.argv[2:]))
