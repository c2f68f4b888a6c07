"""Chunking with the real encoder's tokenizer: size limits, overlap, offsets, pages, sections, ids."""

from __future__ import annotations

import base64
import random
import string

import pytest

from rag.ingest.chunking import Chunker, chunk_documents, document_text
from rag.errors import ConfigError
from rag.ingest.loaders import load
from rag.models import Document, Page
from rag.text.sentences import sentence_spans, split_sentences
from rag.text.tokens import count_tiktoken

WORDS = ("retrieval encoder token passage index query model vector answer cite page section "
         "document store search ranking context window budget overlap sentence").split()


def prose(n_sentences: int, seed: int = 0, tag: str = "") -> str:
    rnd = random.Random(seed)
    out = []
    for i in range(n_sentences):
        body = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(6, 18)))
        out.append(f"Sentence {tag}{i} is about the {body}.")
    return " ".join(out)


def doc_of(*pages: str, source: str = "/docs/test.pdf", sections: list[str | None] | None = None) -> Document:
    sections = sections or [None] * len(pages)
    return Document(source=source, file_hash="0" * 64,
                    pages=[Page(number=i + 1, text=t, section=s)
                           for i, (t, s) in enumerate(zip(pages, sections))])


def check_chunks(doc: Document, chunks, encoder, limit: int) -> None:
    """Invariants every chunking must keep."""
    text, spans = document_text(doc)
    assert chunks, "no chunks"
    counts = encoder.count_tokens([c.indexed_text for c in chunks])  # context + text: what is embedded
    for i, (c, n) in enumerate(zip(chunks, counts)):
        assert c.chunk_index == i
        assert n <= limit, f"chunk {i} has {n} tokens > {limit}"
        assert c.n_tokens == n
        assert text[c.char_start:c.char_end] == c.text
        assert c.text == c.text.strip() and c.text
        assert c.source == doc.source and c.file_hash == doc.file_hash
    # every non-space character of the document is in some chunk, in order
    covered = [False] * len(text)
    for c in chunks:
        covered[c.char_start:c.char_end] = [True] * (c.char_end - c.char_start)
    missing = [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]
    assert not missing, f"{len(missing)} characters in no chunk, first at {missing[0]}"
    starts = [c.char_start for c in chunks]
    assert starts == sorted(starts)


# ------------------------------------------------------------------ sizes


@pytest.mark.parametrize("chunk_size, overlap", [(None, 0), (256, 32), (64, 16), (128, 0)])
def test_no_chunk_exceeds_the_limit(encoder, chunk_size, overlap):
    rnd = random.Random(1)
    no_punct = " ".join(rnd.choice(WORDS) for _ in range(2000))  # one 2000-word sentence
    blob = base64.b64encode(rnd.randbytes(3750)).decode()  # a 5000-char "word"
    url = "https://example.com/" + "/".join(
        "".join(rnd.choice(string.ascii_lowercase) for _ in range(8)) for _ in range(560))
    doc = doc_of(prose(80, 2) + " " + no_punct + ". " + prose(10, 3),
                 blob + " " + prose(5, 4) + " Visit " + url + " for more.",
                 "Über die Größe: " + prose(30, 5) + " 😀🚀" * 50)
    assert len(blob) == 5000 and len(url) >= 5000
    chunks = Chunker(chunk_size, overlap).split(doc, encoder)
    limit = chunk_size or encoder.max_seq_length
    assert limit <= encoder.max_seq_length
    check_chunks(doc, chunks, encoder, limit)


def test_default_chunk_size_fits_the_encoder(encoder):
    doc = doc_of(prose(200, 7))
    chunks = Chunker(chunk_size=None, chunk_overlap=0).split(doc, encoder)
    check_chunks(doc, chunks, encoder, encoder.max_seq_length)
    # packing is greedy: chunks are not tiny
    assert max(c.n_tokens for c in chunks) > encoder.max_seq_length * 0.8


def test_chunk_size_over_max_seq_length_is_a_config_error(encoder):
    with pytest.raises(ConfigError, match="max_seq_length"):
        Chunker(chunk_size=encoder.max_seq_length + 1).split(doc_of("Some text."), encoder)


@pytest.mark.parametrize("size, overlap", [(5, 0), (64, 40), (64, -1)])
def test_bad_settings_are_config_errors(encoder, size, overlap):
    with pytest.raises(ConfigError):
        Chunker(chunk_size=size, chunk_overlap=overlap).split(doc_of("Some text."), encoder)


def test_short_document_is_one_chunk(encoder):
    doc = doc_of("Just one short sentence.")
    (chunk,) = Chunker().split(doc, encoder)
    assert chunk.text == "Just one short sentence."
    assert (chunk.char_start, chunk.char_end) == (0, len(chunk.text))
    assert (chunk.page_start, chunk.page_end) == (1, 1)


# ------------------------------------------------------------------ overlap


def test_consecutive_chunks_overlap(encoder):
    doc = doc_of(prose(60, 11))
    chunks = Chunker(chunk_size=96, chunk_overlap=32).split(doc, encoder)
    check_chunks(doc, chunks, encoder, 96)
    assert len(chunks) >= 4
    for a, b in zip(chunks, chunks[1:]):
        assert b.char_start < a.char_end, "no shared text"
        shared = a.text[b.char_start - a.char_start:]
        assert b.text.startswith(shared)
        assert encoder.count_tokens([shared])[0] - 2 <= 32 + 2  # about the overlap asked for
        assert b.char_end > a.char_end  # each chunk brings new text


def test_no_overlap_when_zero(encoder):
    doc = doc_of(prose(60, 11))
    chunks = Chunker(chunk_size=96, chunk_overlap=0).split(doc, encoder)
    assert len(chunks) >= 4
    for a, b in zip(chunks, chunks[1:]):
        assert b.char_start > a.char_end


def test_chunks_end_at_sentence_boundaries(encoder):
    doc = doc_of(prose(60, 12))
    for c in Chunker(chunk_size=96, chunk_overlap=16).split(doc, encoder):
        assert c.text.startswith("Sentence ") and c.text.endswith(".")


# ------------------------------------------------------------------ pages and offsets


def test_chunk_crossing_a_page_boundary(encoder):
    doc = doc_of("End of the first page.", "Start of the second page.", "Third page.")
    (chunk,) = Chunker(chunk_size=None, chunk_overlap=0).split(doc, encoder)
    assert (chunk.page_start, chunk.page_end) == (1, 3)
    assert chunk.text == "End of the first page.\n\nStart of the second page.\n\nThird page."


def test_page_numbers_follow_character_offsets(encoder):
    pages = [prose(25, 20 + n, tag=f"p{n + 1}-") for n in range(4)]
    # the PDF's own numbering survives skipped pages (page 3 had no text layer)
    doc = Document(source="/docs/p.pdf", file_hash="0" * 64,
                   pages=[Page(number=n, text=t) for n, t in zip([1, 2, 4, 5], pages)])
    text, spans = document_text(doc)
    chunks = Chunker(chunk_size=128, chunk_overlap=16).split(doc, encoder)
    check_chunks(doc, chunks, encoder, 128)

    def page_at(offset: int) -> int:
        return next(number for start, end, number, _ in spans if start <= offset < end)

    crossing = 0
    for c in chunks:
        assert c.page_start == page_at(c.char_start)
        assert c.page_end == page_at(c.char_end - 1)
        assert f"Sentence p{c.page_start if c.page_start < 3 else c.page_start - 1}-" in c.text
        crossing += c.page_start != c.page_end
    assert crossing >= 1
    assert {c.page_start for c in chunks} == {1, 2, 4, 5}


def test_document_text_spans():
    doc = doc_of("abc", "de", sections=["S1", None])
    text, spans = document_text(doc)
    assert text == "abc\n\nde"
    assert spans == [(0, 3, 1, "S1"), (5, 7, 2, None)]


# ------------------------------------------------------------------ Markdown sections


def test_markdown_sections_never_share_a_chunk(tmp_path, encoder):
    md = ("Preamble text.\n\n# Install\n\nShort.\n\n## From source\n\n" + prose(40, 30)
          + "\n\n## From wheels\n\nTiny.\n\n# Usage\n\nAlso tiny.\n")
    path = tmp_path / "README.md"
    path.write_text(md, encoding="utf-8")
    doc = load(path)
    text, spans = document_text(doc)
    chunks = Chunker(chunk_size=None, chunk_overlap=32).split(doc, encoder)
    check_chunks(doc, chunks, encoder, encoder.max_seq_length)
    for c in chunks:
        (span,) = [s for s in spans if s[0] <= c.char_start < s[1]]
        assert c.char_end <= span[1], f"chunk {c.chunk_index} runs past its section"
        assert c.section == span[3]
    sections = [c.section for c in chunks]
    assert sections[0] is None
    assert sections.count("Install") == 1
    assert sections.count("Install > From source") >= 2
    assert sections[-2:] == ["Install > From wheels", "Usage"]
    assert chunks[-1].text == "# Usage\n\nAlso tiny."


def test_sections_with_the_same_heading_path_do_not_share_a_chunk(tmp_path, encoder):
    path = tmp_path / "notes.md"
    path.write_text("# A\n\n## Notes\n\nFirst notes.\n\n## Notes\n\nSecond notes.\n", encoding="utf-8")
    chunks = Chunker().split(load(path), encoder)
    assert [(c.section, c.text) for c in chunks] == [
        ("A", "# A"),
        ("A > Notes", "## Notes\n\nFirst notes."),
        ("A > Notes", "## Notes\n\nSecond notes."),
    ]


def test_pages_without_sections_share_chunks(encoder):
    # PDF pages are not sections: short pages are packed together
    doc = doc_of(*[f"Page {n} text." for n in range(1, 6)])
    (chunk,) = Chunker().split(doc, encoder)
    assert (chunk.page_start, chunk.page_end) == (1, 5)


# ------------------------------------------------------------------ ids and counts


def test_ids_stable_and_content_addressed(encoder):
    chunker = Chunker(chunk_size=96, chunk_overlap=16)
    doc = doc_of(prose(30, 40), prose(30, 41))
    first = chunker.split(doc, encoder)
    again = Chunker.from_dict(chunker.to_dict()).split(doc_of(prose(30, 40), prose(30, 41)), encoder)
    assert [c.id for c in first] == [c.id for c in again]
    assert len({c.id for c in first}) == len(first)

    changed = doc_of(prose(30, 40).replace("Sentence 1 ", "Sentence one "), prose(30, 41))
    changed_ids = [c.id for c in chunker.split(changed, encoder)]
    assert changed_ids[0] != first[0].id  # the edited chunk has a new id
    other_source = doc_of(prose(30, 40), prose(30, 41), source="/docs/other.pdf")
    assert not {c.id for c in chunker.split(other_source, encoder)} & {c.id for c in first}


def test_tiktoken_counts(encoder):
    doc = doc_of(prose(40, 50))
    chunks = Chunker(chunk_size=128, chunk_overlap=0).split(doc, encoder)
    assert all(c.n_tiktoken > 0 for c in chunks)
    assert [c.n_tiktoken for c in chunks] == count_tiktoken([c.text for c in chunks])


def test_chunk_documents_and_serialisation(encoder):
    docs = [doc_of(prose(5, 60), source="/a.txt"), doc_of(prose(5, 61), source="/b.txt")]
    chunks = chunk_documents(docs, encoder)
    assert [c.source for c in chunks] == ["/a.txt", "/b.txt"]
    chunker = Chunker(chunk_size=100, chunk_overlap=10)
    assert Chunker.from_dict(chunker.to_dict()).to_dict() == chunker.to_dict() == {
        "type": "Chunker", "init_parameters": {"chunk_size": 100, "chunk_overlap": 10, "context": True,
                                               "sentence_vectors": True}}


def test_the_sentence_rule():
    """The package's one sentence rule (chunk ids derive from it, so this pins it): . ! ? before
    whitespace and an upper-case letter, digit or opening bracket/quote (closing quotes and
    brackets after the stop go with the separator); blank lines end paragraphs."""
    text = 'He said "Stop." Then 3 left (twice). e.g. lower case stays.\nOne line.\n\nNew para! (Yes) ok?'
    assert split_sentences(text) == ['He said "Stop.', "Then 3 left (twice). e.g. lower case stays.",
                                     "One line.", "New para!", "(Yes) ok?"]
    spans = sentence_spans(text, 100)
    assert [text[a - 100:b - 100] for a, b in spans] == split_sentences(text)
    assert sentence_spans("") == [] and split_sentences("  \n\n ") == []


def test_everyone_splits_sentences_the_chunkers_way():
    from rag.answer import extractive
    from rag.ingest import chunking
    from rag.training import adapt

    assert chunking.sentence_spans is sentence_spans
    assert extractive.split_sentences is split_sentences and adapt.split_sentences is split_sentences
