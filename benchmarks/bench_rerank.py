"""Cross-encoder reranking on SciFact: what it adds to hybrid retrieval, and what it costs.

    python benchmarks/bench_rerank.py --model /tmp/ce-scifact [--store /tmp/rs_ctx] [--depths 20,50]

The cross-encoder comes from `rag train cross-encoder ../shared/data/scifact --out DIR` (train
qrels only; hard negatives mined by our hybrid retriever). In one run, on the test split:
- nDCG@10 and recall@10 of hybrid (the reference: today's default) and of hybrid + rerank at
  each depth (`rag eval retrieval --rerank DIR --rerank-depth N` computes the same);
- per-query latency (one query at a time, as a user's search runs: p50 and p95 over
  --latency-queries test queries) of hybrid and of each depth, and the latency reranking adds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from pipelines.evaluate import default_collection, eval_retrieval  # noqa: E402
from pipelines.stores import StoreSettings, open_store  # noqa: E402
from rag.embed.encoder import SentenceEncoder  # noqa: E402
from rag.evaluation.beir import load_beir  # noqa: E402
from rag.search.rerank import CrossEncoderReranker  # noqa: E402
from rag.search.retrieval import Retriever  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "scifact"


def latency(vs, encoder, queries: list[str], reranker=None, depth: int = 20) -> list[float]:
    r = Retriever(vs, encoder, reranker=reranker, rerank_depth=depth)
    r.search(queries[0])  # warm
    out = []
    for q in queries:
        t0 = time.perf_counter()
        r.search(q)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="cross-encoder folder")
    ap.add_argument("--store", default="/tmp/rs_ctx")
    ap.add_argument("--depths", default="20,50")
    ap.add_argument("--latency-queries", type=int, default=50)
    ap.add_argument("--out", help="write the figures as JSON")
    args = ap.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    encoder = SentenceEncoder()
    store = StoreSettings(store_dir=args.store, collection=default_collection(str(DATA)))
    reranker = CrossEncoderReranker(args.model)
    rows = {}
    base = eval_retrieval(str(DATA), encoder=encoder, store=store, modes=["hybrid"], progress=False)
    rows["hybrid"] = base.results[0].metrics
    for d in depths:
        rep = eval_retrieval(str(DATA), encoder=encoder, store=store, modes=[],
                             retriever_settings={"reranker": reranker, "rerank_depth": d}, progress=False)
        rows[f"hybrid + rerank@{d}"] = rep.results[-1].metrics
    queries = list(load_beir(str(DATA), "test").queries.values())[:args.latency_queries]
    vs = open_store(store)
    try:
        lat = {"hybrid": latency(vs, encoder, queries)}
        for d in depths:
            lat[f"hybrid + rerank@{d}"] = latency(vs, encoder, queries, reranker, d)
    finally:
        vs.close()
    p50 = {k: statistics.median(v) for k, v in lat.items()}
    t = Table(title=f"SciFact test ({base.queries} queries): hybrid vs hybrid + cross-encoder rerank "
                    f"({Path(args.model).name}); latency over {len(queries)} single queries")
    for c in ("run", "nDCG@10", "recall@10", "p50 ms", "p95 ms", "added p50 ms"):
        t.add_column(c, justify="left" if c == "run" else "right")
    for k, m in rows.items():
        v = sorted(lat[k])
        t.add_row(k, f"{m['ndcg@10']:.4f}", f"{m['recall@10']:.4f}", f"{p50[k]:.0f}",
                  f"{v[int(0.95 * (len(v) - 1))]:.0f}", "-" if k == "hybrid" else f"{p50[k] - p50['hybrid']:.0f}")
    Console(width=None if sys.stdout.isatty() else 10000).print(t)
    if args.out:
        Path(args.out).write_text(json.dumps({"metrics": rows, "latency_ms": lat}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
