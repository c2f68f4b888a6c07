"""Document context in chunks and document routing, measured on the sec10q filings: does a
chunk know whose filing it is, and does a question that names a filing search that filing?

    python benchmarks/bench_context.py [--store /tmp/bench_context] [--limit N] [--out JSON]
                                       [--collections sentence-vectors,context,no-context]

1. Ingests ../shared/data/sec10q/docs (12 10-Q filings, `YYYY QN TICKER.pdf`) with `rag ingest`
   into up to three collections: `sentence-vectors` (the defaults: document context -- file-name
   title, document title and section -- in front of the embedded and BM25-indexed text, and
   each chunk's sentences and rows embedded too), `context` (`--no-sentence-vectors`: one vector
   per chunk) and `no-context` (`--no-context --no-sentence-vectors`: each chunk's text alone).
   An existing collection is reused.
2. For each of the 116 questions of qna_multi.csv, for dense, BM25 and hybrid, with document
   routing off and auto (rag.search.routing: the filings the question names by their titles
   and file names, "Apple's", "Q1 2023", searched alone), the top 10:
   - right-filing share: of the 10 chunks, the share whose file name matches the question's
     `Source Docs` glob (e.g. `*2023 Q3 AAPL*`, `*AMZN*`);
   - figure recall: of the reference answer's figures (bench_sec10q.figures: money, percentages,
     grouped or decimal numbers, numbers >= 100 that are not years), the share found among the
     numbers of the 10 chunk texts (bench_sec10q.context_numbers), summed over questions.
   and, with routing, how many questions were routed and how many of them to filings the
   glob matches only.
3. One table, context on and off, routing off and auto, same run. Targets (issue 11):
   right-filing share >= 0.85, hybrid figure recall above both legs (context on, route auto).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench_sec10q import context_numbers, figures, load_questions  # noqa: E402
from pipelines.stores import StoreSettings, open_store  # noqa: E402
from rag.embed.encoder import SentenceEncoder  # noqa: E402
from rag.search.retrieval import Retriever  # noqa: E402

DOCS = ROOT.parent / "shared" / "data" / "sec10q" / "docs"
RAG = Path(sys.executable).with_name("rag")
MODES = ("dense", "bm25", "hybrid")
ROUTES = ("off", "auto")
# name -> (rag ingest options, document context, sentence vectors): the default first, then today's
# references (no sentence vectors; neither context nor sentence vectors).
COLLECTIONS = {"sentence-vectors": ([], "on", "on"),
               "context": (["--no-sentence-vectors"], "on", "off"),
               "no-context": (["--no-context", "--no-sentence-vectors"], "off", "off")}


def ingest(store: Path, name: str, extra: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([str(RAG), "ingest", str(DOCS), "--store", str(store), "--collection", name, *extra],
                          capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"rag ingest failed ({done.returncode}): {done.stderr[-2000:]}")
    return time.perf_counter() - t0


def measure(store: Path, name: str, questions: list[dict], encoder) -> dict:
    """{route: {mode: figures}} for one collection, and its point count."""
    vs = open_store(StoreSettings(store_dir=str(store), collection=name))
    try:
        retriever = Retriever(vs, encoder, top_k=10)
        texts = [q["Question"] for q in questions]
        vectors = encoder.encode(texts)
        out: dict = {"points": vs.count()}
        for route in ROUTES:
            out[route] = {}
            for mode in MODES:
                right = total = found = wanted = routed = routed_right = 0
                t0 = time.perf_counter()
                responses = retriever.search_batch(texts, top_k=10, mode=mode, route=route,
                                                   vectors=None if mode == "bm25" else vectors)
                seconds = time.perf_counter() - t0
                for q, resp in zip(questions, responses):
                    hits = resp.results
                    glob = q["Source Docs"].strip()
                    right += sum(fnmatch.fnmatch(Path(h.source).name, glob) for h in hits)
                    total += len(hits)
                    want = figures(q["Answer"])
                    have = set().union(*(context_numbers(h.text) for h in hits)) if hits else set()
                    wanted += len(want)
                    found += len(want & have)
                    if resp.route is not None and resp.route.routed:
                        routed += 1
                        routed_right += all(fnmatch.fnmatch(Path(s).name, glob) for s in resp.route.documents)
                out[route][mode] = {"right_filing": right / max(total, 1), "figure_recall": found / max(wanted, 1),
                                    "figures": wanted, "routed": routed, "routed_only_right": routed_right,
                                    "ms_per_query": 1000 * seconds / max(len(texts), 1)}
        return out
    finally:
        vs.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", default="/tmp/bench_context")
    ap.add_argument("--limit", type=int, help="first N questions only")
    ap.add_argument("--out", help="write the figures as JSON")
    ap.add_argument("--collections", default=",".join(COLLECTIONS),
                    help=f"which to build and measure, of {', '.join(COLLECTIONS)} (default: all)")
    args = ap.parse_args()
    store = Path(args.store)
    names = [n.strip() for n in args.collections.split(",") if n.strip()]
    if unknown := [n for n in names if n not in COLLECTIONS]:
        raise SystemExit(f"unknown collection(s) {unknown}: use {', '.join(COLLECTIONS)}")
    seconds = {}
    for name in names:
        seconds[name] = ingest(store, name, COLLECTIONS[name][0])
    questions = load_questions("multi", args.limit)
    encoder = SentenceEncoder()
    fig = {name: measure(store, name, questions, encoder) for name in names}
    t = Table(title=f"sec10q, {len(questions)} questions, top 10: document context and sentence vectors "
                    "on/off, routing off/auto")
    for col in ("context", "sentence vectors", "route", "mode", "right filing", "figure recall",
                "routed (only right filings)", "ms/query"):
        t.add_column(col, justify="left" if col in ("context", "sentence vectors", "route", "mode") else "right")
    for name in names:
        for route in ROUTES:
            for mode in MODES:
                f = fig[name][route][mode]
                t.add_row(*COLLECTIONS[name][1:], route, mode, f"{f['right_filing']:.3f}",
                          f"{f['figure_recall']:.3f}",
                          f"{f['routed']} ({f['routed_only_right']})" if route == "auto" else "-",
                          f"{f['ms_per_query']:.1f}")
    console = Console(width=None if sys.stdout.isatty() else 10000)
    console.print(t)
    console.print("points: " + ", ".join(f"{n} {fig[n]['points']}" for n in names)
                  + "; ingest s: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    on = fig[names[0]]["auto"]
    best_leg = max(on["dense"]["figure_recall"], on["bm25"]["figure_recall"])
    console.print(f"{names[0]}, route auto: target right-filing share >= 0.85 (hybrid): "
                  f"{on['hybrid']['right_filing']:.3f} -> "
                  f"{'PASS' if on['hybrid']['right_filing'] >= 0.85 else 'FAIL'}; hybrid figure recall above both "
                  f"legs: {on['hybrid']['figure_recall']:.3f} vs {best_leg:.3f} -> "
                  f"{'PASS' if on['hybrid']['figure_recall'] > best_leg else 'FAIL'}")
    if args.out:
        Path(args.out).write_text(json.dumps({"figures": fig, "ingest_seconds": seconds}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
