"""The `rag` command line."""

from __future__ import annotations

import argparse
import json
import sys

from rag.errors import RagError


def _store_args(p: argparse.ArgumentParser) -> None:
    from pipelines.stores import DEFAULT_COLLECTION, DEFAULT_STORE_DIR

    g = p.add_argument_group("store")
    g.add_argument("--store", default=DEFAULT_STORE_DIR, metavar="DIR",
                   help=f"Qdrant Edge folder (embedded default; default: ./{DEFAULT_STORE_DIR})")
    g.add_argument("--collection", default=DEFAULT_COLLECTION, help="collection name (default: %(default)s)")
    g.add_argument("--url", help="Qdrant server or cluster URL instead of the embedded store "
                                 "(API key from $QDRANT_API_KEY)")
    g.add_argument("--qdrant-path", help="qdrant-client local-mode folder instead of the embedded store")


def _store_settings(args):
    from pipelines.stores import StoreSettings

    return StoreSettings(store_dir=args.store, collection=args.collection, url=args.url,
                         local_path=args.qdrant_path)


def build_parser() -> argparse.ArgumentParser:
    from rag.encoder import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="rag", description="Retrieval-augmented generation over your documents.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="turn PDFs, text and Markdown files into a searchable collection")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    _store_args(p)
    p.add_argument("--model", default=DEFAULT_MODEL, help="encoder: hub name or local folder (default: %(default)s)")
    p.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    p.add_argument("--chunk-size", type=int, default=256, help="chunk size in encoder tokens (default: %(default)s)")
    p.add_argument("--chunk-overlap", type=int, default=32, help="overlap in encoder tokens (default: %(default)s)")
    p.add_argument("--include", action="append", metavar="GLOB", help="file globs to take (default: *.pdf *.txt *.md ...)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="file globs to skip")
    p.add_argument("--prune", action="store_true", help="remove chunks of files that are gone")
    p.add_argument("--batch-size", type=int, default=128, help="chunks per encode/write batch")
    p.add_argument("--no-stemming", action="store_true",
                   help="new collection: BM25 index without English stemming and stop words")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("search", help="search a collection (dense, BM25 or hybrid)")
    p.add_argument("query")
    _store_args(p)
    _retriever_args(p)
    p.add_argument("-k", "--top-k", type=int, default=10, help="results to show (default: %(default)s)")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="payload filter on both legs, repeatable: source=PATH, page=3 or 2-5, section=...")
    p.add_argument("--explain", action="store_true", help="show each leg's rank and score")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("eval", help="evaluate retrieval on a BEIR-format folder")
    esub = p.add_subparsers(dest="what", required=True)
    e = esub.add_parser("retrieval", help="nDCG@10, recall@10/100, MRR@10 for dense, bm25 and hybrid")
    e.add_argument("folder", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv")
    e.add_argument("--split", default="test", help="qrels split (default: %(default)s)")
    _store_args(e)
    e.set_defaults(collection=None)
    _retriever_args(e)
    e.add_argument("--modes", default="dense,bm25,hybrid", help="comma-separated (default: %(default)s)")
    e.add_argument("--out", metavar="JSON", help="write the report as JSON here")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=cmd_eval_retrieval)
    e = esub.add_parser("sts", help="Spearman and Pearson of cosine similarity against STS gold scores")
    e.add_argument("file", help="STS-B format file (tab-separated: ..., score, sentence 1, sentence 2)")
    e.add_argument("--model", default=DEFAULT_MODEL, help="encoder: hub name or local folder (default: %(default)s)")
    e.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval_sts)

    p = sub.add_parser("train", help="fine-tune the sentence encoder")
    tsub = p.add_subparsers(dest="objective", required=True)
    t = tsub.add_parser("sts", help="cosine-similarity regression on STS-format pairs")
    t.add_argument("train_file")
    t.add_argument("--dev", help="STS dev file: evaluated each epoch, best epoch kept")
    t.add_argument("--out", required=True, help="output model folder")
    t.add_argument("--model", default=DEFAULT_MODEL, help="starting model (default: %(default)s)")
    t.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    t.add_argument("--epochs", type=int, default=4)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=2e-5)
    t.add_argument("--seed", type=int, default=42)
    t.set_defaults(func=cmd_train_sts)

    from pipelines.cli_answer import add_answer_commands

    add_answer_commands(sub)
    return parser


def _retriever_args(p: argparse.ArgumentParser) -> None:
    from rag.retrieval import DEFAULT_CANDIDATES, DEFAULT_FUSION, DEFAULT_WEIGHTS

    g = p.add_argument_group("retrieval (defaults chosen on SciFact train queries)")
    g.add_argument("--mode", choices=("dense", "bm25", "hybrid"), default="hybrid")
    g.add_argument("--fusion", choices=("rrf", "wsf", "dbsf"), default=DEFAULT_FUSION,
                   help="rrf (reciprocal rank, k=--rrf-k), wsf (min-max weighted scores), dbsf "
                        "(distribution-based) (default: %(default)s)")
    g.add_argument("--rrf-k", type=int, default=60, help="RRF k, 1-based ranks (default: %(default)s)")
    g.add_argument("--weights", default=",".join(f"{w:g}" for w in DEFAULT_WEIGHTS), metavar="DENSE,BM25",
                   help="per-leg weights (default: %(default)s)")
    g.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES,
                   help="candidate depth per leg (default: %(default)s)")
    g.add_argument("--mmr", type=float, metavar="LAMBDA", help="diversify with MMR (e.g. 0.7)")


def _retriever_settings(args) -> dict:
    from rag.errors import ConfigError

    try:
        weights = tuple(float(w) for w in args.weights.split(","))
    except ValueError:
        raise ConfigError(f"--weights '{args.weights}' is not two numbers like 1,1") from None
    if len(weights) != 2:
        raise ConfigError(f"--weights '{args.weights}' needs two numbers: dense,bm25")
    return {"fusion": args.fusion, "rrf_k": args.rrf_k, "weights": weights,
            "candidates": args.candidates, "mmr_lambda": args.mmr}


def cmd_search(args) -> int:
    from pipelines.progress import print_search_response
    from pipelines.stores import open_store
    from rag.encoder import SentenceEncoder
    from rag.retrieval import Retriever

    settings = _retriever_settings(args)
    vs = open_store(_store_settings(args))
    try:
        retriever = Retriever(vs, SentenceEncoder(vs.info.model), mode=args.mode, top_k=args.top_k, **settings)
        resp = retriever.search(args.query, filters=args.filter, explain=args.explain)
    finally:
        vs.close()
    if args.json:
        print(resp.model_dump_json(indent=2))
    else:
        print_search_response(resp, explain=args.explain)
    return 0


def cmd_eval_retrieval(args) -> int:
    from pathlib import Path

    from pipelines.evaluate import eval_retrieval, print_eval_report
    from pipelines.stores import StoreSettings

    settings = _retriever_settings(args)
    store = StoreSettings(store_dir=args.store, url=args.url, local_path=args.qdrant_path,
                          collection=args.collection or f"beir-{Path(args.folder).resolve().name}")
    report = eval_retrieval(args.folder, split=args.split, store=store,
                            modes=[m.strip() for m in args.modes.split(",") if m.strip()],
                            retriever_settings=settings, progress=not args.no_progress)
    print_eval_report(report)
    if args.out:
        Path(args.out).write_text(report.model_dump_json(indent=2))
        print(f"wrote {args.out}")
    return 0


def cmd_ingest(args) -> int:
    from pipelines.ingest import ingest
    from pipelines.progress import print_ingest_report
    from rag.chunking import Chunker
    from rag.encoder import SentenceEncoder
    from rag.loaders import DEFAULT_INCLUDE
    from rag.store import TextIndexSettings

    report = ingest(
        args.paths,
        encoder=SentenceEncoder(args.model, device=args.device),
        store=_store_settings(args),
        chunker=Chunker(args.chunk_size, args.chunk_overlap),
        include=args.include or DEFAULT_INCLUDE,
        exclude=args.exclude,
        prune=args.prune,
        text_index=TextIndexSettings.plain() if args.no_stemming else None,
        batch_size=args.batch_size,
        progress=not args.no_progress and not args.json,
    )
    if args.json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        print_ingest_report(report)
    return 1 if report.failed else 0


def cmd_eval_sts(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from rag.encoder import SentenceEncoder
    from rag.sts import evaluate_sts

    result = evaluate_sts(SentenceEncoder(args.model, device=args.device), args.file)
    if args.json:
        print(result.model_dump_json(indent=2))
        return 0
    t = Table(title=f"STS: {args.file} ({args.model})", title_justify="left")
    for c in ("pairs", "spearman", "pearson"):
        t.add_column(c, justify="right")
    t.add_row(str(result.pairs), f"{result.spearman:.4f}", f"{result.pearson:.4f}")
    Console().print(t)
    return 0


def cmd_train_sts(args) -> int:
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    from rich.table import Table

    from pipelines.progress import console
    from rag.train import TrainSettings, train_sts

    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    with Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TextColumn("ETA"),
                  TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("train", total=None, loss="-")

        def on_step(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, loss=f"{loss:.4f}")

        report = train_sts(args.model, args.train_file, args.out, dev_file=args.dev, settings=settings,
                           device=args.device, on_step=on_step)
    t = Table(title=f"Fine-tuned {args.model} -> {report.output} ({report.seconds:.0f} s)", title_justify="left")
    for c in ("epoch", "train loss", "dev spearman", ""):
        t.add_column(c, justify="right")
    for e in report.epochs:
        t.add_row(str(e.epoch), f"{e.train_loss:.4f}",
                  "-" if e.dev_spearman is None else f"{e.dev_spearman:.4f}",
                  "kept" if e.epoch == report.best_epoch else "")
    Console().print(t)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RagError as e:
        print(f"rag: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rag: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
