"""PDFs to `Document`s through pypdf: one `Page` per page, cleaned; each bad file raises `LoadError`
with one clear reason (not a PDF, encrypted, corrupt, over a pypdf safety limit, no text layer,
garbled text layer)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from rag.errors import LoadError
from rag.ingest.identity import file_hash, source_name
from rag.models import Document, Page
from rag.text.clean import clean_pages, looks_garbled


def load_pdf(path: Path, data: bytes) -> Document:
    """Text of every page of a PDF, cleaned; LoadError when there is no usable text."""
    import pypdf
    from pypdf.errors import DependencyError, FileNotDecryptedError, LimitReachedError, PdfReadError

    src = str(path)
    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise LoadError(src, "not a PDF (no %PDF header): corrupt or mislabelled file")
    # pypdf logs font and xref complaints per page; they are noise for the user.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                ok = reader.decrypt("")  # many PDFs only carry an owner password
            except (DependencyError, NotImplementedError) as e:
                raise LoadError(src, f"encrypted PDF that cannot be decrypted here: {e}") from e
            if not ok:
                raise LoadError(src, "encrypted PDF: a password is required")
        raw = [page.extract_text() or "" for page in reader.pages]
    except LoadError:
        raise
    except FileNotDecryptedError as e:
        raise LoadError(src, "encrypted PDF: a password is required") from e
    except LimitReachedError as e:
        raise LoadError(src, f"PDF refused by pypdf (a safety limit was reached): {e}") from e
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError,
            RecursionError, OSError, AssertionError, ZeroDivisionError) as e:
        raise LoadError(src, f"corrupt or truncated PDF: {type(e).__name__}: {e}") from e
    if not raw:
        raise LoadError(src, "PDF has no pages")
    texts = clean_pages(raw)
    full = "\n\n".join(texts)
    if not full.strip():
        raise LoadError(src, f"no text layer ({len(raw)} page(s) of images only): needs OCR")
    if looks_garbled(full):
        raise LoadError(src, "garbled text layer (almost no recognisable words): not ingested; re-OCR the file")
    warnings = []
    empty = [i + 1 for i, t in enumerate(texts) if not t]
    if empty:
        warnings.append(f"{len(empty)} of {len(texts)} page(s) have no text layer (e.g. page {empty[0]})")
    pages = [Page(number=i + 1, text=t) for i, t in enumerate(texts) if t]
    return Document(source=source_name(path), file_hash=file_hash(data), pages=pages, warnings=warnings)
