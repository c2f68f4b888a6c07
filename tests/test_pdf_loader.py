"""The PDF loader: good, encrypted, truncated, garbled and image-only PDFs; pypdf's safety limits
(retried once with raised limits, a warning; a file over them even then fails); the title and the
outline sections; OCR of pages without a text layer (auto, off, force), and its page count in the
ingest report. Every PDF is made by the test: text layers in Helvetica, scans as Pillow images."""

from __future__ import annotations

import hashlib
import io
import re

import pypdf
import pytest
from PIL import Image, ImageDraw, ImageFont

from rag.errors import LoadError
from rag.ingest import pdf as pdf_loader
from rag.ingest.loaders import load
from rag.ingest.pdf import cover_page_title, heading_title, meaningful_title, page_sections
from rag.models import Document

PROSE = [
    "The quick brown fox jumps over the lazy dog and runs into the forest.",
    "It is a fine day for a walk, and the sun is shining on the hills.",
    "We read the report that was written by the team in the spring.",
]
SCAN_LINES = ["The lighthouse keeper repaired the copper lantern", "before the winter storm reached the harbour"]


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def load_error(path, **kw) -> str:
    with pytest.raises(LoadError) as info:
        load(path, **kw)
    assert info.value.source == str(path)
    return info.value.reason


def encrypted(data: bytes, user: str, owner: str) -> bytes:
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user, owner_password=owner)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def scanned_pdf(pages: list[list[str]]) -> bytes:
    """A PDF of images only (no text layer): each page's lines drawn by Pillow at 150 dpi, as a
    scanner would give them."""
    font = ImageFont.load_default(size=36)
    images = []
    for lines in pages:
        img = Image.new("RGB", (1240, 1754), "white")
        draw = ImageDraw.Draw(img)
        for i, line in enumerate(lines):
            draw.text((120, 160 + 64 * i), line, fill="black", font=font)
        images.append(img)
    out = io.BytesIO()
    images[0].save(out, "PDF", resolution=150, save_all=True, append_images=images[1:])
    return out.getvalue()


def text_page_objects(lines: list[str], extra: bytes = b"") -> list[bytes]:
    """Objects of a one-page PDF with a Helvetica text layer; `extra` goes into the page dictionary."""
    ops = [b"BT", b"/F1 11 Tf", b"14 TL", b"72 720 Td"]
    ops += [b"(" + line.encode("ascii") + b") Tj T*" for line in lines] + [b"ET"]
    stream = b"\n".join(ops)
    return [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            b"/Contents 5 0 R " + extra + b" >>",
            b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


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


def test_pdf_without_text_layer_needs_ocr_when_ocr_is_off(tmp_path, pdf_bytes):
    reason = load_error(write(tmp_path, "scan.pdf", pdf_bytes([[], []])), ocr="off")
    assert "no text layer" in reason and "needs OCR" in reason
    assert "2 page(s)" in reason


def test_blank_pdf_fails_after_ocr_found_nothing(tmp_path, pdf_bytes):
    reason = load_error(write(tmp_path, "blank.pdf", pdf_bytes([[], []])))
    assert "no text layer (2 page(s) of images only) and OCR found no text either" == reason


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


# ------------------------------------------------------------------ pypdf's safety limits


def deep_page_tree(depth: int, lines: list[str]) -> list[bytes]:
    """A page tree nested `depth` levels (pypdf allows 100), its one page holding `lines`."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    for level in range(depth):
        n = len(objects) + 1
        parent = b" /Parent %d 0 R" % (n - 1) if level else b""
        objects.append(b"<< /Type /Pages /Kids [%d 0 R] /Count 1%s >>" % (n + 1, parent))
    page, font, contents = len(objects) + 1, len(objects) + 2, len(objects) + 3
    ops = b"BT /F1 11 Tf 14 TL 72 720 Td " + b" ".join(b"(%s) Tj T*" % ln.encode() for ln in lines) + b" ET"
    objects += [b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 %d 0 R >> >> "
                b"/Contents %d 0 R >>" % (page - 1, font, contents),
                b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
                b"<< /Length %d >>\nstream\n" % len(ops) + ops + b"\nendstream"]
    return objects


def big_array_pdf(pdf_from_objects, elements: int) -> bytes:
    """A text page whose dictionary holds an array of `elements` numbers (pypdf allows 100,000)."""
    return pdf_from_objects(text_page_objects(PROSE, b"/PieceInfo [" + b" 0" * elements + b" ]"))


def test_pdf_over_pypdf_array_limit_is_read_with_raised_limits(tmp_path, pdf_from_objects):
    data = big_array_pdf(pdf_from_objects, 100_001)
    with pytest.raises(pypdf.errors.LimitReachedError):  # what pypdf alone does with it
        pypdf.PdfReader(io.BytesIO(data)).pages[0].extract_text()
    doc = load(write(tmp_path, "big-array.pdf", data))
    assert doc.pages[0].text.startswith("The quick brown fox")
    assert len(doc.warnings) == 1
    assert doc.warnings[0].startswith("read with raised pypdf limits (array_maximum_element_count 1,000,000; "
                                      "pypdf said: Reached maximum array element count.)")
    # the raised limits were for that file only
    assert pypdf.get_configuration().array_maximum_element_count == 100_000
    with pytest.raises(pypdf.errors.LimitReachedError):
        pypdf.PdfReader(io.BytesIO(data)).pages[0].extract_text()


def test_pdf_over_page_tree_depth_limit_is_read_with_raised_limits(tmp_path, pdf_from_objects):
    doc = load(write(tmp_path, "deep.pdf", pdf_from_objects(deep_page_tree(120, PROSE))))
    assert doc.pages[0].text.startswith("The quick brown fox")
    assert "page_tree_maximum_depth 1,000" in doc.warnings[0]


def test_pdf_over_the_raised_limits_fails_with_the_reason(tmp_path, pdf_from_objects):
    reason = load_error(write(tmp_path, "deeper.pdf", pdf_from_objects(deep_page_tree(1_010, PROSE))))
    assert reason.startswith("PDF refused by pypdf (a safety limit was reached, also with its limits raised 10x): "
                             "Maximum page tree depth reached: 1001 > 1000")
    assert pypdf.get_configuration().page_tree_maximum_depth == 100


def test_limit_retry_has_a_time_budget(tmp_path, pdf_from_objects, monkeypatch):
    monkeypatch.setattr(pdf_loader, "RETRY_SECONDS", 0.0)
    reason = load_error(write(tmp_path, "big-array.pdf", big_array_pdf(pdf_from_objects, 100_001)))
    assert "Reached maximum array element count" in reason
    assert "the retry with raised limits ran past its 0 s budget" in reason
    assert pypdf.get_configuration().array_maximum_element_count == 100_000


def test_corrupt_pdf_is_not_retried_and_fails_with_the_reason(tmp_path, pdf_from_objects):
    # a real corruption: the page's content stream is cut off mid-way and the xref points nowhere
    data = pdf_from_objects(text_page_objects(PROSE))
    data = data[:data.index(b"stream") + 20] + b"\x00\xff garbage"
    reason = load_error(write(tmp_path, "corrupt.pdf", data))
    assert reason.startswith("corrupt or truncated PDF: ")


# ------------------------------------------------------------------ title and sections


@pytest.mark.parametrize("title,expected", [
    ("Quarterly Report of the Harbour Board", "Quarterly Report of the Harbour Board"),
    ("  Hamlet ", "Hamlet"),
    ("", None), (None, None), ("Untitled", None), ("untitled document", None),
    ("Microsoft Word - board-minutes.doc", None), ("minutes.docx", None), ("report", None),
    ("aapl-20230701", None), ("0000320193-23-000077", None), ("sample_pdf", None),
])
def test_meaningful_metadata_title(title, expected):
    assert meaningful_title(title, file_stem="report") == expected


@pytest.mark.parametrize("page,expected", [
    ("Attention Is All You Need\nAshish Vaswani\nGoogle Brain", "Attention Is All You Need"),
    ("BERT: Pre-training of Deep Bidirectional Transformers for\nLanguage Understanding\nJacob Devlin",
     "BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding"),
    ("Page 1\nMarch 3, 2023\n2023-03-01\nQuarterly Results\nText", "Quarterly Results"),
    ("(Mark One)\nsomeone@example.com\nAnnual Review of Bridges", "Annual Review of Bridges"),
    ("UNITED STATES\nSECURITIES AND EXCHANGE COMMISSION\nWashington, D.C. 20549\nFORM 10-Q\nApple Inc.", None),
    ("the results are shown in the table below.\nwe then ran it again", None),
    ("", None),
])
def test_heading_title_of_the_first_page(page, expected):
    assert heading_title(page) == expected


def test_page_sections_follow_the_outline():
    outline = [(0, "Intro"), (2, "Methods"), (2, "Methods > Data"), (4, "Results")]
    assert page_sections(outline, 6) == ["Intro", "Intro", "Methods > Data", "Methods > Data", "Results", "Results"]
    assert page_sections([(1, "Body")], 3) == [None, "Body", "Body"]
    assert page_sections([], 2) == [None, None]


def test_pdf_title_and_outline_sections(tmp_path, pdf_bytes):
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(pdf_bytes([PROSE] * 4))))
    chapter = writer.add_outline_item("Chapter One", page_number=0)
    writer.add_outline_item("First Part", page_number=1, parent=chapter)
    writer.add_outline_item("Chapter Two", page_number=3)
    writer.add_metadata({"/Title": "The Harbour Board Minutes"})
    out = io.BytesIO()
    writer.write(out)
    doc = load(write(tmp_path, "minutes.pdf", out.getvalue()))
    assert doc.title == "The Harbour Board Minutes"
    assert [p.section for p in doc.pages] == ["Chapter One", "Chapter One > First Part",
                                              "Chapter One > First Part", "Chapter Two"]


def test_a_filing_cover_page_names_its_issuer_form_and_period(tmp_path, pdf_bytes):
    cover = ["UNITED STATES", "SECURITIES AND EXCHANGE COMMISSION", "Washington, D.C. 20549", "FORM 10-Q",
             "QUARTERLY REPORT PURSUANT TO SECTION 13 OR 15(d) OF THE SECURITIES EXCHANGE ACT OF 1934",
             "For the quarterly period ended July 1, 2023", "Commission File Number: 001-36743", "Harbour Bridges Inc.",
             "(Exact name of Registrant as specified in its charter)", "California 94-2404110"]
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(pdf_bytes([cover, PROSE]))))
    writer.add_metadata({"/Title": "0000320193-23-000077"})  # an accession number: not a title
    out = io.BytesIO()
    writer.write(out)
    doc = load(write(tmp_path, "2023 Q3 HBR.pdf", out.getvalue()))
    assert doc.title == "Harbour Bridges Inc. Form 10-Q, quarterly period ended July 1, 2023"
    assert cover_page_title("\n".join(cover[:7])) is None  # no registrant caption: not a filing


def test_pdf_title_falls_back_to_the_first_heading(tmp_path, pdf_bytes):
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(
        pdf_bytes([["Annual Review of Harbour Bridges", *PROSE]]))))
    writer.add_metadata({"/Title": "Microsoft Word - review.docx"})
    out = io.BytesIO()
    writer.write(out)
    doc = load(write(tmp_path, "review.pdf", out.getvalue()))
    assert doc.title == "Annual Review of Harbour Bridges"
    assert doc.pages[0].section is None
    assert load(write(tmp_path, "plain.pdf", pdf_bytes([PROSE]))).title is None


# ------------------------------------------------------------------ OCR


def test_scanned_pdf_is_read_by_ocr(tmp_path):
    doc = load(write(tmp_path, "scan.pdf", scanned_pdf([SCAN_LINES])))
    assert doc.ocr_pages == 1
    assert [p.number for p in doc.pages] == [1]
    text = doc.pages[0].text
    assert "\n" not in text  # cleaned like a text layer: the two lines became one paragraph
    assert "lighthouse keeper repaired the copper lantern" in text.lower()
    assert words(text) == words(" ".join(SCAN_LINES))
    assert doc.warnings == []


def test_scanned_pdf_with_ocr_off_needs_ocr(tmp_path):
    reason = load_error(write(tmp_path, "scan.pdf", scanned_pdf([SCAN_LINES])), ocr="off")
    assert reason == "no text layer (1 page(s) of images only): needs OCR (OCR is off)"


def test_auto_ocr_reads_only_the_pages_without_a_text_layer(tmp_path, pdf_bytes):
    scan = pypdf.PdfReader(io.BytesIO(scanned_pdf([SCAN_LINES])))
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(pdf_bytes([PROSE]))))
    writer.add_page(scan.pages[0])
    out = io.BytesIO()
    writer.write(out)
    doc = load(write(tmp_path, "mixed.pdf", out.getvalue()))
    assert doc.ocr_pages == 1
    assert doc.pages[0].text.startswith("The quick brown fox")
    assert "copper lantern" in doc.pages[1].text.lower()


def test_force_ocr_reads_a_text_pdf_by_ocr(tmp_path, pdf_bytes):
    path = write(tmp_path, "text.pdf", pdf_bytes([PROSE]))
    layer = load(path, ocr="off")
    forced = load(path, ocr="force")
    assert layer.ocr_pages == 0 and forced.ocr_pages == 1
    # same words; the OCR engine may glue words together, so compare letters
    assert "".join(words(forced.pages[0].text)) == "".join(words(layer.pages[0].text))


def test_ocr_engine_is_built_once_per_process(tmp_path):
    from rag.ingest import ocr

    load(write(tmp_path, "a.pdf", scanned_pdf([SCAN_LINES])))
    engine = ocr.engine()
    load(write(tmp_path, "b.pdf", scanned_pdf([SCAN_LINES[::-1]])))
    assert ocr.engine() is engine and ocr.engine.cache_info().misses == 1


def test_reading_text_layers_does_not_import_the_ocr_engine(tmp_path, pdf_bytes):
    import subprocess
    import sys

    path = write(tmp_path, "text.pdf", pdf_bytes([PROSE]))
    code = ("import sys; from rag.ingest.loaders import load; load(sys.argv[1]); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('rapidocr_onnxruntime', 'onnxruntime', 'pypdfium2', 'cv2', 'rag') and 'ocr' in m or "
            "m.split('.')[0] in ('rapidocr_onnxruntime', 'onnxruntime', 'pypdfium2', 'cv2')))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_boxes_in_two_columns_are_read_column_by_column():
    from rag.ingest.ocr import Box, boxes_to_text

    title = Box(100, 10, 900, 40, "A Title Across Both Columns")
    left = [Box(50, 100 + 30 * i, 450, 120 + 30 * i, f"left {i}") for i in range(4)]
    right = [Box(550, 100 + 30 * i, 950, 120 + 30 * i, f"right {i}") for i in range(4)]
    text = boxes_to_text([title, *right, *left], width=1000)
    assert text == ("A Title Across Both Columns\n\nleft 0\nleft 1\nleft 2\nleft 3\n\n"
                    "right 0\nright 1\nright 2\nright 3")
    one_column = boxes_to_text([Box(50, 10, 400, 30, "first"), Box(420, 12, 900, 30, "line"),
                                Box(50, 40, 900, 60, "second line"), Box(50, 130, 900, 150, "new para")], 1000)
    assert one_column == "first line\nsecond line\n\nnew para"


# ------------------------------------------------------------------ in the ingest job


def test_ingest_reports_ocr_pages_limit_warnings_and_corrupt_files(tmp_path, encoder, pdf_from_objects,
                                                                    monkeypatch):
    import sys

    from helpers_ingest import edge_settings, small_chunker, src
    from pipelines import render
    from pipelines.ingest import ingest

    files = {"scan.pdf": scanned_pdf([SCAN_LINES]),
             "big-array.pdf": big_array_pdf(pdf_from_objects, 100_001)}
    corrupt = pdf_from_objects(text_page_objects(PROSE))
    files["corrupt.pdf"] = corrupt[:corrupt.index(b"stream") + 20] + b"\x00\xff garbage"
    paths = {name: write(tmp_path / "docs", name, data) for name, data in files.items()}
    report = ingest([tmp_path / "docs"], encoder=encoder, store=edge_settings(tmp_path / "store"),
                    chunker=small_chunker(), progress=False)
    by = {o.source: o for o in report.outcomes}
    scan, big, bad = (by[src(paths[n])] for n in ("scan.pdf", "big-array.pdf", "corrupt.pdf"))
    assert (scan.status, scan.ocr_pages, scan.warnings) == ("ingested", 1, [])
    assert (big.status, big.ocr_pages) == ("ingested", 0)
    assert big.warnings[0].startswith("read with raised pypdf limits (array_maximum_element_count")
    assert bad.status == "failed" and bad.reason.startswith("corrupt or truncated PDF")

    buf = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buf)
    render.print_ingest_report(report)
    shown = buf.getvalue()
    assert re.search(r"pages read by OCR\W+1 in 1 file", shown), shown
    assert any("scan.pdf" in line and re.search(r"\b1\b", line.split("scan.pdf")[1]) for line in shown.splitlines())
    assert "read with raised pypdf limits" in shown and "corrupt or truncated PDF" in shown

    off = ingest([paths["scan.pdf"]], encoder=encoder, store=edge_settings(tmp_path / "store-off"),
                 chunker=small_chunker(), progress=False, ocr="off")
    assert off.outcomes[0].status == "failed" and "needs OCR" in off.outcomes[0].reason
