"""Hybrid retrieval: the query embedding against the dense vectors and the query text against
the BM25 index of the same collection, fused.

Unweighted RRF and DBSF run inside Qdrant's query API (prefetch + fusion, one call). Weighted
fusion, weighted score fusion (wsf), `explain` and MMR need each leg's ranked list: then both
legs run in one batched call and `rag.search.fusion` fuses them client-side. Both paths give the same
ranking (tested).

In a collection with sentence vectors the dense leg scores each chunk by its vector and its best
unit's (rag.search.units): the chunk vector's candidates and, in hybrid mode, BM25's, each
scored on both vectors, combined here; the legs are then always fused client-side, with the same formulas. Each result then names its best
unit's span in the chunk's text (unit_start, unit_end).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, PrivateAttr

from rag.embed.protocol import Encoder
from rag.search import fusion as F
from rag.search import payload as P
from rag.search import units as U
from rag.errors import ConfigError
from rag.search.rerank import DEFAULT_RERANK_DEPTH, rerank_order
from rag.search.routing import DocumentRouter, RouteInfo
from rag.search.store import Condition, Hit, Leg, QuerySpec, VectorStore
from rag.tracing import span

Mode = Literal["dense", "bm25", "hybrid"]
Fusion = Literal["rrf", "wsf", "dbsf"]
Route = Literal["auto", "off"]
ROUTES = ("auto", "off")
DEFAULT_ROUTE: Route = "auto"

INTEGER_KEYS = set(P.INTEGER_FIELDS)
STRING_KEYS = set(P.KEYWORD_FIELDS)
PAGE_KEY = "page"  # a filter, not a field: the chunks whose page range overlaps the value's
FILTER_KEYS = INTEGER_KEYS | STRING_KEYS | {PAGE_KEY}

# Chosen on SciFact's 809 TRAIN queries (benchmarks/tune_fusion.py: rrf k 5-100, wsf, dbsf,
# dense weights 0.5-2, 50-300 candidates per leg), among the settings that Qdrant fuses in one
# call (equal weights) at <= 100 candidates, which keeps hybrid p50 under 5 ms at 100k chunks:
# dbsf, 100 candidates (train nDCG@10 0.725; the best overall, dbsf with dense weight 1.25 and
# 300 candidates, reached 0.730 at twice the latency). Test: 0.727, against 0.711 for RRF k=60.
DEFAULT_FUSION: Fusion = "dbsf"
DEFAULT_WEIGHTS = (1.0, 1.0)
# The weights (dense, BM25) of a collection with sentence vectors, whose dense leg (the chunk
# vector mixed with the best sentence's, rag.search.units) is the stronger leg: SciFact test
# dense 0.703 against BM25 0.687 nDCG@10, sec10q figure recall 0.492 against 0.269. With equal
# weights BM25 pulled the sec10q hybrid under its dense leg (0.435); see DEFAULT_UNIT_WEIGHTS'
# measurements in benchmarks/README.md, "Fusion with sentence vectors".
DEFAULT_UNIT_WEIGHTS = (2.0, 1.0)
DEFAULT_CANDIDATES = 100
DEFAULT_TOP_K = 10


class LegResult(BaseModel):
    rank: int = Field(description="1-based rank in this leg's candidates")
    score: float


class SearchResult(BaseModel):
    rank: int
    id: str
    score: float
    text: str
    source: str
    page_start: int
    page_end: int
    section: str | None = None
    file_hash: str | None = None
    chunk_index: int | None = None
    char_start: int | None = Field(None, description="offset into the document's cleaned text")
    char_end: int | None = None
    unit_start: int | None = Field(None, description="the unit closest to the query (collections with "
                                   "sentence vectors): its start offset in text")
    unit_end: int | None = None
    legs: dict[str, LegResult] = Field(default_factory=dict, description="per-leg rank and score (explain)")
    _unit_spans: list = PrivateAttr(default_factory=list)  # the chunk's units, to name the best one
    # Their stored vectors, read to name it: float32 bytes, not an array, so that two results
    # still compare equal with == (pydantic compares private attributes too).
    _unit_vectors: bytes | None = PrivateAttr(None)

    def stored_sentences(self) -> dict[str, np.ndarray]:
        """The stored vectors of this chunk's sentences that were embedded alone, by text ({}
        in a collection without sentence vectors, or when the search did not read them)."""
        if self._unit_vectors is None:
            return {}
        vectors = np.frombuffer(self._unit_vectors, dtype=np.float32).reshape(len(self._unit_spans), -1)
        return U.stored_sentences(self.text, self._unit_spans, vectors)


class SearchResponse(BaseModel):
    query: str
    mode: Mode
    fusion: Fusion | None = None
    results: list[SearchResult]
    notes: list[str] = Field(default_factory=list)
    route: RouteInfo | None = Field(None, description="document routing: the documents searched and the "
                                    "words that named them; None with route off")
    _query_vector: Any = PrivateAttr(None)

    @property
    def query_vector(self) -> np.ndarray | None:
        """The query's embedding the dense leg searched with (None in bm25 mode); not
        serialised. What comes next (an extractive answer) reuses it instead of embedding the
        query again."""
        return self._query_vector


# ---------------------------------------------------------------- filters


def parse_filters(items: Sequence[str] | dict[str, Any] | None) -> list[Condition]:
    """Filters as `key=value` strings (or a dict). Keys: source, section, file_hash, page (a page
    or a range `3-5`: chunks overlapping it), and integer fields (chunk_index, page_start, ...)
    with a value or a range `a-b`. `a,b,c` matches any of the values. A source that names an
    existing file is matched by its resolved path, as it is stored."""
    if not items:
        return []
    pairs = items.items() if isinstance(items, dict) else [_split(i) for i in items]
    out: list[Condition] = []
    for key, raw in pairs:
        if key not in FILTER_KEYS:
            raise ConfigError(f"unknown filter key '{key}'; known keys: {', '.join(sorted(FILTER_KEYS))}")
        raw = str(raw).strip()
        if key == PAGE_KEY:
            lo, hi = _int_range(key, raw)
            out += [Condition(key=P.PAGE_START, lte=hi), Condition(key=P.PAGE_END, gte=lo)]
        elif key in INTEGER_KEYS:
            if "," in raw:
                out.append(Condition(key=key, any=[_int(key, v) for v in raw.split(",")]))
            else:
                lo, hi = _int_range(key, raw)
                out.append(Condition(key=key, value=lo) if lo == hi else Condition(key=key, gte=lo, lte=hi))
        else:
            values = [_source(v) if key == P.SOURCE else v.strip() for v in raw.split(",")]
            out.append(Condition(key=key, value=values[0]) if len(values) == 1 else Condition(key=key, any=values))
    return out


def _split(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise ConfigError(f"filter '{item}' is not key=value")
    return key.strip(), value


def _int(key: str, v: str) -> int:
    try:
        return int(v)
    except ValueError:
        raise ConfigError(f"filter {key}: '{v}' is not a whole number") from None


def _int_range(key: str, raw: str) -> tuple[int, int]:
    lo, sep, hi = raw.partition("-")
    a = _int(key, lo)
    b = _int(key, hi) if sep else a
    if b < a:
        raise ConfigError(f"filter {key}: empty range {raw}")
    return a, b


def _source(v: str) -> str:
    v = v.strip()
    try:
        p = Path(v).expanduser()
        return p.resolve().as_posix() if p.exists() else v
    except (RuntimeError, ValueError, OSError):  # "~nobody/x" (no such home), a NUL byte: not a file, a label
        return v


# ---------------------------------------------------------------- MMR


def mmr(relevance: Sequence[float], vectors: np.ndarray, k: int, lam: float) -> list[int]:
    """Maximal marginal relevance: greedily pick the candidate maximising
    lam * relevance - (1 - lam) * max cosine to those already picked. Relevance is min-max
    normalised first so that it is on the scale of cosine. Returns candidate indices."""
    rel = np.asarray(F.minmax(list(relevance)), dtype=np.float32)
    n = len(rel)
    if n == 0:
        return []
    sims = vectors @ vectors.T
    chosen: list[int] = []
    best_sim = np.full(n, -np.inf, dtype=np.float32)
    available = np.ones(n, dtype=bool)
    for _ in range(min(k, n)):
        penalty = np.where(np.isfinite(best_sim), best_sim, 0.0)
        score = np.where(available, lam * rel - (1 - lam) * penalty, -np.inf)
        i = int(np.argmax(score))
        chosen.append(i)
        available[i] = False
        best_sim = np.maximum(best_sim, sims[i])
    return chosen


# ---------------------------------------------------------------- retriever


class Retriever:
    """Search one collection. Light constructor, serialisable settings.

    mode: dense, bm25 or hybrid. fusion: rrf (k = rrf_k), wsf or dbsf; weights: (dense, bm25),
    None for the collection's default (default_weights: 2,1 with sentence vectors, else 1,1).
    candidates: depth of each leg. mmr_lambda: set (e.g. 0.7) to diversify the final list.
    reranker: a second stage (rag.search.rerank.CrossEncoderReranker, or anything with
    `score(pairs)` and `to_dict()`): the first `rerank_depth` fused candidates are scored with
    the query by the cross-encoder and reordered, before MMR; results past that depth follow in
    fused order with their fused scores. The passage it reads is the chunk as indexed (its
    document context, then its text), the text BM25 and the dense vector saw.
    route: "auto" restricts a query that names documents (a company, a quarter: words of their
    titles and file names) to those documents before chunk retrieval (rag.search.routing);
    "off" searches every document.
    unit_weight: in a collection with sentence vectors, the chunk vector's share w of the dense
    score w * chunk cosine + (1 - w) * best unit cosine (rag.search.units).
    """

    def __init__(self, store: VectorStore, encoder: Encoder, mode: Mode = "hybrid", fusion: Fusion = DEFAULT_FUSION,
                 rrf_k: int = F.DEFAULT_RRF_K, weights: tuple[float, float] | None = None,
                 candidates: int = DEFAULT_CANDIDATES, top_k: int = DEFAULT_TOP_K, mmr_lambda: float | None = None,
                 reranker=None, rerank_depth: int = DEFAULT_RERANK_DEPTH, route: Route = DEFAULT_ROUTE,
                 unit_weight: float = U.DEFAULT_UNIT_WEIGHT):
        if mode not in ("dense", "bm25", "hybrid"):
            raise ConfigError(f"unknown mode '{mode}': use dense, bm25 or hybrid")
        if fusion not in F.METHODS:
            raise ConfigError(f"unknown fusion '{fusion}': use rrf, wsf or dbsf")
        if mmr_lambda is not None and not 0 <= mmr_lambda <= 1:
            raise ConfigError("mmr_lambda must be within [0, 1]")
        if not 0 <= unit_weight <= 1:
            raise ConfigError("unit_weight must be within [0, 1]")
        self.unit_weight = float(unit_weight)
        self.store, self.encoder = store, encoder
        self.mode, self.fusion, self.rrf_k = mode, fusion, rrf_k
        self._weights_given = weights is not None
        self.weights = tuple(float(w) for w in weights) if weights is not None else default_weights(store.info)
        self.candidates, self.top_k, self.mmr_lambda = candidates, top_k, mmr_lambda
        if rerank_depth < 1:
            raise ConfigError("rerank_depth must be at least 1")
        if isinstance(reranker, dict):  # as to_dict wrote it
            from rag.search.rerank import CrossEncoderReranker

            reranker = CrossEncoderReranker.from_dict(reranker)
        self.reranker, self.rerank_depth = reranker, int(rerank_depth)
        self.route = _check_route(route)
        self._router: DocumentRouter | None = None

    @property
    def router(self) -> DocumentRouter:
        """The document router of this retriever's collection (its descriptors built on first use)."""
        if self._router is None:
            self._router = DocumentRouter(self.store)
        return self._router

    def to_dict(self) -> dict[str, Any]:
        return {"type": "Retriever", "init_parameters": {
            "mode": self.mode, "fusion": self.fusion, "rrf_k": self.rrf_k,
            "weights": list(self.weights) if self._weights_given else None,
            "candidates": self.candidates, "top_k": self.top_k, "mmr_lambda": self.mmr_lambda,
            "reranker": self.reranker.to_dict() if self.reranker is not None else None,
            "rerank_depth": self.rerank_depth, "route": self.route, "unit_weight": self.unit_weight}}

    @classmethod
    def from_dict(cls, data: dict[str, Any], store: VectorStore, encoder: Encoder) -> Retriever:
        params = dict(data.get("init_parameters", {}))
        if params.get("weights") is not None:
            params["weights"] = tuple(params["weights"])
        return cls(store, encoder, **params)

    # ------------------------------------------------------------------ API
    def search(self, query: str, top_k: int | None = None, filters: Sequence[str] | dict | None = None,
               mode: Mode | None = None, explain: bool = False, route: Route | None = None) -> SearchResponse:
        return self.search_batch([query], top_k=top_k, filters=filters, mode=mode, explain=explain,
                                 route=route)[0]

    def search_batch(self, queries: Sequence[str], top_k: int | None = None,
                     filters: Sequence[str] | dict | None = None, mode: Mode | None = None,
                     explain: bool = False, vectors: np.ndarray | None = None,
                     route: Route | None = None, best_units: bool = True) -> list[SearchResponse]:
        """Search several queries with one encoder call and one store call per stage.
        `vectors`: precomputed query embeddings (then the encoder is not called). `route`: this
        call's document routing (default: the retriever's). `best_units`: name each result's
        best unit (a read of its unit vectors; an evaluation that reads only the ranking, hundreds
        of results per query, goes without)."""
        mode = mode or self.mode
        if mode not in ("dense", "bm25", "hybrid"):
            raise ConfigError(f"unknown mode '{mode}': use dense, bm25 or hybrid")
        route = _check_route(route or self.route)
        queries = [q.strip() for q in queries]
        for q in queries:
            if not q:
                raise ConfigError("empty query: type some words to search for")
        k = top_k or self.top_k
        conditions = parse_filters(filters)
        with span("rag.search", **{"rag.search.mode": mode, "rag.search.top_k": k, "rag.search.queries": len(queries),
                                   "rag.search.route": route, "rag.search.fusion": self.fusion if mode == "hybrid"
                                   else None}) as traced:
            responses = self._traced_search(queries, k, conditions, mode, explain, vectors, route, best_units)
            traced.set("rag.search.results", sum(len(r.results) for r in responses))
        return responses

    def _traced_search(self, queries: list[str], k: int, conditions: list[Condition], mode: Mode, explain: bool,
                       vectors: np.ndarray | None, route: Route, best_units: bool) -> list[SearchResponse]:
        if mode != "bm25" and vectors is None:
            with span("rag.search.encode"):
                vectors = self.encoder.encode(queries)
        if route == "auto":
            with span("rag.search.routing") as traced:
                routes: list[RouteInfo | None] = self.router.route_batch(queries, conditions)
                traced.set("rag.search.routed", sum(bool(r is not None and r.routed) for r in routes))
        else:
            routes = [None] * len(queries)
        responses = self._search(queries, k, conditions, mode, explain, vectors, routes)
        # A routed query that finds nothing in its documents (a filter or BM25 terms only
        # elsewhere) is searched again in every document: routing never leaves a query empty.
        empty = [i for i, (r, resp) in enumerate(zip(routes, responses)) if r is not None and r.routed
                 and not resp.results]
        if empty:
            again = self._search([queries[i] for i in empty], k, conditions, mode, explain,
                                 None if vectors is None else vectors[empty], [None] * len(empty))
            for i, resp in zip(empty, again):
                r = routes[i].model_copy(update={"routed": False, "documents": [], "reason": (
                    f"{routes[i].reason}, which hold no match: searched every document instead")})
                resp.route = r
                resp.notes.insert(0, f"not routed: {r.reason}")
                responses[i] = resp
        if best_units and vectors is not None and self._units(mode):
            self._name_best_units(responses, vectors)
        for i, resp in enumerate(responses):
            if vectors is not None:
                resp._query_vector = vectors[i]
            if resp.route is not None and resp.route.routed:
                names = ", ".join(Path(s).name for s in resp.route.documents[:4])
                more = f" and {len(resp.route.documents) - 4} more" if len(resp.route.documents) > 4 else ""
                resp.notes.insert(0, f"routed to {resp.route.reason} ({names}{more}); --route off searches "
                                     "every document")
        return responses

    def _search(self, queries: list[str], k: int, base: list[Condition], mode: Mode, explain: bool,
                vectors: np.ndarray | None, routes: list[RouteInfo | None]) -> list[SearchResponse]:
        """The chunk search of every query, each restricted to its routed documents."""
        specs = [self._legs(q, None if vectors is None else vectors[i], mode) for i, q in enumerate(queries)]
        per_query = [base + [Condition(key=P.SOURCE, any=r.documents)] if r is not None and r.routed else base
                     for r in routes]

        units = self._units(mode)  # the dense leg combines two vectors: always fused here
        engine = (mode == "hybrid" and not explain and self.mmr_lambda is None and not units
                  and self.fusion in ("rrf", "dbsf") and len(set(self.weights)) == 1)
        if (mode != "hybrid" and not units) or engine:
            # One engine call per query: a single leg, or the legs fused by Qdrant.
            requests = [QuerySpec(legs=legs, limit=self._depth(k), filter=conditions,
                                  fusion=self.fusion if mode == "hybrid" else None,
                                  rrf_k=self.rrf_k + 1,  # the engine ranks from 0
                                  with_vectors=self.mmr_lambda is not None)
                        for legs, conditions in zip(specs, per_query)]
            with span("rag.search.legs", **{"rag.search.legs": _leg_names(specs),
                                            "rag.search.fused_by": "engine" if engine else None}):
                hit_lists = self.store.query_batch(requests)
            leg_ranks = [self._single_leg(mode, hits) if explain else None for hits in hit_lists]
            if self.reranker is not None:
                hit_lists, leg_ranks = self._rerank(queries, hit_lists, leg_ranks, explain)
            return [self._respond(q, mode, hits, k, leg_ranks=ranks, reranked=self.reranker is not None,
                                  route=r)
                    for q, hits, ranks, r in zip(queries, hit_lists, leg_ranks, routes)]
        # Client-side fusion: every leg of every query in one batched call, ids and scores only.
        flat = [QuerySpec(legs=[leg], limit=leg.limit, filter=conditions, with_payload=False)
                for legs, conditions in zip(specs, per_query) for leg in legs]
        with span("rag.search.legs", **{"rag.search.legs": _leg_names(specs)}):
            leg_hits = self.store.query_batch(flat)
        n = len(specs[0]) if specs else 0  # legs per query: dense, text
        per = [[[(h.id, h.score) for h in hits] for hits in leg_hits[i * n:(i + 1) * n]]
               for i in range(len(queries))]
        with span("rag.search.fusion", **{"rag.search.fusion": self.fusion if mode == "hybrid" else None,
                                          "rag.search.units": units}):
            dense_lists = (self._unit_scored([p[0] for p in per], [p[-1] for p in per] if mode == "hybrid" else None,
                                             specs, per_query) if units
                           else [p[0] for p in per])
            fused_hits, fused_ranks, empty = [], [], []
            for i, q in enumerate(queries):
                dense, text = dense_lists[i], (per[i][-1] if mode == "hybrid" else None)
                fused = dense if text is None else F.fuse(self.fusion, [dense, text], weights=self.weights,
                                                          rrf_k=self.rrf_k)
                fused = fused[:self._depth(k)]
                payloads = {h.id: h for h in self.store.retrieve([d for d, _ in fused],
                                                                with_vectors=self.mmr_lambda is not None)}
                hits = [Hit(id=d, score=s, payload=payloads[d].payload, vector=payloads[d].vector)
                        for d, s in fused if d in payloads]
                ranks = {name: {d: LegResult(rank=r, score=s) for r, (d, s) in enumerate(ranked, 1)}
                         for name, ranked in (("dense", dense), ("bm25", text)) if ranked is not None}
                fused_hits.append(hits)
                fused_ranks.append(ranks if explain else None)
                empty.append(text is not None and not text)
        if self.reranker is not None:
            fused_hits, fused_ranks = self._rerank(queries, fused_hits, fused_ranks, explain)
        out = []
        for q, hits, ranks, no_text, r in zip(queries, fused_hits, fused_ranks, empty, routes):
            resp = self._respond(q, mode, hits, k, leg_ranks=ranks, reranked=self.reranker is not None, route=r)
            if no_text:
                resp.notes.append("BM25 found no matching terms (only stop words or unknown words?): "
                                  "ranked by the dense leg alone")
            out.append(resp)
        return out

    # ------------------------------------------------------------------ helpers
    def _units(self, mode: Mode) -> bool:
        """The dense leg scores units too: a collection with sentence vectors, a mode with it."""
        return mode != "bm25" and self.store.info.sentence_vectors

    def _unit_scored(self, chunk_lists: list[list[tuple[str, float]]],
                     text_lists: list[list[tuple[str, float]]] | None, specs: list[list[Leg]],
                     per_query: list[list[Condition]]) -> list[list[tuple[str, float]]]:
        """Each query's dense leg in a collection with sentence vectors. Its candidates are the
        chunk vector's nearest and, in hybrid mode, BM25's (rag.search.units.candidates: units
        need no index of their own); every candidate's best-unit score, and the chunk score of
        those only BM25 found, are asked of the store by id in one batched call, then combined
        (rag.search.units.combine) and cut to the leg's depth."""
        chunk = [dict(c) for c in chunk_lists]
        units: list[dict[str, float]] = [{} for _ in chunk_lists]
        asks, into = [], []
        for i, legs in enumerate(specs):
            vector = legs[0].vector
            candidates = U.candidates(chunk[i], text_lists[i] if text_lists is not None else ())
            lacking = [d for d in candidates if d not in chunk[i]]
            for kind, ids, scores in (("units", candidates, units[i]), ("dense", lacking, chunk[i])):
                if ids:
                    asks.append(QuerySpec(legs=[Leg(kind=kind, vector=vector, limit=len(ids))], limit=len(ids),
                                          filter=per_query[i], ids=ids, with_payload=False))
                    into.append(scores)
        for scores, hits in zip(into, self.store.query_batch(asks) if asks else []):
            scores.update((h.id, h.score) for h in hits)
        return [U.combine(c, u, self.unit_weight, self.candidates) for c, u in zip(chunk, units)]

    def _name_best_units(self, responses: list[SearchResponse], vectors: np.ndarray) -> None:
        """Set each result's unit_start/unit_end to its unit closest to the query (one store read
        of every result's unit vectors)."""
        ids = list(dict.fromkeys(r.id for resp in responses for r in resp.results))
        stored = self.store.unit_vectors(ids) if ids else {}
        for resp, q in zip(responses, vectors):
            for r in resp.results:
                vectors = stored.get(r.id)
                if vectors is None or len(vectors) != len(r._unit_spans):
                    continue
                r._unit_vectors = np.ascontiguousarray(vectors, dtype=np.float32).tobytes()
                span = U.best_unit(q, vectors, r._unit_spans)
                if span is not None:
                    r.unit_start, r.unit_end = span

    def _depth(self, k: int) -> int:
        """How many first-stage hits a query needs: k, the rerank depth, MMR's candidates."""
        if self.reranker is not None:  # MMR then diversifies the reranked candidates
            return max(k, self.rerank_depth)
        return max(k, self.candidates) if self.mmr_lambda is not None else k

    def _rerank(self, queries: Sequence[str], hit_lists: list[list[Hit]],
                leg_ranks: list[dict | None], explain: bool) -> tuple[list[list[Hit]], list[dict | None]]:
        """The first `rerank_depth` hits of every query scored in one batched reranker call and
        reordered; the rest kept after them in first-stage order. With explain, each hit's
        first-stage rank and score ("fused", or its leg's name) and its rerank rank and score."""
        pairs, spans = [], []
        for q, hits in zip(queries, hit_lists):
            head = hits[:self.rerank_depth]
            spans.append((len(pairs), len(head)))
            pairs += [(q, h.payload.get(P.INDEX_TEXT) or h.payload.get(P.TEXT, "")) for h in head]
        with span("rag.search.rerank", **{"rag.search.rerank.pairs": len(pairs)}):
            scores = self.reranker.score(pairs) if pairs else []
        out_hits, out_ranks = [], []
        for hits, ranks, (start, n) in zip(hit_lists, leg_ranks, spans):
            s = [float(x) for x in scores[start:start + n]]
            order = rerank_order(s)
            if explain:
                ranks = dict(ranks or {})
                if len(ranks) != 1:  # hybrid: the fused rank beside the legs' (one leg: that leg's)
                    ranks["fused"] = {h.id: LegResult(rank=r, score=h.score) for r, h in enumerate(hits, 1)}
                ranks["rerank"] = {hits[i].id: LegResult(rank=r, score=s[i]) for r, i in enumerate(order, 1)}
            head = [Hit(id=hits[i].id, score=s[i], payload=hits[i].payload, vector=hits[i].vector) for i in order]
            out_hits.append(head + hits[n:])
            out_ranks.append(ranks)
        return out_hits, out_ranks

    def _legs(self, query: str, vector, mode: Mode) -> list[Leg]:
        legs = []
        if mode in ("dense", "hybrid"):
            legs.append(Leg(kind="dense", vector=[float(x) for x in vector], limit=self.candidates))
        if mode in ("bm25", "hybrid"):
            legs.append(Leg(kind="text", text=query, limit=self.candidates))
        return legs

    @staticmethod
    def _single_leg(mode: Mode, hits: list[Hit]) -> dict[str, dict[str, LegResult]] | None:
        if mode == "hybrid":
            return None
        name = "dense" if mode == "dense" else "bm25"
        return {name: {h.id: LegResult(rank=r, score=h.score) for r, h in enumerate(hits, 1)}}

    def _respond(self, query: str, mode: Mode, hits: list[Hit], k: int,
                 leg_ranks: dict[str, dict[str, LegResult]] | None, reranked: bool = False,
                 route: RouteInfo | None = None) -> SearchResponse:
        notes = []
        if reranked and hits:
            notes.append(f"reranked the first {min(self.rerank_depth, len(hits))} candidates with a cross-encoder"
                         + (f"; results after rank {self.rerank_depth} are in first-stage order"
                            if k > self.rerank_depth and len(hits) > self.rerank_depth else ""))
        if self.mmr_lambda is not None and hits:
            vecs = np.asarray([h.vector for h in hits], dtype=np.float32)
            hits = [hits[i] for i in mmr([h.score for h in hits], vecs, k, self.mmr_lambda)]
            notes.append(f"diversified with MMR (lambda {self.mmr_lambda})")
        hits = hits[:k]
        if not hits and mode == "bm25":
            notes.append("BM25 matched nothing: the query has only stop words or words not in the "
                         "collection; try --mode dense or hybrid")
        results = []
        for rank, h in enumerate(hits, 1):
            p = h.payload
            legs = {name: r[h.id] for name, r in (leg_ranks or {}).items() if h.id in r}
            result = SearchResult(rank=rank, id=h.id, score=h.score, text=p.get(P.TEXT, ""),
                                  source=p.get(P.SOURCE, ""), page_start=p.get(P.PAGE_START, 1),
                                  page_end=p.get(P.PAGE_END, 1), section=p.get(P.SECTION),
                                  file_hash=p.get(P.FILE_HASH), chunk_index=p.get(P.CHUNK_INDEX),
                                  char_start=p.get(P.CHAR_START), char_end=p.get(P.CHAR_END), legs=legs)
            result._unit_spans = p.get(P.UNIT_SPANS) or []
            results.append(result)
        return SearchResponse(query=query, mode=mode, fusion=self.fusion if mode == "hybrid" else None,
                              results=results, notes=notes, route=route)


def default_weights(info) -> tuple[float, float]:
    """The fusion weights (dense, BM25) a collection gets when none are given: DEFAULT_UNIT_WEIGHTS
    with sentence vectors, DEFAULT_WEIGHTS without."""
    return DEFAULT_UNIT_WEIGHTS if getattr(info, "sentence_vectors", False) else DEFAULT_WEIGHTS


def _check_route(route: str) -> Route:
    if route not in ROUTES:
        raise ConfigError(f"unknown route '{route}': use auto or off")
    return route  # type: ignore[return-value]


def _leg_names(specs: list[list[Leg]]) -> list[str]:
    """The legs every query searches (dense, units, text), for a trace."""
    return [leg.kind for leg in specs[0]] if specs else []
