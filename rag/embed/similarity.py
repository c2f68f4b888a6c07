"""All-pairs cosine similarity of a set of embeddings in bounded memory.

The full n x n matrix does not fit for large n (100k texts: 40 GB in float32), so it is computed
one block x block tile at a time and each tile is dropped once the caller has looked at it.
Paraphrase mining (every pair above a threshold) and the ingest's near-duplicate check (the most
similar earlier chunk of each chunk) both walk the same tiles from here.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def similarity_tiles(x: np.ndarray, block: int = 2048, upper_only: bool = True,
                     normalized: bool = True) -> Iterator[tuple[int, int, np.ndarray]]:
    """(row_offset, col_offset, tile) with tile[r, c] = cos(x[row_offset + r], x[col_offset + c]).

    upper_only: only tiles on or above the diagonal, with every entry whose column is not after
    its row (the diagonal and below) set to -inf: each unordered pair i < j appears exactly once,
    as (row i, column j). Row blocks come in order, and within one the column blocks.
    normalized: the rows are unit vectors already; False scales them first.
    Peak extra memory is one tile, block * block * 4 bytes.
    """
    if block < 1:
        raise ValueError("block must be at least 1")
    x = unit_rows(x) if not normalized else np.asarray(x, dtype=np.float32)
    n = len(x)
    for a in range(0, n, block):
        xa = x[a:a + block]
        for b in range(a if upper_only else 0, n, block):
            tile = xa @ x[b:b + block].T
            if upper_only and a == b:  # the diagonal tile (square): keep only column > row
                tile[np.tril_indices(len(tile))] = -np.inf
            yield a, b, tile


def best_earlier(x: np.ndarray, block: int = 1024, normalized: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """For each row i, the most similar earlier row j < i and their cosine: (index, cosine)
    arrays of length n; row 0 has index -1 and cosine -inf. Ties go to the earliest row.
    What a near-duplicate check of a batch against itself needs, in bounded memory."""
    n = len(x)
    index = np.full(n, -1, dtype=np.int64)
    score = np.full(n, -np.inf, dtype=np.float32)
    for a, b, tile in similarity_tiles(x, block, upper_only=True, normalized=normalized):
        # tile[r, c] pairs the earlier row a + r with the later row b + c
        rows = np.argmax(tile, axis=0)
        sims = tile[rows, np.arange(tile.shape[1])]
        later = np.arange(b, b + tile.shape[1])
        better = sims > score[later]  # strict: an earlier row block keeps a tie
        index[later[better]] = a + rows[better]
        score[later[better]] = sims[better]
    return index, score
