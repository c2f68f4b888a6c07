"""Community detection over sentence embeddings (the clustering use of Sentence-BERT), in
bounded memory.

The algorithm is sentence-transformers' `util.community_detection` (fast clustering, Reimers &
Gurevych; https://sbert.net/examples/sentence_transformer/applications/clustering): every point
with at least `min_size` points at cosine >= `threshold` (itself included) proposes the community
of those points, centred on it; proposals are taken largest first (ties: the earlier centre)
and each keeps the points no earlier community has taken, when its centre is free and at least
`min_size` remain. We return the same communities, computed differently:

- the similarities come one block x block tile at a time (rag.embed.similarity), never a
  block x n slab and never a top-k over n columns (what sentence-transformers keeps in memory:
  1024 x n floats, plus its top-k values and indices, which grow to 1024 x n when a community
  is large);
- a proposal is kept as its member indices (uint32), at most `max_neighbors` of them in all;
  past that budget a proposal keeps only its size and its members are computed again, a few
  centres at a time, when the greedy pass reaches it. Peak memory is one tile, the budget and
  O(n), whatever the threshold.

Members of a community come centre first, then by decreasing cosine to the centre (ties: the
lower index), as sentence-transformers lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from pydantic import BaseModel

from rag.embed.similarity import unit_rows

DEFAULT_MAX_NEIGHBORS = 50_000_000  # member indices kept for proposals: 200 MB of uint32


def _neighbours_of_block(x: np.ndarray, rows: np.ndarray, threshold: float, block: int,
                         keep_budget: int) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """For the given rows: the count of columns with cosine >= threshold, and (while the number
    of such pairs stays within keep_budget) each row's columns ordered by decreasing cosine;
    None when the budget ran out."""
    n = len(x)
    xr = x[rows]
    counts = np.zeros(len(rows), dtype=np.int64)
    r_parts: list[np.ndarray] = []
    c_parts: list[np.ndarray] = []
    s_parts: list[np.ndarray] = []
    kept = 0
    keeping = keep_budget > 0
    for b in range(0, n, block):
        tile = xr @ x[b:b + block].T
        hit = tile >= threshold
        counts += hit.sum(axis=1)
        if keeping:
            r, c = np.nonzero(hit)
            kept += len(r)
            if kept > keep_budget:
                keeping = False
                r_parts, c_parts, s_parts = [], [], []
            else:
                r_parts.append(r.astype(np.int32))
                c_parts.append((c + b).astype(np.uint32))
                s_parts.append(tile[r, c])
    if not keeping:
        return counts, None
    if not r_parts:
        return counts, [np.zeros(0, dtype=np.uint32) for _ in rows]
    r, c, s = np.concatenate(r_parts), np.concatenate(c_parts), np.concatenate(s_parts)
    order = np.lexsort((c, -s, r))  # by row, then decreasing cosine, then index
    c = c[order]
    bounds = np.searchsorted(r[order], np.arange(len(rows) + 1))
    return counts, [c[bounds[k]:bounds[k + 1]] for k in range(len(rows))]


def community_detection(embeddings: np.ndarray, threshold: float = 0.75, min_size: int = 10,
                        block: int = 1024, normalized: bool = True,
                        max_neighbors: int = DEFAULT_MAX_NEIGHBORS,
                        on_rows: Callable[[int], None] | None = None) -> list[np.ndarray]:
    """Communities of `embeddings` (n, dim) as arrays of row indices, largest first, each with its
    centre first; rows in none are left out. The same communities as sentence-transformers'
    `community_detection(embeddings, threshold, min_community_size=min_size)`.

    block: rows per similarity tile (memory ~ block^2 * 4 bytes for the tile). normalized: rows
    are unit vectors already. max_neighbors: member indices kept between the two passes (4 bytes
    each); beyond it members are recomputed. on_rows(k): k more rows of the first pass done.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError("threshold must be a cosine, within [-1, 1]")
    if min_size < 1:
        raise ValueError("min_size must be at least 1")
    if block < 1:
        raise ValueError("block must be at least 1")
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    n = len(x)
    if n == 0 or n < min_size:
        return []
    if not normalized:
        x = unit_rows(x)
    threshold = float(np.float32(threshold))

    # pass 1: every row's neighbourhood size; the members of the proposals while they fit
    sizes = np.zeros(n, dtype=np.int64)
    members: dict[int, np.ndarray] = {}
    budget = max_neighbors
    for a in range(0, n, block):
        rows = np.arange(a, min(a + block, n))
        counts, lists = _neighbours_of_block(x, rows, threshold, block, budget)
        sizes[rows] = counts
        if lists is not None:
            for k in np.nonzero(counts >= min_size)[0]:
                members[int(rows[k])] = lists[k]
                budget -= len(lists[k])
        if on_rows is not None:
            on_rows(len(rows))

    # pass 2: proposals largest first (a stable sort: ties keep the earlier centre)
    centres = np.nonzero(sizes >= min_size)[0]
    centres = centres[np.argsort(-sizes[centres], kind="stable")]
    used = np.zeros(n, dtype=bool)
    free_rows = n
    out: list[np.ndarray] = []
    for pos, centre in enumerate(centres):
        centre = int(centre)
        if used[centre]:
            continue
        if free_rows < min_size:
            break
        community = members.pop(centre, None)
        if community is None:  # over the budget in pass 1: recompute it with the next few
            todo = [int(c) for c in centres[pos:pos + block] if int(c) not in members and not used[c]][:64]
            _, lists = _neighbours_of_block(x, np.asarray(todo), threshold, block, keep_budget=2**62)
            members.update(zip(todo, lists))
            community = members.pop(centre)
        free = community[~used[community]]
        if len(free) >= min_size:
            group = np.concatenate(([centre], free[free != centre])).astype(np.int64)
            used[group] = True
            free_rows -= len(group)
            out.append(group)
    out.sort(key=len, reverse=True)
    return out


class Cluster(BaseModel):
    """One community: `members` (row indices, centre first, then by decreasing cosine to it),
    `central` (the member nearest the members' mean direction: the most typical text), and the
    top `terms` of its texts (rag.text.keywords) with their weights."""

    id: int
    size: int
    members: list[int]
    central: int
    terms: list[tuple[str, float]] = []


def describe(texts: Sequence[str], embeddings: np.ndarray, communities: Sequence[np.ndarray],
             terms: int = 8, normalized: bool = True) -> list[Cluster]:
    """Clusters (numbered from 1, in the given order) with their central member and top terms."""
    from rag.text.keywords import top_terms

    x = np.asarray(embeddings, dtype=np.float32)
    if not normalized:
        x = unit_rows(x)
    labels = top_terms(texts, [c.tolist() for c in communities], k=terms)
    out = []
    for k, (c, label) in enumerate(zip(communities, labels), start=1):
        v = x[c]
        central = int(c[int(np.argmax(v @ v.mean(axis=0)))])
        out.append(Cluster(id=k, size=len(c), members=[int(i) for i in c], central=central, terms=label))
    return out


def cluster(texts: Sequence[str], embeddings: np.ndarray, threshold: float = 0.75, min_size: int = 10,
            terms: int = 8, block: int = 1024, normalized: bool = True,
            on_rows: Callable[[int], None] | None = None) -> list[Cluster]:
    """Community detection over `embeddings` (one row per text), then each community described:

        from rag.embed.clustering import cluster
        clusters = cluster(texts, encoder.encode(texts), threshold=0.75, min_size=10)
    """
    if len(texts) != len(embeddings):
        raise ValueError(f"{len(texts)} texts but {len(embeddings)} embeddings")
    x = np.asarray(embeddings, dtype=np.float32)
    if not normalized:
        x = unit_rows(x)
    found = community_detection(x, threshold, min_size, block=block, on_rows=on_rows)
    return describe(texts, x, found, terms=terms)
