"""Paraphrase / near-duplicate mining: all pairs of texts whose embeddings are at least
`threshold` cosine-similar, computed tile by tile so that memory stays bounded (one
block x block similarity tile at a time, plus the pairs found)."""

from __future__ import annotations

import numpy as np


def mine_pairs(embeddings: np.ndarray, threshold: float, block: int = 2048,
               normalized: bool = True) -> list[tuple[int, int, float]]:
    """Pairs (i, j, cosine) with i < j and cosine >= threshold, best first.

    embeddings: (n, dim); rows are L2-normalised unless `normalized` is False.
    block: tile edge; peak extra memory is about block * block * 4 bytes.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError("threshold must be a cosine, within [-1, 1]")
    x = np.asarray(embeddings, dtype=np.float32)
    if not normalized:
        x = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
    n = len(x)
    rows, cols, sims = [], [], []
    for a in range(0, n, block):
        xa = x[a:a + block]
        for b in range(a, n, block):
            tile = xa @ x[b:b + block].T
            if a == b:  # the diagonal tile: only pairs above the diagonal
                tile = np.triu(tile, k=1) + np.tril(np.full_like(tile, -np.inf))
            i, j = np.nonzero(tile >= threshold)
            if len(i):
                rows.append(i + a)
                cols.append(j + b)
                sims.append(tile[i, j])
    if not rows:
        return []
    r, c, s = np.concatenate(rows), np.concatenate(cols), np.concatenate(sims)
    order = np.lexsort((c, r, -s))
    return [(int(r[k]), int(c[k]), float(s[k])) for k in order]
