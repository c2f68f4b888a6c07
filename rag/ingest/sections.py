"""What the HTML and DOCX loaders share: heading paths, whitespace that keeps line breaks, and the
sectioned `Document` they build.

Sections follow `markdown_sections` (rag.ingest.loaders): each heading starts a part whose
`section` is the heading path ("Install > From source"), the heading text stays in the part, and
every part is a `Page` with number 1.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from rag.errors import LoadError
from rag.ingest.identity import file_hash, source_name
from rag.models import Document, Page
from rag.text.clean import normalize_unicode

Trail = list[tuple[int, str]]

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")


def heading_trail(trail: Trail, level: int, title: str) -> Trail:
    """The open headings after a heading of `level`: those of a higher rank (lower level) stay,
    then this one; the rule of markdown_sections."""
    return [(lv, t) for lv, t in trail if lv < level] + [(level, title)]


def heading_path(trail: Trail) -> str:
    """"A > B": how a section is named in chunks and search results (as for Markdown)."""
    return " > ".join(t for _, t in trail)


def normalize_lines(text: str) -> str:
    """normalize_whitespace (rag.text.clean), except that a single line break stays: in HTML and
    DOCX a line break is markup (<br>, a table row), not the wrap of a PDF line. Spaces collapse
    within a line, blank lines inside a paragraph go, paragraphs are separated by one blank line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    out = []
    for para in _PARAGRAPH_BREAK.split(text):
        lines = (re.sub(r"\s+", " ", line).strip() for line in para.split("\n"))
        para = "\n".join(line for line in lines if line)
        if para:
            out.append(para)
    return "\n\n".join(out)


def clean_text(text: str) -> str:
    """The clean-up of typed text (as for .txt/.md: NFKC, control characters; no PDF accent
    repair), with line breaks kept."""
    return normalize_lines(normalize_unicode(text, recompose_accents=False))


def clean_title(text: str | None) -> str | None:
    """A title on one line, cleaned; None when nothing is left."""
    if not text:
        return None
    return re.sub(r"\s+", " ", normalize_unicode(text, recompose_accents=False)).strip() or None


def sectioned_document(path: Path, data: bytes, parts: Sequence[tuple[str | None, str]],
                       title: str | None, warnings: list[str], no_text: str) -> Document:
    """The Document of `parts` ((section, raw text) in reading order), each part cleaned; parts
    left empty are dropped. No text at all raises LoadError(path, `no_text`)."""
    pages = []
    for section, body in parts:
        text = clean_text(body)
        if text:
            pages.append(Page(number=1, text=text, section=section))
    if not pages:
        raise LoadError(str(path), no_text)
    return Document(source=source_name(path), file_hash=file_hash(data), pages=pages,
                    warnings=warnings, title=clean_title(title))
