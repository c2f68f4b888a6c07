"""`rag eval retrieval DIR`: BEIR-style evaluation of dense, BM25 and hybrid retrieval.

The corpus is ingested into its own collection (`beir-<folder name>`, plus `-<model name>` for
an encoder other than the default; unchanged documents are skipped on later runs), each query's chunk hits are collapsed to documents (a document ranks
where its best chunk ranks), and nDCG@10, recall@10, recall@100 and MRR@10 are reported.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from rag.evaluation.beir import BeirDataset, corpus_documents, count_corpus, load_beir
from rag.ingest.chunking import Chunker
from rag.embed.encoder import DEFAULT_MODEL, SentenceEncoder
from rag.evaluation.metrics import evaluate
from rag.search.retrieval import Retriever
from pipelines.ingest import ingest_documents
from pipelines.stores import StoreSettings, open_store

DOC_DEPTH = 100  # documents per query, for recall@100


class ModeResult(BaseModel):
    mode: str
    metrics: dict[str, float]
    seconds: float
    settings: dict[str, Any] = Field(default_factory=dict)


class EvalReport(BaseModel):
    dataset: str
    split: str
    queries: int
    collection: str
    results: list[ModeResult]
    ingest: dict[str, int] = Field(default_factory=dict)


def model_slug(model: str) -> str:
    """A collection-name-safe short name of a model: its folder (or hub repo) name."""
    import re

    name = Path(model.rstrip("/")).name or model
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "model"


def default_collection(folder: str, model: str = DEFAULT_MODEL, context: bool = True,
                       sentence_vectors: bool = True) -> str:
    """`beir-<folder>` for the default encoder, `beir-<folder>-<model name>` for any other, so
    that evaluating a fine-tuned model never meets the default model's collection (whose
    recorded encoder would not match); `-no-context` after it for chunks without document
    context, `-no-sentence-vectors` for chunks without unit vectors, which a collection never
    mixes with chunks that have them."""
    base = f"beir-{Path(folder).resolve().name}"
    base = base if model == DEFAULT_MODEL else f"{base}-{model_slug(model)}"
    base = base if context else f"{base}-no-context"
    return base if sentence_vectors else f"{base}-no-sentence-vectors"


def collapse(sources: Sequence[str], depth: int = DOC_DEPTH) -> list[str]:
    """Chunk sources, best first -> unique document ids, best first."""
    return list(dict.fromkeys(sources))[:depth]


def corpus_collection(folder: str, encoder: SentenceEncoder, store: StoreSettings, chunker: Chunker,
                      progress: bool = True):
    """Ingest a BEIR folder's corpus into `store` (documents already there are unchanged)."""
    return ingest_documents(corpus_documents(folder), encoder=encoder, store=store, chunker=chunker,
                            progress=progress)


def document_search(vs, encoder: SentenceEncoder, depth: int = DOC_DEPTH, **settings):
    """A function from queries to ranked document ids (chunk hits collapsed), over an open
    collection of a BEIR corpus: what hard-negative mining and rerank dev sets need."""
    retriever = Retriever(vs, encoder, **settings)

    def search(queries: list[str]) -> list[list[str]]:
        return [collapse([r.source for r in resp.results], depth)
                for resp in retriever.search_batch(queries, top_k=max(depth * 3, 100),
                                                               best_units=False)]

    return search


def run_queries(retriever: Retriever, data: BeirDataset, mode: str, vectors=None, chunk_depth: int = 300,
                batch: int = 64, progress=None, stats: dict[str, int] | None = None) -> dict[str, list[str]]:
    """Ranked document ids per query; `stats["routed"]` counts the queries document routing
    restricted to some documents."""
    qids = list(data.queries)
    run: dict[str, list[str]] = {}
    for start in range(0, len(qids), batch):
        ids = qids[start:start + batch]
        responses = retriever.search_batch(
            [data.queries[q] for q in ids], top_k=chunk_depth, mode=mode,
            vectors=None if vectors is None else vectors[start:start + batch], best_units=False)
        for q, resp in zip(ids, responses):
            run[q] = collapse([r.source for r in resp.results])
            if stats is not None and resp.route is not None and resp.route.routed:
                stats["routed"] = stats.get("routed", 0) + 1
        if progress is not None:
            progress(len(ids))
    return run


def eval_retrieval(
    folder: str,
    split: str = "test",
    encoder: SentenceEncoder | None = None,
    store: StoreSettings | None = None,
    chunker: Chunker | None = None,
    modes: Sequence[str] = ("dense", "bm25", "hybrid"),
    retriever_settings: dict[str, Any] | None = None,
    progress: bool = True,
) -> EvalReport:
    from pipelines.render import query_progress

    data = load_beir(folder, split)
    encoder = encoder or SentenceEncoder()
    chunker = chunker or Chunker()
    store = store or StoreSettings(collection=default_collection(folder, encoder.model, chunker.context))
    n_docs = count_corpus(folder)
    rep = corpus_collection(folder, encoder, store, chunker, progress)
    settings = dict(retriever_settings or {})
    reranker = settings.pop("reranker", None)
    rerank_depth = settings.pop("rerank_depth", None)
    # With a reranker, the first-stage modes run without it and hybrid once more with it, so the
    # table shows what reranking adds beside what it starts from.
    runs = [(m, {}) for m in modes]
    if reranker is not None:
        runs.append(("hybrid", {"reranker": reranker, **({"rerank_depth": rerank_depth} if rerank_depth else {})}))
    chunk_depth = max(300, settings.get("candidates", 0))
    results = []
    vs = open_store(store)
    try:
        t0 = time.perf_counter()
        vectors = encoder.encode(list(data.queries.values()))
        encode_s = time.perf_counter() - t0
        with query_progress(enabled=progress) as start_mode:
            for mode, extra in runs:
                # A single leg is searched as deep as recall@100 needs; hybrid keeps its settings.
                deep = {**settings, "candidates": chunk_depth} if mode != "hybrid" else settings
                retriever = Retriever(vs, encoder, mode=mode, **deep, **extra)
                name = f"{mode}+rerank@{retriever.rerank_depth}" if extra else mode
                advance = start_mode(name, len(data.queries))
                t0 = time.perf_counter()
                stats: dict[str, int] = {}
                run = run_queries(retriever, data, mode, vectors=None if mode == "bm25" else vectors,
                                  chunk_depth=chunk_depth,
                                  progress=advance, stats=stats)
                seconds = time.perf_counter() - t0 + (0 if mode == "bm25" else encode_s)
                used = {**retriever.to_dict()["init_parameters"], "weights": list(retriever.weights)}  # as resolved
                keys = ("fusion", "rrf_k", "weights", "candidates") + (("reranker", "rerank_depth") if extra else ())
                results.append(ModeResult(mode=name, metrics=evaluate(run, data.qrels), seconds=seconds,
                                          settings={**({k: used[k] for k in keys} if mode == "hybrid"
                                                       else {"candidates": used["candidates"]}),
                                                    "route": used["route"], "routed": stats.get("routed", 0)}))
    finally:
        vs.close()
    return EvalReport(dataset=data.root, split=split, queries=len(data.queries), collection=store.describe(),
                      results=results, ingest={**rep.counts(), "documents": n_docs,
                                               "points": rep.total_points})
