"""What tracing costs a search: p50 and p90 of `Retriever.search` with tracing off (rag.tracing's
no-op spans), and on with the SDK's batch processor feeding an exporter (the in-memory one, or
the console one writing to /dev/null), in alternating rounds over the same questions so that
drift of a shared machine hits both alike.

    .venv/bin/python benchmarks/bench_tracing.py --store /tmp/s24store --collection sec10q
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
QUESTIONS = ROOT.parent / "shared" / "data" / "sec10q" / "qna_multi.csv"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--collection", default="docs")
    ap.add_argument("--queries", type=int, default=40, help="questions per round (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=4, help="rounds of each, alternating (default: %(default)s)")
    ap.add_argument("--exporter", choices=("memory", "console"), default="memory")
    ap.add_argument("--questions", default=str(QUESTIONS), help="CSV with a Question column (default: %(default)s)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from pipelines.stores import StoreSettings, open_store
    from rag import tracing
    from rag.embed.encoder import SentenceEncoder
    from rag.search.retrieval import Retriever

    with open(args.questions, newline="", encoding="utf-8") as f:
        questions = [r["Question"] for r in csv.DictReader(f)][:args.queries]
    exporter = InMemorySpanExporter() if args.exporter == "memory" else ConsoleSpanExporter(out=open("/dev/null", "w"))
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    vs = open_store(StoreSettings(store_dir=args.store, collection=args.collection))
    try:
        retriever = Retriever(vs, SentenceEncoder(vs.info.model))
        for q in questions[:5]:
            retriever.search(q)  # warm: model, router, caches
        times: dict[str, list[float]] = {"off": [], "on": []}
        for _ in range(args.rounds):
            for state in ("off", "on"):
                if state == "on":
                    tracing.enable(provider)
                for q in questions:
                    t0 = time.perf_counter()
                    retriever.search(q)
                    times[state].append(time.perf_counter() - t0)
                tracing.disable()
    finally:
        vs.close()
        provider.shutdown()
    out = {}
    for state, ts in times.items():
        ts = sorted(ts)
        out[state] = {"searches": len(ts), "p50_ms": 1000 * statistics.median(ts),
                      "p90_ms": 1000 * ts[int(0.9 * (len(ts) - 1))], "mean_ms": 1000 * statistics.mean(ts)}
    out["p50_overhead_ms"] = out["on"]["p50_ms"] - out["off"]["p50_ms"]
    out["exporter"] = args.exporter
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
