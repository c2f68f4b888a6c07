"""One measured step in a fresh Python process: its seconds and the growth of its peak RSS
(VmHWM) over the value after its inputs are loaded, so that two implementations compared on the
same embeddings each start from the same clean process (bench_mining, bench_cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, {root!r})

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
emb = np.load({path!r})
params = json.loads({params!r})
import torch
torch.set_num_threads({threads})
{setup}
base = hwm()
t0 = time.perf_counter()
{step}
seconds = time.perf_counter() - t0
json.dump({{"seconds": seconds, "peak_extra_bytes": hwm() - base, "result": result}}, open({out!r}, "w"))
"""


def run_measured(emb: np.ndarray, setup: str, step: str, **params) -> dict:
    """Run `setup` (imports; `emb` and `params` are defined) then the timed `step`, which must set
    `result` (JSON-serialisable), in a child process; returns seconds, peak_extra_bytes, result."""
    with tempfile.TemporaryDirectory() as tmp:
        path, out = os.path.join(tmp, "emb.npy"), os.path.join(tmp, "out.json")
        np.save(path, np.ascontiguousarray(emb, dtype=np.float32))
        code = _CHILD.format(root=str(ROOT), path=path, params=json.dumps(params), out=out, setup=setup,
                             step=step, threads=len(os.sched_getaffinity(0)))
        subprocess.run([sys.executable, "-c", code], check=True)
        return json.loads(Path(out).read_text())


def print_ratios(ours: dict, st: dict) -> None:
    """The two `run_measured` results side by side: sentence-transformers' time and peak extra
    memory over ours."""
    print(f"\ntime ratio (st / ours): {st['seconds'] / ours['seconds']:.2f}; memory ratio (st / ours): "
          f"{st['peak_extra_bytes'] / max(ours['peak_extra_bytes'], 1):.1f}")


def add_embedding_args(p) -> None:
    """Where the 100k embeddings of a `scale` run come from."""
    p.add_argument("--store", default="rag_store")
    p.add_argument("--collection", default="recombined-100000")
    p.add_argument("--random", action="store_true", help="random unit vectors instead of a collection")
    p.add_argument("-n", type=int, default=100_000)


def load_embeddings(args) -> tuple[np.ndarray, str]:
    """(unit vectors, a label): random ones, or the stored vectors of --collection; the 100k
    recombined-SciFact collection of bench_search.py is built first when it is missing (~5 min)."""
    if args.random:
        rng = np.random.default_rng(0)
        emb = rng.normal(size=(args.n, 384)).astype(np.float32)
        return emb / np.linalg.norm(emb, axis=1, keepdims=True), f"{args.n} random unit vectors (dim 384)"
    from pipelines.stores import StoreSettings, collection_vectors

    settings = StoreSettings(store_dir=args.store, collection=args.collection)
    if args.collection == "recombined-100000":
        from bench_search import DEFAULT_DATA, build_100k

        from rag.embed.encoder import SentenceEncoder

        build_100k(Path(DEFAULT_DATA), settings, SentenceEncoder(), args.n).close()
    _, emb = collection_vectors(settings)
    emb = emb[:args.n]
    return emb, f"{len(emb)} stored vectors of collection '{args.collection}' (dim {emb.shape[1]})"
