"""Choose hybrid fusion settings on a BEIR data set's TRAIN queries, then report them on TEST.

Runs each leg (dense, BM25) once per query at the largest candidate depth, then scores every
fusion setting in the grid client-side with the same pure functions the Retriever uses
(rag.search.fusion), so the grid costs no extra engine calls. The corpus must already be ingested
(`rag eval retrieval DIR` does it).

    python benchmarks/tune_fusion.py [--data ../shared/data/scifact] [--store rag_store]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from pipelines.evaluate import collapse  # noqa: E402
from pipelines.stores import StoreSettings, open_store  # noqa: E402
from rag.search import fusion as F  # noqa: E402
from rag.evaluation.beir import load_beir  # noqa: E402
from rag.embed.encoder import SentenceEncoder  # noqa: E402
from rag.evaluation.metrics import evaluate  # noqa: E402
from rag.search.store import Leg, QuerySpec  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
DEPTHS = (50, 100, 200, 300)


def leg_runs(vs, encoder, queries: dict[str, str], depth: int):
    """Per query: dense and bm25 lists of (chunk id, score) and a chunk id -> doc id map."""
    qids = list(queries)
    vecs = encoder.encode([queries[q] for q in qids])
    dense, bm25, doc_of = {}, {}, {}
    for start in range(0, len(qids), 64):
        ids = qids[start:start + 64]
        specs = []
        for i, q in enumerate(ids):
            specs.append(QuerySpec(legs=[Leg(kind="dense", vector=vecs[start + i].tolist(), limit=depth)], limit=depth))
            specs.append(QuerySpec(legs=[Leg(kind="text", text=queries[q], limit=depth)], limit=depth))
        hits = vs.query_batch(specs)
        for i, q in enumerate(ids):
            dense[q] = [(h.id, h.score) for h in hits[2 * i]]
            bm25[q] = [(h.id, h.score) for h in hits[2 * i + 1]]
            for h in hits[2 * i] + hits[2 * i + 1]:
                doc_of[h.id] = h.payload["source"]
    return dense, bm25, doc_of


def fused_run(dense, bm25, doc_of, method, k, weights, depth):
    run = {}
    for q in dense:
        lists = [dense[q][:depth], bm25[q][:depth]]
        fused = F.fuse(method, lists, weights=weights, rrf_k=k)
        run[q] = collapse([doc_of[c] for c, _ in fused])
    return run


def single_leg(legs, which: str, qrels) -> dict:
    """The metrics of one leg alone ("dense" or "bm25") of leg_runs' output."""
    d, b, doc_of = legs
    lists = d if which == "dense" else b
    return evaluate({q: collapse([doc_of[c] for c, _ in lists[q]]) for q in lists}, qrels)


def grid():
    for depth in DEPTHS:
        for w in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0):
            weights = (w, 1.0)
            for k in (5, 10, 20, 40, 60, 100):
                yield "rrf", k, weights, depth
            yield "wsf", None, weights, depth
            yield "dbsf", None, weights, depth


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--store", default="rag_store")
    ap.add_argument("--collection")
    ap.add_argument("--json", help="write the chosen settings and figures here")
    args = ap.parse_args()
    data_dir = Path(args.data)
    if not (data_dir / "qrels" / "train.tsv").is_file():
        print(f"SKIPPED: {data_dir}/qrels/train.tsv not found (BEIR folder with a train split needed)")
        return 2
    console = Console()
    train, test = load_beir(data_dir, "train"), load_beir(data_dir, "test")
    store = StoreSettings(store_dir=args.store, collection=args.collection or f"beir-{data_dir.resolve().name}")
    vs = open_store(store)
    try:
        encoder = SentenceEncoder(vs.info.model)
        t0 = time.perf_counter()
        tr = leg_runs(vs, encoder, train.queries, max(DEPTHS))
        te = leg_runs(vs, encoder, test.queries, max(DEPTHS))
        console.print(f"legs for {len(train.queries)} train + {len(test.queries)} test queries in "
                      f"{time.perf_counter() - t0:.1f}s")
    finally:
        vs.close()

    scored = []
    for method, k, weights, depth in grid():
        m = evaluate(fused_run(*tr, method, k, weights, depth), train.qrels)
        scored.append((m["ndcg@10"], method, k, weights, depth))
    scored.sort(key=lambda x: -x[0])
    top = Table(title="Best fusion settings on TRAIN (nDCG@10)", title_justify="left")
    for c in ("train ndcg@10", "fusion", "k", "weights dense,bm25", "candidates"):
        top.add_column(c)
    for s, method, k, weights, depth in scored[:10]:
        top.add_row(f"{s:.4f}", method, str(k or "-"), f"{weights[0]:g},{weights[1]:g}", str(depth))
    console.print(top)

    # The same, restricted to what runs inside Qdrant in one call (rrf or dbsf, equal weights)
    # at a candidate depth that keeps hybrid latency low on large collections.
    fast = [x for x in scored if x[1] in ("rrf", "dbsf") and x[3][0] == x[3][1] and x[4] <= 100]
    ft = Table(title="Best engine-fused settings (equal weights, <= 100 candidates) on TRAIN", title_justify="left")
    for c in ("train ndcg@10", "fusion", "k", "candidates"):
        ft.add_column(c)
    for s, method, k, weights, depth in fast[:5]:
        ft.add_row(f"{s:.4f}", method, str(k or "-"), str(depth))
    console.print(ft)

    _, method, k, weights, depth = scored[0]
    _, f_method, f_k, f_weights, f_depth = fast[0]
    rows = {
        "dense": (single_leg(tr, "dense", train.qrels), single_leg(te, "dense", test.qrels)),
        "bm25": (single_leg(tr, "bm25", train.qrels), single_leg(te, "bm25", test.qrels)),
        "hybrid rrf k=60 1:1 (default)": (
            evaluate(fused_run(*tr, "rrf", 60, (1.0, 1.0), 100), train.qrels),
            evaluate(fused_run(*te, "rrf", 60, (1.0, 1.0), 100), test.qrels)),
        f"hybrid chosen: {method} k={k} w={weights[0]:g},{weights[1]:g} c={depth}": (
            evaluate(fused_run(*tr, method, k, weights, depth), train.qrels),
            evaluate(fused_run(*te, method, k, weights, depth), test.qrels)),
        f"hybrid fast: {f_method} k={f_k} c={f_depth}": (
            evaluate(fused_run(*tr, f_method, f_k, f_weights, f_depth), train.qrels),
            evaluate(fused_run(*te, f_method, f_k, f_weights, f_depth), test.qrels)),
    }
    t = Table(title="Chosen on train, reported on test", title_justify="left")
    for c in ("retrieval", "train ndcg@10", "test ndcg@10", "test recall@100", "test mrr@10"):
        t.add_column(c)
    for name, (a, b) in rows.items():
        t.add_row(name, f"{a['ndcg@10']:.4f}", f"{b['ndcg@10']:.4f}", f"{b['recall@100']:.4f}", f"{b['mrr@10']:.4f}")
    console.print(t)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "chosen": {"fusion": method, "rrf_k": k, "weights": weights, "candidates": depth},
            "fast": {"fusion": f_method, "rrf_k": f_k, "weights": f_weights, "candidates": f_depth},
            "results": {n: {"train": a, "test": b} for n, (a, b) in rows.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
