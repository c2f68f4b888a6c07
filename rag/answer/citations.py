"""How an answer cites its passages: the grammar of a citation marker, defined once.

A marker is one to three digits in square brackets, or several joined by commas, semicolons or
dashes (a range): `[2]`, `[1, 3]`, `[4-6]`, `[1 – 2]`. Adjacent markers (`[2][5]`) are two.
Everything that reads citations (the check of an answer, grounding, the clean-up of echoed
scaffolding, the web page through the server's spans) reads them with this module, so a marker
one of them sees is a marker all of them see.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_NUMBERS = r"\d{1,3}(?:\s*[-–,;]\s*\d{1,3})*"  # what stands between the brackets
MARKER = re.compile(rf"\[({_NUMBERS})\]")
_ONLY_MARKERS = re.compile(rf"^\s*(?:\[{_NUMBERS}\]\s*)+$")
# A line that may still become markers only, as a stream adds characters ("[", "[1", "[1, ").
_MARKERS_SO_FAR = re.compile(r"^\s*(?:\[\d{0,3}(?:\s*[-–,;]\s*\d{0,3})*\]?\s*)*$")
_RANGE = re.compile(r"(\d+)\s*[-–]\s*(\d+)")
MAX_RANGE = 50  # a wider "range" is two numbers, not every number between them


class CitationSpan(NamedTuple):
    """One marker in a text: its character offsets (text[start:end] is the marker, brackets
    included) and the passage numbers it names, in order (a range expanded)."""

    start: int
    end: int
    passages: tuple[int, ...]


def _numbers(inside: str) -> list[int]:
    """The numbers a marker's inside names: `1, 3` -> 1, 3; `4-6` -> 4, 5, 6 (a range wider
    than MAX_RANGE, or reversed, names its two ends)."""
    out: list[int] = []
    for part in re.split(r"\s*[,;]\s*", inside):
        m = _RANGE.fullmatch(part.strip())
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            out.extend(range(lo, hi + 1) if 0 < hi - lo < MAX_RANGE else [lo, hi])
        else:
            out.append(int(part.strip()))
    return out


def citation_spans(text: str) -> list[CitationSpan]:
    """Every marker of `text`, in order, with where it stands and what it names."""
    return [CitationSpan(m.start(), m.end(), tuple(_numbers(m.group(1)))) for m in MARKER.finditer(text)]


def parse_citations(text: str) -> list[int]:
    """Every number cited as [k], [k, m], [k-m] or [k][m], in order of appearance (ranges expanded,
    repeats kept)."""
    return [n for span in citation_spans(text) for n in span.passages]


def strip_citations(text: str) -> str:
    """Remove [k] markers (earlier answers in chat history: their numbers referred to other passages)."""
    return re.sub(r"\s*" + MARKER.pattern, "", text)


def only_citations(line: str) -> bool:
    """The line holds markers and nothing else (a passage label a model copied: "[1]", "[1][2]")."""
    return _ONLY_MARKERS.match(line) is not None


def may_become_only_citations(line: str) -> bool:
    """The start of a line that may still turn out to hold markers only, as more text arrives
    ("", "[", "[1", "[1]  [")."""
    return _MARKERS_SO_FAR.match(line) is not None
