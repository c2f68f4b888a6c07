"""Shared fixtures: one warmed-up encoder for the session, and a builder of small PDFs."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pytest


def _pdf_string(text: str) -> bytes:
    """A PDF literal string for a WinAnsi Type1 font: escape the delimiters."""
    raw = text.encode("cp1252")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def assemble_pdf(objects: Sequence[bytes], root: int = 1) -> bytes:
    """A PDF file from object bodies (object n is objects[n-1]) with a correct xref table."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % n + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n" % (len(objects) + 1))
    out.write(b"0000000000 65535 f \n")
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n"
              % (len(objects) + 1, root, xref))
    return out.getvalue()


def make_pdf(pages: Sequence[Sequence[str]]) -> bytes:
    """Bytes of a valid PDF with one page per entry, each entry the text lines of that page,
    drawn in Helvetica so the file has a real text layer. An empty entry makes a blank page."""
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>", b"",
                            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica "
                            b"/Encoding /WinAnsiEncoding >>"]
    kids = []
    for lines in pages:
        ops = [b"BT", b"/F1 11 Tf", b"14 TL", b"72 720 Td"]
        ops += [_pdf_string(line) + b" Tj T*" for line in lines]
        ops.append(b"ET")
        stream = b"\n".join(ops) if lines else b""
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                       b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % len(objects))
        kids.append(len(objects))
    objects[1] = (b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % k for k in kids)
                  + b"] /Count %d >>" % len(kids))
    return assemble_pdf(objects)


@pytest.fixture(scope="session")
def pdf_bytes():
    """`pdf_bytes([[line, ...], ...])` builds a PDF with a text layer, one list per page."""
    return make_pdf


@pytest.fixture(scope="session")
def pdf_from_objects():
    """`pdf_from_objects([body, ...], root=1)` writes hand-made objects as a PDF file."""
    return assemble_pdf


@pytest.fixture(scope="session")
def encoder():
    from rag.embed.encoder import SentenceEncoder

    enc = SentenceEncoder(device="cpu")
    enc.warm_up()
    return enc
