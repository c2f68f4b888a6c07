"""Vectors of texts already embedded, kept by text: what re-reads the same passages embeds
each of their sentences once.

Extractive answers embed every sentence of the passages they quote from, and the passages a
collection returns repeat from question to question (a chat's follow-ups, a server's users
asking about the same documents): on this machine that is about a second of encoder time a
question. `VectorCache.encode(encoder, texts)` looks each text up, embeds only the misses in
one `encoder.encode` call (in the order given) and keeps them, least recently used out first
beyond `max_entries`. One cache serves one encoder: vectors of another model are other vectors.

Queries are not meant for it: a search's query is embedded afresh each time, which is what
its latency is measured with.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np

from rag.embed.protocol import Encoder

DEFAULT_MAX_ENTRIES = 20_000  # 384-dim float32: about 31 MB of vectors, plus the texts


class VectorCache:
    """A bounded, thread-safe LRU of text -> vector for one encoder. `stats`: misses (texts
    embedded) and hits (texts served without embedding, a repeat within one call included)."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = int(max_entries)
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = {"hits": 0, "misses": 0}

    def __len__(self) -> int:
        return len(self._vectors)

    def put(self, vectors: Mapping[str, np.ndarray]) -> None:
        """Keep vectors made elsewhere (a collection's stored sentence vectors), by text: the
        texts' next `encode` reads them instead of embedding them."""
        with self._lock:
            for t, v in vectors.items():
                v = np.array(v, dtype=np.float32)  # a copy, not a view of a larger array
                v.setflags(write=False)
                self._vectors[t] = v
                self._vectors.move_to_end(t)
            while len(self._vectors) > self.max_entries:
                self._vectors.popitem(last=False)

    def encode(self, encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
        """The vectors of `texts` (float32, shape (n, dim)) in input order: cached ones as
        they were, the others from one `encoder.encode` call of the distinct misses."""
        texts = list(texts)
        if not texts:
            return np.asarray(encoder.encode([]), dtype=np.float32)
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for t in texts:
                v = self._vectors.get(t)
                if v is not None:
                    self._vectors.move_to_end(t)
                    found[t] = v
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            vectors = np.asarray(encoder.encode(missing), dtype=np.float32)
            with self._lock:
                for t, v in zip(missing, vectors):
                    v = v.copy()  # not a view that keeps the whole batch alive
                    v.setflags(write=False)
                    self._vectors[t] = found[t] = v
                    self._vectors.move_to_end(t)
                while len(self._vectors) > self.max_entries:
                    self._vectors.popitem(last=False)
        with self._lock:
            self.stats["misses"] += len(missing)
            self.stats["hits"] += len(texts) - len(missing)
        return np.stack([found[t] for t in texts])
