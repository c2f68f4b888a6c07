"""Figures in text, for checking answers against reference answers: the figures a reference
answer quotes (money, percentages, grouped or decimal numbers, counts of at least 100 that are
not years), and every number a passage or an answer holds, normalised alike ($82,959 million,
82959 and 82,959.0 are all "82959"), so that "is this reference figure in the context?" is a set
lookup. And the glob a question names its source documents with (`*2023 Q3 AAPL*`).

Used by `rag eval answers` (`pipelines.evaluate_answers`) and benchmarks/bench_sec10q.py.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from pathlib import PurePath

MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_DATE = re.compile(rf"\b(?:{MONTHS})\s+\d{{1,2}},?\s+\d{{4}}\b|\bQ[1-4]\s+\d{{4}}\b|\b(?:19|20)\d{{2}}\b")
_NUMBER = re.compile(r"(?<![\w.])(\$\s?)?\(?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?\)?(\s?%|\s(?:million|billion|thousand))?(?![\w-])",
                     re.I)


def _norm(integer: str, decimals: str | None) -> str:
    digits = integer.replace(",", "")
    frac = (decimals or "").rstrip("0").rstrip(".")
    return digits + (frac if frac not in ("", ".") else "")


def figures(answer: str) -> set[str]:
    """The figures an answer quotes: money, percentages, grouped or decimal numbers, numbers of
    at least 100 that are not years. Dates, years, quarter names and list numbers are not."""
    text = _DATE.sub(" ", answer)
    out = set()
    for m in _NUMBER.finditer(text):
        dollar, integer, decimals, unit = m.groups()
        value = _norm(integer, decimals)
        percent = bool(unit and "%" in unit)
        significant = dollar or percent or decimals or "," in integer or unit or int(integer.replace(",", "")) >= 100
        if significant and value not in ("0",):
            out.add(value + ("%" if percent else ""))
    return out


def context_numbers(text: str) -> set[str]:
    """Every number in `text`, normalised as `figures` normalises them (a percentage both with
    and without its %)."""
    out = set()
    for m in _NUMBER.finditer(text):
        _, integer, decimals, unit = m.groups()
        value = _norm(integer, decimals)
        out.add(value + ("%" if unit and "%" in unit else ""))
        out.add(value)
    return out


def source_globs(text: str | None) -> list[str]:
    """The globs of a question's source-document cell: one, or several separated by `;`, `|`
    or newlines (commas stay: file names hold them)."""
    return [g.strip() for g in re.split(r"[;|\n]", text or "") if g.strip()]


def source_matches(source: str, globs: Iterable[str]) -> bool:
    """Whether a passage's source (a path, or an upload's label) is one of the documents `globs`
    name: a glob matches the file name, or the whole source. Case-sensitive, as file names are."""
    name = PurePath(source).name
    return any(fnmatch.fnmatchcase(name, g) or fnmatch.fnmatchcase(source, g) for g in globs)
