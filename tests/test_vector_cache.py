"""The vector cache extractive answers read their sentences' vectors through: what it returns
is what the encoder gives, it embeds only what it has not seen, and it stays within its bound.
The pipeline test counts the texts that reach the real encoder."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from rag.embed.cache import VectorCache


class Counting:
    """The real encoder, counting the texts each encode call gets."""

    def __init__(self, encoder):
        self.encoder, self.calls = encoder, []

    def encode(self, texts, batch_size=None):
        self.calls.append(list(texts))
        return self.encoder.encode(texts)

    def __getattr__(self, name):
        return getattr(self.encoder, name)


SENTENCES = ["The harbour froze in the winter of 1963.", "Ferries ran again in March.",
             "A new breakwater was finished in 1971.", "The lighthouse keeper kept a diary."]


def test_vectors_are_the_encoders_in_input_order_and_misses_are_embedded_once(encoder):
    counting, cache = Counting(encoder), VectorCache()
    texts = [SENTENCES[2], SENTENCES[0], SENTENCES[2], SENTENCES[1]]  # one repeated within the call
    got = cache.encode(counting, texts)
    assert counting.calls == [[SENTENCES[2], SENTENCES[0], SENTENCES[1]]]  # distinct misses, in order
    np.testing.assert_allclose(got, encoder.encode(texts), atol=1e-5)
    again = cache.encode(counting, [SENTENCES[1], SENTENCES[3], SENTENCES[0]])
    assert counting.calls[1] == [SENTENCES[3]]  # only the new one
    np.testing.assert_allclose(again, encoder.encode([SENTENCES[1], SENTENCES[3], SENTENCES[0]]), atol=1e-5)
    assert cache.stats == {"hits": 1 + 2, "misses": 3 + 1}
    assert cache.encode(counting, []).shape == (0, encoder.dimension)


def test_the_least_recently_used_goes_first_beyond_the_bound(encoder):
    counting, cache = Counting(encoder), VectorCache(max_entries=2)
    cache.encode(counting, SENTENCES[:2])
    cache.encode(counting, [SENTENCES[0]])  # SENTENCES[0] is now the most recent
    cache.encode(counting, [SENTENCES[2]])  # evicts SENTENCES[1]
    assert len(cache) == 2
    cache.encode(counting, [SENTENCES[0], SENTENCES[2]])
    assert counting.calls[-1] == [SENTENCES[2]] and len(counting.calls) == 2  # both were hits
    cache.encode(counting, [SENTENCES[1]])
    assert counting.calls[-1] == [SENTENCES[1]]  # it had been evicted
    with pytest.raises(ValueError):
        VectorCache(max_entries=0)


def test_cached_vectors_cannot_be_changed_by_a_caller(encoder):
    cache = VectorCache()
    first = cache.encode(encoder, SENTENCES[:2])
    first[:] = 0  # the caller's copy
    np.testing.assert_allclose(cache.encode(encoder, SENTENCES[:2]), encoder.encode(SENTENCES[:2]), atol=1e-5)


def test_threads_sharing_a_cache_get_the_right_vectors(encoder):
    cache, errors = VectorCache(max_entries=3), []
    expected = {s: v for s, v in zip(SENTENCES, encoder.encode(SENTENCES))}

    def work(offset: int) -> None:
        for i in range(12):
            texts = [SENTENCES[(offset + i + j) % 4] for j in range(3)]
            got = cache.encode(encoder, texts)
            if not np.allclose(got, np.stack([expected[t] for t in texts]), atol=1e-5):
                errors.append(texts)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(cache) <= 3
