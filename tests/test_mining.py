"""Paraphrase mining: exact against a brute-force reference, across tile boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from rag.mining import mine_pairs


def brute_force(x: np.ndarray, threshold: float):
    sims = x @ x.T
    return sorted(((i, j, float(sims[i, j])) for i in range(len(x)) for j in range(i + 1, len(x))
                   if sims[i, j] >= threshold), key=lambda t: (-t[2], t[0], t[1]))


@pytest.mark.parametrize("block", [1, 3, 7, 64])
def test_matches_brute_force_for_any_tile_size(block):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(20, 16)).astype(np.float32)
    x = np.concatenate([base, base[:6] + 0.05 * rng.normal(size=(6, 16)).astype(np.float32)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    got = mine_pairs(x, 0.9, block=block)
    want = brute_force(x, 0.9)
    assert [(i, j) for i, j, _ in got] == [(i, j) for i, j, _ in want]
    assert [s for *_, s in got] == pytest.approx([s for *_, s in want], abs=1e-6)
    assert {(i, j) for i, j, _ in got} >= {(k, 20 + k) for k in range(6)}  # the planted near-duplicates


def test_edge_cases():
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    assert mine_pairs(x, 0.99, normalized=False) == [(0, 1, pytest.approx(1.0))]
    assert mine_pairs(x[:1], 0.5) == []
    assert mine_pairs(np.zeros((0, 2), dtype=np.float32), 0.5) == []
    with pytest.raises(ValueError):
        mine_pairs(x, 1.5)


def test_real_paraphrases_are_found(encoder):
    texts = ["A man is playing a guitar.", "The stock market fell today.", "A man plays the guitar.",
             "Shares dropped sharply on the exchange today.", "A cat sleeps on the sofa."]
    pairs = mine_pairs(encoder.encode(texts), 0.6)
    found = {(i, j) for i, j, _ in pairs}
    assert (0, 2) in found
    assert all(s >= 0.6 for *_, s in pairs)
    assert (0, 4) not in found
