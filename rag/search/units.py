"""The dense leg of a collection with sentence vectors: a chunk scored by its own vector and by
its best unit's (issue 26).

    score(chunk) = w * cos(q, chunk vector) + (1 - w) * max over units u of cos(q, u)

with w = DEFAULT_UNIT_WEIGHT. Measured outside the package on SciFact with all-MiniLM-L6-v2,
whole documents (weights chosen on the train queries, read on test): one vector per document
0.645 nDCG@10, the best sentence alone 0.686, this mix with w = 0.5 0.704; in the package, see
DEFAULT_UNIT_WEIGHT. A chunk's mean-pooled vector hears its whole text, where the one
sentence that answers a question drowns; its best unit hears that sentence; the mix keeps both.

Candidates come from both vectors (the engine's nearest chunks and its best MAX_SIM chunks), and
every candidate is scored on both, so a chunk found by one vector is not scored 0 on the other.
These are the pure decisions; the retriever asks the store for the scores.
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


def missing(chunk: Mapping[str, float], units: Mapping[str, float]) -> tuple[list[str], list[str]]:
    """(candidates without a chunk score, candidates without a unit score): what the store must
    score next, in first-seen order."""
    return [i for i in units if i not in chunk], [i for i in chunk if i not in units]


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
