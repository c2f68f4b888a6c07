"""Embedding chunks for the store: each chunk's vector and, when the chunker marked units
(rag.ingest.units), each unit's vector. One function, used by every ingest path (the
single-process job, in-memory documents, Ray's encoder actors), so that all write the same
vectors.

Chunk texts and unit texts go to the encoder in one call: it sorts its input by length, so the
many short units are batched with each other and not padded to a chunk's length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rag.embed.protocol import Encoder
from rag.models import Chunk


def encode_chunks(encoder: Encoder, chunks: Sequence[Chunk]) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """(the chunks' vectors in order, each chunk's unit vectors as a (units, dimension) array),
    the second None when no chunk has units (a chunker without sentence vectors)."""
    texts = [c.indexed_text for c in chunks]  # with its context, if any
    if all(c.units is None for c in chunks):
        return encoder.encode(texts), None
    bounds = [len(texts)]
    for c in chunks:
        texts += c.unit_texts
        bounds.append(len(texts))
    vectors = encoder.encode(texts)
    return vectors[:len(chunks)], [vectors[a:b] for a, b in zip(bounds, bounds[1:])]
