"""Document routing: a query that names documents ("Apple's net sales in Q1 2023") is searched in
those documents only.

Questions over a collection of reports name a company and a period; those words name documents,
not content. A table chunk of Amazon's filing and one of Apple's hold the same words ("net
sales", "operating income"), so chunk retrieval alone fills the top 10 with every company's
tables. Routing decides, before chunk retrieval, which documents the query names, and restricts
the chunk search to them with a `source` filter (the mechanism of the user's filters).

- **Descriptors.** Each document (`source`) is described by its file name read as a title
  ("2023 Q3 AAPL") and its own title as its chunks' document context holds it ("Apple Inc. Form
  10-Q, quarterly period ended July 1, 2023"), split into words as the BM25 index tokenizes
  (rag.search.analyzer: "Apple's" -> "apple", "AMAZON.COM" -> "amazon" + "com"; stop words
  out, no stemming), with "first quarter" .. "fourth quarter" also read as q1 .. q4.
- **Name terms.** A descriptor word names documents when it is in at most half of the
  descriptors and, where the chunks' own text uses it, at least half of those chunks belong to
  the documents it describes, and at most a fifth of the other documents use it (in two chunks
  or more): "apple" (Apple's filings say "Apple", the others never) or "q3" (a file name's,
  and Apple's page footers') name documents; "attention", in the title of one paper of a
  paper collection and in the text of four of the six others, does not. Numbers, month names
  and legal forms ("Inc.", "Corporation") are never names.
- **Score.** A document scores, over the query terms its descriptor holds, the sum of their IDF
  over descriptors: first the name terms', then the others' (a year in a filing's title) to
  break ties. The documents with the best score are kept, every tie (all four Apple filings
  for "Apple's net sales over time"; the one `2023 Q1 AAPL` for "Apple ... Q1 2023").
- **Latest.** A query that asks for the "latest", "newest" or "most recent" one keeps, of the
  documents named, those of the latest period their descriptors give (the latest year, then
  the latest quarter: "2023 Q3"), when they give several.
- **When.** Only when the best documents hold a name term of the query, are a strict subset of
  those searched, and the collection's documents are long (at least MIN_MEAN_CHUNKS chunks on
  average): in a collection of abstracts (SciFact: one chunk a document, titles that are
  content), routing never engages. With a `source` filter, routing chooses among its sources.
- **Cache.** The descriptors are built from the store's payloads once, and built again when the
  collection changes: the store's write counter moves, or, where other processes may write (a
  Qdrant server), its point count does (counted at most once a second).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from rag.ingest.context import SECTION_JOIN, file_title
from rag.search.analyzer import Analyzer
from rag.search.payload import CONTEXT, SOURCE, TEXT
from rag.search.store import Condition, VectorStore

COUNT_SECONDS = 1.0  # a collection other processes write is counted at most this often
MIN_MEAN_CHUNKS = 8.0  # documents this long on average (chunks) before routing engages
MAX_NAME_DF = 0.5  # a name term is in at most this share of the descriptors
MIN_NAME_SHARE = 0.5  # of the chunks whose text holds the term, this share is in its documents
MAX_OTHER_USERS = 0.2  # of the other documents, at most this share use the term (in 2+ chunks)
_TIE = 1e-9

# Title words that say when or what kind, not whose: a period's month and day ("quarterly period
# ended July 1, 2023": the day is a number), a company's legal form. They break ties between
# documents a name chose, never choose documents themselves.
_NOT_NAMES = frozenset("""january february march april may june july august september october
november december jan feb mar apr jun jul aug sep sept oct nov dec inc incorporated corp
corporation co company ltd limited llc plc lp llp holdings group sa ag nv gmbh""".split())

_ORDINALS = {"first": "q1", "1st": "q1", "second": "q2", "2nd": "q2", "third": "q3", "3rd": "q3",
             "fourth": "q4", "4th": "q4"}


class RouteInfo(BaseModel):
    """What routing did for one query (SearchResponse.route)."""

    routed: bool = Field(description="the chunk search was restricted to `documents`")
    documents: list[str] = Field(default_factory=list, description="sources searched, when routed")
    terms: list[str] = Field(default_factory=list, description="the query's words that named them")
    considered: int = Field(0, description="documents routing chose among")
    reason: str = ""


def quarter_words(words: list[str]) -> list[str]:
    """`words` plus q1..q4 for each "first quarter" .. "fourth quarter" (also "first fiscal
    quarter"), so that a question's "first quarter of 2023" meets a file's "Q1 2023"."""
    extra = []
    for i, w in enumerate(words):
        if w in _ORDINALS:
            nxt = words[i + 1:i + 3]
            if nxt[:1] == ["quarter"] or nxt == ["fiscal", "quarter"]:
                extra.append(_ORDINALS[w])
    return words + extra


@dataclass
class Descriptor:
    source: str
    text: str
    terms: frozenset[str]
    chunks: int

    @property
    def period(self) -> tuple[int, int] | None:
        """When the document is of, as its descriptor says: (latest year, latest quarter or 0);
        None without a year. "2023 Q1 AAPL — ... period ended December 31, 2022" is (2023, 1)."""
        years = [int(t) for t in self.terms if len(t) == 4 and t.isdigit() and 1900 <= int(t) <= 2199]
        if not years:
            return None
        quarters = [int(t[1]) for t in self.terms if len(t) == 2 and t[0] == "q" and t[1] in "1234"]
        return max(years), max(quarters, default=0)


def asks_latest(words: list[str]) -> str | None:
    """The words by which a query asks for the latest document ("latest", "newest", "most
    recent"), as written; None when it does not."""
    for i, w in enumerate(words):
        if w in ("latest", "newest"):
            return w
        if w == "recent" and i > 0 and words[i - 1] == "most":
            return "most recent"
    return None


@dataclass
class DocumentIndex:
    """The descriptors of one state of a collection, with their statistics."""

    key: tuple
    documents: list[Descriptor] = field(default_factory=list)
    idf: dict[str, float] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)
    postings: dict[str, list[int]] = field(default_factory=dict)
    disabled: str | None = None  # why this collection is never routed


def document_title(contexts: Sequence[str]) -> str | None:
    """A document's title as its chunks' contexts hold it: the leading parts ("title > heading >
    ...") that at least half of its chunks share: the title part, and a heading above all the
    others (a Markdown file's "# Title"); None when no first part is that common (contexts of
    sections alone). A chunk that begins with the title has none; one without a section has
    the title alone."""
    paths = [[p.strip() for p in c.split(SECTION_JOIN)] for c in contexts if c and c.strip()]
    shared: list[str] = []
    while True:
        depth = len(shared) + 1
        heads = Counter(tuple(p[:depth]) for p in paths if len(p) >= depth and p[:depth - 1] == shared)
        if not heads:
            break
        head, n = heads.most_common(1)[0]
        if n * 2 < len(contexts):
            break
        shared = list(head)
    return " — ".join(shared) or None


class DocumentRouter:
    """Routes queries over one store's collection (see the module's docstring)."""

    def __init__(self, store: VectorStore, min_mean_chunks: float = MIN_MEAN_CHUNKS):
        self.store = store
        self.min_mean_chunks = min_mean_chunks
        # Query and descriptors are read alike, with stop words dropped whatever the collection's
        # index does (--no-stemming keeps them): a stop word never names a document.
        self.analyzer = Analyzer()
        self._index: DocumentIndex | None = None
        self._counted: tuple[int, object, float] | None = None  # (count, revision, when)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the cache
    def _key(self) -> tuple:
        """What says the collection changed: the store's revision where this handle is the only
        writer; else the point count too, counted at most every COUNT_SECONDS (or after a write
        through this handle), since counting on every query costs a store call each (an exact
        count: 0.2 ms at 1.7k points, holding the GIL in the embedded engine, more on a server)."""
        revision = self.store.revision
        if revision is not None and self.store.sole_writer:
            return (revision,)
        now = time.monotonic()
        counted = self._counted
        if counted is None or counted[1] != revision or now - counted[2] >= COUNT_SECONDS:
            counted = self._counted = (self.store.count(), revision, now)
        return counted[:2]

    def index(self) -> DocumentIndex:
        """The descriptors of the collection as it is now (rebuilt when it changed)."""
        key = self._key()
        index = self._index
        if index is not None and index.key == key:
            return index
        with self._lock:
            if self._index is None or self._index.key != key:
                self._index = self._build(key)
            return self._index

    def _build(self, key: tuple) -> DocumentIndex:
        chunks: Counter[str] = Counter(p.get(SOURCE, "") for _, p in self.store.payloads([SOURCE]))
        chunks.pop("", None)
        index = DocumentIndex(key=key)
        if len(chunks) < 2:
            index.disabled = "the collection holds fewer than two documents"
            return index
        mean = sum(chunks.values()) / len(chunks)
        if mean < self.min_mean_chunks:
            index.disabled = (f"documents are short ({mean:.1f} chunks on average, routing needs "
                              f"{self.min_mean_chunks:g}): their titles are content, not names")
            return index
        contexts: dict[str, list[str]] = defaultdict(list)
        texts: list[tuple[str, str]] = []
        for _, p in self.store.payloads([SOURCE, CONTEXT, TEXT]):
            source = p.get(SOURCE, "")
            if source:
                contexts[source].append(p.get(CONTEXT) or "")
                texts.append((source, p.get(TEXT) or ""))
        for source in sorted(chunks):
            name, title = file_title(source), document_title(contexts.get(source, []))
            words = self.analyzer.words
            text = (title if title and (not name or set(words(name)) <= set(words(title)))
                    else " — ".join(x for x in (name, title) if x))
            terms = frozenset(self.analyzer.terms_of(quarter_words(self.analyzer.words(text))))
            index.documents.append(Descriptor(source=source, text=text, terms=terms, chunks=chunks[source]))
        n = len(index.documents)
        df = Counter(t for d in index.documents for t in d.terms)
        index.idf = {t: math.log(n / c) for t, c in df.items()}
        for i, d in enumerate(index.documents):
            for t in d.terms:
                index.postings.setdefault(t, []).append(i)
        # Which minority terms the chunks' own text uses in their documents rather than elsewhere.
        by_source = {d.source: d.terms for d in index.documents}
        candidates = {t for t, c in df.items()
                      if c <= MAX_NAME_DF * n and not t.isdigit() and t not in _NOT_NAMES}
        own: Counter[str] = Counter()
        anywhere: Counter[str] = Counter()
        users: dict[str, Counter[str]] = defaultdict(Counter)  # term -> other document -> chunks
        for source, text in texts:
            held = candidates.intersection(self.analyzer.terms(text))
            anywhere.update(held)
            mine = held & by_source.get(source, frozenset())
            own.update(mine)
            for t in held - mine:
                users[t][source] += 1
        index.names = {t for t in candidates
                       if own[t] >= MIN_NAME_SHARE * anywhere[t]
                       and sum(c >= 2 for c in users[t].values()) <= MAX_OTHER_USERS * (n - df[t])}
        return index

    # ------------------------------------------------------------------ routing
    def route_batch(self, queries: Sequence[str], filters: Sequence[Condition] = ()) -> list[RouteInfo]:
        """`route` of each query, against one look at the collection's state."""
        index = self.index()
        return [self.route(q, filters, index) for q in queries]

    def route(self, query: str, filters: Sequence[Condition] = (), index: DocumentIndex | None = None) -> RouteInfo:
        """Which documents `query` names, among those the `source` filters allow."""
        index = index or self.index()
        if index.disabled:
            return RouteInfo(routed=False, reason=index.disabled)
        allowed = set(range(len(index.documents)))
        for c in filters:
            if c.key == SOURCE:
                values = set(c.any) if c.any is not None else {c.value}
                allowed &= {i for i, d in enumerate(index.documents) if d.source in values}
        considered = len(allowed)
        if considered < 2:
            return RouteInfo(routed=False, considered=considered,
                             reason="the filters leave fewer than two documents")
        words = quarter_words(self.analyzer.words(query))
        term_word: dict[str, str] = {}
        for w in words:
            for t in self.analyzer.terms_of([w]):
                term_word.setdefault(t, w)
        scores: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for t in term_word:
            weight = index.idf.get(t, 0.0)
            if weight <= 0:
                continue
            for i in index.postings.get(t, ()):
                if i in allowed:
                    scores[i][0 if t in index.names else 1] += weight
        if not scores:
            return RouteInfo(routed=False, considered=considered,
                             reason="no word of the query is in a minority of the document titles")
        best = max(scores.values())
        if best[0] <= 0:
            return RouteInfo(routed=False, considered=considered,
                             reason="the title words the query uses are content words, not names")
        chosen = [i for i, s in scores.items()
                  if abs(s[0] - best[0]) <= _TIE * max(1.0, best[0]) and abs(s[1] - best[1]) <= _TIE * max(1.0, best[1])]
        if len(chosen) >= considered:
            return RouteInfo(routed=False, considered=considered, reason="the query names every document")
        docs = [index.documents[i] for i in sorted(chosen)]
        held = [(t, w) for t, w in term_word.items()
                if index.idf.get(t, 0) > 0 and any(t in d.terms for d in docs)]
        matched = [w for _, w in held]
        names = [w for t, w in held if t in index.names]
        # "Apple's latest 10-Q": of the documents named, those of the latest period.
        latest = asks_latest(self.analyzer.words(query))
        periods = {d.period for d in docs} - {None}
        if latest and len(periods) > 1:
            last = max(periods)
            docs = [d for d in docs if d.period == last]
            matched.append(latest)
            names.append(latest)
        return RouteInfo(routed=True, documents=[d.source for d in docs], terms=list(dict.fromkeys(matched)),
                         considered=considered,
                         reason=f"{len(docs)} of {considered} documents named by "
                                + ", ".join(f"'{w}'" for w in dict.fromkeys(names or matched)))
