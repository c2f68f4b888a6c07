"""Document context: the words that say whose text a chunk is ("2023 Q3 AAPL > Item 2. ...").

A chunk cut from a table of a 10-Q does not say which company's filing, or which quarter, it
comes from; its document's name and its section do. The context is put in front of the text that
is embedded and indexed for BM25 (rag.models.Chunk.indexed_text), never into the text stored for
citations and prompts. Issue 11; the anchors do the same (LlamaIndex embeds a node's metadata
with its text, Haystack's `meta_fields_to_embed`).

The rule, in order:
- the title part: the file's name as a title (its stem, '_' and '-' as spaces: "2023 Q3 AAPL"),
  and the document's own title (PDF metadata, a first heading) when the loader found one. Both,
  because a filing's title line is boilerplate ("UNITED STATES SECURITIES AND EXCHANGE
  COMMISSION") while its file name says whose and when; one of them alone when its words hold
  the other's. A name with no letter ("4983", an accession number) is no title;
- the section (Page.section: Markdown/HTML/DOCX headings, the PDF outline) after " > ";
- the title part is left out of a chunk whose text begins with it (the chunk holding the title
  line, a BEIR passage's first chunk), so that no chunk carries its title twice;
- the whole is capped at a quarter of the chunk's token budget, cut at a word: context and text
  together fit the chunk size, and a huge title cannot squeeze the text to nothing.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

TITLE_JOIN = " — "
SECTION_JOIN = " > "
CONTEXT_SHARE = 4  # the context takes at most 1/4 of a chunk's content tokens

_WORD = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def _clean(text: str | None) -> str | None:
    """Whitespace collapsed; None for nothing, or for a name with no letter in it."""
    text = " ".join((text or "").split())
    return text if any(ch.isalpha() for ch in text) else None


def file_title(source: str) -> str | None:
    """A file's name read as a title: the stem, '_' and '-' as spaces ("2023_Q3-AAPL.pdf" ->
    "2023 Q3 AAPL"); None when it holds no letter (a number, an id)."""
    stem = PurePosixPath(source.replace("\\", "/")).stem
    return _clean(re.sub(r"[_-]+", " ", stem))


def title_part(source: str, title: str | None) -> str | None:
    """The file's name and the document's title, joined by " — "; only one of them when the
    other's words are all in it (the file named after the title, or the title after the file)."""
    name, title = file_title(source), _clean(title)
    if not name or not title:
        return name or title
    n, t = set(_words(name)), set(_words(title))
    if n <= t:
        return title
    if t <= n:
        return name
    return f"{name}{TITLE_JOIN}{title}"


def _starts_with(text: str, prefix: str) -> bool:
    """Whether `text` begins with `prefix`'s words (case and punctuation aside)."""
    want = _words(prefix)
    return bool(want) and _words(text[:len(prefix) * 2 + 16])[:len(want)] == want


def chunk_context(title: str | None, section: str | None, text: str) -> str:
    """The context of one chunk (uncapped): title part and section, the title left out when the
    chunk's text begins with it; "" when there is nothing to say."""
    parts = []
    if title and not _starts_with(text, title):
        parts.append(title)
    section = " ".join((section or "").split())
    if section:
        parts.append(section)
    return SECTION_JOIN.join(parts)


def context_cap(budget: int) -> int:
    """Most content tokens a context may take of a chunk's `budget` content tokens."""
    return budget // CONTEXT_SHARE


def cut_at_word(text: str, offsets: list[tuple[int, int]], max_tokens: int) -> str:
    """`text` cut to its first `max_tokens` tokens (`offsets`: the tokenizer's character
    spans, special tokens excluded), backed off to the last space before the cut so that no
    word is split; the text itself when it fits."""
    if len(offsets) <= max_tokens:
        return text
    if max_tokens <= 0:
        return ""
    end = offsets[max_tokens][0]  # the first token left out starts here
    space = text.rfind(" ", 0, end + 1)
    cut = text[:space] if space > 0 else text[:offsets[max_tokens - 1][1]]
    return cut.rstrip(" >—-:,;")
