"""The server's one encoder, shared by every request thread: searches first, in batches.

On a CPU one forward pass already uses every core, and a Hugging Face fast tokenizer is one Rust
object whose padding/truncation state is set per call, so the encoder runs one call at a time
(`busy`). What it runs next is not first come, first served:

- An *urgent* call (a search's queries: at most URGENT_TEXTS texts of at most URGENT_CHARS
  characters in all) does not queue behind bulk work: it waits for the pass that is running,
  and at most one bulk slice more (urgent passes and bulk slices alternate while both wait, so
  neither starves).
  The urgent calls waiting together are embedded in one pass (dynamic batching, as Hugging
  Face's text-embeddings-inference and Triton's dynamic batcher do): eight queries of ten
  words cost little more than one, so searches under load stop queueing behind each other.
- A *bulk* call (an extractive answer's sentences, an upload's chunks) is cut into slices of at
  most SLICE_TEXTS texts and SLICE_CHARS characters, and each slice takes the encoder in its
  turn: an urgent call waits for a slice (about a tenth of a second here), not the whole call. Slices of one call run in order and its result is in input order, as from `encode`.

Every other call that touches the tokenizer or the model (`count_tokens`, `token_offsets`,
`embed`, `warm_up`) runs as one bulk slice. Plain attributes (`model_id`, `dimension`, ...)
are read straight through.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

URGENT_TEXTS = 8  # a call of at most this many texts ...
URGENT_CHARS = 2_000  # ... and this many characters in all is a search's: urgent
MAX_BATCH_TEXTS = 64  # urgent texts embedded in one pass at most
SLICE_TEXTS = 32  # a bulk call's slice: at most this many texts ...
SLICE_CHARS = 4_000  # ... and this many characters (about 4 chunks of 256 tokens)
EXCLUSIVE_CALLS = frozenset({"count_tokens", "token_offsets", "embed", "warm_up"})


def is_urgent(texts: Sequence[str]) -> bool:
    return 0 < len(texts) <= URGENT_TEXTS and sum(len(t) for t in texts) <= URGENT_CHARS


def slices(texts: Sequence[str], max_texts: int = SLICE_TEXTS, max_chars: int = SLICE_CHARS) -> list[list[str]]:
    """`texts` cut, in order, into runs of at most `max_texts` texts and `max_chars` characters
    (a single longer text is a run of its own)."""
    out: list[list[str]] = []
    run: list[str] = []
    size = 0
    for t in texts:
        if run and (len(run) == max_texts or size + len(t) > max_chars):
            out.append(run)
            run, size = [], 0
        run.append(t)
        size += len(t)
    if run:
        out.append(run)
    return out


class _Waiting:
    """One urgent call waiting for its vectors."""

    __slots__ = ("texts", "vectors", "error", "done")

    def __init__(self, texts: list[str]):
        self.texts = texts
        self.vectors: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = False


class EncoderGate:
    """`encoder` behind the scheduling rule above. Thread-safe; `stats` counts passes."""

    def __init__(self, encoder: Any):
        self._encoder = encoder
        self._cond = threading.Condition()
        self._busy = False
        self._urgent: list[_Waiting] = []
        self._bulk_waiting = 0
        self._last_urgent = False
        self.stats = {"urgent_calls": 0, "urgent_passes": 0, "bulk_slices": 0}

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._encoder, name)
        if name in EXCLUSIVE_CALLS and callable(value):
            return lambda *args, **kwargs: self._exclusive(lambda: value(*args, **kwargs))
        return value

    @property
    def wrapped(self) -> Any:
        return self._encoder

    # ------------------------------------------------------------------ encode
    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        texts = list(texts)
        if is_urgent(texts):
            return self._encode_urgent(texts)
        if not texts:
            return self._encoder.encode(texts)
        parts = [self._exclusive(lambda run=run: self._encoder.encode(run, batch_size=batch_size))
                 for run in slices(texts)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _exclusive(self, call: Callable[[], Any]) -> Any:
        """Run `call` as a bulk slice, in its turn: the encoder free, and no urgent call waiting
        unless the last pass was an urgent one (so that a stream of searches cannot starve it)."""
        with self._cond:
            self._bulk_waiting += 1
            try:
                while self._busy or (self._urgent and not self._last_urgent):
                    self._cond.wait()
            finally:
                self._bulk_waiting -= 1
            self._busy, self._last_urgent = True, False
            self.stats["bulk_slices"] += 1
        try:
            return call()
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _encode_urgent(self, texts: list[str]) -> np.ndarray:
        me = _Waiting(texts)
        with self._cond:
            self.stats["urgent_calls"] += 1
            self._urgent.append(me)
        while True:
            with self._cond:
                while not me.done and (self._busy or (self._bulk_waiting and self._last_urgent)):
                    self._cond.wait()
                if me.done:
                    return self._result(me)
                batch = self._take_batch()  # the oldest first: `me` may have to wait for the next
                self._busy, self._last_urgent = True, True
                self.stats["urgent_passes"] += 1
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Waiting]) -> None:
        try:
            vectors = self._encoder.encode([t for w in batch for t in w.texts])
            start = 0
            for w in batch:
                w.vectors = vectors[start:start + len(w.texts)]
                start += len(w.texts)
        except BaseException as e:  # every caller of the pass hears it
            for w in batch:
                w.error = e
        finally:
            with self._cond:
                for w in batch:
                    w.done = True
                self._busy = False
                self._cond.notify_all()

    def _take_batch(self) -> list[_Waiting]:
        """The waiting urgent calls, oldest first, up to MAX_BATCH_TEXTS texts (always at least
        the oldest); the caller holds the condition."""
        batch, n = [], 0
        while self._urgent and (not batch or n + len(self._urgent[0].texts) <= MAX_BATCH_TEXTS):
            w = self._urgent.pop(0)
            batch.append(w)
            n += len(w.texts)
        return batch

    @staticmethod
    def _result(w: _Waiting) -> np.ndarray:
        if w.error is not None:
            raise w.error
        assert w.vectors is not None
        return w.vectors
