"""Query latency and BM25 throughput, in one run.

1. Dense, BM25 and hybrid latency (p50/p99, with and without query encoding) on the SciFact
   collection (ingest it first: `rag eval retrieval ../shared/data/scifact`).
2. The same on a 100k-chunk collection made from real text: SciFact abstracts split into
   sentences and recombined into new chunks (3-8 sentences from two documents each). Encoding
   100k chunks would take over an hour on 2 cores, so each chunk's vector is the normalised
   mean of its sentences' real embeddings (every SciFact sentence is encoded once). Built twice
   from the same draw: without sentence vectors, and with them (each chunk's sentences' own
   embeddings as its unit vectors, issue 26), timed in the same run (`--no-units` skips the
   second).
3. BM25 queries/s of our engine (Qdrant Edge text index, English stemmer and stop words)
   against bm25s (same chunk texts, PyStemmer English, English stop words), same queries.

    python benchmarks/bench_search.py [--data ../shared/data/scifact] [--store rag_store]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

from pipelines.stores import StoreSettings, open_store  # noqa: E402
from rag.evaluation.beir import corpus_documents, load_beir  # noqa: E402
from rag.ingest.chunking import Chunker, chunk_id  # noqa: E402
from rag.embed.encoder import SentenceEncoder  # noqa: E402
from rag.models import Chunk  # noqa: E402
from rag.search.retrieval import Retriever  # noqa: E402
from rag.search.store import CollectionInfo, Leg, QuerySpec  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
console = Console()


def pct(xs, p):
    return float(np.percentile(np.asarray(xs) * 1000, p))


def latency(vs, encoder, queries: list[str], settings: dict, rounds: int = 1) -> dict:
    out = {}
    for mode in ("dense", "bm25", "hybrid"):
        r = Retriever(vs, encoder, mode=mode, top_k=10, **settings)
        r.search(queries[0])  # warm
        search_only, end_to_end = [], []
        for _ in range(rounds):
            for q in queries:
                t0 = time.perf_counter()
                vec = encoder.encode([q]) if mode != "bm25" else None
                t1 = time.perf_counter()
                r.search_batch([q], vectors=vec)
                t2 = time.perf_counter()
                search_only.append(t2 - t1)
                end_to_end.append(t2 - t0)
        out[mode] = {"p50_ms": pct(search_only, 50), "p99_ms": pct(search_only, 99),
                     "p50_ms_with_encoding": pct(end_to_end, 50), "p99_ms_with_encoding": pct(end_to_end, 99)}
    return out


_ENCODED: dict = {}
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


def build_100k(data_dir: Path, store: StoreSettings, encoder: SentenceEncoder, n: int, seed: int = 0,
               units: bool = False):
    """Create (or reuse) the recombined 100k-chunk collection; with `units`, each chunk also holds
    its sentences' vectors (a collection with sentence vectors)."""
    try:
        vs = open_store(store)
        if vs.count() >= n:
            return vs
        vs.close()
    except Exception:
        pass
    docs = [d.pages[0].text.replace("\n\n", " ") for d in corpus_documents(data_dir)]
    per_doc = [[s for s in _SENT.split(t) if len(s) > 20] for t in docs]
    sentences = sorted({s for ss in per_doc for s in ss})
    index = {s: i for i, s in enumerate(sentences)}
    key = (str(data_dir), len(sentences))
    if key not in _ENCODED:  # both recombined collections share one encoding of the sentences
        console.print(f"encoding {len(sentences)} SciFact sentences once ...")
        t0 = time.perf_counter()
        _ENCODED[key] = encoder.encode(sentences, batch_size=64)
        console.print(f"  {len(sentences) / (time.perf_counter() - t0):.0f} sentences/s")
    vecs = _ENCODED[key]
    rng = random.Random(seed)
    info = CollectionInfo(model=encoder.model_id, dimension=encoder.dimension, chunk_size=256, chunk_overlap=0,
                          sentence_vectors=units)
    vs = open_store(store, info=info, create=True)
    usable = [ss for ss in per_doc if len(ss) >= 2]
    batch_chunks, batch_vecs, batch_units = [], [], []
    with Progress(console=console) as bar:
        task = bar.add_task("building 100k chunks", total=n)
        for i in range(n):
            a, b = rng.sample(usable, 2)
            take_a = rng.randint(2, min(5, len(a)))
            start = rng.randint(0, len(a) - take_a)
            parts = a[start:start + take_a] + b[:rng.randint(1, min(3, len(b)))]
            text = " ".join(parts)
            rows = vecs[[index[s] for s in parts]]
            v = rows.mean(axis=0)
            v /= np.linalg.norm(v)
            src = f"synthetic/{i // 10}"
            spans, at = [], 0
            for part in parts:
                spans.append((at, at + len(part)))
                at += len(part) + 1
            batch_chunks.append(Chunk(id=chunk_id(src, i, i + len(text), text), source=src, file_hash="synthetic",
                                      chunk_index=i % 10, page_start=1, page_end=1, char_start=0,
                                      char_end=len(text), text=text, n_tokens=0, n_tiktoken=0,
                                      units=spans if units else None))
            batch_vecs.append(v)
            batch_units.append(rows)
            if len(batch_chunks) == 1000:
                vs.upsert(batch_chunks, np.stack(batch_vecs), {c.source: 10 for c in batch_chunks},
                          unit_vectors=batch_units if units else None)
                batch_chunks, batch_vecs, batch_units = [], [], []
                bar.advance(task, 1000)
        if batch_chunks:
            vs.upsert(batch_chunks, np.stack(batch_vecs), {c.source: 10 for c in batch_chunks},
                      unit_vectors=batch_units if units else None)
    t0 = time.perf_counter()
    vs.optimize()
    console.print(f"optimize (HNSW build) {time.perf_counter() - t0:.1f}s")
    return vs


def bm25_throughput(vs, data_dir: Path, queries: list[str], encoder) -> dict:
    import bm25s
    import Stemmer

    chunker = Chunker(vs.info.chunk_size, vs.info.chunk_overlap)
    texts = [c.text for d in corpus_documents(data_dir) for c in chunker.split(d, encoder)]
    stemmer = Stemmer.Stemmer("english")
    t0 = time.perf_counter()
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False),
                    show_progress=False)
    index_s = time.perf_counter() - t0

    def run_bm25s():
        tok = bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, show_progress=False)
        retriever.retrieve(tok, k=10, show_progress=False, n_threads=1)

    def run_ours_each():
        for q in queries:
            vs.query_batch([QuerySpec(legs=[Leg(kind="text", text=q, limit=10)], limit=10, with_payload=False)])

    def run_ours_batch():
        vs.query_batch([QuerySpec(legs=[Leg(kind="text", text=q, limit=10)], limit=10, with_payload=False)
                        for q in queries])

    timings = {}
    for name, fn in (("bm25s", run_bm25s), ("ours", run_ours_each), ("ours_batch", run_ours_batch)):
        fn()
        best = min(_timed(fn) for _ in range(3))
        timings[name] = len(queries) / best
    return {"chunks": len(texts), "bm25s_index_s": index_s, "qps": timings}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--store", default="rag_store")
    ap.add_argument("--collection", default="beir-scifact")
    ap.add_argument("--big", type=int, default=100_000, help="size of the recombined collection")
    ap.add_argument("--no-units", action="store_true", help="skip the recombined collection with sentence vectors")
    ap.add_argument("--settings", help="JSON of retriever settings (fusion, rrf_k, weights, candidates)")
    ap.add_argument("--json", help="write figures here")
    args = ap.parse_args()
    data_dir = Path(args.data)
    if not (data_dir / "corpus.jsonl").is_file():
        print(f"SKIPPED: {data_dir}/corpus.jsonl not found (the SciFact BEIR folder)")
        return 2
    settings = json.loads(args.settings) if args.settings else {}
    if "weights" in settings:
        settings["weights"] = tuple(settings["weights"])
    queries = list(load_beir(data_dir, "test").queries.values())
    figures: dict = {"settings": settings}
    try:
        vs = open_store(StoreSettings(store_dir=args.store, collection=args.collection))
    except Exception as e:
        print(f"SKIPPED: {e}\n(ingest it first: rag eval retrieval {data_dir} --store {args.store})")
        return 2
    encoder = SentenceEncoder(vs.info.model)
    encoder.warm_up()
    try:
        figures["scifact"] = {"points": vs.count(), **latency(vs, encoder, queries, settings)}
        figures["bm25"] = bm25_throughput(vs, data_dir, queries, encoder)
    finally:
        vs.close()
    big = build_100k(data_dir, StoreSettings(store_dir=args.store, collection=f"recombined-{args.big}"),
                     encoder, args.big)
    try:
        figures["big"] = {"points": big.count(), **latency(big, encoder, queries, settings)}
    finally:
        big.close()
    if not args.no_units:
        big = build_100k(data_dir, StoreSettings(store_dir=args.store, collection=f"recombined-{args.big}-units"),
                         encoder, args.big, units=True)
        try:
            figures["big_units"] = {"points": big.count(), **latency(big, encoder, queries, settings)}
        finally:
            big.close()

    t = Table(title="Query latency, ms (search only | with query encoding)", title_justify="left")
    for c in ("collection", "points", "mode", "p50", "p99", "p50 +enc", "p99 +enc", "target"):
        t.add_column(c, justify="right")
    for key, name in (("scifact", "SciFact"), ("big", "recombined"), ("big_units", "recombined + sentences")):
        if key not in figures:
            continue
        f = figures[key]
        for mode in ("dense", "bm25", "hybrid"):
            m = f[mode]
            target = "p50 <= 5" if key.startswith("big") and mode == "hybrid" else ""
            t.add_row(name, str(f["points"]), mode, f"{m['p50_ms']:.2f}", f"{m['p99_ms']:.2f}",
                      f"{m['p50_ms_with_encoding']:.2f}", f"{m['p99_ms_with_encoding']:.2f}", target)
    console.print(t)
    b = figures["bm25"]
    t = Table(title=f"BM25 queries/s on SciFact ({b['chunks']} chunks, {len(queries)} test queries, top 10)",
              title_justify="left")
    for c in ("ours (one call per query)", "ours (one batched call)", "bm25s (batch, 1 thread)",
              "ratio ours/bm25s", "ratio batched/bm25s"):
        t.add_column(c, justify="right")
    q = b["qps"]
    t.add_row(f"{q['ours']:.0f}", f"{q['ours_batch']:.0f}", f"{q['bm25s']:.0f}",
              f"{q['ours'] / q['bm25s']:.2f}x", f"{q['ours_batch'] / q['bm25s']:.2f}x")
    console.print(t)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
