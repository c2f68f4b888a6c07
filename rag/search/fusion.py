"""Fusion of ranked lists, each method a small pure function.

Input: one list per leg of (id, score), best first. Output: (id, fused score), best first.
Documents missing from a leg get nothing from it.

- rrf: reciprocal rank fusion, score(d) = sum_i w_i / (k + r_i(d)) with 1-based ranks r and
  k = 60 by default (Cormack, Clarke & Buettcher 2009). Qdrant's engine computes 1/(k + r) with
  0-based ranks, so it is given our k + 1; for equal weights the two agree exactly.
- wsf: weighted score fusion; each leg's scores are min-max normalised to [0, 1] over that leg's
  candidates (1 for the best, 0 for the worst; all 1 when the leg's scores are equal), then
  sum_i w_i * s_i.
- dbsf: distribution-based score fusion (as in Qdrant): each leg's scores are normalised with
  mean -+ 3 sample standard deviations as 0 and 1, then sum_i w_i * s_i.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Ranked = Sequence[tuple[str, float]]

DEFAULT_RRF_K = 60  # Cormack, Clarke & Buettcher 2009


def _weights(lists: Sequence[Ranked], weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * len(lists)
    if len(weights) != len(lists):
        raise ValueError(f"{len(weights)} weights for {len(lists)} lists")
    return list(weights)


def _sorted(scores: dict[str, float]) -> list[tuple[str, float]]:
    # ties broken by id so results are deterministic
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def rrf(lists: Sequence[Ranked], k: float = DEFAULT_RRF_K, weights: Sequence[float] | None = None) -> list[tuple[str, float]]:
    ws = _weights(lists, weights)
    out: dict[str, float] = {}
    for w, ranked in zip(ws, lists):
        for rank, (doc, _) in enumerate(ranked, start=1):
            out[doc] = out.get(doc, 0.0) + w / (k + rank)
    return _sorted(out)


def minmax(scores: Sequence[float]) -> list[float]:
    if not scores:
        return []
    lo, hi = min(scores), max(scores)
    if hi == lo:
        return [1.0] * len(scores)
    return [(s - lo) / (hi - lo) for s in scores]


def three_sigma(scores: Sequence[float]) -> list[float]:
    """Qdrant's DBSF normalisation: (s - (mu - 3 sigma)) / (6 sigma) with the sample standard
    deviation; a single score or zero spread maps to 0.5."""
    n = len(scores)
    if n == 0:
        return []
    if n == 1:
        return [0.5]
    mu = sum(scores) / n
    sigma = math.sqrt(sum((s - mu) ** 2 for s in scores) / (n - 1))
    if sigma == 0:
        return [0.5] * n
    lo = mu - 3 * sigma
    return [(s - lo) / (6 * sigma) for s in scores]


def _score_fusion(lists, weights, normalise) -> list[tuple[str, float]]:
    ws = _weights(lists, weights)
    out: dict[str, float] = {}
    for w, ranked in zip(ws, lists):
        for (doc, _), s in zip(ranked, normalise([s for _, s in ranked])):
            out[doc] = out.get(doc, 0.0) + w * s
    return _sorted(out)


def wsf(lists: Sequence[Ranked], weights: Sequence[float] | None = None) -> list[tuple[str, float]]:
    return _score_fusion(lists, weights, minmax)


def dbsf(lists: Sequence[Ranked], weights: Sequence[float] | None = None) -> list[tuple[str, float]]:
    return _score_fusion(lists, weights, three_sigma)


METHODS = {"rrf": rrf, "wsf": wsf, "dbsf": dbsf}


def fuse(method: str, lists: Sequence[Ranked], weights: Sequence[float] | None = None,
         rrf_k: float = DEFAULT_RRF_K) -> list[tuple[str, float]]:
    """Fuse with the named method (`rrf_k` applies to rrf only)."""
    if method == "rrf":
        return rrf(lists, k=rrf_k, weights=weights)
    return METHODS[method](lists, weights=weights)
