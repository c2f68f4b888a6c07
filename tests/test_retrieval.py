"""Retrieval against the real embedded engine (and qdrant-client local mode)."""

from __future__ import annotations

import pytest

from pipelines.ingest import ingest
from pipelines.stores import StoreSettings, open_store
from rag.ingest.chunking import Chunker
from rag.errors import CollectionNotFoundError, ConfigError
from rag.search.retrieval import Retriever, parse_filters
from rag.search.store import TextIndexSettings

DOCS = {
    "coffee.md": "# Espresso\n\nAn espresso is brewed by forcing hot water through finely ground coffee "
                 "beans at nine bars of pressure. A shot takes about thirty seconds.\n\n# Milk\n\n"
                 "A cappuccino adds steamed milk foam to the espresso.",
    "tea.txt": "Green tea leaves are steeped in water at eighty degrees for three minutes. "
               "Boiling water makes green tea bitter.",
    "bikes.txt": "A bicycle chain needs oil every few hundred kilometres. Clean the chain before "
                 "oiling it, and wipe off the extra oil.",
    "bikes_copy.txt": "A bicycle chain needs oil every few hundred kilometres. Clean the chain before "
                      "oiling it, and wipe off the excess oil.",
}


@pytest.fixture(scope="module", params=[True, False], ids=["sentence-vectors", "chunk-vectors"])
def corpus(tmp_path_factory, encoder, request):
    """Every test runs on a collection with sentence vectors (the dense leg combined, fused
    client-side) and on one without (the engine's fusion)."""
    root = tmp_path_factory.mktemp("retrieval")
    folder = root / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    settings = StoreSettings(store_dir=str(root / "store"), collection="t")
    report = ingest([folder], encoder=encoder, store=settings,
                    chunker=Chunker(64, 8, sentence_vectors=request.param), progress=False)
    assert not report.failed
    return folder, settings


@pytest.fixture()
def retriever(corpus, encoder):
    vs = open_store(corpus[1])
    yield Retriever(vs, encoder, top_k=3)
    vs.close()


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_each_mode_finds_the_right_document(retriever, mode):
    resp = retriever.search("how long does an espresso shot take", mode=mode)
    assert resp.results, resp.notes
    assert resp.results[0].source.endswith("coffee.md")
    assert resp.results[0].section == "Espresso"
    assert [r.rank for r in resp.results] == list(range(1, len(resp.results) + 1))


@pytest.mark.parametrize("fusion", ["rrf", "dbsf"])
def test_engine_fusion_and_client_fusion_rank_the_same(retriever, fusion):
    # all chunks of the corpus: no tie can straddle the cut-off
    retriever.fusion, retriever.weights, retriever.top_k = fusion, (1.0, 1.0), 10
    q = "oil the bicycle chain with water"
    engine = retriever.search(q)  # unweighted, no explain: fused inside Qdrant
    client = retriever.search(q, explain=True)  # legs fetched, fused by rag.search.fusion
    assert [r.score for r in engine.results] == pytest.approx([r.score for r in client.results], rel=1e-5)

    def ranking(resp):  # ids in order, documents with equal fused scores (ties) as one set
        groups: dict[float, set[str]] = {}
        for r in resp.results:
            groups.setdefault(round(r.score, 6), set()).add(r.id)
        return list(groups.values())

    assert ranking(engine) == ranking(client)


def test_explain_reports_each_leg(retriever):
    resp = retriever.search("green tea bitter boiling", explain=True)
    top = resp.results[0]
    assert top.source.endswith("tea.txt")
    assert set(top.legs) == {"dense", "bm25"}
    assert top.legs["bm25"].rank >= 1 and top.legs["bm25"].score > 0


def test_weights_shift_the_ranking_towards_a_leg(retriever):
    retriever.fusion = "wsf"
    q = "thirty seconds"  # lexical match in coffee.md
    retriever.weights = (0.0, 1.0)
    bm25_only = retriever.search(q, explain=True)
    assert all(r.legs.get("bm25") for r in bm25_only.results[:1])
    assert bm25_only.results[0].source.endswith("coffee.md")


def test_filters_apply_to_both_legs(corpus, retriever):
    folder, _ = corpus
    resp = retriever.search("oil and water", filters=[f"source={folder / 'tea.txt'}"])
    assert resp.results and all(r.source.endswith("tea.txt") for r in resp.results)
    resp = retriever.search("espresso", filters=["section=Milk"], mode="bm25")
    assert [r.section for r in resp.results] == ["Milk"]
    resp = retriever.search("espresso", filters=["page=2-3"])
    assert resp.results == []


def test_mmr_drops_near_duplicates(retriever):
    q = "how often should a bicycle chain be oiled"
    plain = retriever.search(q)
    assert {r.source.rsplit("/", 1)[1] for r in plain.results[:2]} == {"bikes.txt", "bikes_copy.txt"}
    retriever.mmr_lambda = 0.3
    diverse = retriever.search(q)
    assert len({r.source for r in diverse.results[:2]}) == 2
    assert not {r.source.rsplit("/", 1)[1] for r in diverse.results[:2]} == {"bikes.txt", "bikes_copy.txt"}


def test_bad_queries_have_clear_errors(retriever):
    with pytest.raises(ConfigError, match="empty query"):
        retriever.search("   ")
    with pytest.raises(ConfigError, match="unknown filter key 'colour'"):
        retriever.search("tea", filters=["colour=red"])
    with pytest.raises(ConfigError, match="not key=value"):
        retriever.search("tea", filters=["page"])
    with pytest.raises(ConfigError, match="whole number"):
        retriever.search("tea", filters=["page=two"])
    resp = retriever.search("the of and is", mode="bm25")
    assert resp.results == [] and "stop words" in resp.notes[0]
    hybrid = retriever.search("the of and is", mode="hybrid")
    assert hybrid.results  # dense still answers
    assert any("BM25 found no matching terms" in n for n in retriever.search("the of", explain=True).notes)


def test_missing_collection_is_a_clear_error(corpus):
    with pytest.raises(CollectionNotFoundError, match="does not exist"):
        open_store(StoreSettings(store_dir=corpus[1].store_dir, collection="nope"))


def test_parse_filters():
    conds = parse_filters(["page=3", "chunk_index=1,2", "section=A,B"])
    assert [(c.key, c.lte, c.gte) for c in conds[:2]] == [("page_start", 3, None), ("page_end", None, 3)]
    assert conds[2].any == [1, 2] and conds[3].any == ["A", "B"]
    with pytest.raises(ConfigError, match="empty range"):
        parse_filters(["page=5-2"])
    # a source that cannot be a path (no such home, a NUL byte) is a label, not a crash
    assert [c.value for c in parse_filters(["source=~nobody-here/x.txt", "source=a\x00b"])] == \
        ["~nobody-here/x.txt", "a\x00b"]


def test_client_local_mode_searches_the_same_schema(tmp_path, encoder):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("coffee.md", "tea.txt"):
        (folder / name).write_text(DOCS[name])
    settings = StoreSettings(local_path=str(tmp_path / "local"), collection="t")
    ingest([folder], encoder=encoder, store=settings, chunker=Chunker(64, 8),
           text_index=TextIndexSettings.plain(), progress=False)
    vs = open_store(settings)
    try:
        r = Retriever(vs, encoder, top_k=2)
        for mode in ("dense", "bm25", "hybrid"):
            assert r.search("green tea water", mode=mode).results[0].source.endswith("tea.txt")
        assert r.search("green tea", explain=True).results[0].legs
    finally:
        vs.close()


def test_serialisation_round_trip(retriever):
    data = retriever.to_dict()
    again = Retriever.from_dict(data, retriever.store, retriever.encoder)
    assert again.to_dict() == data
