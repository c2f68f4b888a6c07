#!/usr/bin/env python
"""Ray ingest against the single-process ingest, same PDFs, same run, this machine.

1. pipelines.ingest.ingest() of the PDFs into a fresh Edge store (warm encoder): pages/s, chunks/s.
2. pipelines.ray_ingest.ingest_ray() of the same PDFs into another fresh store, on a local Ray
   started by the job (this machine's CPUs): pages/s, chunks/s end to end, and without Ray's
   start; per-stage rates from the seconds each stage's workers spent (summed over workers, so
   per core): stage 1 (hash, load with pypdf, clean, chunk) pages/s, stage 2 (encode) chunks/s,
   stage 3 (the driver's writes) chunks/s.
3. The two collections' point ids, which must be equal.

Usage: flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_ray_ingest.py [--data DIR] [-n 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PDFS = ["1908.10084v1_Sentence-BERT.pdf", "1902.01718v2_BERTserini.pdf", "1704.00051v2_DrQA.pdf",
        "1606.05250v3_SQuAD.pdf", "1706.03762v5_Attention_Is_All_You_Need.pdf"]


def pages(paths) -> int:
    from pypdf import PdfReader

    return sum(len(PdfReader(p).pages) for p in paths)


def ids(settings) -> set[str]:
    from pipelines.stores import open_store

    store = open_store(settings)
    try:
        return {pid for pid, _ in store.payloads(["source"])}
    finally:
        store.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/shared/data/pdfs/arxiv")
    ap.add_argument("-n", type=int, default=3, help="how many of the arXiv PDFs")
    ap.add_argument("--writer-actor", action="store_true",
                    help="also run the Ray path with one writer actor owning the store (--ray-writers 1: the "
                         "path several writers take with a Qdrant server)")
    args = ap.parse_args()
    files = [Path(args.data) / f for f in PDFS[:args.n]]
    if not all(f.is_file() for f in files):
        print(f"SKIPPED: PDFs missing under {args.data}")
        return 2

    from pipelines.ingest import ingest
    from pipelines.ray_ingest import ingest_ray
    from pipelines.stores import StoreSettings
    from rag.embed.encoder import SentenceEncoder

    n_pages = pages(files)
    enc = SentenceEncoder()
    enc.warm_up()
    print(f"{len(files)} PDFs, {n_pages} pages; {os.cpu_count()} CPUs; encoder {enc.model} on {enc.device or 'auto'}")
    with tempfile.TemporaryDirectory() as tmp:
        single = StoreSettings(store_dir=f"{tmp}/single")
        r1 = ingest(files, encoder=enc, store=single, progress=False)
        distributed = StoreSettings(store_dir=f"{tmp}/ray")
        stats: dict = {}
        r2 = ingest_ray(files, encoder=enc, store=distributed, progress=False, stats=stats)
        same = ids(single) == ids(distributed)
        if args.writer_actor:
            actor_store = StoreSettings(store_dir=f"{tmp}/ray-writer")
            stats3: dict = {}
            r3 = ingest_ray(files, encoder=enc, store=actor_store, progress=False, stats=stats3, writers=1)
            same = same and ids(single) == ids(actor_store)
        disk = sum(f.stat().st_size for f in Path(f"{tmp}/single").rglob("*") if f.is_file())

    print("\n| path | seconds | pages/s | chunks/s | chunks |")
    print("|---|---|---|---|---|")
    print(f"| single process | {r1.seconds:.1f} | {n_pages / r1.seconds:.2f} | {r1.chunks_per_second:.1f} | "
          f"{r1.chunks_written} |")
    print(f"| Ray, end to end | {r2.seconds:.1f} | {n_pages / r2.seconds:.2f} | {r2.chunks_per_second:.1f} | "
          f"{r2.chunks_written} |")
    run = r2.seconds - stats["ray_start_s"]
    print(f"| Ray, without its start ({stats['ray_start_s']:.1f} s) | {run:.1f} | {n_pages / run:.2f} | "
          f"{r2.chunks_written / run:.1f} | |")
    if args.writer_actor:
        run3 = r3.seconds - stats3["ray_start_s"]
        print(f"| Ray, one writer actor, without its start | {run3:.1f} | {n_pages / run3:.2f} | "
              f"{r3.chunks_written / run3:.1f} | {r3.chunks_written} |")
    print(f"\nRay / single-process time: {r2.seconds / r1.seconds:.2f}x end to end, {run / r1.seconds:.2f}x "
          "without Ray's start")
    print("\n| Ray stage | worker-seconds | rate per worker |")
    print("|---|---|---|")
    print(f"| 1: hash, pypdf load, clean, chunk | {stats['stage1_s']:.1f} | "
          f"{n_pages / stats['stage1_s']:.2f} pages/s |")
    print(f"| 2: encode ({stats['encoders']} actor(s), 1 CPU each) | {stats['stage2_s']:.1f} | "
          f"{r2.chunks_written / stats['stage2_s']:.1f} chunks/s |")
    print(f"| 3: driver writes (Edge) | {stats['write_s']:.2f} | {r2.chunks_written / stats['write_s']:.0f} chunks/s |")
    if args.writer_actor:
        print(f"| 3: one writer actor (Edge) | {stats3['write_s']:.2f} | "
              f"{r3.chunks_written / stats3['write_s']:.0f} chunks/s |")
    print(f"\nEdge store on disk: {disk / 1e6:.1f} MB for {r1.total_points} points = {disk / r1.total_points:.0f} "
          f"bytes/point (vectors, payloads, text index); {r1.chunks_written / n_pages:.2f} chunks/page")
    print(f"\npoint ids equal: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
