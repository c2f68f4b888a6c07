"""Qdrant collection settings for a server or cluster ([store] / rag ingest flags): the
create_collection arguments they become, qdrant-client's local mode accepting them (it records
none of them itself: the collection's metadata keeps them), and the Edge store refusing them."""

from __future__ import annotations

import pytest
from qdrant_client import QdrantClient, models

from connectors.qdrant.client import collection_params
from pipelines.config import StoreConfig
from pipelines.stores import ClusterSettings, StoreSettings, open_store
from rag.errors import ConfigError
from rag.search.store import CollectionInfo, TextIndexSettings

ALL = ClusterSettings(shard_number=4, replication_factor=2, write_consistency_factor=2, on_disk_payload=True,
                      quantization="int8", bulk=True)


def info() -> CollectionInfo:
    return CollectionInfo(model="m", dimension=8, text_index=TextIndexSettings.plain(), chunk_size=32,
                          chunk_overlap=4, context=False)


def test_settings_become_collection_params():
    p = collection_params(ALL.model_dump(), models)
    assert {k: p[k] for k in ("shard_number", "replication_factor", "write_consistency_factor",
                              "on_disk_payload")} == {"shard_number": 4, "replication_factor": 2,
                                                      "write_consistency_factor": 2, "on_disk_payload": True}
    q = p["quantization_config"].scalar
    assert q.type == models.ScalarType.INT8 and q.always_ram is True and q.quantile == 0.99
    assert p["hnsw_config"].m == 0 and p["optimizers_config"].indexing_threshold == 0
    assert collection_params(ClusterSettings().model_dump(), models) == {}  # the server's defaults


def test_config_section_maps_to_store_settings():
    cfg = StoreConfig(url="http://q:6333", shard_number=4, quantization="int8", bulk=True)
    assert cfg.settings().cluster == ClusterSettings(shard_number=4, quantization="int8", bulk=True)
    with pytest.raises(ValueError):
        StoreConfig(quantization="int4")


def test_local_mode_accepts_them_and_the_collection_records_them(tmp_path):
    settings = StoreSettings(local_path=str(tmp_path / "q"), collection="c", cluster=ALL)
    store = open_store(settings, info=info(), create=True)
    store.optimize()  # bulk: HNSW switched back on
    store.close()
    client = QdrantClient(path=str(tmp_path / "q"))
    try:
        meta = client.get_collection("c").config.metadata
        assert meta["rag_cluster"] == ALL.model_dump()
    finally:
        client.close()


def test_edge_refuses_them(tmp_path):
    with pytest.raises(ConfigError, match="--url"):
        open_store(StoreSettings(store_dir=str(tmp_path), collection="c", cluster=ClusterSettings(shard_number=2)),
                   info=info(), create=True)
    open_store(StoreSettings(store_dir=str(tmp_path), collection="c"), info=info(), create=True).close()
