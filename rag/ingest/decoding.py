"""Bytes to text for the text-like loaders (text, Markdown, HTML): BOMs, UTF-8, the Windows-1252
fallback, and the refusal of binary content.

A leaf module so that loaders.py and the HTML loader it dispatches to can both use it without an
import cycle.
"""

from __future__ import annotations

import codecs

from rag.errors import LoadError


def decode_text(src: str, data: bytes) -> tuple[str, list[str]]:
    """Decode bytes as text: BOM-marked UTF-8/16/32, else UTF-8, else cp1252 (warned).
    Binary content raises LoadError."""
    for bom, enc in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                     (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                     (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(enc), []
            except UnicodeDecodeError as e:
                raise LoadError(src, f"invalid {enc} text: {e.reason}") from e
    head = data[:8192]
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    if b"\x00" in head or controls > 0.05 * len(head):
        raise LoadError(src, "binary file, not text (has NUL or control bytes)")
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("cp1252")
        return text, ["not valid UTF-8: decoded as Windows-1252"]
    except UnicodeDecodeError:
        return data.decode("latin-1"), ["not valid UTF-8: decoded as Latin-1"]
