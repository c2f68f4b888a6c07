"""Choose the dense leg's unit weight and the hybrid fusion of a collection WITH sentence vectors
on a BEIR data set's TRAIN queries, then report them on TEST (issue 26).

Every chunk vector and every unit vector of the collection is read once and every query is
scored against all of them in numpy (exhaustive: the exact scores the engine's HNSW
approximates), BM25 is asked of the store once per query at the largest depth, and then every
setting of the grid is scored client-side with the package's own pure functions
(rag.search.units.combine's formula, rag.search.fusion), so the grid costs no engine calls:

- w, the chunk vector's share of the dense leg (w * chunk + (1 - w) * best unit);
- the fusion of that leg with BM25 (dbsf, wsf, rrf k), the dense leg's weight, the candidates;
- three legs fused (chunk, best unit, BM25), each with its own weight.

    python benchmarks/tune_units.py --store /tmp/scifact_store [--data ../shared/data/scifact]

The collection must have been ingested with sentence vectors (`rag eval retrieval DIR --store S`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from pipelines.evaluate import collapse  # noqa: E402
from pipelines.stores import StoreSettings, open_store  # noqa: E402
from rag.embed.encoder import SentenceEncoder  # noqa: E402
from rag.evaluation.beir import load_beir  # noqa: E402
from rag.evaluation.metrics import evaluate  # noqa: E402
from rag.search import fusion as F  # noqa: E402
from rag.search.retrieval import DEFAULT_CANDIDATES, DEFAULT_FUSION, DEFAULT_UNIT_WEIGHTS  # noqa: E402
from rag.search.store import Leg, QuerySpec  # noqa: E402
from rag.search.units import DEFAULT_UNIT_WEIGHT  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
MAX_DEPTH = 300


def read_vectors(vs):
    """(ids, source of each id, chunk matrix, unit matrix, owner row of each unit)."""
    ids, sources = [], {}
    for pid, payload in vs.payloads(["source"]):
        ids.append(pid)
        sources[pid] = payload["source"]
    chunk_rows, unit_rows, owner = [], [], []
    for start in range(0, len(ids), 256):
        page = ids[start:start + 256]
        vec = {h.id: h.vector for h in vs.retrieve(page, with_vectors=True)}
        units = vs.unit_vectors(page)
        for j, pid in enumerate(page):
            chunk_rows.append(np.asarray(vec[pid], dtype=np.float32))
            u = units.get(pid)
            if u is None or len(u) == 0:  # a point without units: its chunk vector stands in
                u = chunk_rows[-1][None, :]
            unit_rows.append(u)
            owner += [start + j] * len(u)
    return ids, sources, np.stack(chunk_rows), np.concatenate(unit_rows), np.asarray(owner)


def dense_scores(queries: np.ndarray, chunks: np.ndarray, units: np.ndarray, owner: np.ndarray):
    """(queries x chunks) cosine to each chunk's vector and to its best unit."""
    c = queries @ chunks.T
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    u = np.empty_like(c)
    for a in range(0, len(queries), 64):
        block = queries[a:a + 64] @ units.T
        u[a:a + 64] = np.maximum.reduceat(block, starts, axis=1)
    return c, u


def top(ids, scores: np.ndarray, depth: int) -> list[tuple[str, float]]:
    idx = np.argpartition(-scores, depth)[:depth]
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return [(ids[i], float(scores[i])) for i in idx]


class Split:
    def __init__(self, name, data, vs, encoder, vectors):
        ids, self.sources, chunks, units, owner = vectors
        self.ids, self.qrels, self.qids = ids, data.qrels, list(data.queries)
        q = encoder.encode([data.queries[x] for x in self.qids])
        self.c, self.u = dense_scores(np.asarray(q, dtype=np.float32), chunks, units, owner)
        self.bm25 = {}
        for start in range(0, len(self.qids), 64):
            part = self.qids[start:start + 64]
            hits = vs.query_batch([QuerySpec(legs=[Leg(kind="text", text=data.queries[x], limit=MAX_DEPTH)],
                                             limit=MAX_DEPTH, with_payload=False) for x in part])
            for x, h in zip(part, hits):
                self.bm25[x] = [(p.id, p.score) for p in h]
        self._dense, self._three = {}, {}

    def dense(self, w: float, depth: int):
        key = (w, depth)
        if key not in self._dense:
            s = w * self.c + (1 - w) * self.u
            self._dense[key] = [top(self.ids, s[i], depth) for i in range(len(self.qids))]
        return self._dense[key]

    def legs3(self, depth: int):
        return ([top(self.ids, self.c[i], depth) for i in range(len(self.qids))],
                [top(self.ids, self.u[i], depth) for i in range(len(self.qids))])

    def run(self, lists_per_query) -> dict:
        return evaluate({q: collapse([self.sources[c] for c, _ in ranked])
                         for q, ranked in zip(self.qids, lists_per_query)}, self.qrels)

    def hybrid(self, w, depth, method, weights, k=F.DEFAULT_RRF_K):
        dense = self.dense(w, depth)
        return self.run([F.fuse(method, [d, self.bm25[q][:depth]], weights=weights, rrf_k=k)
                         for q, d in zip(self.qids, dense)])

    def three(self, depth, method, weights, k=F.DEFAULT_RRF_K):
        if depth not in self._three:
            self._three[depth] = self.legs3(depth)
        c, u = self._three[depth]
        return self.run([F.fuse(method, [c[i], u[i], self.bm25[q][:depth]], weights=weights, rrf_k=k)
                         for i, q in enumerate(self.qids)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--store", required=True)
    ap.add_argument("--collection")
    ap.add_argument("--json", help="write the grid's figures here")
    args = ap.parse_args()
    data_dir = Path(args.data)
    console = Console()
    train, test = load_beir(data_dir, "train"), load_beir(data_dir, "test")
    vs = open_store(StoreSettings(store_dir=args.store, collection=args.collection or f"beir-{data_dir.resolve().name}"))
    try:
        if not vs.info.sentence_vectors:
            print("SKIPPED: the collection has no sentence vectors")
            return 2
        t0 = time.perf_counter()
        encoder = SentenceEncoder(vs.info.model)
        vectors = read_vectors(vs)
        console.print(f"{len(vectors[0])} chunks, {len(vectors[3])} unit vectors read in {time.perf_counter() - t0:.0f}s")
        tr = Split("train", train, vs, encoder, vectors)
        te = Split("test", test, vs, encoder, vectors)
    finally:
        vs.close()
    console.print(f"scores of {len(tr.qids)} train + {len(te.qids)} test queries in {time.perf_counter() - t0:.0f}s")

    rows = []  # (train ndcg, description, settings)
    for w in (0.3, 0.4, 0.5, 0.6, 0.7, 1.0):
        rows.append((tr.run(tr.dense(w, 100))["ndcg@10"], f"dense w={w}", ("dense", w)))
    for w, depth in itertools.product((0.3, 0.4, 0.5, 0.6, 0.7), (50, 100, 200, 300)):
        for dw in (0.75, 1.0, 1.25, 1.5, 2.0, 2.5):
            for method in ("dbsf", "wsf"):
                m = tr.hybrid(w, depth, method, (dw, 1.0))
                rows.append((m["ndcg@10"], f"hybrid {method} w={w} dense x{dw} c={depth}",
                             ("hybrid", w, depth, method, (dw, 1.0), None)))
            for k in (10, 30, 60):
                m = tr.hybrid(w, depth, "rrf", (dw, 1.0), k)
                rows.append((m["ndcg@10"], f"hybrid rrf k={k} w={w} dense x{dw} c={depth}",
                             ("hybrid", w, depth, "rrf", (dw, 1.0), k)))
    for depth in (100, 300):
        for wc, wu in ((0.5, 0.5), (0.5, 1.0), (0.75, 0.75), (1.0, 1.0), (0.5, 1.5), (1.0, 0.5)):
            for method in ("dbsf", "wsf"):
                m = tr.three(depth, method, (wc, wu, 1.0))
                rows.append((m["ndcg@10"], f"three legs {method} chunk x{wc} unit x{wu} c={depth}",
                             ("three", depth, method, (wc, wu, 1.0))))
    rows.sort(key=lambda r: -r[0])

    def on(split, s):
        if s[0] == "dense":
            return split.run(split.dense(s[1], 100))
        if s[0] == "hybrid":
            _, w, depth, method, weights, k = s
            return split.hybrid(w, depth, method, weights, k or F.DEFAULT_RRF_K)
        _, depth, method, weights = s
        return split.three(depth, method, weights)

    current = ("hybrid", DEFAULT_UNIT_WEIGHT, DEFAULT_CANDIDATES, DEFAULT_FUSION, DEFAULT_UNIT_WEIGHTS, None)
    picks = [("today's defaults", current),
             ("best dense", next(r[2] for r in rows if r[2][0] == "dense")),
             *[(f"train #{i + 1}", r[2]) for i, r in enumerate([r for r in rows if r[2][0] != "dense"][:8])],
             ("best three-leg", next(r[2] for r in rows if r[2][0] == "three"))]
    t = Table(title="Chosen on train, read on test (exhaustive dense scores)", title_justify="left")
    for c in ("setting", "train ndcg@10", "test ndcg@10", "test recall@100", "test mrr@10"):
        t.add_column(c)
    described = {r[2]: r[1] for r in rows}
    out = []
    for name, s in picks:
        a, b = on(tr, s), on(te, s)
        desc = described.get(s, str(s))
        t.add_row(f"{name}: {desc}", f"{a['ndcg@10']:.4f}", f"{b['ndcg@10']:.4f}", f"{b['recall@100']:.4f}",
                  f"{b['mrr@10']:.4f}")
        out.append({"name": name, "setting": desc, "train": a, "test": b})
    console.print(t)
    if args.json:
        Path(args.json).write_text(json.dumps({"picks": out, "grid": [(r[0], r[1]) for r in rows]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
