"""The server's encoder gate: the same vectors as the encoder, searches first and batched."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from pipelines.server.encoding import SLICE_TEXTS, EncoderGate, is_urgent, slices

QUERIES = ["what is mean pooling?", "siamese network training", "how is SBERT fine-tuned?",
           "cosine similarity of sentence embeddings", "natural language inference data",
           "which pooling strategy is the default", "semantic textual similarity benchmark",
           "triplet objective function"]


def test_slices_keep_order_and_bounds():
    texts = [f"t{i}" * (1 + i % 7) for i in range(100)]
    runs = slices(texts, max_texts=9, max_chars=40)
    assert [t for run in runs for t in run] == texts
    assert all(len(run) <= 9 and (sum(map(len, run)) <= 40 or len(run) == 1) for run in runs)
    assert slices(["x" * 100], max_chars=10) == [["x" * 100]]
    assert is_urgent(["a query"]) and not is_urgent([]) and not is_urgent(["s"] * 40)
    assert not is_urgent(["x" * 5000])


def test_gate_gives_the_encoders_vectors_under_concurrency(encoder):
    """Eight threads of searches and one long call at once: every caller gets the vectors the
    encoder gives it alone, in its input order (batching only changes padding: float noise)."""
    gate = EncoderGate(encoder)
    bulk = [f"Sentence number {i} says something about pooling and sentence embeddings." for i in range(70)]
    expected_q = encoder.encode(QUERIES)
    expected_bulk = encoder.encode(bulk)
    results: dict[str, np.ndarray] = {}
    errors: list[BaseException] = []

    def search(i: int) -> None:
        try:
            for _ in range(5):
                results[f"q{i}"] = gate.encode([QUERIES[i]])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def long_call() -> None:
        results["bulk"] = gate.encode(bulk)

    threads = [threading.Thread(target=search, args=(i,)) for i in range(8)] + [threading.Thread(target=long_call)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for i in range(8):
        np.testing.assert_allclose(results[f"q{i}"][0], expected_q[i], atol=1e-5)
    np.testing.assert_allclose(results["bulk"], expected_bulk, atol=1e-5)
    assert gate.stats["bulk_slices"] >= 3  # 70 texts were cut into slices
    assert gate.stats["urgent_passes"] <= gate.stats["urgent_calls"] == 40
    assert gate.count_tokens(["a b c"]) == encoder.count_tokens(["a b c"])
    assert gate.dimension == encoder.dimension and gate.model_id == encoder.model_id


class SlowEncoder:
    """Stands in for a model whose pass takes a fixed time, recording each pass: the scheduling
    is what is tested here (the vectors are tested above with the real encoder)."""

    dimension = 2

    def __init__(self, seconds_per_pass: float):
        self.seconds = seconds_per_pass
        self.passes: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.inside = 0
        self.threads: set[int] = set()

    def encode(self, texts, batch_size=None):
        with self.lock:
            self.threads.add(threading.get_ident())
            self.inside += 1
            assert self.inside == 1, "two passes at once"
        time.sleep(self.seconds)
        kind = "bulk" if texts and texts[0].startswith("bulk") else "query"
        self.passes.append((kind, len(texts)))
        with self.lock:
            self.inside -= 1
        return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32)


def test_searches_do_not_wait_for_a_whole_long_call():
    slow = SlowEncoder(0.05)
    gate = EncoderGate(slow)
    bulk = [f"bulk {i}" for i in range(SLICE_TEXTS * 10)]  # 10 slices: 0.5 s
    done: dict[str, float] = {}
    t0 = time.monotonic()

    def long_call():
        out = gate.encode(bulk)
        assert out[:, 0].tolist() == [float(len(t)) for t in bulk]  # input order kept
        done["bulk"] = time.monotonic() - t0

    def search(i):
        out = gate.encode([f"query {i}" + "x" * i])
        assert out[0, 0] == len(f"query {i}") + i  # its own vector, not a neighbour's
        done[f"q{i}"] = time.monotonic() - t0

    bulk_thread = threading.Thread(target=long_call)
    bulk_thread.start()
    time.sleep(0.08)  # the long call is in its second slice
    searchers = [threading.Thread(target=search, args=(i,)) for i in range(6)]
    for t in searchers:
        t.start()
    for t in searchers + [bulk_thread]:
        t.join(10)
    assert len(done) == 7
    # every search finished well before the long call, which still finished (no starvation)
    assert max(done[f"q{i}"] for i in range(6)) < done["bulk"] - 0.2
    query_passes = [n for kind, n in slow.passes if kind == "query"]
    assert sum(query_passes) == 6 and len(query_passes) < 6  # searches that waited together shared a pass
    assert sum(n for kind, n in slow.passes if kind == "bulk") == len(bulk)
    # every pass ran on the gate's own thread, none on a caller's (torch's thread pool is per thread)
    assert len(slow.threads) == 1 and not slow.threads & {t.ident for t in searchers + [bulk_thread]}
    gate.close()
    assert not gate._thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        gate.encode(["after close"])


def test_a_failed_pass_reaches_every_caller_and_frees_the_encoder():
    class Failing(SlowEncoder):
        def encode(self, texts, batch_size=None):
            if any("boom" in t for t in texts):
                raise RuntimeError("model failed")
            return super().encode(texts, batch_size)

    gate = EncoderGate(Failing(0.0))
    with pytest.raises(RuntimeError, match="model failed"):
        gate.encode(["boom"])
    assert gate.encode(["fine"]).shape == (1, 2)  # not left busy


def protocol_members(proto: type) -> set[str]:
    """The public members a Protocol declares, its base protocols' included."""
    return {name for cls in proto.__mro__ if getattr(cls, "_is_protocol", False)
            for name in [*vars(cls), *vars(cls).get("__annotations__", {})] if not name.startswith("_")}


class Recording:
    """An encoder that records the thread each call that touches its model ran on."""

    model = model_id = "recording/model"
    max_seq_length = 16

    def __init__(self):
        self.threads: dict[str, str] = {}

    def _ran(self, name: str) -> None:
        self.threads[name] = threading.current_thread().name

    def encode(self, texts, batch_size=None):
        self._ran("encode")
        return np.zeros((len(texts), 2), dtype=np.float32)

    def count_tokens(self, texts):
        self._ran("count_tokens")
        return [len(t.split()) + 2 for t in texts]

    def token_offsets(self, text):
        self._ran("token_offsets")
        return [(0, len(text))]

    def warm_up(self):
        self._ran("warm_up")

    @property
    def dimension(self):
        self._ran("dimension")
        return 2

    def to_dict(self):
        return {"type": "Recording"}


def test_the_gate_defines_every_member_of_the_encoder_protocol_and_serialises_each_model_call():
    """EncoderGate declares Encoder and writes out each of its members (no attribute forwarding),
    so a member added to the protocol fails here until the gate defines it; every member that
    touches the model runs on the gate's own thread."""
    from rag.embed.encoder import SentenceEncoder, TokenCounter
    from rag.embed.protocol import Encoder, Tokenizes

    members = protocol_members(Encoder)
    assert {"encode", "count_tokens", "token_offsets", "max_seq_length", "model", "dimension"} <= members
    assert "__getattr__" not in vars(EncoderGate)
    assert sorted(m for m in members if m not in vars(EncoderGate)) == []
    assert Encoder in EncoderGate.__mro__ and Encoder in SentenceEncoder.__mro__
    assert Tokenizes in TokenCounter.__mro__

    inner = Recording()
    gate = EncoderGate(inner)
    try:
        assert gate.encode(["a query"]).shape == (1, 2) and gate.encode(["bulk"] * 40).shape == (40, 2)
        assert gate.count_tokens(["a b"]) == [4] and gate.token_offsets("ab") == [(0, 2)]
        gate.warm_up()
        assert gate.dimension == 2 and gate.dimension == 2
        assert (gate.model, gate.model_id, gate.max_seq_length) == ("recording/model",) * 2 + (16,)
        assert gate.to_dict() == {"type": "Recording"}
        assert inner.threads == dict.fromkeys(
            ["encode", "count_tokens", "token_offsets", "warm_up", "dimension"], "encoder")
        assert gate.stats["bulk_slices"] >= 5  # dimension read once, then kept
    finally:
        gate.close()
