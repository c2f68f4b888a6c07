"""Sentence vectors (issue 26): each chunk's units (rag.ingest.units) embedded beside it, stored
as a MAX_SIM multivector, and the dense leg scoring w x chunk + (1 - w) x best unit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from connectors.qdrant.edge import META_FILE
from helpers_ingest import edge_settings, local_settings, text_index_for
from pipelines.ingest import ingest
from pipelines.stores import open_store
from rag.embed.chunks import encode_chunks
from rag.errors import ConfigError
from rag.ingest.chunking import Chunker
from rag.ingest.units import UNIT_TOKENS
from rag.models import Document, Page
from rag.search import payload as P
from rag.search.retrieval import Retriever
from rag.search.units import DEFAULT_UNIT_WEIGHT, combine

POOLING = ("Sentence embeddings are computed from a transformer network. "
           "Our default pooling strategy is MEAN over all output tokens. "
           "The training data came from natural language inference pairs. "
           "Evaluation used seven semantic textual similarity tasks.")
OTHER = ("The harbor froze early that winter. Fishing boats stayed in port for weeks. "
         "The town council opened the old granary as a shelter.")


def doc(text: str, source: str = "/docs/pooling.md", title: str | None = None) -> Document:
    return Document(source=source, file_hash="h", pages=[Page(number=1, text=text)], title=title)


def files(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir(exist_ok=True)
    (folder / "sbert.md").write_text(POOLING + "\n")
    (folder / "harbor.md").write_text(OTHER + "\n")
    return folder


def units_of(vs) -> dict[str, tuple[list, np.ndarray]]:
    """point id -> (unit spans, unit vectors) of every point."""
    spans = dict(vs.payloads([P.UNIT_SPANS]))
    vecs = vs.unit_vectors(list(spans))
    return {i: (p.get(P.UNIT_SPANS), vecs.get(i)) for i, p in spans.items()}


# ---------------------------------------------------------------- the unit rule


def test_units_are_the_sentences_and_the_lines_of_a_chunk(encoder):
    text = POOLING + "\n\n| item | amount |\n| rent | 1,200 |\n| food | 300 |"
    (c,) = Chunker(256, 32).split(doc(text, title="SBERT"), encoder)
    pieces = [c.text[a:b] for a, b in c.units]
    assert pieces[:4] == [s + "." for s in POOLING.rstrip(".").split(". ")]
    assert pieces[4:] == ["| item | amount |", "| rent | 1,200 |", "| food | 300 |"]
    # what is embedded: a sentence alone; a row (no sentence end) after the document context,
    # as the chunk's text is
    assert c.context and c.unit_texts[1] == pieces[1]
    assert c.unit_texts[4] == f"{c.context}\n\n{pieces[4]}"
    assert Chunker(256, 32, sentence_vectors=False).split(doc(text), encoder)[0].units is None


def test_a_long_unit_is_cut_to_the_unit_length(encoder):
    words = " ".join(f"w{i}" for i in range(300))
    for c in Chunker(256, 16).split(doc(words + "."), encoder):
        assert c.units and all(encoder.count_tokens([c.text[a:b]])[0] - 2 <= UNIT_TOKENS for a, b in c.units)
        assert c.units[0][0] == 0 and c.units[-1][1] == len(c.text)


def test_encode_chunks_encodes_each_unit_on_its_own(encoder):
    chunks = Chunker(64, 8).split(doc(POOLING + " " + OTHER), encoder)
    vectors, units = encode_chunks(encoder, chunks)
    assert vectors.shape == (len(chunks), encoder.dimension)
    assert np.allclose(vectors, encoder.encode([c.indexed_text for c in chunks]), atol=1e-5)
    for c, u in zip(chunks, units):
        assert u.shape == (len(c.units), encoder.dimension)
        assert np.allclose(u, encoder.encode(c.unit_texts), atol=1e-5)
    plain = Chunker(64, 8, sentence_vectors=False).split(doc(POOLING), encoder)
    assert encode_chunks(encoder, plain)[1] is None


def test_combine_is_the_weighted_sum_and_scores_a_one_sided_candidate_by_its_side():
    assert combine({"a": 0.8, "b": 0.5}, {"a": 0.4, "c": 0.9}, 0.5) == [
        ("c", 0.9), ("a", pytest.approx(0.6)), ("b", 0.5)]


# ---------------------------------------------------------------- stores and search


@pytest.mark.parametrize("engine", ["edge", "local"])
def test_the_best_sentence_is_found_and_named(tmp_path, encoder, engine):
    settings = (edge_settings if engine == "edge" else local_settings)(tmp_path / "store")
    rep = ingest([files(tmp_path)], encoder=encoder, store=settings, chunker=Chunker(256, 32),
                 text_index=text_index_for(settings), progress=False)
    assert not rep.failed
    vs = open_store(settings)
    try:
        assert vs.info.sentence_vectors
        assert Retriever(vs, encoder).weights == (2.0, 1.0)  # the stronger dense leg weighs more
        assert Retriever(vs, encoder, weights=(1, 1)).weights == (1.0, 1.0)
        query = "Which pooling does the model use by default?"
        for mode in ("dense", "hybrid"):
            top = Retriever(vs, encoder, top_k=3).search(query, mode=mode, explain=True).results[0]
            assert top.source.endswith("sbert.md")
            assert top.text[top.unit_start:top.unit_end] == "Our default pooling strategy is MEAN over all output tokens."
        # the dense score is w x chunk cosine + (1 - w) x best unit cosine, every candidate scored on both
        q = encoder.encode([query])[0]
        res = Retriever(vs, encoder, top_k=5).search(query, mode="dense").results
        hits = {h.id: h for h in vs.retrieve([r.id for r in res], with_vectors=True)}
        stored = vs.unit_vectors([r.id for r in res])
        for r in res:
            want = (DEFAULT_UNIT_WEIGHT * float(np.dot(hits[r.id].vector, q))
                    + (1 - DEFAULT_UNIT_WEIGHT) * float((stored[r.id] @ q).max()))
            assert r.score == pytest.approx(want, abs=1e-4)
        # filters still apply to both vectors
        only = Retriever(vs, encoder).search(query, mode="dense", filters=[f"source={res[-1].source}"]).results
        assert {r.source for r in only} == {res[-1].source}
    finally:
        vs.close()


@pytest.mark.parametrize("engine", ["edge", "local"])
def test_a_chunk_only_bm25_found_gets_its_best_unit_scored_too(tmp_path, encoder, engine):
    """Units have no search index: the dense leg scores the units of its candidates by id, and in
    hybrid mode BM25's candidates are among them. One candidate per leg, the dense score the best
    unit's alone: the chunk the chunk vector put first (a paraphrase of the question) loses the
    dense leg to the chunk only BM25 found, whose one sentence answers it."""
    settings = (edge_settings if engine == "edge" else local_settings)(tmp_path / "store")
    folder = files(tmp_path)
    (folder / "malt.md").write_text("Grain merchants stored their malt in cool cellars.\n")
    (folder / "ledger.md").write_text(
        "Zymurgy ledger, third quarter. Invoices were reconciled against the bank statements. "
        "Depreciation of the delivery vans was booked monthly. The auditors asked for the payroll "
        "records of the seasonal staff. The brewers kept their barley in a dry loft. Late payments "
        "from two taverns were written off as bad debt.\n")
    ingest([folder], encoder=encoder, store=settings, chunker=Chunker(256, 32),
           text_index=text_index_for(settings), progress=False)
    vs = open_store(settings)
    try:
        query = "zymurgy: where did the brewers keep the barley dry?"
        q = encoder.encode([query])[0]
        retriever = Retriever(vs, encoder, candidates=1, top_k=2, unit_weight=0.0)
        by_chunk = Retriever(vs, encoder, candidates=1, top_k=1, unit_weight=1.0).search(query, mode="dense")
        by_bm25 = retriever.search(query, mode="bm25").results[0]
        assert by_chunk.results[0].source.endswith("malt.md") and by_bm25.source.endswith("ledger.md")
        resp = retriever.search(query, mode="hybrid", explain=True)
        dense_leg = {r.id: r.legs["dense"].score for r in resp.results if "dense" in r.legs}
        best_unit = float((vs.unit_vectors([by_bm25.id])[by_bm25.id] @ q).max())
        assert dense_leg == {by_bm25.id: pytest.approx(best_unit, abs=1e-4)}
    finally:
        vs.close()


def test_a_new_collection_builds_no_search_graph_for_units(tmp_path, encoder):
    settings = edge_settings(tmp_path / "store")
    ingest([files(tmp_path)], encoder=encoder, store=settings, chunker=Chunker(256, 32), progress=False)
    config = json.loads((tmp_path / "store" / "docs" / "edge_config.json").read_text())
    assert config["vectors"]["units"]["hnsw_config"]["m"] == 0
    assert "hnsw_config" not in config["vectors"]["dense"] or config["vectors"]["dense"]["hnsw_config"]["m"] > 0


def test_both_engines_hold_the_same_units(tmp_path, encoder):
    held = {}
    for engine, make in (("edge", edge_settings), ("local", local_settings)):
        settings = make(tmp_path / engine)
        ingest([files(tmp_path)], encoder=encoder, store=settings, chunker=Chunker(32, 4),
               text_index=text_index_for(settings), progress=False)
        vs = open_store(settings)
        try:
            held[engine] = units_of(vs)
        finally:
            vs.close()
    assert held["edge"].keys() == held["local"].keys() and len(held["edge"]) > 2
    for i, (spans, vecs) in held["edge"].items():
        assert held["local"][i][0] == spans and len(spans) == len(vecs)
        assert np.allclose(held["local"][i][1], vecs, atol=1e-5)


def test_unit_vectors_go_with_their_chunk_through_replace_and_prune(tmp_path, encoder):
    folder = files(tmp_path)
    settings = edge_settings(tmp_path / "store")
    kw = dict(encoder=encoder, chunker=Chunker(32, 4), progress=False)
    ingest([folder], store=settings, **kw)
    (folder / "sbert.md").write_text(OTHER + " " + POOLING + "\n")  # replaced: new chunks, new units
    (folder / "extra.md").write_text("A short note. It has two sentences.\n")
    ingest([folder], store=settings, **kw)
    (folder / "extra.md").unlink()
    ingest([folder], store=settings, prune=True, **kw)
    clean = edge_settings(tmp_path / "clean")
    ingest([folder], store=clean, **kw)
    got, want = {}, {}
    for s, out in ((settings, got), (clean, want)):
        vs = open_store(s)
        try:
            out.update(units_of(vs))
        finally:
            vs.close()
    assert got.keys() == want.keys()
    for i, (spans, vecs) in want.items():
        assert got[i][0] == spans and np.allclose(got[i][1], vecs, atol=1e-5)


def test_a_collection_without_sentence_vectors_searches_as_before(tmp_path, encoder):
    settings = edge_settings(tmp_path / "store")
    ingest([files(tmp_path)], encoder=encoder, store=settings,
           chunker=Chunker(64, 8, sentence_vectors=False), progress=False)
    vs = open_store(settings)
    try:
        assert not vs.info.sentence_vectors
        assert Retriever(vs, encoder).weights == (1.0, 1.0)
        assert all(P.UNIT_SPANS not in p for _, p in vs.payloads([P.UNIT_SPANS, P.TEXT]))
        for mode in ("dense", "hybrid", "bm25"):
            res = Retriever(vs, encoder).search("default pooling strategy", mode=mode).results
            assert res[0].source.endswith("sbert.md") and res[0].unit_start is None
    finally:
        vs.close()


def test_a_collection_recorded_before_sentence_vectors_reads_as_without(tmp_path, encoder):
    settings = edge_settings(tmp_path / "store")
    ingest([files(tmp_path)], encoder=encoder, store=settings,
           chunker=Chunker(64, 8, sentence_vectors=False), progress=False)
    meta = tmp_path / "store" / "docs" / META_FILE
    recorded = json.loads(meta.read_text())
    del recorded["sentence_vectors"]
    meta.write_text(json.dumps(recorded))
    vs = open_store(settings)
    try:
        assert vs.info.sentence_vectors is False
        assert Retriever(vs, encoder).search("harbor froze", mode="hybrid").results[0].source.endswith("harbor.md")
    finally:
        vs.close()


@pytest.mark.parametrize("engine", ["edge", "local"])
def test_chunks_with_and_without_sentence_vectors_never_share_a_collection(tmp_path, encoder, engine):
    folder = files(tmp_path)
    make = edge_settings if engine == "edge" else local_settings
    kw = dict(encoder=encoder, progress=False)
    without = make(tmp_path / "store", "without")
    ingest([folder], store=without, chunker=Chunker(64, 8, sentence_vectors=False),
           text_index=text_index_for(without), **kw)
    with pytest.raises(ConfigError) as e:
        ingest([folder], store=without, chunker=Chunker(64, 8), **kw)
    assert "'without' was built without sentence vectors" in str(e.value)
    assert "--no-sentence-vectors" in str(e.value)
    vs = open_store(without)
    try:  # nor by a script writing to the store directly
        chunks = Chunker(64, 8).split(doc(POOLING), encoder)
        vectors, units = encode_chunks(encoder, chunks)
        with pytest.raises(ConfigError, match="'without'"):
            vs.upsert(chunks, vectors, {chunks[0].source: len(chunks)}, units)
    finally:
        vs.close()
    with_units = make(tmp_path / "store2", "with")
    ingest([folder], store=with_units, chunker=Chunker(64, 8), text_index=text_index_for(with_units), **kw)
    with pytest.raises(ConfigError, match="'with' was built with sentence vectors"):
        ingest([folder], store=with_units, chunker=Chunker(64, 8, sentence_vectors=False), **kw)


def test_explain_shows_the_best_sentence_and_json_carries_its_span():
    from io import StringIO

    from rich.console import Console

    from pipelines.render import print_search_response
    from rag.search.retrieval import SearchResponse, SearchResult

    best = "Our default pooling strategy is MEAN over all output tokens."
    start = POOLING.index(best)
    hit = SearchResult(rank=1, id="x", score=1.0, text=POOLING, source="/docs/sbert.md", page_start=1,
                       page_end=1, unit_start=start, unit_end=start + len(best))
    resp = SearchResponse(query="default pooling", mode="dense", results=[hit])
    out = StringIO()
    print_search_response(resp, explain=True, out=Console(file=out, width=300))
    assert f"best sentence: {best}" in out.getvalue()
    assert json.loads(resp.model_dump_json())["results"][0]["unit_start"] == start


def test_extracts_read_the_stored_sentence_vectors_instead_of_embedding_them(tmp_path, encoder):
    from pipelines.answer import RagPipeline
    from tests.test_vector_cache import Counting

    settings = edge_settings(tmp_path / "store")
    assert not ingest([files(tmp_path)], encoder=encoder, store=settings, chunker=Chunker(256, 32),
                      progress=False).failed
    counting = Counting(encoder)
    with RagPipeline(encoder=counting, store=settings, llm=None) as rag:
        answer = rag.ask("Which pooling does the model use by default?")
    assert answer.kind == "extractive" and "Our default pooling strategy is MEAN" in answer.text.split("\n")[2]
    # the question once (the search), and no sentence of the passages: the stored vectors served them
    assert counting.calls == [["Which pooling does the model use by default?"]]
    # and they are the vectors extracts would have made: the same sentence embedded now
    stored = rag.sentence_cache.encode(encoder, ["Our default pooling strategy is MEAN over all output tokens."])
    fresh = encoder.encode(["Our default pooling strategy is MEAN over all output tokens."])
    assert np.allclose(stored, fresh, atol=1e-5)
