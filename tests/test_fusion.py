"""Fusion functions and metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rag.search import fusion as F
from rag.evaluation.metrics import evaluate, mrr_at_k, ndcg_at_k, recall_at_k
from rag.search.retrieval import mmr

DENSE = [("a", 0.9), ("b", 0.8), ("c", 0.5)]
BM25 = [("c", 12.0), ("a", 6.0), ("d", 3.0)]


def test_rrf_by_hand():
    got = dict(F.rrf([DENSE, BM25], k=60))
    assert got["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert got["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert got["b"] == pytest.approx(1 / 62)
    assert got["d"] == pytest.approx(1 / 63)
    assert [d for d, _ in F.rrf([DENSE, BM25], k=60)] == ["a", "c", "b", "d"]


def test_rrf_weights_multiply_each_leg():
    got = dict(F.rrf([DENSE, BM25], k=10, weights=[2.0, 1.0]))
    assert got["a"] == pytest.approx(2 / 11 + 1 / 12)
    assert got["d"] == pytest.approx(1 / 13)
    with pytest.raises(ValueError):
        F.rrf([DENSE, BM25], weights=[1.0])


def test_wsf_minmax_by_hand():
    got = dict(F.wsf([DENSE, BM25], weights=[1.0, 0.5]))
    # dense: a=1, b=(0.8-0.5)/0.4=0.75, c=0 ; bm25: c=1, a=(6-3)/9=1/3, d=0
    assert got["a"] == pytest.approx(1 + 0.5 / 3)
    assert got["b"] == pytest.approx(0.75)
    assert got["c"] == pytest.approx(0.5)
    assert got["d"] == pytest.approx(0.0)
    assert F.minmax([2.0, 2.0]) == [1.0, 1.0]


def test_dbsf_three_sigma_by_hand():
    scores = [1.0, 2.0, 3.0]
    sigma = 1.0  # sample standard deviation of 1, 2, 3
    lo = 2.0 - 3 * sigma
    assert F.three_sigma(scores) == pytest.approx([(s - lo) / (6 * sigma) for s in scores])
    assert F.three_sigma([5.0]) == [0.5]
    got = dict(F.dbsf([DENSE, BM25]))
    d = F.three_sigma([0.9, 0.8, 0.5])
    b = F.three_sigma([12.0, 6.0, 3.0])
    assert got["a"] == pytest.approx(d[0] + b[1])
    assert got["d"] == pytest.approx(b[2])


def test_ties_are_deterministic():
    assert F.rrf([[("b", 1.0)], [("a", 1.0)]]) == [("a", pytest.approx(1 / 61)), ("b", pytest.approx(1 / 61))]


def test_metrics_by_hand():
    qrels = {"d1": 1, "d2": 1, "d3": 0}
    ranked = ["x", "d1", "d3", "d2"]
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3)
    assert ndcg_at_k(ranked, qrels, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(ranked, qrels, 2) == pytest.approx((1 / math.log2(3)) / idcg)
    assert recall_at_k(ranked, qrels, 2) == 0.5
    assert recall_at_k(ranked, qrels, 10) == 1.0
    assert mrr_at_k(ranked, qrels, 10) == 0.5
    assert mrr_at_k(ranked, qrels, 1) == 0.0
    graded = {"a": 2, "b": 1}
    assert ndcg_at_k(["b", "a"], graded) == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))
    m = evaluate({"q1": ranked}, {"q1": qrels, "q2": {"z": 1}})
    assert m["recall@100"] == pytest.approx(0.5)  # q2 retrieved nothing
    assert m["mrr@10"] == pytest.approx(0.25)


def test_mmr_prefers_diverse_results():
    v = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)  # 0 and 1 are duplicates
    assert mmr([0.9, 0.85, 0.5], v, k=2, lam=0.5) == [0, 2]
    assert mmr([0.9, 0.85, 0.5], v, k=2, lam=1.0) == [0, 1]
