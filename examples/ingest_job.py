"""Ingest a folder into an embedded Qdrant Edge store with the Python API and print the summary.

    python examples/ingest_job.py [FOLDER] [--store DIR] [--collection NAME]

Without FOLDER, a demo folder with two small text files is made in a temporary directory and
the store goes next to it. Run it twice on the same folder: the second time every file is
"unchanged" and nothing is encoded. Exit code 1 when a file could not be ingested.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from pipelines import StoreSettings, ingest
from pipelines.render import print_ingest_report
from rag import Chunker, RagError, SentenceEncoder

DEMO_FILES = {
    "qdrant.txt": "Qdrant is a vector database. It stores dense vectors with a payload and "
                  "answers nearest-neighbour queries. Qdrant Edge runs the same engine inside "
                  "the application process, with no server to start.",
    "chunking.txt": "Documents are split into chunks that fit the encoder. Each chunk is "
                    "embedded into a vector and indexed for BM25 as well, so a search can "
                    "combine meaning and exact words.",
}


def make_demo_folder(root: Path) -> Path:
    folder = root / "demo_docs"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in DEMO_FILES.items():
        (folder / name).write_text(text + "\n", encoding="utf-8")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", help="folder to ingest (default: a demo folder)")
    parser.add_argument("--store", help="Qdrant Edge folder (default: ./rag_store, or next to the demo folder)")
    parser.add_argument("--collection", default="documents")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="rag-demo-") as tmp:
        folder = Path(args.folder) if args.folder else make_demo_folder(Path(tmp))
        store_dir = args.store or ("rag_store" if args.folder else str(Path(tmp) / "rag_store"))
        print(f"ingesting {folder} into {store_dir}")
        try:
            report = ingest(
                [folder],
                encoder=SentenceEncoder(),  # all-MiniLM-L6-v2, shipped with the package
                store=StoreSettings(store_dir=store_dir, collection=args.collection),
                chunker=Chunker(chunk_size=256, chunk_overlap=32),
                progress=sys.stderr.isatty(),
            )
        except RagError as e:  # store locked, model mismatch, ...: one clear line
            print(f"error: {e}", file=sys.stderr)
            return 2
        print_ingest_report(report)
    return 1 if report.failed else 0


if __name__ == "__main__":  # the guard matters: the ingest job starts a loader process
    sys.exit(main())
