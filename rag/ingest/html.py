"""HTML files to a `Document`: the page's readable text, split into sections at its headings.

The standard library's `html.parser` reads the markup: it is tolerant of broken HTML, and the
rules below (what to drop, where a paragraph ends) are ours either way, so a parsing library
would add a dependency without changing the result.

- Charset: a BOM, else the `<meta charset>` / http-equiv declaration in the first 4 KiB (as a
  browser's pre-scan; "iso-8859-1" and "ascii" mean windows-1252 as in the WHATWG Encoding
  standard), else `decode_text` (UTF-8, else Windows-1252 with a warning).
- Dropped: script, style, noscript, template, svg, nav, aside, form (and widgets), the page's
  header and footer (not those of an article or section, which hold its title), elements with
  the ARIA roles of those, and hidden elements (`hidden`, aria-hidden="true", display:none).
- When the page has a `<main>` with text, only its text is kept (the rest is site chrome).
- Block elements end a paragraph; <br> ends a line; a table row becomes "cell | cell" and a list
  item its own paragraph, so the chunker never cuts inside one.
- h1-h6 start sections named by their heading path, as Markdown headings do.
- Title: <title>, without a trailing " | Site" when that part is the site's name or the rest is
  the page's <h1>; else the first <h1>; else None.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from rag.errors import LoadError
from rag.ingest.decoding import decode_text
from rag.ingest.sections import clean_title, heading_path, heading_trail, sectioned_document
from rag.models import Document

DROPPED = frozenset({"script", "style", "noscript", "template", "svg", "nav", "aside", "form",
                     "iframe", "object", "canvas", "button", "select", "textarea"})
PAGE_CHROME = frozenset({"header", "footer"})  # dropped unless inside one of SECTIONING
SECTIONING = frozenset({"article", "section", "main", "aside", "nav"})
DROPPED_ROLES = frozenset({"navigation", "banner", "contentinfo", "complementary", "search"})
VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                  "param", "source", "track", "wbr", "keygen"})
HEADINGS = {f"h{n}": n for n in range(1, 7)}
BLOCKS = frozenset({"address", "article", "blockquote", "body", "caption", "center", "dd",
                    "details", "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure",
                    "hgroup", "li", "main", "menu", "ol", "p", "pre", "section", "summary",
                    "table", "tbody", "tfoot", "thead", "tr", "ul", *HEADINGS}) | PAGE_CHROME
# A start tag that closes an open element of the same kind (the HTML spec's implied end tags):
# tag -> (what it closes, where the search for one stops).
IMPLIED_END = {
    "li": ({"li"}, {"ul", "ol", "menu", "table"}),
    "dt": ({"dt", "dd"}, {"dl", "table"}),
    "dd": ({"dt", "dd"}, {"dl", "table"}),
    "tr": ({"tr"}, {"table"}),
    "td": ({"td", "th"}, {"tr", "table"}),
    "th": ({"td", "th"}, {"tr", "table"}),
    "thead": ({"thead", "tbody", "tfoot"}, {"table"}),
    "tbody": ({"thead", "tbody", "tfoot"}, {"table"}),
    "tfoot": ({"thead", "tbody", "tfoot"}, {"table"}),
    **{h: (set(HEADINGS), BLOCKS - set(HEADINGS)) for h in HEADINGS},
}
CELL_BOUNDARY = frozenset({"td", "th", "tr", "table", "li", "dd", "dt"})

_META_CHARSET = re.compile(rb"""<meta\b[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.I)
# WHATWG Encoding standard labels that Python's codecs would read differently.
_CHARSET_ALIASES = {"iso-8859-1": "cp1252", "iso8859-1": "cp1252", "latin1": "cp1252",
                    "l1": "cp1252", "us-ascii": "cp1252", "ascii": "cp1252", "x-sjis": "shift_jis",
                    "utf-16": "utf-8", "utf-16le": "utf-8", "utf-16be": "utf-8"}
_TITLE_SEPARATOR = re.compile(r"\s+[|\-\u2013\u2014\u00b7]\s+")
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
NO_TEXT = ("no text: nothing is left after dropping scripts, styles, navigation, page header and "
           "footer, forms and hidden elements")


# ---------------------------------------------------------------- decoding


def declared_charset(data: bytes) -> str | None:
    """The charset a `<meta>` in the first 4 KiB declares (`<meta charset=x>` or http-equiv
    Content-Type "...; charset=x"), lower-cased; None when there is none."""
    m = _META_CHARSET.search(data[:4096])
    return m.group(1).decode("ascii").lower() if m else None


def decode_html(src: str, data: bytes) -> tuple[str, list[str]]:
    """Text of an HTML file and the warnings of its decoding. A BOM wins over the declaration (as
    in browsers); a declared charset that is unknown or does not decode is warned about and
    `decode_text` decides. Binary content raises LoadError (from decode_text)."""
    text, warnings = decode_text(src, data)  # also the binary-content check
    if data.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return text, warnings
    declared = declared_charset(data)
    if declared is None:
        return text, warnings
    name = _CHARSET_ALIASES.get(declared, declared)
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        return text, [f"unknown charset '{declared}' declared: ignored"] + warnings
    if codec == "utf-8" and not warnings:
        return text, []
    try:
        return data.decode(codec), []
    except UnicodeDecodeError as e:
        return text, [f"declared charset '{declared}' does not decode the file ({e.reason} at "
                      f"byte {e.start}): ignored"] + warnings


# ---------------------------------------------------------------- parsing


@dataclass
class Token:
    """One piece of the page in reading order: text, a break (1: line, 2: paragraph), a table row
    or a heading. `in_main`: inside <main>."""

    kind: str  # "text" | "break" | "row" | "heading"
    text: str = ""
    level: int = 0
    in_main: bool = False


@dataclass
class _Open:
    tag: str
    dropped: bool  # this element starts a dropped subtree


class PageParser(HTMLParser):
    """Reads the markup into `tokens`, `title` and `site_name` (og:site_name / application-name)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tokens: list[Token] = []
        self.title: str | None = None
        self.site_name: str | None = None
        self._stack: list[_Open] = []
        self._dropping = 0  # open elements that drop their subtree
        self._main = 0
        self._pre = 0
        self._captures: list[list[str]] = []  # title, heading, cell text being collected
        self._rows: list[list[str]] = []  # cells of each open table row

    # -- the element stack
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "meta" and not self._dropping:
            self._meta(dict(attrs))
        self._implied_end(tag)
        if tag in VOID:
            if not self._dropping and tag in ("br", "hr"):
                self._break(1 if tag == "br" else 2)
            return
        dropped = self._dropping > 0 or self._drops(tag, dict(attrs))
        self._stack.append(_Open(tag, dropped))
        if dropped:
            self._dropping += 1
            return
        self._start(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:  # "<div/>" is an open div in HTML, but authors mean an empty one
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i].tag == tag:
                self._pop_to(i)
                return
        if tag == "br" and not self._dropping:  # "</br>" is read as <br> by browsers
            self._break(1)

    def close(self) -> None:
        super().close()
        self._pop_to(0)

    def _pop_to(self, index: int) -> None:
        while len(self._stack) > index:
            el = self._stack.pop()
            if el.dropped:
                self._dropping -= 1
            else:
                self._end(el.tag)

    def _implied_end(self, tag: str) -> None:
        """Close what this start tag implies closed: an open <p> before a block, an <li> before the
        next <li>, a cell before the next cell, and so on."""
        rule = IMPLIED_END.get(tag)
        if rule:
            self._close_open(rule[0], rule[1])
        if tag in BLOCKS:
            self._close_open({"p"}, BLOCKS)

    def _close_open(self, tags: set[str] | frozenset[str], stop: set[str] | frozenset[str]) -> None:
        """Close the innermost open element named in `tags`, unless one in `stop` comes first."""
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i].tag in tags:
                self._pop_to(i)
                return
            if self._stack[i].tag in stop:
                return

    def _drops(self, tag: str, attrs: dict[str, str | None]) -> bool:
        """Boilerplate and hidden elements (the module docstring's list)."""
        if tag in DROPPED:
            return True
        if tag in PAGE_CHROME and not any(el.tag in SECTIONING for el in self._stack):
            return True
        if (attrs.get("role") or "").strip().lower() in DROPPED_ROLES:
            return True
        if "hidden" in attrs and (attrs["hidden"] or "").lower() != "until-found":
            return True
        if (attrs.get("aria-hidden") or "").strip().lower() == "true":
            return True
        return bool(_HIDDEN_STYLE.search(attrs.get("style") or ""))

    def _meta(self, attrs: dict[str, str | None]) -> None:
        key = (attrs.get("property") or attrs.get("name") or "").strip().lower()
        if key in ("og:site_name", "application-name") and attrs.get("content") and not self.site_name:
            self.site_name = attrs["content"]

    # -- what each element means for the text
    def _start(self, tag: str) -> None:
        if tag == "main":
            self._main += 1
        if tag == "pre":
            self._pre += 1
        if tag in ("title", "td", "th") or tag in HEADINGS:
            self._captures.append([])
        if tag == "tr":
            self._rows.append([])
        if tag in BLOCKS:
            self._break(2)

    def _end(self, tag: str) -> None:
        if tag == "main":
            self._main -= 1
        if tag == "pre":
            self._pre -= 1
        if tag == "title":
            text = _one_line(self._captures.pop())
            if self.title is None and text:
                self.title = text
        elif tag in ("td", "th"):
            text = _one_line(self._captures.pop())
            if self._rows and text:
                self._rows[-1].append(text)
            elif text:  # a cell outside any row: plain text
                self._emit(Token("text", text))
        elif tag == "tr":
            row = " | ".join(self._rows.pop())
            if row:
                self._emit(Token("row", row))
        elif tag in HEADINGS:
            text = _one_line(self._captures.pop())
            if text:
                self._emit(Token("heading", text, HEADINGS[tag]))
        if tag in BLOCKS:
            self._break(2)

    def _emit(self, token: Token) -> None:
        """A token goes to the innermost capture (a heading inside a cell is cell text), else out."""
        if self._captures and token.kind != "break":
            self._captures[-1].append(token.text if token.kind == "text" else f" {token.text} ")
        elif not self._captures:
            token.in_main = self._main > 0
            self.tokens.append(token)

    def _break(self, n: int) -> None:
        if self._captures:
            self._captures[-1].append(" ")
        else:
            self._emit(Token("break", level=n))

    def handle_data(self, data: str) -> None:
        if self._dropping:
            return
        if self._pre:
            for i, line in enumerate(data.split("\n")):
                if i:
                    self._break(1)
                self._emit(Token("text", line))
        else:
            self._emit(Token("text", re.sub(r"[ \t\n\r\f]+", " ", data)))


def _one_line(pieces: list[str]) -> str:
    return re.sub(r"\s+", " ", "".join(pieces)).strip()


# ---------------------------------------------------------------- assembly


def main_tokens(tokens: list[Token]) -> list[Token]:
    """Only the tokens inside <main> when it holds any text; else all of them."""
    inside = [t for t in tokens if t.in_main]
    return inside if any(t.kind != "break" and t.text.strip() for t in inside) else tokens


def html_sections(tokens: list[Token]) -> list[tuple[str | None, str]]:
    """(section, raw text) parts: each heading starts one, named by its heading path."""
    parts: list[tuple[str | None, list[str]]] = [(None, [])]
    trail: list[tuple[int, str]] = []
    for t in tokens:
        if t.kind == "heading":
            trail = heading_trail(trail, t.level, t.text)
            parts.append((heading_path(trail), [t.text, "\n\n"]))
        elif t.kind == "break":
            parts[-1][1].append("\n" * t.level)
        elif t.kind == "row":
            parts[-1][1].append(f"\n\n{t.text}\n\n")
        else:
            parts[-1][1].append(t.text)
    return [(section, "".join(pieces)) for section, pieces in parts]


def page_title(title: str | None, h1: str | None, site_name: str | None) -> str | None:
    """<title> without a trailing " | Site" (also " - ", " – ", " — ", " · ") when that is safe:
    the last part is the declared site name, or the rest is the page's first <h1>. A title that
    merely contains a dash ("2023 - A year in review") stays whole. No title: the first <h1>."""
    title, h1, site_name = clean_title(title), clean_title(h1), clean_title(site_name)
    if not title:
        return h1
    pieces = _TITLE_SEPARATOR.split(title)
    if len(pieces) > 1:
        head = title[: list(_TITLE_SEPARATOR.finditer(title))[-1].start()]
        tail = pieces[-1]
        if (site_name and tail.casefold() == site_name.casefold()) or (
                h1 and head.casefold() == h1.casefold()):
            return head
    return title


def load_html(path: Path, data: bytes) -> Document:
    """Load an .html/.htm file (module docstring: what is kept, sections, title)."""
    src = str(path)
    if not data.strip():
        raise LoadError(src, "empty file (only whitespace)" if data else "empty file (0 bytes)")
    text, warnings = decode_html(src, data)
    parser = PageParser()
    parser.feed(text)
    parser.close()
    tokens = main_tokens(parser.tokens)
    h1 = next((t.text for t in tokens if t.kind == "heading" and t.level == 1), None)
    title = page_title(parser.title, h1, parser.site_name)
    return sectioned_document(path, data, html_sections(tokens), title, warnings, NO_TEXT)
