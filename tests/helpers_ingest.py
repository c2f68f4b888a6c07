"""Helpers for the store, ingest, crash-safety and CLI tests: small fixture documents, store
settings for both backends, store inspection, and running the `rag` command."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.stores import StoreSettings, open_store
from rag.ingest.chunking import Chunker
from rag.ingest.loaders import source_name
from rag.search import payload as P
from rag.search.store import TextIndexSettings

# Small chunks keep encoding cheap while still giving each file several chunks.
CHUNK_SIZE, CHUNK_OVERLAP = 32, 4
CLI_CHUNKING = ["--chunk-size", str(CHUNK_SIZE), "--chunk-overlap", str(CHUNK_OVERLAP)]

_WORDS = ("river", "granite", "lantern", "orchard", "harbor", "meadow", "copper", "violet", "glacier",
          "canyon", "saddle", "thistle", "beacon", "marble", "falcon", "juniper", "pepper", "tundra",
          "willow", "quartz", "ember", "walnut", "cobalt", "prairie")


def small_chunker() -> Chunker:
    return Chunker(CHUNK_SIZE, CHUNK_OVERLAP)


def sentences(topic: str, n: int, start: int = 0) -> str:
    """`n` distinct plain sentences about `topic` (about ten encoder tokens each)."""
    out = []
    for i in range(start, start + n):
        a, b = _WORDS[i % len(_WORDS)], _WORDS[(i * 7 + 3) % len(_WORDS)]
        out.append(f"The {topic} note {i} compares the {a} with the {b} today.")
    return " ".join(out)


def write(folder: Path, files: dict[str, str | bytes]) -> dict[str, Path]:
    """Write `files` (relative name -> text or bytes) under `folder`; return name -> path."""
    out = {}
    for name, content in files.items():
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
        out[name] = p
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def src(path: Path) -> str:
    return source_name(path)


# ---------------------------------------------------------------- stores


def edge_settings(root: Path, collection: str = "docs") -> StoreSettings:
    return StoreSettings(store_dir=str(root), collection=collection)


def local_settings(root: Path, collection: str = "docs") -> StoreSettings:
    return StoreSettings(local_path=str(root), collection=collection)


def text_index_for(settings: StoreSettings) -> TextIndexSettings | None:
    """qdrant-client's local mode can only score the plain tokenizer."""
    return TextIndexSettings.plain() if settings.local_path else None


class Snapshot:
    """What a collection holds: point id -> (source, file_hash, file_chunks); and each point's
    sentence vectors with their spans (`units`: point id -> (spans, vectors); empty in a
    collection without them)."""

    def __init__(self, points: dict[str, tuple[str, str, int]], count: int,
                 units: dict[str, tuple[list, Any]] | None = None):
        self.points = points
        self.count = count
        self.units = units or {}

    def same_units(self, other: Snapshot) -> bool:
        """The same points hold the same unit spans and (to float rounding) the same unit vectors."""
        if self.units.keys() != other.units.keys():
            return False
        for pid, (spans, vectors) in self.units.items():
            o_spans, o_vectors = other.units[pid]
            if spans != o_spans or np.shape(vectors) != np.shape(o_vectors):
                return False
            if len(vectors) and not np.allclose(vectors, o_vectors, atol=1e-4):
                return False
        return True

    @property
    def ids(self) -> set[str]:
        return set(self.points)

    def ids_of(self, source: str) -> set[str]:
        return {i for i, (s, _, _) in self.points.items() if s == source}

    @property
    def sources(self) -> set[str]:
        return {s for s, _, _ in self.points.values()}

    def versions(self, source: str) -> dict[str, tuple[int, int]]:
        """file_hash -> (points, expected chunk count) for one source."""
        n = Counter((h, e) for s, h, e in self.points.values() if s == source)
        return {h: (k, e) for (h, e), k in n.items()}


def snapshot(settings: StoreSettings) -> Snapshot:
    """Every point of the collection, read through the store's `payloads` scroll (ids included),
    plus the engine's own exact count, which must equal the number of distinct ids."""
    store = open_store(settings)
    try:
        return snapshot_of(store)
    finally:
        store.close()


def snapshot_of(store) -> Snapshot:
    """`snapshot` of a collection already open (`store`, a VectorStore)."""
    points, spans = {}, {}
    for pid, p in store.payloads(["source", "file_hash", "file_chunks", P.UNIT_SPANS]):
        points[pid] = (p["source"], p["file_hash"], int(p["file_chunks"]))
        spans[pid] = [tuple(s) for s in p.get(P.UNIT_SPANS) or []]
    units = {}
    if store.info.sentence_vectors and points:
        vectors = store.unit_vectors(list(points))
        units = {pid: (spans[pid], np.asarray(vectors.get(pid, []))) for pid in points}
    return Snapshot(points, store.count(), units)


def copy_store(settings: StoreSettings, dest_root: Path) -> StoreSettings:
    """Copy a closed Edge store folder; return settings for the copy."""
    shutil.copytree(settings.store_dir, dest_root)
    return edge_settings(dest_root, settings.collection)


# ---------------------------------------------------------------- processes


def rag_command() -> list[str]:
    """The installed `rag` script next to this interpreter, else `python -m pipelines.cli`."""
    script = Path(sys.executable).with_name("rag")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipelines.cli"]


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # Wide enough that rich does not fold file paths; one torch thread per job, since the
    # tests run several jobs side by side.
    env.update(COLUMNS="250", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def start_rag(args: list[str], cwd: Path, kill_after_writes: int | None = None, **env: str) -> subprocess.Popen:
    """Start `rag ARGS`; with `kill_after_writes`, one that SIGKILLs itself once that many store
    writes have landed (tests/kill_after_writes.py). Its output goes to files, not pipes: a child
    process that outlived it (what the crash tests look for) would hold a pipe open and hang the test."""
    command = rag_command() if kill_after_writes is None else [
        sys.executable, str(Path(__file__).with_name("kill_after_writes.py")), str(kill_after_writes)]
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(command + args, cwd=cwd, env=cli_env(**env), stdout=out, stderr=err)
    proc.output_files = (out, err)
    return proc


def finish(proc: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    """Wait for a `start_rag` job; its stdout and stderr as text."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{proc.args} did not finish in {timeout} s") from None
    texts = []
    for f in proc.output_files:
        f.seek(0)
        texts.append(f.read())
        f.close()
    return subprocess.CompletedProcess(proc.args, proc.returncode, *texts)


def processes_with_env(marker: str) -> list[int]:
    """Pids of live processes whose environment holds `marker` (Linux /proc)."""
    needle = marker.encode() + b"\0"
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if needle in (d / "environ").read_bytes():
                pids.append(int(d.name))
        except OSError:  # gone, a zombie, or not ours
            continue
    return pids


def wait_gone(marker: str, timeout: float = 20.0) -> list[int]:
    """Wait until no process carries `marker`; return the pids still alive at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        left = processes_with_env(marker)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


HOLDER = """
import sys
from pipelines.stores import StoreSettings, open_store
store = open_store(StoreSettings.model_validate_json(sys.argv[1]))
print("ready", flush=True)
sys.stdin.read()
store.close()
"""


def hold_store(settings: StoreSettings) -> subprocess.Popen:
    """Another process that opens the collection and keeps it open until its stdin closes."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, settings.model_dump_json()],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parents[1])
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise AssertionError(f"holder did not open the store: {line!r} {proc.stderr.read()}")
    return proc


def wait_job(c, job_id: str, seconds: float = 180) -> dict:
    """Poll a server job (GET /v1/jobs/ID with the client `c`) until it is done or failed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = c.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] in ("queued", "running", "done", "failed"), job
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished in {seconds} s")
