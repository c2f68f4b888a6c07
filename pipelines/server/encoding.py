"""The server's one encoder, shared by every request thread: searches first, in batches.

On a CPU one forward pass already uses every core, and a Hugging Face fast tokenizer is one Rust
object whose padding/truncation state is set per call, so the encoder runs one call at a time,
on one thread of its own (the callers wait for it). What it runs next is not first come, first
served:

- An *urgent* call (a search's queries: at most URGENT_TEXTS texts of at most URGENT_CHARS
  characters in all) does not queue behind bulk work: it waits for the pass that is running,
  and at most one bulk slice more (urgent passes and bulk slices alternate while both wait, so
  neither starves).
  The urgent calls waiting together are embedded in one pass (dynamic batching, as Hugging
  Face's text-embeddings-inference and Triton's dynamic batcher do): eight questions take
  about three times one here (38 against 13 ms), not eight times, so searches under load
  queue less behind each other.
- A *bulk* call (an extractive answer's sentences, an upload's chunks) is cut into slices of at
  most SLICE_TEXTS texts and SLICE_CHARS characters, and each slice takes the encoder in its
  turn: an urgent call waits for a slice (about a tenth of a second here), not the whole
  call. Slices of one call run in order and its result is in input order, as from `encode`.

Every other call that touches the tokenizer or the model (`count_tokens`, `token_offsets`,
`warm_up`, the first read of `dimension`) runs as one bulk slice. The gate is an Encoder
(rag.embed.protocol) by declaration, each member written out here: what the protocol gains,
the gate must define (a test checks it), so nothing reaches the model unserialised. Plain
settings (`model`, `model_id`, `max_seq_length`, `to_dict`) are read straight through.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rag.embed.protocol import Encoder

URGENT_TEXTS = 8  # a call of at most this many texts ...
URGENT_CHARS = 2_000  # ... and this many characters in all is a search's: urgent
MAX_BATCH_TEXTS = 64  # urgent texts embedded in one pass at most
SLICE_TEXTS = 32  # a bulk call's slice: at most this many texts ...
SLICE_CHARS = 4_000  # ... and this many characters (about 4 chunks of 256 tokens)


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


class _Work:
    """One unit the encoder thread runs: an urgent call's texts, or a bulk slice's `call`."""

    __slots__ = ("texts", "call", "result", "error", "done")

    def __init__(self, texts: list[str] | None = None, call: Callable[[], Any] | None = None):
        self.texts, self.call = texts, call
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False


class EncoderGate(Encoder):
    """`encoder` behind the scheduling rule above, every pass run by one thread of its own.

    That thread matters on a CPU: torch's OpenMP pool belongs to the thread that calls it, so
    passes made from whichever request thread is free each wake another pool while the last
    one still spins (measured here: a question took 26 ms from six rotating threads, 19 ms from
    one). Callers wait for their result; thread-safe; `stats` counts passes; `close()` stops
    the thread (it is a daemon, started on the first call)."""

    def __init__(self, encoder: Encoder):
        self._encoder = encoder
        self._dimension: int | None = None
        self._cond = threading.Condition()
        self._urgent: list[_Work] = []
        self._bulk: collections.deque[_Work] = collections.deque()
        self._last_urgent = False
        self._thread: threading.Thread | None = None
        self._closed = False
        self.stats = {"urgent_calls": 0, "urgent_passes": 0, "bulk_slices": 0}
        self.pass_texts: collections.Counter[int] = collections.Counter()  # urgent passes by their texts

    @property
    def queued(self) -> int:
        """Calls and slices waiting for the encoder thread (the pass running not counted)."""
        with self._cond:
            return len(self._urgent) + len(self._bulk)

    @property
    def wrapped(self) -> Encoder:
        return self._encoder

    # ------------------------------------------------------------------ settings, read through
    @property
    def model(self) -> str:
        return self._encoder.model

    @property
    def model_id(self) -> str:
        return self._encoder.model_id

    @property
    def max_seq_length(self) -> int | None:
        return self._encoder.max_seq_length

    def to_dict(self) -> dict[str, Any]:
        return self._encoder.to_dict()

    # ------------------------------------------------------------------ model calls, one bulk slice each
    @property
    def dimension(self) -> int:
        """Read once on the encoder thread (it loads the model when it is not loaded yet)."""
        if self._dimension is None:
            self._dimension = self._exclusive(lambda: self._encoder.dimension)
        return self._dimension

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self._exclusive(lambda: self._encoder.count_tokens(texts))

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self._exclusive(lambda: self._encoder.token_offsets(text))

    def warm_up(self) -> None:
        self._exclusive(self._encoder.warm_up)

    # ------------------------------------------------------------------ encode
    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        texts = list(texts)
        if is_urgent(texts):
            with self._cond:
                self.stats["urgent_calls"] += 1
            return self._wait(_Work(texts=texts), self._urgent)
        if not texts:
            return self._encoder.encode(texts)
        parts = [self._exclusive(lambda run=run: self._encoder.encode(run, batch_size=batch_size))
                 for run in slices(texts)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _exclusive(self, call: Callable[[], Any]) -> Any:
        """Run `call` on the encoder thread as one bulk slice, in its turn."""
        return self._wait(_Work(call=call), self._bulk)

    def _wait(self, work: _Work, queue: Any) -> Any:
        with self._cond:
            if self._closed:
                raise RuntimeError("the encoder gate is closed")
            queue.append(work)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="encoder", daemon=True)
                self._thread.start()
            self._cond.notify_all()
            while not work.done:
                self._cond.wait()
        if work.error is not None:
            raise work.error
        return work.result

    def close(self) -> None:
        """Stop the encoder thread once the work already queued is done."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(60)

    # ------------------------------------------------------------------ the encoder thread
    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._urgent and not self._bulk:
                    if self._closed:
                        return
                    self._cond.wait()
                # Urgent first, except right after an urgent pass while a slice waits (no starvation).
                if self._urgent and not (self._bulk and self._last_urgent):
                    batch, self._last_urgent = self._take_batch(), True
                    self.stats["urgent_passes"] += 1
                    self.pass_texts[sum(len(w.texts) for w in batch)] += 1
                else:
                    batch, self._last_urgent = [self._bulk.popleft()], False
                    self.stats["bulk_slices"] += 1
            self._run(batch)

    def _run(self, batch: list[_Work]) -> None:
        try:
            if batch[0].call is not None:
                batch[0].result = batch[0].call()
            else:
                vectors = self._encoder.encode([t for w in batch for t in w.texts])
                start = 0
                for w in batch:
                    w.result = vectors[start:start + len(w.texts)]
                    start += len(w.texts)
        except BaseException as e:  # every caller of the pass hears it; the thread goes on
            for w in batch:
                w.error = e
        finally:
            with self._cond:
                for w in batch:
                    w.done = True
                self._cond.notify_all()

    def _take_batch(self) -> list[_Work]:
        """The waiting urgent calls, oldest first, up to MAX_BATCH_TEXTS texts (always at least
        the oldest); the caller holds the condition."""
        batch, n = [], 0
        while self._urgent and (not batch or n + len(self._urgent[0].texts) <= MAX_BATCH_TEXTS):
            w = self._urgent.pop(0)
            batch.append(w)
            n += len(w.texts)
        return batch
