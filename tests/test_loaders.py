"""Loaders: PDFs (good, encrypted, truncated, image-only, garbled, over pypdf's limits), text in
several encodings, Markdown sections, and the directory walk."""

from __future__ import annotations

import codecs
import hashlib
import io

import pypdf
import pytest

from rag.errors import LoadError
from rag.ingest.loaders import find_files, iter_documents, load, markdown_sections, source_name
from rag.models import Document

PROSE = [
    "The quick brown fox jumps over the lazy dog and runs into the forest.",
    "It is a fine day for a walk, and the sun is shining on the hills.",
    "We read the report that was written by the team in the spring.",
]


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


def encrypted(data: bytes, user: str, owner: str) -> bytes:
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user, owner_password=owner)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


# ------------------------------------------------------------------ PDF


def test_pdf_helper_has_a_text_layer(pdf_bytes):
    reader = pypdf.PdfReader(io.BytesIO(pdf_bytes([["Hello (world)", "café"], ["two"]])), strict=True)
    assert len(reader.pages) == 2
    assert reader.pages[0].extract_text().split("\n")[:2] == ["Hello (world)", "café"]
    assert reader.pages[1].extract_text().strip() == "two"


def test_good_multipage_pdf(tmp_path, pdf_bytes):
    data = pdf_bytes([[f"Page {n} says: {line}" for line in PROSE] for n in (1, 2, 3)])
    path = write(tmp_path, "good.pdf", data)
    doc = load(path)
    assert isinstance(doc, Document)
    assert [p.number for p in doc.pages] == [1, 2, 3]
    for n, page in enumerate(doc.pages, start=1):
        assert page.text.startswith(f"Page {n} says: The quick brown fox")
        assert "\n" not in page.text  # single line breaks became spaces
        assert page.section is None
    assert doc.source == path.resolve().as_posix()
    assert doc.file_hash == hashlib.sha256(data).hexdigest()
    assert doc.warnings == []


def test_pdf_text_is_cleaned(tmp_path, pdf_bytes):
    lines = PROSE + ["We fine-tune the model; the com-", "putational cost is low."]
    doc = load(write(tmp_path, "clean.pdf", pdf_bytes([lines])))
    assert "the computational cost is low." in doc.pages[0].text


def test_pdf_with_user_password_is_refused(tmp_path, pdf_bytes):
    data = encrypted(pdf_bytes([PROSE]), user="secret", owner="owner-secret")
    assert pypdf.PdfReader(io.BytesIO(data)).is_encrypted
    reason = load_error(write(tmp_path, "locked.pdf", data))
    assert "encrypted" in reason and "password" in reason


def test_pdf_with_owner_password_only_loads(tmp_path, pdf_bytes):
    data = encrypted(pdf_bytes([PROSE, PROSE[::-1]]), user="", owner="owner-secret")
    assert pypdf.PdfReader(io.BytesIO(data)).is_encrypted
    doc = load(write(tmp_path, "owner.pdf", data))
    assert [p.number for p in doc.pages] == [1, 2]
    assert doc.pages[0].text.startswith("The quick brown fox")
    assert doc.pages[1].text.startswith("We read the report")


@pytest.mark.parametrize("keep", [0.5, 0.25, 0.9])
def test_truncated_pdf_is_corrupt(tmp_path, pdf_bytes, keep):
    data = pdf_bytes([PROSE, PROSE])
    cut = data[: int(len(data) * keep)]
    reason = load_error(write(tmp_path, "cut.pdf", cut))
    assert "corrupt or truncated" in reason


def test_pdf_without_text_layer_needs_ocr(tmp_path, pdf_bytes):
    reason = load_error(write(tmp_path, "scan.pdf", pdf_bytes([[], []])))
    assert "no text layer" in reason and "needs OCR" in reason
    assert "2 page(s)" in reason


def test_blank_page_among_text_pages_is_warned_and_skipped(tmp_path, pdf_bytes):
    doc = load(write(tmp_path, "mixed.pdf", pdf_bytes([PROSE, [], PROSE])))
    assert [p.number for p in doc.pages] == [1, 3]  # page numbers stay the PDF's own
    assert len(doc.warnings) == 1
    assert "1 of 3 page(s) have no text layer" in doc.warnings[0]
    assert "page 2" in doc.warnings[0]


def test_garbled_pdf_text_layer_is_refused(tmp_path, pdf_bytes):
    # Caesar-shifted English (the text layer of a PDF with a broken font encoding)
    shift = str.maketrans("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                          "defghijklmnopqrstuvwxyzabcDEFGHIJKLMNOPQRSTUVWXYZABC")
    lines = [line.translate(shift) for line in PROSE * 3]
    reason = load_error(write(tmp_path, "shifted.pdf", pdf_bytes([lines])))
    assert "garbled" in reason


def test_not_a_pdf_with_pdf_suffix(tmp_path):
    reason = load_error(write(tmp_path, "fake.pdf", b"<html><body>Not a PDF at all</body></html>"))
    assert "not a PDF" in reason


def test_pdf_over_pypdf_safety_limit(tmp_path, pdf_from_objects):
    # A page tree nested deeper than pypdf allows (100): pypdf raises LimitReachedError.
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    for level in range(120):
        n = len(objects) + 1
        parent = b" /Parent %d 0 R" % (n - 1) if level else b""
        objects.append(b"<< /Type /Pages /Kids [%d 0 R] /Count 1%s >>" % (n + 1, parent))
    objects.append(b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] >>" % len(objects))
    reason = load_error(write(tmp_path, "deep.pdf", pdf_from_objects(objects)))
    assert "safety limit" in reason


def test_empty_file(tmp_path):
    for name in ("empty.pdf", "empty.txt", "empty.md"):
        assert "empty file" in load_error(write(tmp_path, name, b""))


def test_missing_file_and_unsupported_suffix(tmp_path):
    assert "cannot read file" in load_error(tmp_path / "missing.txt")
    assert "unsupported file type '.docx'" in load_error(write(tmp_path, "a.docx", b"text"))


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
    for rel in ["a.pdf", "b.txt", "c.md", "d.docx", "sub/e.txt", "sub/deep/f.md",
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
    docx = write(tmp_path, "d.docx", b"x")
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
