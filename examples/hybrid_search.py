"""Hybrid search from Python: ingest a folder, then search it with dense + BM25 fused by RRF.

    python examples/hybrid_search.py [FOLDER] ["query"]

Without arguments it writes two small demo notes to a temporary folder and searches those.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines import StoreSettings, ingest, open_store  # noqa: E402
from pipelines.render import print_search_response  # noqa: E402
from rag import Retriever, SentenceEncoder  # noqa: E402

DEMO = {
    "espresso.md": "# Espresso\n\nAn espresso is brewed by forcing hot water through finely ground coffee "
                   "at about nine bars of pressure. A shot takes 25 to 30 seconds.\n\n## Crema\n\n"
                   "The crema is the foam of emulsified oils on top of a fresh shot.",
    "tea.txt": "Green tea is steeped at 70 to 80 degrees Celsius for two to three minutes. Boiling "
               "water makes it bitter. Black tea takes boiling water and four minutes.",
}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="rag-example-") as tmp:
        return run(Path(tmp))


def run(work: Path) -> int:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else work / "docs"
    query = sys.argv[2] if len(sys.argv) > 2 else "how long does an espresso shot take?"
    if len(sys.argv) <= 1:
        folder.mkdir()
        for name, text in DEMO.items():
            (folder / name).write_text(text)

    encoder = SentenceEncoder()
    store = StoreSettings(store_dir=str(work / "store"), collection="example")
    report = ingest([folder], encoder=encoder, store=store, progress=False)
    print(f"ingested {report.counts()['ingested']} files, {report.total_points} chunks")

    vs = open_store(store)
    try:
        retriever = Retriever(vs, encoder, mode="hybrid", fusion="rrf", top_k=3)
        response = retriever.search(query, explain=True)
    finally:
        vs.close()
    print_search_response(response, explain=True)
    return 0 if response.results else 1


if __name__ == "__main__":
    sys.exit(main())
