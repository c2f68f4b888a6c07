"""Loaders: text in several encodings, Markdown sections, the directory walk, and the refusals
that are the same for every type (empty, missing, unsupported). PDFs: tests/test_pdf_loader.py."""

from __future__ import annotations

import codecs

import pytest

from rag.errors import LoadError
from rag.ingest.loaders import find_files, iter_documents, load, markdown_sections, source_name
from rag.models import Document

def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def load_error(path) -> str:
    with pytest.raises(LoadError) as info:
        load(path)
    assert info.value.source == str(path)
    return info.value.reason


def test_empty_file(tmp_path):
    for name in ("empty.pdf", "empty.txt", "empty.md"):
        assert "empty file" in load_error(write(tmp_path, name, b""))


def test_missing_file_and_unsupported_suffix(tmp_path):
    assert "cannot read file" in load_error(tmp_path / "missing.txt")
    assert "unsupported file type '.xlsx'" in load_error(write(tmp_path, "a.xlsx", b"text"))


# ------------------------------------------------------------------ text


def test_binary_bytes_with_txt_suffix(tmp_path):
    data = bytes(range(256)) * 8
    assert "binary" in load_error(write(tmp_path, "blob.txt", data))
    # a few NUL bytes in otherwise plain text still make it binary
    assert "binary" in load_error(write(tmp_path, "nul.txt", b"hello\x00world " * 10))


def test_utf8_text(tmp_path):
    doc = load(write(tmp_path, "a.txt", "Grüße aus Köln.\nZweite Zeile.\n\nNeuer Absatz.".encode()))
    assert [p.number for p in doc.pages] == [1]
    assert doc.pages[0].text == "Grüße aus Köln. Zweite Zeile.\n\nNeuer Absatz."
    assert doc.warnings == []


def test_cp1252_text_is_decoded_with_warning(tmp_path):
    text = "café naïve – “quotes” and 5 €"
    data = text.encode("cp1252")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    doc = load(write(tmp_path, "win.txt", data))
    assert doc.pages[0].text == text
    assert len(doc.warnings) == 1 and "Windows-1252" in doc.warnings[0]


def test_utf8_with_bom(tmp_path):
    doc = load(write(tmp_path, "bom.txt", codecs.BOM_UTF8 + "Ünïcödé text".encode()))
    assert doc.pages[0].text == "Ünïcödé text"  # no BOM character left at the start
    assert doc.warnings == []


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_with_bom(tmp_path, encoding):
    text = "Zürich – 東京 – naïve"
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = codecs.BOM_UTF16_BE + data
    doc = load(write(tmp_path, "wide.txt", data))
    assert doc.pages[0].text == text
    assert doc.warnings == []


def test_whitespace_only_text(tmp_path):
    assert "no text" in load_error(write(tmp_path, "blank.txt", b"   \n\n\t \n"))


# ------------------------------------------------------------------ Markdown

MARKDOWN = """Intro paragraph before any heading.

# Install

Use pip.

## From source

Clone it, then build:

```bash
# this is a shell comment, not a heading
make install
```

### Notes ###

Needs a C compiler.

## From wheels

Download a wheel.

# Usage

Run `echo hi` and `ls -a` in a shell.
"""


def test_markdown_sections_and_code_fences(tmp_path):
    doc = load(write(tmp_path, "README.md", MARKDOWN.encode()))
    assert [p.section for p in doc.pages] == [
        None,
        "Install",
        "Install > From source",
        "Install > From source > Notes",
        "Install > From wheels",
        "Usage",
    ]
    assert all(p.number == 1 for p in doc.pages)
    from_source = doc.pages[2].text
    assert from_source.startswith("## From source")  # the heading stays in its section's text
    assert "# this is a shell comment, not a heading" in from_source
    assert "make install" in from_source
    assert doc.pages[0].text == "Intro paragraph before any heading."
    # inline code is kept verbatim (backticks are not grave accents)
    assert doc.pages[5].text == "# Usage\n\nRun `echo hi` and `ls -a` in a shell."


def test_markdown_sections_function():
    sections = markdown_sections("# A\ntext\n~~~\n# not a heading\n~~~\n#not-a-heading-either\n## B\nmore")
    assert [s for s, _ in sections] == ["A", "A > B"]
    assert "# not a heading" in sections[0][1]
    assert "#not-a-heading-either" in sections[0][1]


# ------------------------------------------------------------------ directory walk


def test_find_files_globs_and_hidden_dirs(tmp_path):
    for rel in ["a.pdf", "b.txt", "c.md", "d.xlsx", "sub/e.txt", "sub/deep/f.md",
                ".git/g.txt", "sub/.cache/h.md", ".hidden.txt", "drafts/i.txt", "build/j.md"]:
        write(tmp_path, rel, b"x")
    rels = lambda paths: sorted(p.relative_to(tmp_path).as_posix() for p in paths)  # noqa: E731

    assert rels(find_files([tmp_path])) == [
        ".hidden.txt", "a.pdf", "b.txt", "build/j.md", "c.md", "drafts/i.txt", "sub/deep/f.md", "sub/e.txt",
    ]
    assert rels(find_files([tmp_path], include=["*.md"])) == ["build/j.md", "c.md", "sub/deep/f.md"]
    assert rels(find_files([tmp_path], exclude=["drafts/*", "build/*", ".*"])) == [
        "a.pdf", "b.txt", "c.md", "sub/deep/f.md", "sub/e.txt",
    ]
    assert rels(find_files([tmp_path], include=["sub/*"])) == ["sub/deep/f.md", "sub/e.txt"]


def test_find_files_named_files_kept_and_deduplicated(tmp_path):
    docx = write(tmp_path, "d.xlsx", b"x")
    txt = write(tmp_path, "b.txt", b"x")
    found = find_files([docx, tmp_path, txt])
    assert [source_name(p) for p in found] == sorted({source_name(docx), source_name(txt)})


def test_find_files_missing_path(tmp_path):
    with pytest.raises(LoadError, match="no such file or directory"):
        find_files([tmp_path / "nope"])


def test_iter_documents_yields_errors_and_goes_on(tmp_path):
    good = write(tmp_path, "good.txt", b"Some text.")
    bad = write(tmp_path, "bad.txt", b"")
    out = list(iter_documents([bad, good]))
    assert isinstance(out[0], LoadError) and "empty file" in out[0].reason
    assert isinstance(out[1], Document) and out[1].pages[0].text == "Some text."


def test_text_files_keep_spacing_accents_used_as_apostrophes(tmp_path):
    p = tmp_path / "note.txt"
    p.write_text("it´s ﬁne, isn´t it", encoding="utf-8")
    text = load(p).pages[0].text
    assert text == "it´s fine, isn´t it"


def test_markdown_heading_ending_in_hash_keeps_it():
    sections = markdown_sections("# Using C#\nbody\n## Notes ##\nmore\n")
    assert [s for s, _ in sections] == ["Using C#", "Using C# > Notes"]
