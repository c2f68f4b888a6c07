"""Loaders: files to cleaned `Document`s. Each bad file raises `LoadError` with one clear reason.

PDF (rag.ingest.pdf: one `Page` per page), `.txt`, and `.md` (each heading starts a section).
`find_files` walks directories with include/exclude globs.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from rag.errors import LoadError
from rag.ingest.decoding import decode_text
from rag.ingest.identity import file_hash, source_name
from rag.ingest.pdf import DEFAULT_OCR, OcrMode, load_pdf
from rag.models import Document, Page
from rag.text.clean import normalize_unicode, normalize_whitespace

PDF_SUFFIXES = {".pdf"}
TEXT_SUFFIXES = {".txt", ".text"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
DOCX_SUFFIXES = {".docx"}
SUPPORTED_SUFFIXES = PDF_SUFFIXES | TEXT_SUFFIXES | MARKDOWN_SUFFIXES | HTML_SUFFIXES | DOCX_SUFFIXES
DEFAULT_INCLUDE = tuple(f"*{s}" for s in sorted(SUPPORTED_SUFFIXES))


def find_files(
    paths: Iterable[str | Path],
    include: Iterable[str] = DEFAULT_INCLUDE,
    exclude: Iterable[str] = (),
) -> list[Path]:
    """Files under `paths` (files named directly are always kept), sorted, without duplicates.
    Globs match the file name or the path relative to the walked directory; hidden
    directories are skipped."""
    include, exclude = tuple(include), tuple(exclude)
    found: dict[str, Path] = {}
    for raw in paths:
        root = Path(raw)
        if root.is_file():
            found.setdefault(source_name(root), root)
            continue
        if not root.is_dir():
            raise LoadError(str(raw), "no such file or directory")
        for p in sorted(root.rglob("*")):
            if p.is_file() and selected(p.relative_to(root), include, exclude):
                found.setdefault(source_name(p), p)
    return sorted(found.values(), key=source_name)


def selected(rel: Path, include: Iterable[str] = DEFAULT_INCLUDE, exclude: Iterable[str] = ()) -> bool:
    """Whether walking a directory takes the file at `rel` (its path relative to the walked
    directory): not in a hidden directory, and its name or `rel` matches an include glob and
    no exclude glob. The one rule of `find_files` and of `rag ingest --watch` (`pipelines.watch`)."""
    if any(part.startswith(".") for part in rel.parts[:-1]):
        return False
    text = rel.as_posix()

    def matches(globs: Iterable[str]) -> bool:
        return any(fnmatch.fnmatch(rel.name, g) or fnmatch.fnmatch(text, g) for g in globs)

    return matches(include) and not matches(exclude)


def load(path: str | Path, ocr: OcrMode = DEFAULT_OCR) -> Document:
    """Load one file by its suffix. Raises LoadError for anything that is not usable text.
    ocr: for PDFs, "auto" (OCR the pages without a text layer), "force" (every page) or "off"."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LoadError(str(path), f"cannot read file: {e.strerror or e}") from e
    if not data:
        raise LoadError(str(path), "empty file (0 bytes)")
    if suffix in PDF_SUFFIXES:
        return load_pdf(path, data, ocr=ocr)
    if suffix in MARKDOWN_SUFFIXES:
        return load_markdown(path, data)
    if suffix in TEXT_SUFFIXES:
        return load_text(path, data)
    if suffix in HTML_SUFFIXES:
        from rag.ingest.html import load_html
        return load_html(path, data)
    if suffix in DOCX_SUFFIXES:
        from rag.ingest.docx import load_docx
        return load_docx(path, data)
    raise LoadError(str(path), f"unsupported file type '{suffix or '(none)'}'")


# ---------------------------------------------------------------- text


def _text_document(path: Path, data: bytes, sections: list[tuple[str | None, str]],
                   warnings: list[str]) -> Document:
    pages = []
    for section, body in sections:
        text = normalize_whitespace(normalize_unicode(body, recompose_accents=False))
        if text:
            pages.append(Page(number=1, text=text, section=section))
    if not pages:
        raise LoadError(str(path), "no text (only whitespace)")
    return Document(source=source_name(path), file_hash=file_hash(data), pages=pages, warnings=warnings)


def load_text(path: Path, data: bytes) -> Document:
    text, warnings = decode_text(str(path), data)
    return _text_document(path, data, [(None, text)], warnings)


# A closing run of '#' counts only after a space (CommonMark): "# Using C#" keeps its '#'.
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def markdown_sections(text: str) -> list[tuple[str | None, str]]:
    """Split Markdown at ATX headings (outside code fences). Each part carries the heading
    path, e.g. "Install > From source"; the heading line stays in its part's text."""
    parts: list[tuple[str | None, list[str]]] = [(None, [])]
    trail: list[tuple[int, str]] = []
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        m = None if in_fence else _HEADING.match(line)
        if m:
            level, title = len(m.group(1)), m.group(2).strip()
            trail = [(lv, t) for lv, t in trail if lv < level] + [(level, title)]
            parts.append((" > ".join(t for _, t in trail), [line]))
        else:
            parts[-1][1].append(line)
    return [(sec, "\n".join(lines)) for sec, lines in parts if "".join(lines).strip()]


def load_markdown(path: Path, data: bytes) -> Document:
    text, warnings = decode_text(str(path), data)
    return _text_document(path, data, markdown_sections(text), warnings)


def iter_documents(paths: Iterable[Path], ocr: OcrMode = DEFAULT_OCR) -> Iterator[Document | LoadError]:
    """Load each path; a failure is yielded as its LoadError so the caller's job goes on."""
    for p in paths:
        try:
            yield load(p, ocr=ocr)
        except LoadError as e:
            yield e
