"""The one sentence rule of the package: where the chunker packs sentences, where an over-long
prompt passage is cut, what the extractive answer quotes and what domain adaptation turns into
queries.

Chunk ids derive from chunk boundaries, and those from this rule: changing the pattern changes
the id of every chunk re-ingested afterwards. Keep it as it is.
"""

from __future__ import annotations

import re

# A sentence ends at . ! ? (optionally followed by quotes/brackets) before whitespace and an
# upper-case letter, digit or opening bracket; paragraphs end at blank lines.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])|\n\n+")


def sentence_spans(text: str, offset: int = 0) -> list[tuple[int, int]]:
    """(start, end) of each sentence of `text`, shifted by `offset`; the separators between
    sentences belong to none of them."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        if m.start() > start:
            spans.append((offset + start, offset + m.start()))
        start = m.end()
    if start < len(text):
        spans.append((offset + start, offset + len(text)))
    return spans


_ENDS_A_SENTENCE = re.compile(r"[.!?][\"')\]]*\s*$")


def ends_a_sentence(text: str) -> bool:
    """Whether `text` ends as a sentence does (. ! ? before closing quotes or brackets): prose,
    not a table row, a list item or a heading, which say little without their document."""
    return bool(_ENDS_A_SENTENCE.search(text))


def split_sentences(text: str) -> list[str]:
    """The sentences of a text, stripped, blank ones left out."""
    return [text[a:b].strip() for a, b in sentence_spans(text) if text[a:b].strip()]
