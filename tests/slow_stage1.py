"""Stage 1 of the distributed ingest job, slowed down for some files, so that a test can SIGKILL
a worker while it runs a load/chunk task (tests/test_ray_ingest.py). A test puts `prepare_file`
in place of `pipelines.ray_ingest.prepare_file` in the driver; Ray's workers then import this
module by name, so they need this folder on their path. Named as the function it wraps: Ray
titles a worker after the task it runs (`ray::prepare_file`)."""

from __future__ import annotations

import time
from pathlib import Path

from pipelines import ray_ingest

SLOW = "slow-"  # stage 1 of a file whose name contains this waits SECONDS first
SECONDS = 3.0

_prepare_file = ray_ingest.prepare_file  # the job's own, whatever the driver's module then holds


def prepare_file(path: str, *args) -> ray_ingest.Row:
    if SLOW in Path(path).name:
        time.sleep(SECONDS)
    return _prepare_file(path, *args)
