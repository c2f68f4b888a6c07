"""One question against every chunk of one or more collections, each chunk embedded twice (its text
alone, and behind its document's context): the cosine and rank of the chunks that hold NEEDLE in
file FILE, and the top 3 either way. What bench_arxiv_pages.py --split-context sums up, for one
question (the README's arXiv page recall section quotes it).

    python benchmarks/arxiv_chunk_cosines.py "How does a model without recurrence or convolution know \\
        the order of the words?" "positional encoding" Attention /tmp/a-main-nosv /tmp/a-noctx

The context of a file is taken from the first collection given that has one (a collection built
without context borrows it). Current code only; collection `documents`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.stores import StoreSettings, open_store  # noqa: E402
from rag.embed.encoder import SentenceEncoder  # noqa: E402
from rag.models import CONTEXT_SEPARATOR  # noqa: E402


def main() -> int:
    if len(sys.argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    question, needle, file, stores = sys.argv[1], sys.argv[2].lower(), sys.argv[3], sys.argv[4:]
    fields = ["source", "page_start", "page_end", "text", "context", "chunk_index", "n_tokens"]
    collections = {}
    for store in stores:
        vs = open_store(StoreSettings(store_dir=store))
        try:
            collections[store] = [p for _, p in vs.payloads(fields)]
        finally:
            vs.close()
    contexts: dict[str, str] = {}
    for points in collections.values():
        for p in points:
            contexts.setdefault(p["source"], p.get("context") or "")
    encoder = SentenceEncoder()
    q = encoder.encode([question])[0]
    for store, points in collections.items():
        texts = [p["text"] for p in points]
        alone = encoder.encode(texts) @ q
        behind = encoder.encode([f"{contexts[p['source']]}{CONTEXT_SEPARATOR}{t}" if contexts[p["source"]] else t
                                 for p, t in zip(points, texts)]) @ q
        rank_alone, rank_behind = (-alone).argsort().argsort() + 1, (-behind).argsort().argsort() + 1
        print(f"## {store}: {len(points)} chunks")
        for i, p in enumerate(points):
            if file in p["source"] and needle in p["text"].lower():
                print(f"  chunk {p['chunk_index']} p{p['page_start']}-{p['page_end']} ({p['n_tokens']} tokens): alone "
                      f"{alone[i]:.3f} rank {rank_alone[i]}, behind context {behind[i]:.3f} rank {rank_behind[i]}; "
                      f"{p['text'][:70]!r} ... {p['text'][-70:]!r}")
        for name, scores, other in (("behind context", behind, alone), ("alone", alone, behind)):
            for j in np.argsort(-scores)[:3]:
                print(f"  top {name}: {Path(points[j]['source']).name[:24]} chunk {points[j]['chunk_index']} "
                      f"p{points[j]['page_start']} {scores[j]:.3f} (other way {other[j]:.3f}) {points[j]['text'][:60]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
