"""Word .docx files to a `Document` (python-docx reads the package, styles and properties).

- Reading order: the body's XML children, so tables land between the paragraphs where they are
  (content controls, w:sdt, are looked into). Tracked insertions count, deletions and moved-away
  text do not; a text box's text follows its anchor paragraph; the fallback copy that Word keeps
  of drawings for old readers (mc:Fallback) is skipped so that nothing is read twice. Page
  headers, footers and table-of-contents entries are left out (navigation, as in HTML).
- Headings: paragraphs styled "Title" (level 0) or "Heading N", or with an outline level (on the
  paragraph, else on its style or a style it is based on): they start sections named by their
  heading path, as Markdown headings do.
- Tables: one "cell | cell" paragraph per row; a merged cell is written once (its continuation
  cells are empty and skipped).
- Title: the core properties' title when meaningful (not empty, not Word's "Document1" or
  "Microsoft Word - name.doc"), else the first Title / Heading 1 paragraph, else None.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rag.errors import LoadError
from rag.ingest.sections import clean_title, heading_path, heading_trail, sectioned_document
from rag.models import Document

OLE_MAGIC = b"\xd0\xcf\x11\xe0"  # compound file: a legacy .doc, or an encrypted / IRM .docx
MAX_UNZIPPED_BYTES = 1 << 30  # a zip bomb is refused before python-docx inflates it in memory
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC_FALLBACK = "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback"
_SKIPPED = {_W + t for t in ("del", "moveFrom", "pPr", "rPr", "instrText", "delText")} | {_MC_FALLBACK}
_PLACEHOLDER_TITLE = re.compile(r"(document\d*|untitled( document)?|microsoft word\s*-.*)", re.I)
_HEADING_STYLE = re.compile(r"heading ([1-9])", re.I)
NO_TEXT = "no text: the document has no paragraphs or table cells with text"


def _check_package(src: str, data: bytes) -> zipfile.ZipFile:
    """The zip archive of a .docx, or LoadError for what is not one."""
    if data.startswith(OLE_MAGIC):
        raise LoadError(src, "encrypted .docx or legacy Word .doc: save as .docx without a password")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise LoadError(src, f"corrupt or not a .docx: not a zip archive ({e})") from e
    if sum(info.file_size for info in archive.infolist()) > MAX_UNZIPPED_BYTES:
        raise LoadError(src, f"refused: unpacks to more than {MAX_UNZIPPED_BYTES >> 20} MiB")
    return archive


def _open(src: str, data: bytes) -> Any:
    import docx  # python-docx: imported here so that the other loaders work without it
    from docx.opc.exceptions import OpcError
    from lxml import etree

    archive = _check_package(src, data)
    try:
        return docx.Document(io.BytesIO(data))
    except (OpcError, KeyError, ValueError, TypeError, AttributeError, IndexError, OSError,
            zipfile.BadZipFile, EOFError, etree.LxmlError, NotImplementedError) as e:
        if "word/document.xml" not in archive.namelist():
            raise LoadError(src, "a zip archive without word/document.xml: not a Word .docx") from e
        raise LoadError(src, f"corrupt or not a .docx: {type(e).__name__}: {e}") from e


# ---------------------------------------------------------------- text of the XML


def block_elements(container: Any) -> Iterator[Any]:
    """The w:p and w:tbl of a body or cell in document order, looking into content controls
    (w:sdt) and custom XML wrappers."""
    for child in container:
        if child.tag in (_W + "p", _W + "tbl"):
            yield child
        elif child.tag in (_W + "sdt", _W + "sdtContent", _W + "customXml"):
            yield from block_elements(child)


def _inline_text(el: Any, out: list[str]) -> None:
    for child in el:
        tag = child.tag
        if tag in _SKIPPED:
            continue
        if tag == _W + "t":
            out.append(child.text or "")
        elif tag in (_W + "tab", _W + "ptab"):
            out.append("\t")
        elif tag in (_W + "br", _W + "cr"):
            out.append("\n")
        elif tag == _W + "noBreakHyphen":
            out.append("-")
        elif tag == _W + "p":  # a paragraph of a text box anchored here
            out.append("\n")
            _inline_text(child, out)
            out.append("\n")
        else:
            _inline_text(child, out)


def paragraph_text(p: Any) -> str:
    """What a w:p shows: its runs (hyperlinks, fields' results and tracked insertions included),
    tabs as spaces, line breaks as lines."""
    out: list[str] = []
    _inline_text(p, out)
    return "".join(out)


def _cell_children(parent: Any, tag: str) -> Iterator[Any]:
    for child in parent:
        if child.tag == tag:
            yield child
        elif child.tag in (_W + "sdt", _W + "sdtContent", _W + "customXml"):
            yield from _cell_children(child, tag)


def _flat_text(container: Any) -> str:
    """A cell's content on one line (nested tables included)."""
    pieces = []
    for el in block_elements(container):
        pieces.extend(table_rows(el) if el.tag == _W + "tbl" else [paragraph_text(el)])
    return re.sub(r"\s+", " ", " ".join(pieces)).strip()


def table_rows(tbl: Any) -> list[str]:
    """One "cell | cell" line per row; empty cells (a merged cell's continuations) are skipped."""
    rows = []
    for tr in _cell_children(tbl, _W + "tr"):
        cells = [t for t in (_flat_text(tc) for tc in _cell_children(tr, _W + "tc")) if t]
        if cells:
            rows.append(" | ".join(cells))
    return rows


# ---------------------------------------------------------------- headings


def _outline_level(el: Any) -> int | None:
    """w:outlineLvl of a paragraph's or style's w:pPr (0-8 headings, 9 body text), if set."""
    values = el.xpath("./w:pPr/w:outlineLvl/@w:val")
    try:
        return int(values[0]) if values else None
    except ValueError:
        return None


class HeadingLevels:
    """Heading level of a paragraph: 0 for "Title", N for "Heading N" or outline level N-1; None
    for body text. What a style means is looked up once per style id (python-docx's style
    look-up scans the styles part)."""

    def __init__(self, document: Any):
        self._document = document
        self._by_style: dict[str | None, tuple[int | None, bool]] = {}  # id -> (level, toc)

    def level(self, p: Any) -> int | None:
        own = _outline_level(p)
        if own is not None:
            return own + 1 if own < 9 else None
        return self._style_info(p)[0]

    def is_toc(self, p: Any) -> bool:
        """A table-of-contents entry or its "Contents" heading (styles "TOC 1".., "TOC Heading")."""
        return self._style_info(p)[1]

    def _style_info(self, p: Any) -> tuple[int | None, bool]:
        ids = p.xpath("./w:pPr/w:pStyle/@w:val")
        style_id = ids[0] if ids else None
        if style_id not in self._by_style:
            from docx.text.paragraph import Paragraph

            style = Paragraph(p, self._document).style
            toc = style is not None and (style.name or "").casefold().startswith("toc ")
            self._by_style[style_id] = (_style_level(style), toc)
        return self._by_style[style_id]


def _style_level(style: Any) -> int | None:
    """Level of a paragraph style: "Title" 0, "Heading N" N, else an outline level on it or on a
    style it is based on."""
    if style is not None and (style.name or "").casefold() == "title":
        return 0
    for _ in range(16):  # the based-on chain; bounded against a cycle
        if style is None:
            return None
        m = _HEADING_STYLE.fullmatch((style.name or "").strip())
        if m:
            return int(m.group(1))
        lvl = _outline_level(style.element)
        if lvl is not None:
            return lvl + 1 if lvl < 9 else None
        style = style.base_style
    return None


def meaningful_title(title: str | None) -> str | None:
    """The core-properties title, unless it is empty or one Word fills in by itself."""
    title = clean_title(title)
    return None if not title or _PLACEHOLDER_TITLE.fullmatch(title) else title


# ---------------------------------------------------------------- the loader


def docx_sections(document: Any) -> tuple[list[tuple[str | None, str]], str | None]:
    """(section, text) parts in reading order and the first Title / Heading 1 text."""
    levels = HeadingLevels(document)
    parts: list[tuple[str | None, list[str]]] = [(None, [])]
    trail: list[tuple[int, str]] = []
    first_heading = None
    for el in block_elements(document.element.body):
        if el.tag == _W + "tbl":
            parts[-1][1].extend(table_rows(el))
            continue
        text = paragraph_text(el)
        if not text.strip() or levels.is_toc(el):
            continue
        level = levels.level(el)
        if level is None:
            parts[-1][1].append(text)
            continue
        heading = re.sub(r"\s+", " ", text).strip()
        if first_heading is None and level <= 1:
            first_heading = heading
        trail = heading_trail(trail, level, heading)
        parts.append((heading_path(trail), [heading]))
    return [(section, "\n\n".join(blocks)) for section, blocks in parts], first_heading


def load_docx(path: Path, data: bytes) -> Document:
    """Load a .docx file (module docstring: reading order, headings, tables, title)."""
    src = str(path)
    document = _open(src, data)
    parts, first_heading = docx_sections(document)
    title = meaningful_title(document.core_properties.title) or first_heading
    return sectioned_document(path, data, parts, title, [], NO_TEXT)
