"""PDFs to `Document`s through pypdf: one `Page` per page, cleaned; each bad file raises `LoadError`
with one clear reason (not a PDF, encrypted, corrupt, over a pypdf safety limit even when raised,
no text (layer or OCR), garbled text layer).

- Safety limits: a file that pypdf refuses with LimitReachedError is read once more with its
  element-count and depth limits raised `RETRY_FACTOR` times (not its decompression sizes, which
  guard memory), within `RETRY_SECONDS` of wall-clock time (checked before each page and outline
  entry; one page's own parse is bounded by the raised limits), and a warning says so.
- OCR (`ocr`): "auto" reads the pages without a text layer by OCR (rag.ingest.ocr), "force" every
  page, "off" none (a PDF of images only then "needs OCR"). OCR'd text is cleaned and checked
  like a text layer.
- Title: the metadata /Title when meaningful, else a securities filing's cover page (issuer, form,
  period: `cover_page_title`), else the first heading-like line of page 1
  (`meaningful_title`, `heading_title`); sections: the outline (bookmarks) mapped to pages
  (`page_sections`).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import re
import time
from pathlib import Path
from typing import Literal

from rag.errors import LoadError
from rag.ingest.identity import file_hash, source_name
from rag.models import Document, Page
from rag.text.clean import clean_pages, looks_garbled, normalize_unicode

OcrMode = Literal["auto", "off", "force"]
OCR_MODES: tuple[str, ...] = ("auto", "off", "force")
DEFAULT_OCR: OcrMode = "auto"

RETRY_FACTOR = 10  # the retry multiplies pypdf's count and depth limits by this
RETRY_SECONDS = 120.0  # wall-clock budget of the retry (the 72-page filing took 9 s)
# pypdf's limits on how many elements / how deep, raised by the retry. Sizes of decompressed
# output (zlib_maximum_output_length ...) stay: they bound memory against decompression bombs.
RETRY_LIMITS = (
    "array_maximum_element_count", "dictionary_maximum_element_count", "stream_parsing_work_maximum_count",
    "page_tree_maximum_entries", "page_tree_maximum_depth", "page_tree_maximum_page_entries",
    "outline_maximum_entries", "outline_maximum_depth", "form_fields_maximum_entries",
    "form_fields_maximum_depth", "named_destinations_maximum_entries", "named_destinations_maximum_depth",
    "xform_maximum_invocations_per_extraction",
)
# Which limit a LimitReachedError message names (pypdf 7's wording), to say it in the warning.
_LIMIT_WORDS = (
    ("array element count", "array_maximum_element_count"),
    ("dictionary entries", "dictionary_maximum_element_count"),
    ("tokens", "stream_parsing_work_maximum_count"),
    ("page tree depth", "page_tree_maximum_depth"),
    ("page tree page entry", "page_tree_maximum_page_entries"),
    ("page tree entry", "page_tree_maximum_entries"),
    ("outline depth", "outline_maximum_depth"),
    ("outline entry", "outline_maximum_entries"),
    ("form field", "form_fields_maximum_entries"),
    ("named destination", "named_destinations_maximum_entries"),
)


@dataclasses.dataclass
class _Read:
    """What pypdf gave: raw text per page, the metadata title, (page index, section path) entries."""

    raw: list[str]
    meta_title: str | None
    outline: list[tuple[int, str]]


class _OverBudget(Exception):
    pass


def _read(data: bytes, src: str, deadline: float | None = None) -> _Read:
    """Read a PDF with pypdf under the configuration in force. LimitReachedError passes through
    (the caller may retry); every other failure is a LoadError."""
    import pypdf
    from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError, PdfReadError

    def check_time() -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise _OverBudget

    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                ok = reader.decrypt("")  # many PDFs only carry an owner password
            except (DependencyError, NotImplementedError) as e:
                raise LoadError(src, f"encrypted PDF that cannot be decrypted here: {e}") from e
            if not ok:
                raise LoadError(src, "encrypted PDF: a password is required")
        raw = []
        for page in reader.pages:
            check_time()
            raw.append(page.extract_text() or "")
    except (LoadError, LimitReachedError, _OverBudget):
        raise
    except FileNotDecryptedError as e:
        raise LoadError(src, "encrypted PDF: a password is required") from e
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError,
            RecursionError, OSError, AssertionError, ZeroDivisionError) as e:
        raise LoadError(src, f"corrupt or truncated PDF: {type(e).__name__}: {e}") from e
    return _Read(raw=raw, meta_title=_metadata_title(reader), outline=_outline(reader, check_time))


def _metadata_title(reader) -> str | None:
    """/Title of the document information dictionary; None when absent or unreadable."""
    try:
        meta = reader.metadata
        return str(meta.title) if meta is not None and meta.title else None
    except Exception:  # a broken info dictionary costs the title, not the file
        return None


def _outline(reader, check_time) -> list[tuple[int, str]]:
    """(0-based page index, "Chapter > Section") per outline entry, in outline order. A broken
    outline costs the sections, not the file (a limit or the time budget still raise)."""
    from pypdf.errors import LimitReachedError

    entries: list[tuple[int, str]] = []

    def walk(items, trail: tuple[str, ...]) -> None:
        last: tuple[str, ...] | None = None
        for item in items:
            if isinstance(item, list):  # the children of the entry before it
                walk(item, last if last is not None else trail)
                continue
            check_time()
            title = " ".join(str(getattr(item, "title", "") or "").split())
            last = (*trail, title) if title else trail
            page = reader.get_destination_page_number(item)
            if title and page is not None and page >= 0:
                entries.append((page, " > ".join(last)))

    try:
        walk(reader.outline, ())
    except (LimitReachedError, _OverBudget):
        raise
    except Exception:
        return []
    return entries


def _raised_limits(pypdf) -> dict[str, int]:
    """RETRY_LIMITS that this pypdf has, each RETRY_FACTOR times its value in force."""
    current = pypdf.get_configuration()
    return {name: getattr(current, name) * RETRY_FACTOR for name in RETRY_LIMITS if hasattr(current, name)}


def _limit_named(message: str) -> str:
    """The configuration field a LimitReachedError message is about, or a summary of them all."""
    low = message.lower()
    return next((field for words, field in _LIMIT_WORDS if words in low), "count and depth limits")


def read_with_retry(data: bytes, src: str) -> tuple[_Read, list[str]]:
    """pypdf's read; refused for a safety limit, once more with RETRY_LIMITS raised (restored
    afterwards) within RETRY_SECONDS. Returns the read and its warnings."""
    import pypdf
    from pypdf.errors import LimitReachedError

    try:
        return _read(data, src), []
    except LimitReachedError as e:
        first = e
    if not hasattr(pypdf, "apply_configuration"):  # pypdf < 6.4: the limits are fixed
        raise LoadError(src, f"PDF refused by pypdf (a safety limit was reached): {first}")
    limits = _raised_limits(pypdf)
    started = time.monotonic()
    try:
        with pypdf.apply_configuration(**limits):
            read = _read(data, src, deadline=started + RETRY_SECONDS)
    except LimitReachedError as e:
        raise LoadError(src, f"PDF refused by pypdf (a safety limit was reached, also with its limits "
                             f"raised {RETRY_FACTOR}x): {e}") from e
    except _OverBudget:
        raise LoadError(src, f"PDF refused by pypdf (a safety limit was reached: {first}); the retry with "
                             f"raised limits ran past its {RETRY_SECONDS:.0f} s budget") from None
    field = _limit_named(str(first))
    what = f"{field} {limits[field]:,}" if field in limits else f"count and depth limits x{RETRY_FACTOR}"
    return read, [f"read with raised pypdf limits ({what}; pypdf said: {first}) in "
                  f"{time.monotonic() - started:.1f} s"]


# ---------------------------------------------------------------- title and sections

# Titles that name no document: placeholders of authoring tools and generic cover-page lines
# (the SEC filings' cover starts "UNITED STATES / SECURITIES AND EXCHANGE COMMISSION / FORM 10-Q"
# in every filing: as a title it would tell none of them apart).
_PLACEHOLDER_TITLES = frozenset("""untitled; untitled document; title; document; unknown; none; null;
    no title; slide 1; powerpoint presentation; pdf; table of contents; contents; abstract; preface;
    draft; confidential; united states; securities and exchange commission; form 10-q; form 10-k;
    form 8-k; form 20-f""".replace("\n", " ").split("; "))
_FILE_NAME = re.compile(r"(?i)^microsoft (word|powerpoint|excel) - |\.(docx?|pdf|rtf|txt|odt|pptx?|xlsx?|"
                        r"indd|tex|dvi|ps|html?)$")
_DATE = re.compile(r"(?i)^(\w+,? )?(\d{1,2}(st|nd|rd|th)? )?(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
                   r"[a-z]*\.? (\d{1,2}(st|nd|rd|th)?,? )?\d{4}$|^\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}$")
_PAGE_NUMBER = re.compile(r"(?i)^[-\u2013\s]*(page\s*)?\d+(\s*(of|/)\s*\d+)?[-\u2013\s]*$")
# Lower-case words a title may hold ("Reading Wikipedia to Answer ..."); a line ending in one
# runs on into the next ("BERT: Pre-training of Deep Bidirectional Transformers for").
_MINOR_WORDS = frozenset("a an the of and or for to in on at by with from via vs into over as".split())
HEADING_MAX_WORDS = 15
HEADING_MAX_CHARS = 150


def meaningful_title(title: str | None, file_stem: str = "") -> str | None:
    """The metadata title when it names the document: not empty, not a placeholder ("Untitled"),
    not a file name ("Microsoft Word - x.doc", "report.pdf", the file's own stem), and not an
    auto-generated id (one token with a digit, '_' or '/': "aapl-20230701",
    "0000320193-23-000077", "sample_pdf")."""
    text = " ".join(normalize_unicode(title or "").split())
    if len(re.findall(r"[^\W\d_]", text)) < 2 or text.lower() in _PLACEHOLDER_TITLES:
        return None
    if _FILE_NAME.search(text) or text.lower() == file_stem.lower():
        return None
    if " " not in text and re.search(r"[\d_/\\]", text):
        return None
    return text


def _heading_like(line: str) -> bool:
    """Short (<= HEADING_MAX_WORDS words), at least half of its words other than _MINOR_WORDS
    capitalised, not a sentence (no final '.', ',' or ';'), not a date, page number, note in
    brackets, address (an e-mail, a URL, a run of 5+ digits: a postcode) or placeholder."""
    words = [w for w in line.split() if re.search(r"[^\W\d_]", w)]
    if not words or len(line.split()) > HEADING_MAX_WORDS or len(line) > HEADING_MAX_CHARS:
        return False
    if line[-1] in ".,;" or "@" in line or "://" in line or line.lower().startswith("www."):
        return False
    if re.search(r"\d{5}", line) or (line[0] in "([" and line[-1] in ")]"):
        return False
    if _DATE.match(line) or _PAGE_NUMBER.match(line) or line.lower() in _PLACEHOLDER_TITLES:
        return False
    major = [w for w in words if w.lower().strip(":,") not in _MINOR_WORDS] or words
    capitalised = sum(1 for w in major if re.match(r"\W*[A-Z0-9]", w))
    return len(re.findall(r"[^\W\d_]", line)) >= 2 and capitalised >= 0.5 * len(major)


def heading_title(page_text: str, max_lines: int = 4) -> str | None:
    """The first heading-like line among the first `max_lines` non-empty lines of page 1 (raw
    text, before clean-up joins the lines), with the next line when it ends in a minor word
    and the next is heading-like too; None when none is (the caller may name the file)."""
    lines = [" ".join(normalize_unicode(ln).split()) for ln in page_text.splitlines()]
    lines = [ln for ln in lines if ln][:max_lines + 1]
    for i, line in enumerate(lines[:max_lines]):
        if not _heading_like(line):
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.split()[-1].lower() in _MINOR_WORDS and nxt and _heading_like(nxt):
            line = f"{line} {nxt}"
        return line
    return None


# Securities filings (SEC forms 10-Q, 10-K, 8-K, 20-F, S-1 ...) name their issuer on the cover page
# on the line above this caption, and their period in a "For the ... period/year ended" line.
_REGISTRANT_CAPTION = re.compile(r"(?i)^\(?\s*exact name of (the )?registrant")
_FORM = re.compile(r"(?i)^form\s+(10-q|10-k|8-k|20-f|40-f|6-k|s-1|f-1)\b")
_PERIOD = re.compile(r"(?i)\bfor the (quarterly period|fiscal year|transition period|year) ended\s+(.{6,30}?\d{4})")


def cover_page_title(page_text: str, max_lines: int = 60) -> str | None:
    """A securities filing's cover page as a title: "Apple Inc. Form 10-Q, quarterly period
    ended June 25, 2022", from the line above "(Exact name of registrant as specified in its
    charter)", the form line and the period line; None when page 1 has no such caption."""
    lines = [" ".join(normalize_unicode(ln).split()) for ln in page_text.splitlines()]
    lines = [ln for ln in lines if ln and not set(ln) <= set("_-— ")][:max_lines]
    name = next((lines[i - 1] for i in range(1, len(lines)) if _REGISTRANT_CAPTION.match(lines[i])), None)
    if not name or len(name.split()) > HEADING_MAX_WORDS or not re.search(r"[^\W\d_]{2}", name):
        return None
    form = next((m.group(1).upper() for ln in lines if (m := _FORM.match(ln))), None)
    period = next((m for ln in lines if (m := _PERIOD.search(ln))), None)
    title = name + (f" Form {form}" if form else "")
    if period:
        title += f", {period.group(1).lower()} ended {period.group(2)}"
    return title


def page_sections(outline: list[tuple[int, str]], n_pages: int) -> list[str | None]:
    """Per page (0-based), the path of the last outline entry that starts on or before it
    (entries ordered by their page, outline order within a page); None before the first entry
    and for a PDF without an outline."""
    out: list[str | None] = [None] * n_pages
    current, entries = None, sorted(outline, key=lambda e: e[0])  # stable: outline order kept
    k = 0
    for page in range(n_pages):
        while k < len(entries) and entries[k][0] <= page:
            current = entries[k][1]
            k += 1
        out[page] = current
    return out


def load_pdf(path: Path, data: bytes, ocr: OcrMode = DEFAULT_OCR) -> Document:
    """Text of every page of a PDF, cleaned, with title and outline sections; pages without a
    text layer (ocr="auto") or all pages (ocr="force") read by OCR. LoadError when there is no
    usable text."""
    src = str(path)
    if ocr not in OCR_MODES:
        raise ValueError(f"ocr must be one of {', '.join(OCR_MODES)}, not {ocr!r}")
    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise LoadError(src, "not a PDF (no %PDF header): corrupt or mislabelled file")
    # pypdf logs font and xref complaints per page; they are noise for the user.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    read, warnings = read_with_retry(data, src)
    raw = read.raw
    if not raw:
        raise LoadError(src, "PDF has no pages")
    texts = clean_pages(raw)
    targets = list(range(len(raw))) if ocr == "force" else (
        [i for i, t in enumerate(texts) if not t] if ocr == "auto" else [])
    ocr_done: list[int] = []
    ocr_failure = None
    if targets:
        from rag.ingest.ocr import OcrError, ocr_pdf_pages

        try:
            found = ocr_pdf_pages(data, targets)
        except OcrError as e:
            found, ocr_failure = {}, str(e)
        ocr_done = [i for i in targets if found.get(i, "").strip()]
        if ocr_done:  # a page OCR found nothing on keeps its text layer, if any
            done = set(ocr_done)
            raw = [found[i] if i in done else t for i, t in enumerate(raw)]
            texts = clean_pages(raw)
    full = "\n\n".join(texts)
    if not full.strip():
        if ocr == "off":
            raise LoadError(src, f"no text layer ({len(raw)} page(s) of images only): needs OCR "
                                 "(OCR is off)")
        why = f"OCR failed: {ocr_failure}" if ocr_failure else "OCR found no text either"
        raise LoadError(src, f"no text layer ({len(raw)} page(s) of images only) and {why}")
    if looks_garbled(full):
        if ocr_done:
            raise LoadError(src, f"garbled text (almost no recognisable words), {len(ocr_done)} page(s) "
                                 "of it by OCR: not ingested")
        raise LoadError(src, "garbled text layer (almost no recognisable words): not ingested; re-OCR the "
                             "file (ocr force reads every page by OCR)")
    if ocr_failure:
        warnings.append(f"OCR of {len(targets)} page(s) failed: {ocr_failure}")
    empty = [i + 1 for i, t in enumerate(texts) if not t]
    if empty:
        how = " and no text by OCR" if targets and not ocr_failure else ""
        warnings.append(f"{len(empty)} of {len(texts)} page(s) have no text layer{how} (e.g. page {empty[0]})")
    sections = page_sections(read.outline, len(texts))
    pages = [Page(number=i + 1, text=t, section=sections[i]) for i, t in enumerate(texts) if t]
    title = meaningful_title(read.meta_title, path.stem) or cover_page_title(raw[0]) or heading_title(raw[0])
    return Document(source=source_name(path), file_hash=file_hash(data), pages=pages, warnings=warnings,
                    title=title, ocr_pages=len(ocr_done))
