"""The terms a reader checks by eye in a sentence, normalised so that two forms of one value
compare equal: figures (with scale and unit), dates and proper names; and the same extraction
over a passage, indexed by kind. Pure functions of text; the rules and their limits are in
rag.answer.grounding, which uses them.

What grounding reads is public: `sentence_terms` (a sentence's terms, as Found), `passage_terms`
(a passage's, as PassageTerms), the Figure a figure term holds, and UNITS. The rest is how they
are found.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal
from functools import lru_cache
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict

from rag.answer.citations import strip_citations


# ---------------------------------------------------------------- models


class Term(BaseModel):
    """A checkable term of a sentence, as written there. `value` is a figure's signed value (its
    scale applied), None for dates and names."""

    model_config = ConfigDict(frozen=True)

    surface: str
    kind: Literal["figure", "date", "name"]
    value: float | None = None



# ---------------------------------------------------------------- characters

# Arabic decimal and thousands separators, the minus sign, and the spaces that sit inside numbers.
_SPECIAL = {"\u066b": ".", "\u066c": ",", "\u2212": "-", "\u00a0": " ", "\u2007": " ", "\u2009": " ",
            "\u202f": " "}


@lru_cache(maxsize=8192)
def _fold_char(c: str) -> str:
    special = _SPECIAL.get(c)
    if special is not None:
        return special
    d = unicodedata.decimal(c, None)
    if d is not None:
        return str(d)
    if "\uff01" <= c <= "\uff5e":  # full-width ASCII forms: ％ ， ＄ Ａ
        return unicodedata.normalize("NFKC", c)
    return c


def fold_digits(text: str) -> str:
    """Unicode decimal digits as ASCII digits, full-width forms as ASCII, the Arabic separators
    and the minus sign as '.', ',' and '-'. One character for one, so that positions in the folded
    text are positions in the original: terms are quoted as the sentence wrote them."""
    if text.isascii():
        return text
    return "".join(map(_fold_char, text))


# ---------------------------------------------------------------- dates

_MONTHS = {"january": 1, "jan": 1, "february": 2, "feb": 2, "march": 3, "mar": 3, "april": 4, "apr": 4,
           "may": 5, "june": 6, "jun": 6, "july": 7, "jul": 7, "august": 8, "aug": 8, "september": 9,
           "sept": 9, "sep": 9, "october": 10, "oct": 10, "november": 11, "nov": 11, "december": 12, "dec": 12}
_QUARTER_WORDS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "1st": 1, "2nd": 2, "3rd": 3, "4th": 4}

# Every pattern starts with a character class and looks behind only after it (`x(?<!\wx)`): the
# regex engine then jumps from candidate character to candidate character instead of trying each
# position, which is what keeps long passages cheap.
# Month names are capitalised or upper-case ("may" the verb is no month); the tail is matched
# loosely and checked against _MONTHS ("Dan 24" is no date).
_MON = (r"(?P<mon>[JFMASOND](?<![^\W\d_][JFMASOND])(?i:anuary|ebruary|arch|pril|ay|une|uly|ugust|eptember"
        r"|ctober|ovember|ecember|ept|an|eb|ar|pr|un|ul|ug|ep|ct|ov|ec))\b\.?")
_ORD = r"(?:st|nd|rd|th)?"
# Dates that start with a digit: 2023-06-24, 06/24/2023, 24 June [2023], 3Q23.
_DIGIT_DATE = re.compile(
    r"\d(?<![\w.,/-]\d)(?:"
    r"(?P<ymd>\d{3}(?P<sep>[-/.])(?P<m>\d{1,2})(?P=sep)(?P<d>\d{1,2})(?![\w/-]|\.\d))"
    r"|(?P<slash>\d?/(?P<b>\d{1,2})/(?P<y>\d{4}|\d{2})(?![\w/]|\.\d))"
    r"|(?P<dm>\d?" + _ORD + r"\s{1,3}(?:of\s)?" + _MON + r"(?:,?\s{1,3}(?P<dmy>\d{4})(?!\w))?)"
    r"|(?P<qy>(?<=[1-4])Q\s{0,2}['’]?(?P<qyear>\d{4}|\d{2})(?!\w))"
    r")")
# Dates that start with a month: June 24, 2023; June 2023; June 24.
_MONTH_DATE = re.compile(_MON + r"(?:\s{1,3}(?P<d>\d{1,2})" + _ORD + r"(?!\d|[.,]\d))?"
                         r"(?:,?\s{1,3}(?:of\s)?(?P<y>\d{4})(?!\w))?")
# Quarters: Q3, Q3 2023, Q3 FY23, Q3'23; third quarter [of fiscal 2023].
_QUARTER = re.compile(r"[Qq](?<!\w[Qq])(?P<q>[1-4])(?:(?:\s{0,2}(?:FY|[Ff]iscal(?:\s[Yy]ear)?)\s{0,2}|\s{1,2})"
                      r"(?P<y>\d{4})|(?:\s{0,2}FY\s{0,2}['’]?|['’])(?P<y2>\d{2}))?(?!\w)")
_QUARTER_WORD = re.compile(r"(?P<ord>[FfSsTt1-4](?<!\w[FfSsTt1-4])(?i:irst|econd|hird|ourth|st|nd|rd|th))"
                           r"\s{1,3}(?:(?i:fiscal)\s)?(?i:quarter)"
                           r"(?:\s(?:(?i:of)\s)?(?:(?i:fiscal)\s)?(?:(?i:year)\s)?(?P<y>\d{4}))?(?!\w)")
# Fiscal years, which are checked as the year: fiscal 2023, fiscal year 2023, FY2023, FY23.
_FISCAL = re.compile(r"[Ff](?<!\w[Ff])(?:(?i:iscal)(?:\s(?i:year))?\s{1,3}(?P<y>\d{4})"
                     r"|[Yy]\s{0,2}['’]?(?P<y2>\d{4}|\d{2}))(?!\w)")
_DIGITS = re.compile(r"\d+")
_ANY_MONTH = re.compile(r"[JFMASOND](?i:an|eb|ar|pr|ay|un|ul|ug|ep|ct|ov|ec)")
_THREE_MONTHS = (" three months ended ", " quarter ended ", " 13 weeks ended ")  # in a passage's words


def _year(s: str | None) -> int | None:
    """A 4-digit year in 1800-2199, or a 2-digit one ('23 is 2023, '99 is 1999)."""
    if not s:
        return None
    y = int(s)
    if len(s) == 2:
        return 2000 + y if y < 70 else 1900 + y
    return y if 1800 <= y <= 2199 else None


def _full_dates(y: int | None, pairs: set[tuple[int, int]]) -> tuple[tuple, ...] | None:
    keys = tuple(("d", y, mo, d) for mo, d in sorted(pairs) if 1 <= mo <= 12 and 1 <= d <= 31)
    return keys if keys and y is not None else None


def _digit_date(t: str, m: re.Match[str]) -> tuple[tuple, ...] | None:
    """The date keys of a _DIGIT_DATE match (two for an ambiguous 06/07/2023), or None."""
    lead = t[m.start():m.start() + 4]
    if m.group("ymd"):
        return _full_dates(_year(lead), {(int(m.group("m")), int(m.group("d")))})
    if m.group("slash"):
        a = t[m.start():m.start("b") - 1]
        b = int(m.group("b"))
        return _full_dates(_year(m.group("y")), {(int(a), b), (b, int(a))})
    if m.group("dm"):
        month = _MONTHS.get(m.group("mon").lower())
        d = int(_DIGITS.match(t, m.start()).group())
        if month is None or not 1 <= d <= 31:
            return None
        y = _year(m.group("dmy"))
        return _full_dates(y, {(month, d)}) if m.group("dmy") else (("md", month, d),)
    return (("q", _year(m.group("qyear")), int(lead[0])),)


def _month_date(m: re.Match[str]) -> tuple[tuple, ...] | None:
    """The date keys of a _MONTH_DATE match; None for a month name alone."""
    month = _MONTHS.get(m.group("mon").lower())
    d, y = m.group("d"), m.group("y")
    if month is None or not (d or y):
        return None
    if d and not 1 <= int(d) <= 31:
        return None
    if d and y:
        return _full_dates(_year(y), {(month, int(d))})
    if y:
        year = _year(y)
        return (("m", year, month),) if year else None
    return (("md", month, int(d)),)


def _quarter(m: re.Match[str]) -> tuple[tuple, ...] | None:
    q = _QUARTER_WORDS.get(m.group("ord").lower()) if "ord" in m.re.groupindex else int(m.group("q"))
    y = m.group("y") or (m.group("y2") if "y2" in m.re.groupindex else None)
    return (("q", _year(y), q),) if q else None


def _fiscal(m: re.Match[str]) -> tuple[tuple, ...] | None:
    y = _year(m.group("y") or m.group("y2"))
    return (("y", y),) if y else None


def _date_patterns(t: str):
    """(pattern, reader) in priority order, those that can match `t` only: short sentences should
    not pay for every pattern."""
    out = [(_DIGIT_DATE, lambda m: _digit_date(t, m))]
    if _ANY_MONTH.search(t):
        out.append((_MONTH_DATE, _month_date))
    if "Q" in t or "q" in t:
        out.append((_QUARTER, _quarter))
    if "uarter" in t or "UARTER" in t:
        out.append((_QUARTER_WORD, _quarter))
    if "iscal" in t or "ISCAL" in t or "FY" in t or "fy" in t or "Fy" in t:
        out.append((_FISCAL, _fiscal))
    return out


# ---------------------------------------------------------------- figures

# A number not glued to a word ("H200", "10-Q", "3rd") nor part of a longer number; an attached scale
# suffix ("1.2B", "5bn") or multiple ("2.5x") is allowed.
_NUMBER = re.compile(r"(?P<num>\d(?<![\w.,]\d)(?:\d{0,2}(?:,\d{3})+|\d*)(?:\.\d+)?)"
                     r"(?P<suf>bn|mn|mln|bln|tn|mm|MM|[kKmMbBT]|x)?(?!\w|-[^\W\d_]|[.,]\d)")
_BEFORE = re.compile(r"(?:(?P<open>\()\s?)?(?:(?P<neg>[-−])\s?)?"
                     r"(?P<cur>(?:US|A|C|HK|NZ|S|R)?\$|[€£¥₹₩]|(?:USD|EUR|GBP|JPY|CHF|CAD|AUD|CNY|RMB|INR)\s?)?\s?"
                     r"(?:(?P<open2>\()|(?P<neg2>-))?\Z")
_AFTER = re.compile(r" ?(?:(?P<pct>%|(?i:per ?cent|percentage points?|basis points?|bps|pct)(?!\w))"
                    r"|(?P<scale>(?i:thousand|million|billion|trillion|bn|mn|mln|bln|tn))s?(?!\w))?(?P<close> ?\))?")
_BEFORE_CHARS = frozenset("$€£¥₹₩(-−")
_AFTER_CHARS = frozenset("%)pPbBmMtT")  # what may follow the space before a unit or scale word
_SCALES = {"thousand": 10**3, "k": 10**3, "million": 10**6, "mn": 10**6, "mln": 10**6, "m": 10**6, "mm": 10**6,
           "billion": 10**9, "bn": 10**9, "bln": 10**9, "b": 10**9, "trillion": 10**12, "tn": 10**12, "t": 10**12}
#: What a passage's bare table cell may be counted in (units, thousands, millions, billions):
#: a sentence's "$82.9 billion" is held by a cell "82,959" of a table in millions.
UNITS = (1, 10**3, 10**6, 10**9)
_MAX_DIGITS = 30  # longer digit strings are identifiers or noise, not figures
_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
                      "ninety": 90, "hundred": 100, "dozen": 12})


class Figure(NamedTuple):
    """A figure as written: its magnitude, precision, scale word, and whether it is a percentage
    or negative. Two figures that are one value written alike compare by these fields."""

    raw: str  # magnitude as written, without separators or scale: "82959", "82.9"
    decimals: int  # digits written after the decimal point
    scale: int  # 1, or 10**3 ... 10**12 from a scale word
    pct: bool
    negative: bool

    @property
    def explicit_scale(self) -> bool:
        return self.scale != 1


class Found(NamedTuple):
    """One term found in a text: its character span there, its kind, and its normalised key."""

    start: int
    end: int
    kind: str  # figure | date | name
    key: Any  # Figure, a tuple of date keys, or a normalised name


def _figure(t: str, m: re.Match[str], for_passage: bool) -> tuple[int, int, str, Any] | None:
    """The figure at a _NUMBER match: (start, end, kind, key), or None when it is no figure to
    check (an enumerator "(1)", "3M" without a currency, an over-long digit string). A plain
    four-digit number from 1800 to 2199 is a year."""
    num, suf = m.group("num", "suf")
    raw = num.replace(",", "") if "," in num else num
    if len(raw) > _MAX_DIGITS:
        return None
    start, end = m.span()
    cur = neg = False
    open_at = -1
    # The regexes around the number run only where a neighbouring character says they may match.
    p1 = t[start - 1] if start else ""
    p2 = t[start - 2] if start > 1 else ""
    if p1 in _BEFORE_CHARS or (p1 == " " and (p2 in _BEFORE_CHARS or p2.isupper())):
        before = _BEFORE.search(t, max(0, start - 12), start)
        if before is not None:
            cur_s, sign_s, sign2_s, open_s, open2_s = before.group("cur", "neg", "neg2", "open", "open2")
            if cur_s:
                cur, start = True, before.start("cur")
            if sign_s or sign2_s:
                at = before.start("neg" if sign_s else "neg2")
                if at == 0 or not t[at - 1].isalnum():  # "-5", not the dash of "10-20"
                    neg, start = True, min(start, at)
            if open_s or open2_s:
                open_at = before.start("open" if open_s else "open2")
    scale = 1
    if suf == "x":
        suf = None
    elif suf:
        if not cur and (len(suf) == 1 or suf == "mm" or suf == "MM"):
            return None  # "3M", "4K", "5G" are names; "$3M" is money
        scale = _SCALES[suf.lower()]
    pct = parenthesised = False
    nxt = t[end:end + 2]
    if nxt and (nxt[0] in "%)" or (nxt[0] == " " and nxt[1:] in _AFTER_CHARS)):
        after = _AFTER.match(t, end)
        if after.group("pct"):
            pct, end = True, after.end("pct")
        elif after.group("scale") and not suf:
            scale, end = _SCALES[after.group("scale").lower()], after.end("scale")
        if after.group("close") and open_at >= 0:  # "(1,234)": a negative, as tables write it
            parenthesised = True
            neg, start, end = True, min(start, open_at), after.end("close")
    decimals = len(raw) - raw.index(".") - 1 if "." in raw else 0
    if not (cur or pct or suf or scale != 1 or decimals or "," in num):  # plain digits
        if len(raw) == 4 and not (neg and not parenthesised):
            y = _year(raw)
            if y is not None:
                return start, end, "date", (("y", y),)
        if parenthesised and len(raw) <= 2 and not for_passage:
            return None  # "(1)", "(12)": an enumerator or a footnote in prose
    return start, end, "figure", Figure(raw, decimals, scale, pct, neg)


# ---------------------------------------------------------------- names

_WORD = re.compile(r"(?:[A-Z]\.){2,}|[^\W\d_]+(?:['’][^\W\d_]+|-[^\W\d_]+)*")
_JOINERS = frozenset("of & de du da del der van von la le".split())
_TITLES = frozenset("mr mrs ms dr prof st sir".split())
_CORPORATE = frozenset("inc corp corporation co ltd llc plc lp llp sa ag nv se gmbh limited company group "
                       "holdings".split())
# Capitalised words that are not names: function words (capitalised at a sentence start, or after a
# colon), months and days, statement headings and finance words that answers title-case, titles,
# and acronyms so common that passages need not spell them.
_COMMON = frozenset("""
a an the this that these those there here it its it's we our us you your they their them he she his her
i my me in on at for of and but or nor so yet as by to from with without within into onto over under
after before during since until while when where which who whom whose what why how if then than
also however overall additionally furthermore moreover meanwhile therefore thus hence although though
yes no not all any each every both either neither some most many much more less few several other another
such same per via versus vs about above below between among across through throughout against
according based compared including excluding regarding following note notes see refer please
is are was were be been being has have had do does did will would shall should can could may might must
january february march april may june july august september october november december
jan feb mar apr jun jul aug sep sept oct nov dec
monday tuesday wednesday thursday friday saturday sunday today yesterday tomorrow
total net gross operating operations income revenue revenues sales cost costs expense expenses
margin margins profit profits loss losses earnings share shares per diluted basic cash flow flows
balance sheet sheets statement statements consolidated condensed unaudited audited financial
assets liabilities equity debt capital interest tax taxes provision segment segments region regions
product products service services company companies quarter quarters year years fiscal annual quarterly
month months week weeks period periods ended ending three six nine twelve
item items part section table figure page exhibit form report reports schedule appendix summary
answer question passage passages document documents source sources extract extracts
president chief executive officer officers director directors chairman chair vice senior general manager
ceo cfo coo cto cio evp svp vp md
us usd eur gbp jpy gaap eps ebit ebitda sec irs fy ytd yoy qoq ttm ai api faq na
ii iii iv v vi vii viii ix x xi xii
""".split())
_MAX_NAME_WORDS = 6
_STARTERS = frozenset('.:;!?"“”‘«»|')  # what makes the next word a sentence (or table cell) start


def _is_capitalised(word: str) -> bool:
    """Title-case, upper-case (two letters or more) or camel-case ("iPhone") words."""
    if word[0].isupper():
        return len(word) > 1
    return any(c.isupper() for c in word[1:])


def _sentence_names(t: str) -> list[tuple[int, int, str]]:
    """Proper-noun-looking runs in `t` (figures and dates already blanked): (start, end, norm)."""
    if t.lower() == t:
        return []
    words = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(t)]
    keys = [_key(w) for _, _, w in words]
    out: list[tuple[int, int, str]] = []
    run: list[int] = []  # indexes into words, joiners included
    initial: list[bool] = []  # where a capital letter says nothing: the sentence start, after ". : ; quote"
    prev_end = 0
    for i, (a, _b, w) in enumerate(words):
        gap = t[prev_end:a]
        after_title = i > 0 and keys[i - 1] in _TITLES and gap.strip() == "."
        initial.append(i == 0 or (not after_title and any(c in _STARTERS for c in gap)))
        if _is_capitalised(w):
            if run and not _joins(gap):
                _close_run(t, words, keys, run, initial, out)
            run.append(i)
        elif keys[i] in _JOINERS and run and not gap.strip():
            run.append(i)
        elif run:
            _close_run(t, words, keys, run, initial, out)
        prev_end = _b
    if run:
        _close_run(t, words, keys, run, initial, out)
    return out


def _close_run(t: str, words: list[tuple[int, int, str]], keys: list[str], run: list[int], initial: list[bool],
               out: list[tuple[int, int, str]]) -> None:
    """Trim common words and joiners from the ends of a run of capitalised words; keep what is
    left if it still looks like a name."""
    lo, hi = 0, len(run)
    while lo < hi and (keys[run[lo]] in _COMMON or keys[run[lo]] in _JOINERS):
        lo += 1
    while hi > lo and (keys[run[hi - 1]] in _COMMON or keys[run[hi - 1]] in _JOINERS):
        hi -= 1
    idx = run[lo:hi]
    run.clear()
    if not idx or len(idx) > _MAX_NAME_WORDS:
        return
    if len(idx) == 1 and initial[idx[0]]:
        return  # a capitalised sentence start is no evidence of a name
    a, b = words[idx[0]][0], words[idx[-1]][1]
    tokens = _name_norm(t[a:b]).split()
    while len(tokens) > 1 and tokens[-1] in _CORPORATE:
        tokens.pop()
    if tokens and not all(tok in _COMMON for tok in tokens):
        out.append((a, b, " ".join(tokens)))


def _joins(gap: str) -> bool:
    """Whether two capitalised words belong to one run: one or two spaces between them, or an '&'."""
    return gap in (" ", "  ") or gap.strip() == "&" and len(gap) <= 4


def _key(word: str) -> str:
    """A word as the word lists hold it: casefolded, without dots or a possessive."""
    return _strip_possessive(word).replace(".", "").casefold()


def _strip_possessive(word: str) -> str:
    if word.endswith(("'s", "’s", "'S")):
        return word[:-2]
    return word.rstrip("'’")


_POSSESSIVE = re.compile(r"['’][sS]\b")
_TOKEN = re.compile(r"[^\W_]+")


def _name_norm(text: str) -> str:
    """Words casefolded and accent-free, possessives dropped, joined by single spaces: the form in
    which a name is looked for in a passage ("Apple's" -> "apple", "U.S." -> "u s")."""
    text = _POSSESSIVE.sub("", text)
    if not text.isascii():
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return " ".join(_TOKEN.findall(text.casefold()))


# ---------------------------------------------------------------- extraction


def _extract(t: str, for_passage: bool) -> list[Found]:
    """Dates, then figures, then (sentences only) names in folded text `t`, in text order. A
    later kind does not take text an earlier one took: "June 24, 2023" is a date, not 24 and 2023."""
    taken = bytearray(len(t))
    found: list[Found] = []
    for pattern, read in _date_patterns(t):
        for m in pattern.finditer(t):
            a, b = m.span()
            if 1 in taken[a:b]:
                continue
            keys = read(m)
            if keys is not None:
                if t[b - 1] == ".":  # "12 March." ends a sentence
                    b -= 1
                found.append(Found(a, b, "date", keys))
                taken[a:b] = b"\x01" * (b - a)
    dated = bool(found)
    for m in _NUMBER.finditer(t):
        if dated and 1 in taken[m.start():m.end()]:
            continue
        fig = _figure(t, m, for_passage)
        if fig is not None:
            found.append(Found(*fig))
    if for_passage:
        return found
    for a, b, norm in _sentence_names(_blank(t, found)):
        found.append(Found(a, b, "name", norm))
    found.sort(key=lambda f: f.start)
    return found


def _blank(t: str, found: list[Found]) -> str:
    """`t` with the found terms' text replaced by NULs, so that no name runs across a figure."""
    pieces, pos = [], 0
    for f in sorted(found, key=lambda f: f.start):
        a = max(f.start, pos)
        if f.end > a:
            pieces += [t[pos:a], "\x00" * (f.end - a)]
            pos = f.end
    pieces.append(t[pos:])
    return "".join(pieces)


def sentence_terms(sentence: str) -> tuple[str, list[Found]]:
    """The sentence without its citation markers, and its terms (first of each distinct key);
    each term's span is an offset into that text."""
    text = strip_citations(sentence)
    found = _extract(fold_digits(text), for_passage=False)
    seen: set = set()
    out: list[Found] = []
    for f in found:
        k = (f.kind, _figure_identity(f.key) if f.kind == "figure" else f.key)
        if k not in seen:
            seen.add(k)
            out.append(f)
    return text, out


def _figure_identity(fig: Figure) -> tuple:
    return Decimal(fig.raw).normalize(), fig.decimals, fig.scale, fig.pct


def extract_terms(sentence: str) -> list[Term]:
    """The checkable terms of one sentence, in order, as written there (citation markers are not
    terms)."""
    text, found = sentence_terms(sentence)
    out = []
    for f in found:
        value = None
        if f.kind == "figure":
            v = float(Decimal(f.key.raw) * f.key.scale)
            value = -v if f.key.negative else v
        out.append(Term(surface=text[f.start:f.end].strip(), kind=f.kind, value=value))
    return out


# ---------------------------------------------------------------- passages


class PassageTerms(NamedTuple):
    """One passage's terms, normalised: magnitudes by how they were written, date keys, words."""

    number: int
    bare: list[float]  # numbers without a scale word: a table cell, in units the passage may not say
    absolute: list[float]  # numbers with one, scaled: "$82.9 billion" -> 8.29e10
    mantissa: list[float]  # the same as written: 82.9
    percent: list[float]
    dates: frozenset
    quarterly: bool  # reports "three months ended ..."
    words: str  # " tim cook is the ceo of apple inc ... "


def passage_terms(number: int, text: str) -> PassageTerms:
    """A passage's terms, by the same extraction as sentences' (names aside: a passage is searched
    for a sentence's names in its words), plus number words ("three segments") as values."""
    t = fold_digits(text)
    lists: dict[str, list[float]] = {"bare": [], "absolute": [], "mantissa": [], "percent": []}
    dates: set[tuple] = set()
    for f in _extract(t, for_passage=True):
        if f.kind == "date":
            for key in f.key:
                dates.update(_date_closure(key))
            continue
        fig: Figure = f.key
        v = float(fig.raw)  # at most _MAX_DIGITS digits: always finite
        if fig.pct:
            lists["percent"].append(v)
        elif fig.scale != 1:
            lists["mantissa"].append(v)
            lists["absolute"].append(v * fig.scale)
        else:
            lists["bare"].append(v)
    words = f" {_name_norm(t)} "
    lists["bare"].extend(float(_NUMBER_WORDS[w]) for w in words.split() if w in _NUMBER_WORDS)
    lists["bare"].extend(float(k[1]) for k in dates if k[0] == "y")
    return PassageTerms(number, dates=frozenset(dates), quarterly=any(p in words for p in _THREE_MONTHS),
                         words=words, **lists)


def _date_closure(key: tuple) -> set[tuple]:
    """A full date also holds its month, its day of the year and its year; a month its year; a
    quarter its year."""
    kind = key[0]
    if kind == "d":
        _, y, m, d = key
        return {key, ("m", y, m), ("md", m, d), ("y", y)}
    if kind == "m":
        return {key, ("y", key[1])}
    if kind == "q":
        return {key, ("y", key[1])} if key[1] is not None else {key}
    return {key}


