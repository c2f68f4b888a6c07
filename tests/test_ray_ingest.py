"""`rag ingest --ray` on a local Ray cluster started by the test (2 logical CPUs, no dashboard):
the same point ids and payloads as the single-process job, also after an encoder actor or the
driver is SIGKILLed mid-job; bad files reported as in the single-process path. And the default
path never imports Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers_ingest import CLI_CHUNKING, edge_settings, finish, sentences, small_chunker, start_rag, write
from pipelines.ingest import FAULT_ENV, ingest
from pipelines.stores import open_store

FILES = {
    "a.txt": sentences("alpha", 12),
    "b.md": f"# Beta\n\n{sentences('beta', 6)}\n\n## Usage\n\n{sentences('beta', 6, 10)}\n",
    "sub/c.txt": sentences("gamma", 8),
    "long.txt": sentences("delta", 200),  # ~75 chunks: the encoder is busy long enough to be killed
    "bad.pdf": b"this is not a pdf",
    "empty.md": "   \n",
}
FIELDS = ["source", "file_hash", "file_chunks", "chunk_index", "text", "char_start", "char_end", "page",
          "section", "title", "context"]


def test_default_ingest_does_not_import_ray(tmp_path):
    code = f"""
import sys
from pathlib import Path
from pipelines.ingest import ingest
from pipelines.stores import StoreSettings
from rag.ingest.chunking import Chunker
Path("{tmp_path}/d.txt").write_text("A small note about rivers and granite. " * 5)
r = ingest(["{tmp_path}/d.txt"], store=StoreSettings(store_dir="{tmp_path}/s"), chunker=Chunker(32, 4),
           progress=False)
assert r.counts()["ingested"] == 1, r
print("ray" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


try:
    import ray

    from pipelines.ray_ingest import ingest_ray
except ImportError:
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason='Ray is an optional extra: pip install -e ".[ray]"')


def points(settings) -> dict[str, dict]:
    store = open_store(settings)
    try:
        return dict(store.payloads(FIELDS))
    finally:
        store.close()


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def lab(tmp_path_factory, encoder):
    root = tmp_path_factory.mktemp("ray")
    docs = root / "docs"
    write(docs, FILES)
    ref = edge_settings(root / "single")
    report = ingest([docs], encoder=encoder, store=ref, chunker=small_chunker(), progress=False)
    return docs, report, points(ref)


def outcomes(report) -> dict[str, tuple]:
    return {o.source: (o.status, o.chunks, o.reason) for o in report.outcomes}


@needs_ray
@pytest.mark.slow
def test_same_points_and_report_as_single_process(cluster, lab, encoder, tmp_path):
    docs, ref_report, ref_points = lab
    settings = edge_settings(tmp_path / "ray")
    report = ingest_ray([docs], encoder=encoder, store=settings, chunker=small_chunker(), progress=False)
    assert outcomes(report) == outcomes(ref_report)  # bad.pdf and empty.md failed with the same reasons
    assert report.counts() == {"ingested": 4, "replaced": 0, "unchanged": 0, "failed": 2, "pruned": 0}
    assert report.chunks_written == ref_report.chunks_written == len(ref_points)
    assert points(settings) == ref_points  # ids and payloads
    again = ingest_ray([docs], encoder=encoder, store=settings, chunker=small_chunker(), progress=False)
    assert again.counts()["unchanged"] == 4 and again.chunks_written == 0


def encoder_actor_pids() -> dict[int, str]:
    """pid -> process title of the live encoder actors (Ray titles them `ray::EncoderActor...`)."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                title = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if title.startswith("ray::EncoderActor"):
                out[int(d.name)] = title
    return out


@needs_ray
@pytest.mark.slow
def test_encoder_actor_killed_mid_job_is_restarted_and_the_job_ends_the_same(cluster, lab, encoder, tmp_path):
    docs, _, ref_points = lab
    settings = edge_settings(tmp_path / "ray")
    result = {}
    job = threading.Thread(target=lambda: result.update(report=ingest_ray(
        [docs], encoder=encoder, store=settings, chunker=small_chunker(), progress=False)))
    job.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and job.is_alive() and time.monotonic() < deadline:
        for pid, title in encoder_actor_pids().items():
            if "encode" in title:  # busy with a file
                os.kill(pid, signal.SIGKILL)
                killed = pid
                break
        time.sleep(0.005)
    job.join(timeout=180)
    assert killed is not None, "the encoder actor was never seen encoding"
    assert not job.is_alive() and "report" in result
    assert killed not in encoder_actor_pids()  # that process is gone; a restarted actor did its work
    assert result["report"].counts()["ingested"] == 4
    assert points(settings) == ref_points


@needs_ray
@pytest.mark.slow
def test_driver_killed_mid_job_then_rerun_gives_the_same_points(cluster, lab, tmp_path):
    docs, _, ref_points = lab
    store = tmp_path / "ray"
    args = ["ingest", str(docs), "--ray", cluster, "--store", str(store), "--collection", "docs",
            "--no-progress", "--json", *CLI_CHUNKING]
    killed = finish(start_rag(args, cwd=tmp_path, **{FAULT_ENV: "3"}))  # SIGKILLs itself after 3 writes
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    partial = points(edge_settings(store))
    assert partial and set(partial) < set(ref_points)
    rerun = finish(start_rag(args, cwd=tmp_path))
    assert rerun.returncode == 1, rerun.stderr  # bad.pdf and empty.md fail
    assert points(edge_settings(store)) == ref_points
