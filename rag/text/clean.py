"""Text clean-up that retrieval depends on, and a check for text layers that are not text.

- Unicode NFKC (PDF ligatures such as "ﬁ" become "fi"; full-width forms fold).
- Spacing accents that PDF extractors emit before a letter ("Universit¨at") are recomposed.
- Words split by a hyphen at a line break are re-joined. A compound that the document
  also writes with a hyphen elsewhere ("fine-\\ntuned" beside "fine-tune") keeps it.
- Whitespace normalised: runs of spaces collapse, single line breaks become spaces,
  blank lines stay as paragraph breaks.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable

# Spacing diacritics as extracted from TeX PDFs, and their combining forms.
_SPACING_ACCENTS = {
    "\u00a8": "\u0308",  # ¨ diaeresis
    "\u00b4": "\u0301",  # ´ acute
    "`": "\u0300",  # grave
    "\u02c6": "\u0302",  # ˆ circumflex
    "\u02dc": "\u0303",  # ˜ tilde
    "\u02c7": "\u030c",  # ˇ caron
    "\u00b8": "\u0327",  # ¸ cedilla
}
# A backtick only counts as a grave accent inside a word ("deuxi`eme"): elsewhere it is Markdown
# or code ("run `ls` now"). TeX puts accents on a dotless i ("na\u00a8\u0131ve").
_ACCENT_BEFORE_LETTER = re.compile(
    "([\u00a8\u00b4\u02c6\u02dc\u02c7\u00b8]) ?([A-Za-z\u0131])|(?<=[A-Za-z])(`)([A-Za-z\u0131])")
_SPACING_ACCENT_SPLIT = re.compile("([\u00a8\u00b4\u02c6\u02dc\u02c7\u00b8])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u00ad\u200b\ufeff]")
_LINE_HYPHEN = re.compile(r"(\w+)-[ \t]*\n[ \t]*(\w+)")
_WORD = re.compile(r"\w+(?:-\w+)*")


def _recompose_accent(m: re.Match[str]) -> str:
    accent, letter = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    base = "i" if letter == "\u0131" else letter
    composed = unicodedata.normalize("NFC", base + _SPACING_ACCENTS[accent])
    # Keep the original when no precomposed letter exists (e.g. a real backtick before code).
    return composed if len(composed) == 1 else m.group(0)


def normalize_unicode(text: str, recompose_accents: bool = True) -> str:
    """NFKC and control characters. `recompose_accents` is for PDF text layers (TeX's "Universit¨at");
    typed text uses ´ and ` as apostrophes ("it´s"), so text files leave them alone."""
    if recompose_accents:
        # Recompose before NFKC: NFKC turns U+00A8 into " \u0308", losing the pairing.
        text = unicodedata.normalize("NFKC", _ACCENT_BEFORE_LETTER.sub(_recompose_accent, text))
    else:
        # NFKC would also split a lone ´ into " \u0301": normalise around the spacing accents.
        parts = _SPACING_ACCENT_SPLIT.split(text)
        text = "".join(p if p in _SPACING_ACCENTS else unicodedata.normalize("NFKC", p) for p in parts)
    return _CONTROL.sub("", text)


def _same_word(a: str, b: str) -> bool:
    """Two forms of one word ("tune", "tuned", "tuning"): equal, or a long enough common start."""
    n = len(os.path.commonprefix([a, b]))
    return a == b or (n >= 3 and n >= min(len(a), len(b)) - 2)


def dehyphenate(text: str, vocabulary: set[str]) -> str:
    """Re-join `word-\\nword`. Keep the hyphen when the document writes the compound with a hyphen
    elsewhere (also inflected, "fine-\\ntuned" beside "fine-tune", or inside a longer compound,
    "state-of-the-\\nart") and never the closed form; otherwise join (a syllable break)."""
    seconds: dict[str, set[str]] = {}  # "fine" -> {"tune"}, for each hyphen in a compound
    for word in vocabulary:
        parts = word.split("-")
        for a, b in zip(parts, parts[1:]):
            seconds.setdefault(a, set()).add(b)

    def join(m: re.Match[str]) -> str:
        left, right = m.group(1), m.group(2)
        closed = f"{left}{right}".lower()
        known = seconds.get(left.lower(), ())
        if closed not in vocabulary and any(_same_word(right.lower(), s) for s in known):
            return f"{left}-{right}"
        return f"{left}{right}"

    return _LINE_HYPHEN.sub(join, text)


def normalize_whitespace(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    paragraphs = re.split(r"\n[ \t]*\n+", text)
    out = []
    for para in paragraphs:
        para = re.sub(r"\s+", " ", para).strip()
        if para:
            out.append(para)
    return "\n\n".join(out)


def document_vocabulary(texts: Iterable[str]) -> set[str]:
    """Lower-cased words (hyphenated compounds kept whole) that do not straddle a line break."""
    vocab: set[str] = set()
    for text in texts:
        vocab.update(w.lower() for w in _WORD.findall(text))
    return vocab


def clean_pages(raw_pages: list[str]) -> list[str]:
    """Clean every page of one document; the hyphenation vocabulary spans the whole document."""
    pages = [normalize_unicode(p) for p in raw_pages]
    vocab = document_vocabulary(_LINE_HYPHEN.sub(" ", p) for p in pages)
    return [normalize_whitespace(dehyphenate(p, vocab)) for p in pages]


# Function words of the languages our users write in; real prose is full of them,
# a garbled (shifted, mis-encoded) text layer has almost none.
_COMMON_WORDS = frozenset(
    """the of and to in is a that for it as with was on be by are this from or at an not
    which we our can has have were their its these also but than more one two all
    der die das und ist nicht mit von den zu ein eine des dem im auf für sich
    le la les et des est un une du dans pour que qui sur pas par au avec
    el los las y en por con para una es del se no
    il di che non per una della sono""".split()
)


def recognisable_word_share(text: str) -> tuple[float, int]:
    """Share of alphabetic words that are common function words, and how many words there were."""
    words = [w.lower() for w in re.findall(r"[^\W\d_]+", text)]
    if not words:
        return 0.0, 0
    common = sum(1 for w in words if w in _COMMON_WORDS)
    return common / len(words), len(words)


def looks_garbled(text: str, min_words: int = 40, min_share: float = 0.03) -> bool:
    """True when a text layer with enough words has almost no function words of any language
    we know, or is mostly replacement characters and CID placeholders."""
    if not text:
        return False
    junk = text.count("\ufffd") + 3 * len(re.findall(r"\(cid:\d+\)", text))
    if junk > 0.1 * len(text):
        return True
    share, n = recognisable_word_share(text)
    return n >= min_words and share < min_share
