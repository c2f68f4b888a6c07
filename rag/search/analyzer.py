"""The BM25 text index's tokenizer, on the client side: the words Qdrant's text index makes of a text.

Qdrant tokenizes the indexed text and the query inside the engine; code that must reason about
the same terms (document routing, rag.search.routing) needs the same analysis here. It follows
TextIndexSettings as the engines apply it (checked against Qdrant Edge in tests/test_routing.py):
- the `word` tokenizer splits at every character that is not a letter or a digit, so "Apple's"
  is "apple" + "s", "AMAZON.COM" is "amazon" + "com", "10-Q" is "10" + "q";
- lowercase, ASCII folding ("naïve" -> "naive"), tokens longer than max_token_len dropped;
- English stop words dropped (the possessive's "s", "t" of "don't" among them).

The index also stems (Snowball English); `words` and `terms` do not: routing matches names,
which are not inflected, and a stem would make "corporate" meet "Corporation".
"""

from __future__ import annotations

import re
import unicodedata

from rag.search.store import TextIndexSettings

_WORD = re.compile(r"[^\W_]+")  # letters and digits (Unicode), as the word tokenizer keeps them

# English function words, including the fragments the word tokenizer leaves of contractions
# and possessives ("s", "t", "don", "ll", "ve" ...), as the engine's English list drops them.
ENGLISH_STOPWORDS = frozenset("""
a about above after again against ain all am an and any are aren as at be because been before
being below between both but by can couldn d did didn do does doesn doing don down during each
few for from further had hadn has hasn have haven having he her here hers herself him himself
his how i if in into is isn it its itself just ll m ma me mightn more most mustn my myself
needn no nor not now o of off on once only or other our ours ourselves out over own re s same
shan she should shouldn so some such t than that the their theirs them themselves then there
these they this those through to too under until up ve very was wasn we were weren what when
where which while who whom why will with won wouldn y you your yours yourself yourselves
""".split())


def _fold(text: str) -> str:
    """ASCII folding: accents and other marks removed ("café" -> "cafe")."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


class Analyzer:
    """The terms of a text as a collection's BM25 index makes them (settings: the collection's
    recorded TextIndexSettings)."""

    def __init__(self, settings: TextIndexSettings | None = None):
        self.settings = settings or TextIndexSettings()

    def words(self, text: str) -> list[str]:
        """Tokens before stop words and stemming: split, lowercased, folded, length-limited."""
        s = self.settings
        if s.ascii_folding:
            text = _fold(text)
        if s.lowercase:
            text = text.lower()
        tokens = text.split() if s.tokenizer == "whitespace" else _WORD.findall(text)
        lo, hi = s.min_token_len or 0, s.max_token_len
        return [t for t in tokens if len(t) >= lo and (hi is None or len(t) <= hi)]

    def terms(self, text: str) -> list[str]:
        """The words of `text`, in order, without the index's stop words (unstemmed)."""
        return self.terms_of(self.words(text))

    def terms_of(self, words: list[str]) -> list[str]:
        if self.settings.stopwords == "english":
            return [w for w in words if w not in ENGLISH_STOPWORDS]
        return list(words)
