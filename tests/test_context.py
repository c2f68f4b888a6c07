"""Document context (rag.ingest.context): the rule, the token budget, what it leaves alone (the
stored text, the ids, the payloads of a collection without it), BM25 over it in both engines,
and the refusal to mix chunks with and without it in one collection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from connectors.qdrant.edge import META_FILE
from helpers_ingest import edge_settings, local_settings, text_index_for
from pipelines.ingest import ingest
from pipelines.stores import open_store
from rag.errors import ConfigError
from rag.ingest.chunking import Chunker, document_text
from rag.ingest.context import chunk_context, file_title, title_part
from rag.models import Document, Page
from rag.search.payload import chunk_payload
from rag.search.retrieval import Retriever
from rag.search.store import CollectionInfo

BODY = ("Net sales rose in the quarter. Services revenue grew by eight percent. "
        "Operating expenses were flat against the prior year. ")


def doc(text: str, source: str = "/docs/2023_Q3-AAPL.pdf", title: str | None = None,
        section: str | None = None) -> Document:
    return Document(source=source, file_hash="0" * 64, title=title,
                    pages=[Page(number=1, text=text, section=section)])


# ------------------------------------------------------------------ the rule


def test_file_name_as_title():
    assert file_title("/docs/2023_Q3-AAPL.pdf") == "2023 Q3 AAPL"
    assert file_title("/docs/2023 Q3 AAPL.pdf") == "2023 Q3 AAPL"
    assert file_title("C:\\docs\\annual__report.txt") == "annual report"
    assert file_title("4983") is None  # a BEIR doc id, a number: no title
    assert file_title("/x/0000320193-22-000070.pdf") is None


def test_title_part_keeps_both_unless_one_holds_the_other():
    boiler = "UNITED STATES SECURITIES AND EXCHANGE COMMISSION"
    assert title_part("/d/2023 Q3 AAPL.pdf", boiler) == f"2023 Q3 AAPL — {boiler}"
    assert title_part("/d/2023 Q3 AAPL.pdf", None) == "2023 Q3 AAPL"
    assert title_part("/d/1706.03762v5_Attention_Is_All_You_Need.pdf",
                      "Attention Is All You Need") == "1706.03762v5 Attention Is All You Need"
    assert title_part("/d/bert.pdf", "BERT: Pre-training of Deep Transformers") == \
        "BERT: Pre-training of Deep Transformers"
    assert title_part("4983", "  Vitamin D and   bone density ") == "Vitamin D and bone density"
    assert title_part("4983", None) is None


def test_chunk_context_names_title_and_section_and_never_repeats_the_title():
    title = "2023 Q3 AAPL"
    assert chunk_context(title, "Item 2. Management's Discussion", "Net sales ...") == \
        "2023 Q3 AAPL > Item 2. Management's Discussion"
    assert chunk_context(title, None, "Net sales ...") == "2023 Q3 AAPL"
    assert chunk_context(None, None, "Net sales ...") == ""
    # the chunk that begins with the title line does not get it again (case, punctuation aside)
    assert chunk_context("Vitamin D: a review", None, "VITAMIN D - A REVIEW\n\nWe ...") == ""
    assert chunk_context("Vitamin D: a review", "Methods", "Vitamin D: a review. We ...") == "Methods"


# ------------------------------------------------------------------ chunks


def test_context_and_text_fit_the_chunk_size_even_with_a_huge_title(encoder):
    size = 64
    huge = " ".join(f"Consolidated{i} statements of operations" for i in range(200))
    d = doc(BODY * 30, title=huge, section="Part I > Item 1. Financial Statements")
    chunks = Chunker(size, 8).split(d, encoder)
    text, _ = document_text(d)
    special = encoder.count_tokens([""])[0]
    budget = size - special
    assert len(chunks) > 1
    for c, n, k in zip(chunks, encoder.count_tokens([c.indexed_text for c in chunks]),
                       encoder.count_tokens([c.context for c in chunks])):
        assert n <= size and c.n_tokens == n
        assert 0 < k - special <= budget // 4  # capped at a quarter of the budget
        assert c.context.startswith("2023 Q3 AAPL — Consolidated0 statements")
        assert c.indexed_text == f"{c.context}\n\n{c.text}"
        assert text[c.char_start:c.char_end] == c.text  # the stored text is the document's
    # the cut is at a word: every word of the capped context is a whole word of the title part
    words = set(f"2023 Q3 AAPL — {huge}".split())
    assert set(chunks[0].context.split()) <= words
    # the text keeps most of the budget: no chunk squeezed to nothing
    assert min(encoder.count_tokens([c.text for c in chunks[:-1]])) > budget // 2


def test_text_and_ids_are_those_without_context(encoder):
    d = doc(BODY, section="Item 2")
    (on,) = Chunker(128, 16).split(d, encoder)
    (off,) = Chunker(128, 16, context=False).split(d, encoder)
    assert (on.id, on.text, on.char_start, on.char_end) == (off.id, off.text, off.char_start, off.char_end)
    assert on.context == "2023 Q3 AAPL > Item 2" and off.context is None
    assert off.indexed_text == off.text and on.n_tokens > off.n_tokens
    # without context, the payload is exactly the fields it had before context existed
    assert set(chunk_payload(off, 1)) == {
        "source", "file_hash", "chunk_index", "page_start", "page_end", "section", "char_start",
        "char_end", "text", "n_tokens", "n_tiktoken", "file_chunks"}
    with_ctx = chunk_payload(on, 1, context=True)
    assert with_ctx["text"] == on.text and with_ctx["index_text"] == on.indexed_text
    assert with_ctx["context"] == on.context


def test_longer_document_ids_follow_the_same_rule(encoder):
    from rag.ingest.chunking import chunk_id

    d = doc(BODY * 40)
    for c in Chunker(64, 8).split(d, encoder):
        assert c.id == chunk_id(d.source, c.char_start, c.char_end, c.text)


def test_beir_passage_gets_its_title_once(encoder):
    """A BEIR entry's passage begins with its title: its first chunk carries no context, the
    later ones carry the title."""
    title = "Vitamin D supplementation and fracture risk"
    body = f"{title}\n\n" + BODY * 12
    chunks = Chunker(64, 8).split(doc(body, source="4983", title=title), encoder)
    assert len(chunks) > 1
    assert chunks[0].context == "" and chunks[0].indexed_text == chunks[0].text
    assert all(c.context == title for c in chunks[1:])


# ------------------------------------------------------------------ stores


def _files(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "Zanzibar_quarterly.md").write_text("# Treasury\n\n" + BODY * 2)
    (folder / "other.md").write_text("# Marketing\n\nThe campaign reached new customers. " * 3)
    return folder


@pytest.mark.parametrize("engine", ["edge", "local"])
def test_bm25_finds_a_chunk_by_a_word_only_in_its_title_or_section(tmp_path, encoder, engine):
    folder = _files(tmp_path)
    make = edge_settings if engine == "edge" else local_settings
    runs = {}
    for context in (True, False):
        settings = make(tmp_path / f"store-{context}", "docs")
        rep = ingest([folder], encoder=encoder, store=settings, chunker=Chunker(48, 8, context=context),
                     text_index=text_index_for(settings), progress=False)
        assert not rep.failed
        vs = open_store(settings)
        try:
            assert vs.info.context is context
            r = Retriever(vs, encoder, top_k=5)
            runs[context] = {q: [(h.source, h.text) for h in r.search(q, mode="bm25").results]
                             for q in ("zanzibar", "treasury")}
        finally:
            vs.close()
    # "zanzibar" is only in a file name, "treasury" only in a heading line
    assert runs[True]["zanzibar"] and all(s.endswith("Zanzibar_quarterly.md") for s, _ in runs[True]["zanzibar"])
    assert runs[False]["zanzibar"] == []
    # the stored text is the plain text, never the context
    assert all("Zanzibar" not in t for _, t in runs[True]["zanzibar"])
    assert {s for s, _ in runs[True]["treasury"]} == {str(folder.resolve() / "Zanzibar_quarterly.md")}


def test_a_labelled_file_is_named_by_its_label(tmp_path, encoder):
    """A server upload is saved under a name of the server's; its context names its label."""
    saved = tmp_path / "uploads" / "3f9a.txt"
    saved.parent.mkdir()
    saved.write_text(BODY)
    settings = edge_settings(tmp_path / "store")
    ingest([saved], encoder=encoder, store=settings, chunker=Chunker(48, 8), progress=False,
           labels={saved: "Kilimanjaro budget.txt"})
    vs = open_store(settings)
    try:
        hits = Retriever(vs, encoder).search("kilimanjaro", mode="bm25").results
        assert [h.source for h in hits] == ["Kilimanjaro budget.txt"]
        (_, payload), = vs.payloads(["context"])
        assert payload["context"] == "Kilimanjaro budget"
    finally:
        vs.close()


@pytest.mark.parametrize("engine", ["edge", "local"])
def test_context_and_no_context_chunks_never_share_a_collection(tmp_path, encoder, engine):
    folder = _files(tmp_path)
    settings = (edge_settings if engine == "edge" else local_settings)(tmp_path / "store", "mixed")
    kw = dict(encoder=encoder, store=settings, text_index=text_index_for(settings), progress=False)
    ingest([folder], chunker=Chunker(48, 8, context=False), **kw)
    with pytest.raises(ConfigError) as e:
        ingest([folder], chunker=Chunker(48, 8), **kw)
    assert "'mixed'" in str(e.value) and "without document context" in str(e.value)
    assert "--no-context" in str(e.value)
    # nor by a script writing to the store directly
    vs = open_store(settings)
    try:
        chunks = Chunker(48, 8).split(doc(BODY), encoder)
        with pytest.raises(ConfigError, match="'mixed'"):
            vs.upsert(chunks, np.zeros((len(chunks), encoder.dimension), np.float32), {chunks[0].source: 1})
    finally:
        vs.close()

    settings2 = settings.model_copy(update={"collection": "with"})
    ingest([folder], chunker=Chunker(48, 8), **{**kw, "store": settings2})
    with pytest.raises(ConfigError, match="'with' was built with document context"):
        ingest([folder], chunker=Chunker(48, 8, context=False), **{**kw, "store": settings2})


def test_a_collection_recorded_before_context_existed_reads_as_without_and_stays_searchable(tmp_path, encoder):
    assert CollectionInfo.model_validate(
        {"model": "m", "dimension": 4, "chunk_size": 32, "chunk_overlap": 4}).context is False
    folder = _files(tmp_path)
    settings = edge_settings(tmp_path / "store", "old")
    ingest([folder], encoder=encoder, store=settings, chunker=Chunker(48, 8, context=False), progress=False)
    meta = Path(settings.store_dir) / "old" / META_FILE
    recorded = json.loads(meta.read_text())
    del recorded["context"]  # as every collection made before the field was
    meta.write_text(json.dumps(recorded))
    vs = open_store(settings)
    try:
        assert vs.info.context is False
        r = Retriever(vs, encoder, top_k=3)
        for mode in ("dense", "bm25", "hybrid"):
            res = r.search("treasury net sales", mode=mode).results
            assert res and res[0].source.endswith("Zanzibar_quarterly.md"), mode
    finally:
        vs.close()
    # and a job without context still adds to it; one with context is told how
    rep = ingest([folder], encoder=encoder, store=settings, chunker=Chunker(48, 8, context=False), progress=False)
    assert rep.counts()["unchanged"] == 2
    with pytest.raises(ConfigError, match="'old' was built without document context"):
        ingest([folder], encoder=encoder, store=settings, chunker=Chunker(48, 8), progress=False)


def test_the_option_and_the_config_file(tmp_path):
    from pipelines.cli.app import build_parser
    from pipelines.cli.options import config_from_args
    from pipelines.config import ChunkingConfig, load_config

    assert ChunkingConfig().build().context is True
    assert config_from_args(build_parser().parse_args(["ingest", "x"])).chunking.build().context is True
    off = config_from_args(build_parser().parse_args(["ingest", "x", "--no-context"]))
    assert off.chunking.build().context is False
    (tmp_path / "rag.toml").write_text("[chunking]\ncontext = false\n")
    cfg = load_config(tmp_path / "rag.toml")
    assert cfg.chunking.build().context is False
    assert config_from_args(build_parser(cfg).parse_args(["ingest", "x"])).chunking.context is False
    evaluated = build_parser(cfg).parse_args(["eval", "retrieval", "folder"])
    assert config_from_args(evaluated).chunking.context is False
