"""The grounding check: does a passage that an answer sentence cites hold the figures, dates and
names the sentence states?

The citation check (rag.answer.prompt.check_citations) only asks whether each [k] names a passage
in the prompt. This one reads the sentence: it takes the terms a reader would check by eye (figures
with their scale and unit, dates, proper names) and looks for each of them in the passages the
sentence cites. It is a pure function of the text: no model, no network, nothing to load.

Rules, and why:

- Sentences are the project's sentence rule (rag.text.sentences) applied per block: a blank line,
  a list item, a table row or a heading starts a new block, wrapped lines are joined. A quoted
  numbered extract (`1. "..." [2]`, the extractive answer's form) is one sentence whatever
  its quote contains. Headings and lines ending in ':' with no citation are not statements and are
  skipped. Citation markers that the splitter hands to the next sentence ("... billion. [1] Net")
  go back to the sentence they close, and a split after "Jun." before a day or "Mr." before a name
  is undone, so that the date or name is checked whole.
- A sentence's citations are its valid [k] (numbers of passages given). With citations, each term
  must be held by one of them (any of the cited passages: "[1][2]" means the sentence rests on both
  together). With none, the sentence is checked against every passage and is supported only when a
  single passage holds all of its terms: figures scattered over several passages (a "2023" here, a
  "5" there) are no evidence that any one of them says it.
- A sentence with no checkable term is supported, with terms == []: nothing to check, which is
  not the same as checked.
- Figures are compared by magnitude, in numbers, never as text: 82,959 == 82959; "$82.9 billion"
  matches a table's "82,959" (in millions) because 82,959 million is 82.9 billion to the stated
  precision (rounded or truncated to the digits written: the rule is "agrees to the digits the
  sentence gives", for passages whose table unit, thousands/millions/billions, is not known);
  "12.5%" == "12.5 %" == "12.5 percent"; "(1,234)" is -1,234 but a sentence's "a loss of $1,234"
  matches it (prose states losses as positive amounts); currency symbols are optional on both sides.
  Unicode digits (Arabic-Indic, full-width, ...) count as the digits they are.
- Dates are matched by value, forms loosely: "June 24, 2023" == "24 June 2023" == "2023-06-24";
  a month-year, a year, a quarter ("Q3 2023", "third quarter of 2023", "3Q23") or a fiscal year
  ("fiscal 2023", "FY23" are the year) needs that much of a date in the passage. A quarter is held
  loosely: by a passage with its year and that quarter (however written), or with its year and
  "three months ended" (a 10-Q names its quarter by the day it ends, and fiscal quarters are not
  calendar quarters).
- Names are checked conservatively, since a false alarm teaches users to ignore the check: a run
  of capitalised words ("Tim Cook", "Greater China", "Bank of America", "iPhone", "IBM"), with
  common words trimmed from its ends (articles, pronouns, months, titles, statement headings such as
  "Total", "Net", "Revenue", and frequent acronyms such as "CEO", "SEC", "GAAP"); a single word is
  checked only when it does not start the sentence; runs over six words (title-cased headings) are
  not names. A name is held when the passage contains its words in order, case, accents,
  possessive 's and a corporate suffix (Inc., Corp., ...) aside.

What it deliberately does not catch: a figure stated in words ("three segments": only passages
map number words to values), a wrong sign or currency, percent vs plain number, a number whose
value is present but means something else, fiscal vs calendar quarters, a figure rounded to a
round thousand without a scale word ("about 83,000" for 82,959), European number formats
("82.959,5") and space-separated thousands, and anything beyond the terms (a sentence whose
figures are all in the passage can still misstate what they measure).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field

from rag.answer.citations import parse_citations, strip_citations
from rag.answer.terms import UNITS, Figure, Found, PassageTerms, passage_terms, sentence_terms
from rag.models import Answer, SentenceSupport
from rag.text.sentences import split_sentences


__all__ = ["SentenceSupport", "GroundingSummary", "answer_sentences", "check_grounding", "summarize",
           "grounding_note", "check_answer_grounding"]

# ---------------------------------------------------------------- models


class GroundingSummary(BaseModel):
    """Counts over an answer: `checked` sentences had terms to check; `unsupported_sentences` are
    the 1-based indexes of those that failed."""

    sentences: int
    checked: int
    unsupported: int
    unsupported_sentences: list[int] = Field(default_factory=list)


def _finite(d: Decimal) -> float | None:
    try:
        v = float(d)
    except (OverflowError, ValueError):
        return None
    return v if abs(v) != float("inf") and v == v else None


class _Index:
    """All passages' terms, built once per check: each kind of magnitude in one sorted list (with
    the passage it came from), so that a figure costs a few bisections whatever the number of
    passages."""

    _LISTS = ("bare", "absolute", "mantissa", "percent")

    def __init__(self, passages: Sequence[Any]):
        self.passages: dict[int, PassageTerms] = {}
        for p in passages:
            number = getattr(p, "number", None)
            if isinstance(number, int) and not isinstance(number, bool) and number not in self.passages:
                text = getattr(p, "text", "")
                self.passages[number] = passage_terms(number, text if isinstance(text, str) else str(text or ""))
        self.values: dict[str, list[float]] = {}
        self.owners: dict[str, list[int]] = {}
        for name in self._LISTS:
            pairs = sorted((v, n) for n, pt in self.passages.items() for v in getattr(pt, name))
            self.values[name] = [v for v, _ in pairs]
            self.owners[name] = [n for _, n in pairs]

    @property
    def numbers(self) -> list[int]:
        return list(self.passages)

    def holders(self, f: Found) -> set[int]:
        """The passages that hold the sentence term `f`."""
        if f.kind == "name":
            needle = f" {f.key} "
            return {n for n, p in self.passages.items() if needle in p.words}
        if f.kind == "date":
            return {n for n, p in self.passages.items() if any(_holds_date(p, k) for k in f.key)}
        return self._figure_holders(f.key)

    def _figure_holders(self, fig: Figure) -> set[int]:
        mant = Decimal(fig.raw)
        q = Decimal(1).scaleb(-fig.decimals)
        lo, hi = mant - q / 2, mant + q  # what rounds or truncates to the digits written
        if fig.pct:
            ranges = [("percent", 1), ("bare", 1)]
        elif fig.explicit_scale:
            lo, hi = lo * fig.scale, hi * fig.scale
            ranges = [("bare", u) for u in UNITS] + [("absolute", 1)]
        else:
            ranges = [("bare", 1), ("mantissa", 1), ("percent", 1), ("absolute", 1)]
            if mant >= 10**6:  # written out in full ("$82,959,000,000"): maybe a table in millions
                ranges += [("bare", u) for u in UNITS[1:]]
        out: set[int] = set()
        for name, unit in ranges:
            out.update(self._in_range(name, lo, hi, unit))
        return out

    def _in_range(self, name: str, lo: Decimal, hi: Decimal, unit: int) -> list[int]:
        """Passages with a value in [lo, hi) / unit. The bounds are exact decimals, so a value at a
        bound converts to the same float; the shift by a billionth of the width only keeps the
        upper bound exclusive."""
        values = self.values[name]
        if not values:
            return []
        a, b = _finite(lo / unit), _finite(hi / unit)
        if a is None or b is None:
            return []
        eps = (b - a) * 1e-9
        i, j = bisect_left(values, a - eps), bisect_left(values, b - eps)
        return self.owners[name][i:j]


def _holds_date(p: PassageTerms, key: tuple) -> bool:
    """A date key held by a passage. A quarter is held loosely: by the same quarter (with the year
    anywhere in the passage), or by a quarterly report of that year: fiscal quarters are not
    calendar quarters, and a 10-Q names its quarter by the day it ends."""
    if key in p.dates:
        return True
    if key[0] == "q":
        _, y, q = key
        quarter = p.quarterly or any(k[0] == "q" and k[2] == q for k in p.dates)
        return quarter and (y is None or ("y", y) in p.dates)
    return False


# ---------------------------------------------------------------- sentences

_LIST_ITEM = re.compile(r"^(?:[-*•+‣◦▪]|\d{1,3}[.)])\s+")
_HEADING = re.compile(r"^(?:#{1,6}(?:\s|$)|[=\-_*]{3,}$)")
_BOLD_LINE = re.compile(r"^(?:\*\*|__)[^*_]+(?:\*\*|__):?$")
_EXTRACT = re.compile(r"^[\"“][\s\S]*[\"”](?:\s*\[[^\[\]]*\])*\s*$")
# Abbreviations after which the sentence rule splits ("." before a capital or a digit) though no
# sentence ends: titles before a name; a month or "No." before a number.
_TITLE_END = re.compile(r"(?<![^\W\d_])(?:Mr|Mrs|Ms|Dr|Prof|vs|approx|cf|e\.g|i\.e)\.$")
_BEFORE_NUMBER_END = re.compile(r"(?<![^\W\d_])(?:Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec|No|Nos)\.$")
_LEADING_BRACKETS = re.compile(r"^(?:\[[^\[\]\n]{0,40}\]\s*)+")


def _is_header(line: str) -> bool:
    """A heading, rule or label line ("Extracts from your documents (...):"), with no citation."""
    if parse_citations(line):
        return False
    return bool(_HEADING.match(line) or _BOLD_LINE.match(line) or line.endswith(":"))


def _blocks(text: str) -> list[str]:
    """Paragraphs, list items and table rows, wrapped lines joined, headings left out."""
    blocks: list[str] = []
    current: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or _is_header(line):
            if current:
                blocks.append(" ".join(current))
                current = []
            continue
        item = _LIST_ITEM.match(line)
        if item or line.startswith("|"):
            if current:
                blocks.append(" ".join(current))
                current = []
            if line.startswith("|"):
                blocks.append(line)
                continue
            line = line[item.end():].strip()
            if not line:
                continue
        current.append(line)
    if current:
        blocks.append(" ".join(current))
    return blocks


def answer_sentences(text: str) -> list[str]:
    """The sentences of an answer, as checked: list markers dropped, a quoted extract kept whole,
    citation markers that the splitter put at the start of the next sentence given back, and a
    split after an abbreviation that cannot end a sentence ("Jun. 24", "Mr. Cook") undone, so that
    the date or name is checked whole."""
    out: list[str] = []
    for block in _blocks(text if isinstance(text, str) else ""):
        if _EXTRACT.match(block) or block.startswith("|"):
            out.append(block)
            continue
        first = True
        for s in split_sentences(block):
            if not first and (_TITLE_END.search(out[-1]) or (s[:1].isdigit() and _BEFORE_NUMBER_END.search(out[-1]))):
                out[-1] = f"{out[-1]} {s}"
                continue
            lead = _LEADING_BRACKETS.match(s)
            if lead and not first and not strip_citations(lead.group()).strip():
                out[-1] = f"{out[-1]} {lead.group().strip()}"
                s = s[lead.end():].strip()
                if not s:
                    continue
            out.append(s)
            first = False
    return out


# ---------------------------------------------------------------- the check


def check_grounding(text: str, passages: Sequence[Any]) -> list[SentenceSupport]:
    """Check each sentence of the answer `text` against the passages (anything with `.number` and
    `.text`, numbered as the answer cites them). See the module docstring for the rules."""
    index = _Index(passages)
    numbers = index.numbers
    results: list[SentenceSupport] = []
    for i, sentence in enumerate(answer_sentences(text if isinstance(text, str) else ""), 1):
        cited = _unique([n for n in parse_citations(sentence) if n in index.passages])
        stripped, found = sentence_terms(sentence)
        if not found:
            results.append(SentenceSupport(index=i, text=sentence, cited=cited, supported=True))
            continue
        surfaces = [stripped[f.start:f.end].strip() for f in found]
        holders = [index.holders(f) for f in found]
        found_in = [n for n in numbers if all(n in h for h in holders)]
        if cited:
            against = cited
            missing = [s for s, h in zip(surfaces, holders) if not h.intersection(cited)]
        else:
            against = numbers
            missing = []
            if not found_in:  # name what the closest passage lacks
                best = max(numbers, key=lambda n: sum(n in h for h in holders), default=None)
                missing = [s for s, h in zip(surfaces, holders) if best not in h]
        results.append(SentenceSupport(index=i, text=sentence, cited=cited, terms=surfaces, supported=not missing,
                                       missing=_unique(missing), checked_against=list(against), found_in=found_in))
    return results


def _unique(items: list) -> list:
    return list(dict.fromkeys(items))


def summarize(supports: Sequence[SentenceSupport]) -> GroundingSummary:
    """Counts for an answer's sentence checks."""
    bad = [s.index for s in supports if not s.supported]
    return GroundingSummary(sentences=len(supports), checked=sum(1 for s in supports if s.terms),
                            unsupported=len(bad), unsupported_sentences=bad)


def grounding_note(supports: Sequence[SentenceSupport], max_listed: int = 3, max_quote: int = 80) -> str | None:
    """A one-line note for the answer's notes, or None when every sentence is supported:
    "2 of 5 sentences state figures or names that no cited passage holds: sentence 3 'Net sales
    were $90.1 billion [1].' missing '$90.1 billion'; ..." Sentences are named by number, not as
    [3], so that a note is not read as citing passage 3."""
    bad = [s for s in supports if not s.supported]
    if not bad:
        return None
    verb = "states" if len(bad) == 1 else "state"
    parts = []
    for s in bad[:max_listed]:
        quote = " ".join(s.text.split())
        if len(quote) > max_quote:
            quote = quote[:max_quote - 1].rstrip() + "…"
        missing = ", ".join(f"'{m}'" for m in s.missing)
        extra = ""
        if not s.cited:
            extra = " (it cites nothing, and no passage holds all of it)"
        elif s.found_in:
            extra = f" (held by {' '.join(f'[{n}]' for n in s.found_in)}, which it does not cite)"
        parts.append(f"sentence {s.index} '{quote}' missing {missing}{extra}")
    more = f"; and {len(bad) - max_listed} more" if len(bad) > max_listed else ""
    return (f"{len(bad)} of {len(supports)} sentences {verb} figures or names that no cited passage holds: "
            + "; ".join(parts) + more)


def check_answer_grounding(answer: Answer) -> Answer:
    """Fill `answer.support` (one entry per sentence) and add a note when sentences state terms
    that no cited passage holds. Extracts are checked too: they must come out fully supported."""
    answer.support = check_grounding(answer.text, answer.passages) if answer.passages else []
    note = grounding_note(answer.support)
    if note:
        answer.notes.append(note)
    return answer
