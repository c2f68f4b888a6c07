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
    return parser


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
