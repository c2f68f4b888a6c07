"""Page recall on the seven arXiv papers of ../shared/data/pdfs/arxiv: does the top 5 hold a chunk
of the page that answers the question?

    python benchmarks/bench_arxiv_pages.py --store /tmp/arxiv-pages [--collection documents]
        [--ingest] [--no-context] [--no-sentence-vectors] [--route auto,off] [--out JSON] [--misses]

1. With `--ingest`, runs `rag ingest` (python -m pipelines.cli ingest, this checkout's code) on the
   folder into --store/--collection first, passing --no-context / --no-sentence-vectors when given
   (they only matter for a new collection: an existing one keeps what it was built with, and an
   unchanged file is skipped). Without it, the collection must exist.
2. Searches the questions below (written by hand from the papers' pages: each names its file and
   the page or pages whose text answers it; some ask about a table or figure, some about an idea
   in other words than the paper's) with rag.search.retrieval.Retriever, top 10, in modes dense,
   bm25 and hybrid, for each --route (auto: document routing, rag.search.routing; off: every
   document).
3. Reports per mode and route: page recall@5 (share of questions with a chunk of the right file
   whose page_start..page_end holds an answering page among the top 5 chunks) and MRR@10 (1 / rank
   of the first such chunk, 0 past 10), and the collection's recorded settings (document context,
   sentence vectors, chunk size). `--misses` prints, for each question missed at 5, what the mode
   ranked first and where the first answering chunk came (the material for finding why).

The imports fall back to the package layout before 2026-12-02 (rag.retrieval, rag.encoder), and
`--route` is skipped with a note where the Retriever has no routing, so this file runs as is on
older commits: `--code DIR` runs another checkout's code (`git worktree add DIR COMMIT`), from its
ingest to its search, so one question set compares commits and bisects a change in these figures.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# ../shared/data beside the repository (a git worktree sits one level deeper: try /work/shared too)
_CANDIDATES = [ROOT.parent / "shared" / "data" / "pdfs" / "arxiv",
               ROOT.parent.parent / "shared" / "data" / "pdfs" / "arxiv"]
DATA = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])
MODES = ("dense", "bm25", "hybrid")
TOP = 5
DEPTH = 10

SQUAD = "1606.05250v3_SQuAD.pdf"
DRQA = "1704.00051v2_DrQA.pdf"
ATTN = "1706.03762v5_Attention_Is_All_You_Need.pdf"
USE = "1803.11175v2_Universal_Sentence_Encoder.pdf"
BERT = "1810.04805v1_BERT.pdf"
SERINI = "1902.01718v2_BERTserini.pdf"
SBERT = "1908.10084v1_Sentence-BERT.pdf"

# (question, file, answering pages). Pages are pypdf's 1-based page numbers, as chunks store them.
QUESTIONS: list[tuple[str, str, tuple[int, ...]]] = [
    # SQuAD
    ("How much were the crowdworkers who wrote the reading comprehension questions paid, and what "
     "approval rating did they need?", SQUAD, (4,)),
    ("What kinds of answers does the Stanford QA dataset contain, broken down into dates, people, "
     "places and noun phrases?", SQUAD, (4,)),
    ("Which groups of features hurt the logistic regression baseline most when they are taken out?",
     SQUAD, (8,)),
    ("How were the Wikipedia articles for SQuAD picked, and how many paragraphs came out of them?",
     SQUAD, (3,)),
    # DrQA
    ("How does the Wikipedia document retriever use word bigrams without running out of memory?",
     DRQA, (3,)),
    ("Apart from word embeddings, what features describe each paragraph token fed to the reader "
     "network in DrQA?", DRQA, (4,)),
    ("How many articles remained in the Wikipedia dump used as the knowledge source for open-domain QA?",
     DRQA, (5,)),
    ("For what share of questions does the answer appear in the top five pages returned, compared with "
     "the Wikipedia search API?", DRQA, (6, 7)),
    # Attention Is All You Need
    ("Why are the query-key dot products divided by the square root of the key size before the softmax?",
     ATTN, (4,)),
    ("How does the learning rate change over the course of training the Transformer?", ATTN, (7,)),
    ("How does a model without recurrence or convolution know the order of the words?", ATTN, (5, 6)),
    ("How does the computational cost per layer of self-attention compare to recurrent and "
     "convolutional layers?", ATTN, (6, 7)),
    ("How well does the Transformer do on English constituency parsing of the WSJ?", ATTN, (9, 10)),
    # Universal Sentence Encoder
    ("How does the transformer variant of the universal encoder turn its word representations into "
     "one fixed-length sentence vector?", USE, (2,)),
    ("What text sources and supervised data were the universal sentence encoders trained on?", USE, (3,)),
    ("With only a thousand labelled SST examples, how close does transfer from the sentence encoder "
     "get to models trained on the full set?", USE, (5,)),
    ("How does memory use of the DAN and transformer encoders grow with the length of the sentence?",
     USE, (5, 6)),
    # BERT
    ("When BERT picks a token to predict during pre-training, how often is it replaced by the mask "
     "symbol, by a random word, or left as is?", BERT, (4,)),
    ("How are the second sentences chosen for the next sentence prediction task?", BERT, (5,)),
    ("What happens to accuracy as BERT gets more layers, a larger hidden size and more attention "
     "heads?", BERT, (11,)),
    ("Can BERT's activations be used without fine-tuning for named entity recognition, and which "
     "layers work best?", BERT, (12,)),
    ("Besides bidirectionality, how does BERT's pre-training differ from OpenAI GPT's?", BERT, (6,)),
    # BERTserini
    ("Which ranking function and IR toolkit does BERTserini use to retrieve Wikipedia text?",
     SERINI, (2,)),
    ("Is indexing Wikipedia by article, paragraph or sentence best for the BERT reader, and why?",
     SERINI, (3,)),
    ("How are the retriever's score and the reader's span score combined into one?", SERINI, (3,)),
    # Sentence-BERT
    ("Which pooling of the token outputs does SBERT use unless configured otherwise?", SBERT, (3, 4)),
    ("How long does finding the most similar pair among 10,000 sentences take with a BERT cross-encoder?",
     SBERT, (1, 2)),
    ("How much faster is SBERT when sentences of similar length are batched together?", SBERT, (8,)),
    ("Which way of combining the two sentence embeddings u and v works best as input to the softmax "
     "classifier?", SBERT, (7, 8)),
    ("How accurate is the triplet-trained model at telling whether two sentences come from the same "
     "Wikipedia section?", SBERT, (6,)),
]


def _imports(code: Path):
    """(Retriever, SentenceEncoder, StoreSettings, open_store) from whichever layout `code` has (by
    its files: an editable install of another checkout would answer an import this one lacks)."""
    from pipelines.stores import StoreSettings, open_store

    if (code / "rag" / "search" / "retrieval.py").is_file():
        from rag.embed.encoder import SentenceEncoder
        from rag.search.retrieval import Retriever
    else:  # the layout before 2026-12-02 (91ed47e)
        from rag.encoder import SentenceEncoder
        from rag.retrieval import Retriever
    return Retriever, SentenceEncoder, StoreSettings, open_store


def ingest(code: Path, store: str, collection: str, extra: list[str]) -> float:
    env = dict(os.environ, PYTHONPATH=str(code))
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "ingest", str(DATA), "--store", store,
                           "--collection", collection, "--no-progress", *extra], cwd=code, env=env,
                          capture_output=True, text=True)
    if done.returncode not in (0, 1):  # 1: some file failed (the folder's broken/ PDF), the rest written
        raise SystemExit(f"rag ingest failed ({done.returncode}): {done.stderr[-2000:]}")
    return time.perf_counter() - t0


def answering_rank(hits, file: str, pages: tuple[int, ...]) -> int | None:
    """1-based rank of the first hit of `file` whose page range holds an answering page."""
    for i, h in enumerate(hits, 1):
        if Path(h.source).name == file and any(h.page_start <= p <= h.page_end for p in pages):
            return i
    return None


def measure(retriever, encoder, route: str | None) -> dict:
    texts = [q for q, _, _ in QUESTIONS]
    vectors = encoder.encode(texts)
    kwargs = {} if route is None else {"route": route}
    out = {}
    for mode in MODES:
        responses = retriever.search_batch(texts, top_k=DEPTH, mode=mode,
                                           vectors=None if mode == "bm25" else vectors, **kwargs)
        per_q = []
        for (q, file, pages), resp in zip(QUESTIONS, responses):
            rank = answering_rank(resp.results, file, pages)
            routed = getattr(resp, "route", None)
            per_q.append({"question": q, "file": file, "pages": list(pages), "rank": rank,
                          "routed_to": [Path(s).name for s in routed.documents] if routed and routed.routed else None,
                          "top": [{"source": Path(h.source).name, "pages": [h.page_start, h.page_end],
                                   "chunk_index": h.chunk_index, "score": round(h.score, 4),
                                   "text": h.text[:160]} for h in resp.results[:TOP]]})
        n = len(per_q)
        out[mode] = {"recall@5": sum(r["rank"] is not None and r["rank"] <= TOP for r in per_q) / n,
                     "mrr@10": sum(1 / r["rank"] for r in per_q if r["rank"]) / n,
                     "routed": sum(r["routed_to"] is not None for r in per_q), "per_question": per_q}
    return out


def split_context(store: str, collection: str, encoder, context_from: str | None) -> dict:
    """Dense by exact cosine over this collection's chunks, each embedded twice: its text alone, and
    behind its document's context (the collection's own, else that of the same file in the
    collection `context_from`). On one set of chunk boundaries this tells what the context in front
    of the embedded text does from what the boundaries do. Current code only."""
    import numpy as np

    from pipelines.stores import StoreSettings, open_store
    from rag.models import CONTEXT_SEPARATOR

    def read(name_store: str) -> list[dict]:
        vs = open_store(StoreSettings(store_dir=name_store, collection=collection))
        try:
            return [p for _, p in vs.payloads(["source", "page_start", "page_end", "text", "context"])]
        finally:
            vs.close()

    points = read(store)
    contexts = {Path(p["source"]).name: p.get("context") for p in (read(context_from) if context_from else points)}
    if not any(contexts.values()):
        raise SystemExit("no document context to put in front: give --split-context a collection built with it")
    q = encoder.encode([q for q, _, _ in QUESTIONS])
    out = {}
    for variant in ("text alone", "context + text"):
        texts = [p["text"] if variant == "text alone" or not contexts.get(Path(p["source"]).name)
                 else f"{contexts[Path(p['source']).name]}{CONTEXT_SEPARATOR}{p['text']}" for p in points]
        scores = q @ encoder.encode(texts).T
        ranks = []
        for i, (_, file, pages) in enumerate(QUESTIONS):
            order = np.argsort(-scores[i])[:DEPTH]
            ranks.append(next((r for r, j in enumerate(order, 1) if Path(points[j]["source"]).name == file
                               and any(points[j]["page_start"] <= pg <= points[j]["page_end"] for pg in pages)),
                              None))
        out[variant] = {"recall@5": sum(r is not None and r <= TOP for r in ranks) / len(ranks),
                        "mrr@10": sum(1 / r for r in ranks if r) / len(ranks), "ranks": ranks}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", required=True, help="Qdrant Edge folder")
    ap.add_argument("--collection", default="documents")
    ap.add_argument("--ingest", action="store_true", help="rag ingest the folder into the collection first")
    ap.add_argument("--no-context", action="store_true", help="with --ingest, a new collection without "
                    "document context")
    ap.add_argument("--no-sentence-vectors", action="store_true", help="with --ingest, a new collection "
                    "without sentence vectors")
    ap.add_argument("--route", default="off,auto", help="document routing, comma-separated of off, auto "
                    "(default: %(default)s)")
    ap.add_argument("--label", default="", help="a name for this run in the table (e.g. a commit)")
    ap.add_argument("--misses", action="store_true", help="print each question missed at 5")
    ap.add_argument("--out", help="write figures and per-question rankings as JSON")
    ap.add_argument("--split-context", nargs="?", const="", metavar="STORE",
                    help="also dense by exact cosine with each chunk's text embedded alone and behind its "
                    "document context (this collection's own, or that of the collection of the same name in "
                    "STORE): the context's share of a change apart from the chunk boundaries'")
    ap.add_argument("--code", type=Path, default=ROOT, help="the checkout whose code ingests and searches "
                    "(default: this one; another commit's worktree to compare or bisect)")
    args = ap.parse_args()
    code = args.code.resolve()
    sys.path.insert(0, str(code))
    if not DATA.is_dir():
        print(f"arXiv PDFs not found at {DATA}: this benchmark needs ../shared/data/pdfs/arxiv", file=sys.stderr)
        return 2
    missing = sorted({f for _, f, _ in QUESTIONS} - {p.name for p in DATA.glob("*.pdf")})
    if missing:
        print(f"question files missing from {DATA}: {missing}", file=sys.stderr)
        return 2

    seconds = None
    if args.ingest:
        extra = (["--no-context"] if args.no_context else []) + (
            ["--no-sentence-vectors"] if args.no_sentence_vectors else [])
        seconds = ingest(code, args.store, args.collection, extra)

    Retriever, SentenceEncoder, StoreSettings, open_store = _imports(code)
    rev = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    imported = Path(sys.modules[Retriever.__module__].__file__).resolve()
    if code not in imported.parents:
        raise SystemExit(f"imported {imported}, not the code of {code}: run without an editable install in the way")
    encoder = SentenceEncoder()
    vs = open_store(StoreSettings(store_dir=args.store, collection=args.collection))
    try:
        info = vs.info
        settings = {"context": getattr(info, "context", None),
                    "sentence_vectors": getattr(info, "sentence_vectors", None),
                    "code": f"{code} {rev}", "chunk_size": info.chunk_size, "chunk_overlap": info.chunk_overlap, "model": info.model,
                    "points": vs.count()}
        retriever = Retriever(vs, encoder, top_k=DEPTH)
        has_route = "route" in inspect.signature(retriever.search_batch).parameters
        routes = [r.strip() for r in args.route.split(",") if r.strip()]
        if not has_route:
            print("this checkout's Retriever has no document routing: every document searched", file=sys.stderr)
            routes = [None]
        figures = {str(r): measure(retriever, encoder, r) for r in routes}
    finally:
        vs.close()
    split = None
    if args.split_context is not None:
        split = split_context(args.store, args.collection, encoder, args.split_context or None)

    ctx = {True: "on", False: "off", None: "n/a"}
    print(f"arXiv page recall, {len(QUESTIONS)} questions over {len(set(f for _, f, _ in QUESTIONS))} papers, "
          f"code {settings['code']}; "
          f"collection {args.collection} in {args.store}: context {ctx[settings['context']]}, sentence vectors "
          f"{ctx[settings['sentence_vectors']]}, chunks {settings['chunk_size']}/{settings['chunk_overlap']}, "
          f"{settings['points']} points" + (f"; ingest {seconds:.0f} s" if seconds is not None else ""))
    print(f"| run | context | sentence vectors | route | mode | page recall@5 | MRR@10 | routed |")
    print("|---|---|---|---|---|---|---|---|")
    for route, by_mode in figures.items():
        for mode, f in by_mode.items():
            print(f"| {args.label} | {ctx[settings['context']]} | {ctx[settings['sentence_vectors']]} | "
                  f"{'n/a' if route == 'None' else route} | {mode} | {f['recall@5']:.2f} | {f['mrr@10']:.3f} | "
                  f"{f['routed']} |")
    if split:
        print(f"\ndense by exact cosine over this collection's {settings['points']} chunks, re-embedded:")
        for variant, f in split.items():
            print(f"| {args.label} | {variant} | dense | {f['recall@5']:.2f} | {f['mrr@10']:.3f} |")
            print("   ranks: " + " ".join("-" if r is None else str(r) for r in f["ranks"]))
    if args.misses:
        for route, by_mode in figures.items():
            for mode, f in by_mode.items():
                for r in f["per_question"]:
                    if r["rank"] is None or r["rank"] > TOP:
                        print(f"\nMISS route {route} {mode}: {r['question']} [{r['file']} p{r['pages']}] "
                              f"answering rank {r['rank']}; routed to {r['routed_to']}")
                        for i, h in enumerate(r["top"], 1):
                            print(f"   {i}. {h['source']} p{h['pages']} #{h['chunk_index']} {h['score']}: "
                                  f"{h['text'][:100]!r}")
    if args.out:
        Path(args.out).write_text(json.dumps({"settings": settings, "label": args.label, "ingest_seconds": seconds, "split_context": split,
                                              "figures": figures}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
