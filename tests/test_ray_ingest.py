"""`rag ingest --ray` on a local Ray cluster started by the test (2 logical CPUs, no dashboard):
the same point ids and payloads as the single-process job, also after a fault mid-job: an
encoder actor SIGKILLed while encoding, a stage-1 worker SIGKILLed while running a load/chunk
task, a writer actor SIGKILLed (the store handed to one writer actor, the path a Qdrant server
takes with several), the driver SIGKILLed (then the same command run again); bad files
reported as in the single-process path. And the default path never imports Ray. (The writer's
retries on transient store errors are tested on the write step both paths share:
tests/test_store_retry.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import slow_stage1
from helpers_ingest import CLI_CHUNKING, edge_settings, finish, sentences, small_chunker, start_rag, write
from pipelines.ingest import ingest
from pipelines.stores import StoreSettings, open_store
from rag.errors import ConfigError

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

    from pipelines import ray_ingest
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


SLOW_STAGE1 = slow_stage1.SLOW  # stage 1 of files named slow-* waits SLOW_SECONDS in this cluster's jobs
SLOW_SECONDS = slow_stage1.SECONDS


@pytest.fixture(scope="module")
def cluster():
    """A local cluster whose jobs started in this process run stage 1 through tests/slow_stage1.py
    (its workers import it by name: they inherit the raylet's environment, so its PYTHONPATH)."""
    with pytest.MonkeyPatch.context() as mp:
        here = str(Path(__file__).resolve().parent)
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ray_ingest, "prepare_file", slow_stage1.prepare_file)
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


def ray_worker_pids(prefix: str) -> dict[int, str]:
    """pid -> process title of the live Ray workers whose title starts with `prefix`. Ray titles a
    worker `ray::IDLE` between tasks, `ray::prepare_file` while it runs that task, and an actor's
    `ray::EncoderActor` (`ray::EncoderActor.encode` during a call)."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                title = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if title.startswith(prefix):
                out[int(d.name)] = title
    return out


def encoder_actor_pids() -> dict[int, str]:
    return ray_worker_pids("ray::EncoderActor")


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
    killed = finish(start_rag(args, cwd=tmp_path, kill_after_writes=3))  # SIGKILLs itself after 3 writes
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    partial = points(edge_settings(store))
    assert partial and set(partial) < set(ref_points)
    rerun = finish(start_rag(args, cwd=tmp_path))
    assert rerun.returncode == 1, rerun.stderr  # bad.pdf and empty.md fail
    assert points(edge_settings(store)) == ref_points


@needs_ray
@pytest.mark.slow
def test_stage1_worker_killed_mid_task_is_retried_and_the_job_ends_the_same(cluster, encoder, tmp_path):
    """A worker SIGKILLed while it runs a load/chunk task: Ray runs the task again on another
    worker, and the job ends with exactly the single-process job's points. Every file here is a
    slow-* file, whose stage 1 waits SLOW_SECONDS in this cluster's workers, so whichever task
    the kill finds, it is one that is running (and 2 CPUs run 4 such tasks in two rounds)."""
    files = {f"{SLOW_STAGE1}a.txt": sentences("kappa", 10), f"{SLOW_STAGE1}b.md": f"# Lambda\n\n{sentences('lambda', 8)}\n",
             f"{SLOW_STAGE1}c.txt": sentences("mu", 6), f"{SLOW_STAGE1}bad.pdf": b"this is not a pdf"}
    docs = tmp_path / "docs"
    write(docs, files)
    ref = edge_settings(tmp_path / "single")
    ref_report = ingest([docs], encoder=encoder, store=ref, chunker=small_chunker(), progress=False)
    settings = edge_settings(tmp_path / "ray")
    result = {}
    started = time.monotonic()
    job = threading.Thread(target=lambda: result.update(report=ingest_ray(
        [docs], encoder=encoder, store=settings, chunker=small_chunker(), progress=False)))
    job.start()
    killed, job_was_running = None, False
    deadline = started + 30
    while killed is None and job.is_alive() and time.monotonic() < deadline:
        for pid in ray_worker_pids("ray::prepare_file"):  # running a task: idle workers are ray::IDLE
            os.kill(pid, signal.SIGKILL)
            killed, job_was_running = pid, job.is_alive()
            break
        time.sleep(0.005)
    job.join(timeout=60)
    assert killed is not None and job_was_running, "no stage-1 task was seen running"
    assert not job.is_alive() and "report" in result, "the job did not end"
    assert killed not in ray_worker_pids("ray::")  # that worker is gone; another one redid its task
    report = result["report"]
    assert outcomes(report) == outcomes(ref_report)
    assert report.counts() == {"ingested": 3, "replaced": 0, "unchanged": 0, "failed": 1, "pruned": 0}
    assert points(settings) == points(ref)


@needs_ray
@pytest.mark.slow
def test_writer_actor_gives_the_same_points_and_survives_a_kill(cluster, lab, encoder, tmp_path):
    """writers=1: the embedded store handed to one writer actor (rows go encoder -> writer by
    reference, as with parallel writers on a Qdrant server). The same points and report as the
    single-process job; a second run finds every file unchanged; the writer SIGKILLed while the
    job runs is restarted, reopens the store and the job still ends with exactly those points."""
    docs, ref_report, ref_points = lab
    settings = edge_settings(tmp_path / "ray")
    stats: dict = {}
    report = ingest_ray([docs], encoder=encoder, store=settings, chunker=small_chunker(), progress=False,
                        writers=1, stats=stats)
    assert stats["writers"] == 1
    assert outcomes(report) == outcomes(ref_report)
    assert report.chunks_written == ref_report.chunks_written and report.total_points == len(ref_points)
    assert points(settings) == ref_points
    again = ingest_ray([docs], encoder=encoder, store=settings, chunker=small_chunker(), progress=False, writers=1)
    assert again.counts()["unchanged"] == 4 and again.chunks_written == 0

    slow = tmp_path / "slow"
    write(slow, {f"{SLOW_STAGE1}{name}": body for name, body in FILES.items() if "/" not in name})
    ref = edge_settings(tmp_path / "slow-single")
    ref_slow = ingest([slow], encoder=encoder, store=ref, chunker=small_chunker(), progress=False)
    killed_store = edge_settings(tmp_path / "slow-ray")
    result = {}
    job = threading.Thread(target=lambda: result.update(report=ingest_ray(
        [slow], encoder=encoder, store=killed_store, chunker=small_chunker(), progress=False, writers=1)))
    job.start()
    killed, job_was_running = None, False
    started = time.monotonic()
    while killed is None and job.is_alive() and time.monotonic() < started + 60:
        # after the first slow stage-1 round, so that the writer has work before and after the kill
        pids = ray_worker_pids("ray::WriterActor")
        if pids and ray_worker_pids("ray::prepare_file") and time.monotonic() > started + SLOW_SECONDS:
            killed = next(iter(pids))
            os.kill(killed, signal.SIGKILL)
            job_was_running = job.is_alive()
        time.sleep(0.05)
    job.join(timeout=120)
    assert killed is not None and job_was_running, "no writer actor was seen while the job ran"
    assert not job.is_alive() and "report" in result, "the job did not end"
    assert outcomes(result["report"]) == outcomes(ref_slow)
    assert points(killed_store) == points(ref)


@needs_ray
def test_parallel_writers_need_a_qdrant_server(cluster, encoder, tmp_path):
    """More than one writer on an embedded store (one process's) is refused before anything is
    written; with a server URL, writers default to one per encoder actor (checked by the count
    rule; no Qdrant server runs here)."""
    from pipelines.ray_ingest import _writers_wanted

    with pytest.raises(ConfigError, match="parallel writers need a Qdrant server"):
        ingest_ray([tmp_path], encoder=encoder, store=edge_settings(tmp_path / "s"), progress=False, writers=2)
    assert not (tmp_path / "s").exists()
    server = StoreSettings(url="http://127.0.0.1:6333")
    assert _writers_wanted(server, False, None) is None and _writers_wanted(server, False, 5) == 5  # None: one per encoder
    assert _writers_wanted(edge_settings(tmp_path), False, None) == 0
    assert _writers_wanted(edge_settings(tmp_path), False, 1) == 1
