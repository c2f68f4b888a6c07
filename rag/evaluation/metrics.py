"""Retrieval metrics as small pure functions (the definitions of trec_eval / BEIR).

`ranked`: document ids, best first. `qrels`: id -> graded relevance (> 0 is relevant).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def dcg(gains: Sequence[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def ndcg_at_k(ranked: Sequence[str], qrels: Mapping[str, float], k: int = 10) -> float:
    """Graded nDCG with linear gain: sum rel_i / log2(i + 1) over the top k (i from 1),
    divided by the same for the ideal ordering of the judged documents."""
    ideal = dcg(sorted((r for r in qrels.values() if r > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return dcg([max(qrels.get(d, 0), 0) for d in ranked[:k]]) / ideal


def recall_at_k(ranked: Sequence[str], qrels: Mapping[str, float], k: int) -> float:
    relevant = {d for d, r in qrels.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at_k(ranked: Sequence[str], qrels: Mapping[str, float], k: int = 10) -> float:
    for i, d in enumerate(ranked[:k], start=1):
        if qrels.get(d, 0) > 0:
            return 1.0 / i
    return 0.0


def evaluate(run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Mean nDCG@10, recall@10, recall@100 and MRR@10 over the queries that have judgements
    (a query missing from `run` counts as retrieving nothing)."""
    names = {"ndcg@10": lambda r, q: ndcg_at_k(r, q, 10), "recall@10": lambda r, q: recall_at_k(r, q, 10),
             "recall@100": lambda r, q: recall_at_k(r, q, 100), "mrr@10": lambda r, q: mrr_at_k(r, q, 10)}
    judged = [q for q, rel in qrels.items() if any(v > 0 for v in rel.values())]
    if not judged:
        return {n: 0.0 for n in names}
    return {n: sum(f(run.get(q, []), qrels[q]) for q in judged) / len(judged) for n, f in names.items()}
