"""The two stores (embedded Qdrant Edge, qdrant-client local mode) record the collection's encoder
and chunking, refuse to reopen it with other settings, lock it against other processes, and
behave the same for every write and read the ingest job uses."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

import numpy as np
import pytest

from connectors.qdrant.edge import META_FILE, EdgeStore
from helpers_ingest import edge_settings, hold_store, local_settings
from pipelines.stores import open_store
from rag.errors import CollectionNotFoundError, ConfigError, ModelMismatchError, StoreLockedError
from rag.models import Chunk
from rag.search import payload as P
from rag.search.store import CollectionInfo, TextIndexSettings, is_complete

INFO = CollectionInfo(model="test/encoder-a", dimension=8, text_index=TextIndexSettings.plain(),
                      chunk_size=64, chunk_overlap=8)
NS = uuid.UUID("0b5c3f9e-7d2a-4e61-9c3b-5a8f1e2d4c70")
BACKENDS = ["edge", "local"]


@pytest.fixture(params=BACKENDS)
def settings(request, tmp_path):
    make = edge_settings if request.param == "edge" else local_settings
    return make(tmp_path / "store")


def create(settings):
    return open_store(settings, info=INFO, create=True)


def edge_path(settings) -> Path:
    return Path(settings.store_dir).resolve() / settings.collection


def chunks(source: str, file_hash: str, n: int, start: int = 0) -> list[Chunk]:
    """Chunks `start`..`start+n-1` of one version of a file; ids depend on the version."""
    return [Chunk(id=str(uuid.uuid5(NS, f"{source}|{file_hash}|{i}")), source=source, file_hash=file_hash,
                  chunk_index=i, page_start=1, page_end=1, char_start=10 * i, char_end=10 * i + 9,
                  text=f"chunk {i} of {source} version {file_hash}", n_tokens=9, n_tiktoken=8)
            for i in range(start, start + n)]


def vectors(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, INFO.dimension)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def versions(store, source: str) -> dict[str, tuple[int, int]]:
    return {v.file_hash: (v.points, v.expected) for v in store.file_versions(source)}


# ---------------------------------------------------------------- the payload schema


def test_the_payload_schema_names_every_field_a_point_holds():
    """rag.search.payload is the one spelling of the fields: a chunk's payload holds exactly the
    fields it names (the context ones only in a context collection, the unit spans only in one
    with sentence vectors), the integer fields are the chunk's whole-number fields, and every
    indexed field is one of them."""
    fields = {v for k, v in vars(P).items() if k.isupper() and isinstance(v, str)
              and k not in ("DENSE", "UNITS")}
    (plain,) = chunks("/docs/a.txt", "a-v1", 1)
    with_context = plain.model_copy(update={"context": "A title > A section", "units": [(0, 3)]})
    assert set(P.chunk_payload(plain, 1)) == fields - {P.CONTEXT, P.INDEX_TEXT, P.UNIT_SPANS}
    assert set(P.chunk_payload(with_context, 1, context=True, units=True)) == fields
    assert P.chunk_payload(with_context, 1, units=True)[P.UNIT_SPANS] == [[0, 3]]
    whole = {name for name, f in Chunk.model_fields.items() if f.annotation is int}
    assert set(P.INTEGER_FIELDS) == whole | {P.FILE_CHUNKS}
    assert all(isinstance(P.chunk_payload(plain, 1)[f], int) for f in P.INTEGER_FIELDS)
    assert set(P.INTEGER_INDEXED) <= set(P.INTEGER_FIELDS) and set(P.KEYWORD_FIELDS) <= fields
    indexed = [f for f, _ in P.payload_indexes("text", "keyword", "integer", context=True)]
    assert indexed == [P.INDEX_TEXT, *P.KEYWORD_FIELDS, *P.INTEGER_INDEXED]
    assert P.payload_indexes("text", "keyword", "integer")[0] == (P.TEXT, "text")


# ---------------------------------------------------------------- collection info


def test_create_records_info_and_reopen_adopts_it(settings):
    create(settings).close()

    if settings.local_path:  # recorded in the collection's own metadata on the Qdrant side
        from qdrant_client import QdrantClient

        client = QdrantClient(path=settings.local_path)
        try:
            meta = client.get_collection(settings.collection).config.metadata
        finally:
            client.close()
        assert CollectionInfo.model_validate(meta["rag"]) == INFO
    else:  # recorded next to the shard
        meta = json.loads((edge_path(settings) / META_FILE).read_text())
        assert CollectionInfo.model_validate(meta) == INFO

    with open_store(settings) as store:  # no info given: the recorded one is adopted
        assert store.info == INFO
        assert store.count() == 0
    with open_store(settings, info=INFO) as store:
        assert store.info == INFO


@pytest.mark.parametrize("change", [{"model": "test/encoder-b"}, {"dimension": 16},
                                    {"model": "test/encoder-b", "dimension": 16}])
def test_reopen_with_other_encoder_is_refused(settings, change):
    create(settings).close()
    other = INFO.model_copy(update=change)
    with pytest.raises(ModelMismatchError) as err:
        open_store(settings, info=other, create=True)
    msg = str(err.value)
    assert "test/encoder-a" in msg and "dimension 8" in msg
    assert f"'{other.model}' (dimension {other.dimension})" in msg
    assert "--model test/encoder-a" in msg
    # The refused open let go of the store: it opens again in this process (while the
    # exception, and so the failed object's frame, is still alive).
    with open_store(settings, info=INFO) as store:
        assert store.info == INFO


def test_reopen_with_other_chunking_is_refused(settings):
    create(settings).close()
    with pytest.raises(ConfigError, match="chunk_size 64 and overlap 8"):
        open_store(settings, info=INFO.model_copy(update={"chunk_size": 128}))
    with open_store(settings, info=INFO) as store:
        assert store.info == INFO


def test_local_mode_refuses_a_collection_not_made_by_rag(tmp_path):
    from qdrant_client import QdrantClient, models

    settings = local_settings(tmp_path / "store")
    client = QdrantClient(path=settings.local_path)
    client.create_collection(settings.collection, vectors_config=models.VectorParams(
        size=8, distance=models.Distance.COSINE))
    client.close()
    with pytest.raises(ConfigError, match="not made by rag"):
        open_store(settings, info=INFO, create=True)
    with pytest.raises(ConfigError, match="not made by rag"):  # the failed open let go of the folder
        open_store(settings)


def test_missing_collection_is_not_created_without_create(settings):
    for info in (None, INFO):
        with pytest.raises(CollectionNotFoundError, match=f"collection '{settings.collection}' does not exist"):
            open_store(settings, info=info, create=False)
    if not settings.local_path:
        assert not edge_path(settings).exists()
        with pytest.raises(CollectionNotFoundError):  # create, but nothing to create it from
            EdgeStore(settings.store_dir, settings.collection, info=None, create=True)
    # Nothing was left open: creating it now works.
    with open_store(settings, info=INFO, create=True) as store:
        assert store.count() == 0


# ---------------------------------------------------------------- writes and reads


def test_writes_and_reads_behave_the_same(settings):
    a, b = "/docs/a.txt", "/docs/b.md"
    with create(settings) as store:
        a1, b1 = chunks(a, "a-v1", 3), chunks(b, "b-v1", 2)
        store.upsert(a1 + b1, vectors(5), {a: 3, b: 2})
        assert store.count() == 5
        assert store.sources() == {a, b}
        assert versions(store, a) == {"a-v1": (3, 3)}
        assert versions(store, b) == {"b-v1": (2, 2)}
        assert is_complete(store.file_versions(a), "a-v1")
        assert store.file_versions("/docs/none.txt") == []

        # Writing the same chunks again overwrites them (ids are stable): nothing doubles.
        store.upsert(a1, vectors(3, seed=1), {a: 3})
        assert store.count() == 5
        assert versions(store, a) == {"a-v1": (3, 3)}

        # A new version of a, written in two batches: until it is whole and the old one is
        # deleted, the source is not complete for either hash.
        a2 = chunks(a, "a-v2", 4)
        store.upsert(a2[:2], vectors(2, seed=2), {a: 4})
        assert versions(store, a) == {"a-v1": (3, 3), "a-v2": (2, 4)}
        assert not is_complete(store.file_versions(a), "a-v2")
        assert not is_complete(store.file_versions(a), "a-v1")
        store.upsert(a2[2:], vectors(2, seed=3), {a: 4})
        assert versions(store, a) == {"a-v1": (3, 3), "a-v2": (4, 4)}
        assert not is_complete(store.file_versions(a), "a-v2")
        assert store.count() == 9

        store.delete_other_versions(a, "a-v2")
        assert versions(store, a) == {"a-v2": (4, 4)}
        assert is_complete(store.file_versions(a), "a-v2")
        assert versions(store, b) == {"b-v1": (2, 2)}  # other sources untouched
        assert store.count() == 6
        store.delete_other_versions(a, "a-v2")  # idempotent
        assert store.count() == 6

        store.delete_source(b)
        assert store.sources() == {a}
        assert store.file_versions(b) == []
        assert store.count() == 4
        store.delete_source(b)  # idempotent
        store.delete_source("/docs/never-written.txt")
        assert store.count() == 4
        store.flush()

    with open_store(settings) as store:  # everything survives close and reopen
        assert store.count() == 4
        assert versions(store, a) == {"a-v2": (4, 4)}
        assert store.sources() == {a}


def test_payloads_and_collection_readers(settings):
    from pipelines.stores import collection_texts, collection_vectors

    a = chunks("/docs/a.txt", "a-v1", 3)
    v = vectors(3)
    with create(settings) as store:
        store.upsert(a, v, {"/docs/a.txt": 3})
        got = dict(store.payloads(["text", "chunk_index"]))
    assert got == {c.id: {"text": c.text, "chunk_index": c.chunk_index} for c in a}
    assert sorted(collection_texts(settings)) == sorted(c.text for c in a)
    texts, vecs = collection_vectors(settings)
    by_text = dict(zip(texts, vecs))
    for c, row in zip(a, v):
        np.testing.assert_allclose(by_text[c.text], row, atol=1e-6)  # stored, not re-encoded


def test_paged_reads_see_every_point(tmp_path):
    """file_versions/sources scroll in pages of 1024: a source bigger than a page is counted whole.
    (Edge only: qdrant-client's local mode commits every point to SQLite on its own, ~20 ms each.)"""
    settings = edge_settings(tmp_path / "store")
    src = "/docs/big.txt"
    with create(settings) as store:
        many = chunks(src, "h", 1500)
        store.upsert(many, vectors(1500), {src: 1500})
        store.upsert(chunks("/docs/small.txt", "s", 1), vectors(1), {"/docs/small.txt": 1})
        assert versions(store, src) == {"h": (1500, 1500)}
        assert store.sources() == {src, "/docs/small.txt"}
        assert store.count() == 1501


# ---------------------------------------------------------------- locking


def test_edge_store_is_locked_by_another_process(tmp_path):
    settings = edge_settings(tmp_path / "store")
    create(settings).close()
    holder = hold_store(settings)
    try:
        with pytest.raises(StoreLockedError) as err:
            EdgeStore(settings.store_dir, settings.collection, info=INFO)
        msg = str(err.value)
        assert str(edge_path(settings)) in msg
        assert "open in another process" in msg and f"pid {holder.pid}" in msg
        assert "retry" in msg
        with pytest.raises(StoreLockedError):  # through open_store, without info, too
            open_store(settings)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert holder.returncode == 0, holder.stderr.read()
    with open_store(settings, info=INFO) as store:  # released on close
        assert store.info == INFO


def test_edge_lock_dies_with_a_killed_process(tmp_path):
    settings = edge_settings(tmp_path / "store")
    create(settings).close()
    holder = hold_store(settings)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    holder.stdin.close()
    with open_store(settings, info=INFO) as store:  # no stale lock after a crash
        assert store.info == INFO


def test_local_mode_store_is_locked_by_another_process(tmp_path):
    settings = local_settings(tmp_path / "store")
    create(settings).close()
    holder = hold_store(settings)
    try:
        with pytest.raises(StoreLockedError, match="open in another process"):
            open_store(settings, info=INFO)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with open_store(settings, info=INFO) as store:
        assert store.info == INFO


def test_every_write_moves_the_revision_of_a_store_this_process_alone_writes(settings):
    """Both engines here are one process's (their folder is locked), so caches of the contents
    (routing's descriptors) may trust `revision` alone: each write and delete must move it."""
    with create(settings) as store:
        assert store.sole_writer
        seen = [store.revision]
        store.upsert(chunks("a.txt", "h1", 3), vectors(3), {"a.txt": 3})
        store.upsert(chunks("a.txt", "h2", 2), vectors(2, 1), {"a.txt": 2})
        seen.append(store.revision)
        store.delete_version("a.txt", "h1")
        seen.append(store.revision)
        store.delete_other_versions("a.txt", "h9")
        seen.append(store.revision)
        store.upsert(chunks("b.txt", "h1", 1), vectors(1), {"b.txt": 1})
        store.delete_source("b.txt")
        seen.append(store.revision)
        assert seen == sorted(set(seen)) and store.count() == 0
