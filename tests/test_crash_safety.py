"""Crash safety: `rag ingest` SIGKILLed after any store write leaves a collection that the next
run repairs to exactly what a clean ingest of the same files gives, and the killed job's
loader process does not outlive it.

The job is `rag ingest` run by tests/kill_after_writes.py, which SIGKILLs it once N store writes
have landed. From a store
holding version 1 of {a.txt, b.md, e.txt}, the folder changes to: a.txt unchanged, b.md
rewritten (4 chunks -> 5, all different), d.txt new (5 chunks), e.txt deleted (--prune).
With --batch-size 4 the second run makes exactly these writes:

    1  upsert b[0:4]                    a replace half done: b holds old 4/4 and new 4/5
    2  upsert b[4], d[0:3]              b's new version whole, its old one not yet deleted
    3  delete_other_versions(b)         b done; d has 3 of 5
    4  upsert d[3:5]                    d whole (it has no old version)
    5  delete_other_versions(d)         nothing to delete
    6  delete_source(e)                 the prune; killed before the final flush and close

Each kill point runs in its own copy of the store; the killed jobs run side by side. Point 5
is left out: the store it leaves is the same as after 4, and each killed job costs seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers_ingest import (CLI_CHUNKING, Snapshot, cli_env, copy_store, edge_settings, finish, sentences,
                            sha256, small_chunker, snapshot, src, start_rag, wait_gone, write)
from pipelines.ingest import ingest
from pipelines.stores import StoreSettings

pytestmark = pytest.mark.slow

KILL_POINTS = [1, 2, 3, 4, 6]
WRITES = 6
MARKER = "RAG_TEST_RUN_MARKER"  # in the environment of a job and of every process it starts

V1 = {
    "a.txt": sentences("alpha", 4),  # 2 chunks
    "b.md": f"# Beta\n\n{sentences('beta', 3)}\n\n## Usage\n\n{sentences('beta', 3, 10)}\n",  # 4
    "e.txt": sentences("echo", 4),  # 2
}
V2 = {
    "b.md": f"# Beta revised\n\n{sentences('beta', 5, 20)}\n\n## Usage\n\n{sentences('beta', 3, 30)}\n",  # 5
    "d.txt": sentences("delta", 10),  # 5
}


@dataclass
class Lab:
    docs: Path
    sources: dict[str, str]  # file name -> source
    hashes: dict[str, str]  # "a", "b1", "b2", "d", "e" -> file hash
    clean: Snapshot
    stores: dict[int, StoreSettings] = field(default_factory=dict)
    runs: dict[int, subprocess.CompletedProcess] = field(default_factory=dict)
    markers: dict[int, str] = field(default_factory=dict)


# The kill points and expected states below are worked out for these files' chunk counts
# without document context (which takes some of each 32-token chunk); crash safety does not
# depend on it.
def ingest_args(docs: Path, settings: StoreSettings) -> list[str]:
    return ["ingest", str(docs), "--store", settings.store_dir, "--collection", settings.collection,
            "--prune", "--batch-size", "4", "--no-progress", *CLI_CHUNKING, "--no-context"]


def api_ingest(docs: Path, settings: StoreSettings, encoder):
    chunker = small_chunker()
    chunker.context = False
    return ingest([docs], encoder=encoder, store=settings, chunker=chunker, prune=True,
                  batch_size=4, progress=False)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, encoder):
    root = tmp_path_factory.mktemp("crash")
    docs = root / "docs"
    files = write(docs, V1)
    hashes = {"a": sha256(files["a.txt"]), "b1": sha256(files["b.md"]), "e": sha256(files["e.txt"])}
    base = edge_settings(root / "base")
    r = api_ingest(docs, base, encoder)
    assert r.counts()["ingested"] == 3 and r.total_points == 8, r
    base_snap = snapshot(base)
    assert base_snap.versions(src(files["b.md"])) == {hashes["b1"]: (4, 4)}

    files.update(write(docs, V2))
    files["e.txt"].unlink()
    hashes.update(b2=sha256(files["b.md"]), d=sha256(files["d.txt"]))

    # The killed runs, all at once.
    procs, stores, markers = {}, {}, {}
    for n in KILL_POINTS:
        stores[n] = copy_store(base, root / f"kill-{n}")
        markers[n] = f"{MARKER}={uuid.uuid4()}"
        key, value = markers[n].split("=")
        procs[n] = start_rag(ingest_args(docs, stores[n]), cwd=root, kill_after_writes=n, **{key: value})

    # Meanwhile, the reference: a clean ingest of the changed folder into a fresh store.
    clean = edge_settings(root / "clean")
    api_ingest(docs, clean, encoder)
    lab = Lab(docs=docs, sources={name: src(p) for name, p in files.items()}, hashes=hashes,
              clean=snapshot(clean), stores=stores, markers=markers)
    lab.runs = {n: finish(p) for n, p in procs.items()}
    return lab


def test_clean_reference(lab):
    s, h, c = lab.sources, lab.hashes, lab.clean
    assert c.sources == {s["a.txt"], s["b.md"], s["d.txt"]}
    assert c.versions(s["a.txt"]) == {h["a"]: (2, 2)}
    assert c.versions(s["b.md"]) == {h["b2"]: (5, 5)}
    assert c.versions(s["d.txt"]) == {h["d"]: (5, 5)}
    assert c.count == len(c.ids) == 12


def expected_killed_state(lab: Lab, n: int) -> dict[str, dict[str, tuple[int, int]]]:
    s, h = lab.sources, lab.hashes
    state = {s["a.txt"]: {h["a"]: (2, 2)}, s["e.txt"]: {h["e"]: (2, 2)}}
    state[s["b.md"]] = {1: {h["b1"]: (4, 4), h["b2"]: (4, 5)},
                        2: {h["b1"]: (4, 4), h["b2"]: (5, 5)}}.get(n, {h["b2"]: (5, 5)})
    if n >= 2:
        state[s["d.txt"]] = {h["d"]: (3, 5) if n < 4 else (5, 5)}
    if n >= 6:
        del state[s["e.txt"]]
    return state


def expected_repair(lab: Lab, n: int) -> dict[str, str]:
    s = lab.sources
    out = {s["a.txt"]: "unchanged",
           s["b.md"]: "replaced" if n < 3 else "unchanged",
           s["d.txt"]: "ingested" if n < 4 else "unchanged"}
    if n < 6:
        out[s["e.txt"]] = "pruned"
    return out


@pytest.mark.parametrize("n", KILL_POINTS)
def test_killed_run_is_repaired_by_the_next_run(lab, encoder, n):
    run = lab.runs[n]
    assert run.returncode == -signal.SIGKILL, f"rc={run.returncode}\n{run.stdout}\n{run.stderr}"
    assert_nothing_left(lab.markers[n])

    # The kill came exactly where the write schedule says (and the lock died with the job).
    killed = snapshot(lab.stores[n])
    assert {source: killed.versions(source) for source in killed.sources} == expected_killed_state(lab, n)
    assert killed.count == len(killed.ids)
    if n == WRITES:  # the last write was the last change: the schedule above is complete
        assert killed.points == lab.clean.points

    # A plain re-run repairs exactly what the kill left unfinished ...
    report = api_ingest(lab.docs, lab.stores[n], encoder)
    assert {o.source: o.status for o in report.outcomes} == expected_repair(lab, n)
    # ... to exactly the clean ingest's points: same ids, none twice, none missing, same versions.
    after = snapshot(lab.stores[n])
    assert after.ids == lab.clean.ids
    assert after.count == len(after.ids) == lab.clean.count == report.total_points
    assert after.points == lab.clean.points
    # ... each point with the clean ingest's sentence vectors: they go in and out with their chunk
    assert after.units and after.same_units(lab.clean)


def assert_nothing_left(marker: str) -> None:
    """No process of the killed job (its loader, the loader's resource tracker) is still alive."""
    left = wait_gone(marker)
    if left:
        for pid in left:  # ours: they carry this test's unique marker
            os.kill(pid, signal.SIGKILL)
        pytest.fail(f"processes of the killed job still running: {left}")


# ~21 KB of text per file, 9 chunks of the default size (long words: few tokens per byte);
# ~47 KB per file on the loader's queue.
BULKY = ("International organizations administration responsibilities understanding relationships "
         "environmental characteristics. ") * 180

ORPHAN_LOADER = """
import os, signal, sys, time
import multiprocessing as mp
from pipelines.ingest_loader import loader_main
from rag.ingest.chunking import Chunker
from rag.embed.encoder import DEFAULT_MODEL

if __name__ == "__main__":
    paths = sys.argv[1:]
    ctx = mp.get_context("spawn")
    requests, q = ctx.Queue(), ctx.Queue(maxsize=8)
    proc = ctx.Process(target=loader_main, daemon=True,
                       args=(requests, q, Chunker().to_dict(), DEFAULT_MODEL, os.getpid()))
    proc.start()
    requests.put((paths, 256))
    print(proc.pid, flush=True)
    while q.qsize() < len(paths) + 1:  # every file and the end marker put, none read
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_loader_exits_when_the_job_dies_after_its_last_put(tmp_path):
    """The loader has put every file on its queue and is at exit, waiting for its feeder thread
    to flush into the pipe what the job will never read (~280 KB, far over a pipe's 64 KiB).
    When the job dies it must exit all the same (it did not: it waited forever).
    A stand-in job that kills itself at exactly that moment makes this deterministic."""
    docs = tmp_path / "docs"
    files = write(docs, {f"bulky-{i}.txt": f"Part {i}. {BULKY}" for i in range(6)})
    marker = f"{MARKER}={uuid.uuid4()}"
    key, value = marker.split("=")
    with open(tmp_path / "out.txt", "w+") as out:  # a file: a lingering child would hold a pipe
        job = subprocess.run([sys.executable, "-c", ORPHAN_LOADER, *map(str, files.values())],
                             cwd=tmp_path, env=cli_env(**{key: value}), stdout=out,
                             stderr=subprocess.STDOUT, timeout=300)
        out.seek(0)
        output = out.read()
    assert job.returncode == -signal.SIGKILL, output
    assert output.split()[0].isdigit(), output
    assert_nothing_left(marker)
