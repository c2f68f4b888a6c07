"""The dense leg of a collection with sentence vectors: a chunk scored by its own vector and by
its best unit's (issue 26).

    score(chunk) = w * cos(q, chunk vector) + (1 - w) * max over units u of cos(q, u)

with w = DEFAULT_UNIT_WEIGHT. Measured outside the package on SciFact with all-MiniLM-L6-v2,
whole documents (weights chosen on the train queries, read on test): one vector per document
0.645 nDCG@10, the best sentence alone 0.686, this mix with w = 0.5 0.704; in the package, see
DEFAULT_UNIT_WEIGHT. A chunk's mean-pooled vector hears its whole text, where the one
sentence that answers a question drowns; its best unit hears that sentence; the mix keeps both.

Candidates come from the chunk vector's nearest chunks and, in hybrid mode, BM25's best (the
legs' depth each); every candidate's best unit is then scored by id, so units need no search
index of their own (a new collection builds none: the HNSW graph of a MAX_SIM multivector over
100k chunks took longer than 25 minutes to build here, the chunk vectors' 3 minutes). Measured on
SciFact test with the exact scores of every unit of every chunk (benchmarks/tune_units.py's
read), 100 candidates: dense 0.7033 nDCG@10 rescoring the chunk vector's and BM25's candidates,
0.7033 scoring every chunk; hybrid 0.7301 and 0.7279. These are the pure decisions; the retriever
asks the store for the scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from rag.text.sentences import ends_a_sentence

# w, the chunk vector's share. Chosen on SciFact's 809 TRAIN queries in this package (256-token
# chunks with document context, every unit embedded after it too, `rag eval retrieval --split
# train --unit-weight W`), nDCG@10 dense / hybrid (dbsf): w 0.3 0.699 / 0.741, 0.4 0.701 / 0.743,
# 0.5 0.704 / 0.745, 0.6 0.704 / 0.744, 0.7 0.702 / 0.741. Test (300 queries) at 0.5: 0.709 /
# 0.735; with sentences embedded alone (Chunk.unit_texts, the default since) 0.703 / 0.732, against
# 0.660 / 0.730 with one vector per chunk. Not swept again for the sentences-alone units.
DEFAULT_UNIT_WEIGHT = 0.5


def candidates(chunk: Mapping[str, float], text: Sequence[tuple[str, float]] = ()) -> list[str]:
    """The chunks whose best unit the store scores: the chunk vector's candidates, then BM25's
    that are not among them, in first-seen order."""
    return list(dict.fromkeys([*chunk, *(i for i, _ in text)]))


def combine(chunk: Mapping[str, float], units: Mapping[str, float], weight: float = DEFAULT_UNIT_WEIGHT,
            limit: int | None = None) -> list[tuple[str, float]]:
    """(id, weight * chunk score + (1 - weight) * best unit score), best first, ties by id; a
    candidate without a score on one vector (a point without units) counts its other score twice."""
    ids = dict.fromkeys([*chunk, *units])
    scored = [(i, weight * chunk.get(i, units.get(i, 0.0)) + (1 - weight) * units.get(i, chunk.get(i, 0.0)))
              for i in ids]
    scored.sort(key=lambda kv: (-kv[1], kv[0]))
    return scored[:limit] if limit is not None else scored


def best_unit(query: np.ndarray, unit_vectors: np.ndarray, spans: Sequence[Sequence[int]]) -> tuple[int, int] | None:
    """The span of the unit closest to the query (the unit vectors are unit length, so the dot
    product ranks as the cosine); None when the chunk has no units."""
    if len(unit_vectors) == 0 or len(spans) != len(unit_vectors):
        return None
    a, b = spans[int(np.argmax(unit_vectors @ np.asarray(query, dtype=np.float32)))]
    return int(a), int(b)


def stored_sentences(text: str, spans: Sequence[Sequence[int]], unit_vectors: np.ndarray) -> dict[str, np.ndarray]:
    """The stored vectors of a chunk's units that were embedded alone (those that end as a
    sentence: Chunk.unit_texts), by their text: exactly what an extractive answer would embed
    for those sentences at question time, so it reads them instead."""
    if len(spans) != len(unit_vectors):
        return {}
    out = {}
    for (a, b), v in zip(spans, unit_vectors):
        sentence = text[a:b].strip()
        if sentence and ends_a_sentence(sentence):
            out[sentence] = v
    return out
