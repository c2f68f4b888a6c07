"""The extractive fallback: with no LLM configured, answer with the most relevant sentences of
the top passages, quoted with their citations and labelled as extracts, not as a generated answer.

A sentence's relevance is its cosine similarity to the question (the same encoder that
retrieved the passages) plus a small share of lexical overlap with the question's words, so
that exact figures and names asked for count. Near-duplicate sentences are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from rag.embed.cache import VectorCache
from rag.embed.protocol import Encoder
from rag.models import Passage
from rag.text.sentences import split_sentences

HEADER = "Extracts from your documents (no LLM configured: quoted sentences, not a generated answer):"
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9$%.,'-]*[A-Za-z0-9%]|[A-Za-z0-9]")
_STOP = frozenset("""a an and are as at be by did do does for from had has have how in is it its of on or
the their this to was were what when where which who why will with would about after before
than that these those there""".split())


def _terms(text: str) -> set[str]:
    return {w.lower().strip(".,") for w in _WORD.findall(text)} - _STOP


def _overlap(query_terms: set[str], sentence_terms: set[str]) -> float:
    """Share of the query's words found in the sentence; a word also matches a longer word it
    begins (pool ~ pooling, revenue ~ revenues), from four letters on."""
    if not query_terms:
        return 0.0
    hits = sum(1 for q in query_terms
               if q in sentence_terms or (len(q) >= 4 and any(t.startswith(q) or (len(t) >= 4 and q.startswith(t))
                                                             for t in sentence_terms)))
    return hits / len(query_terms)


def extract(question: str | Sequence[str], passages: Sequence[Passage], encoder: Encoder, max_sentences: int = 3,
            min_words: int = 4, lexical_weight: float = 0.3, duplicate_cosine: float = 0.9,
            max_chars: int = 400, min_relative: float = 0.6,
            cache: VectorCache | None = None,
            known: Mapping[str, np.ndarray] | None = None) -> tuple[str, list[int]]:
    """Returns (text, cited passage numbers). `encoder` has `encode(texts) -> normalised vectors`.
    `question` may be several phrasings (a chat follow-up and its standalone rewrite): the
    semantic score is the mean over them, the lexical one uses the first. Sentences scoring
    below `min_relative` times the best one are not quoted. `cache`: the sentences' vectors
    are looked up there first (passages repeat across questions). `known`: vectors of
    phrasings already embedded (the search's query), by their stripped text; the others are
    embedded afresh, in a call of their own."""
    questions = [question] if isinstance(question, str) else list(question)
    candidates: list[tuple[str, int, int]] = []  # sentence, passage number, passage rank position
    for pos, p in enumerate(passages):
        for s in split_sentences(p.text):
            if len(s.split()) >= min_words:
                candidates.append((s if len(s) <= max_chars else s[:max_chars].rsplit(" ", 1)[0] + " …",
                                   p.number, pos))
    if not candidates:
        return "The retrieved passages contain no sentence to quote.", []
    known = known or {}
    missing = [p for p in questions if p.strip() not in known]
    fresh = dict(zip(missing, encoder.encode(missing))) if missing else {}
    q = np.stack([known[p.strip()] if p.strip() in known else fresh[p] for p in questions])
    sentences = [c[0] for c in candidates]
    sv = cache.encode(encoder, sentences) if cache is not None else encoder.encode(sentences)
    cos = (sv @ q.T).mean(axis=1)
    qt = _terms(questions[0])
    overlap = np.array([_overlap(qt, _terms(c[0])) for c in candidates])
    score = (1 - lexical_weight) * cos + lexical_weight * overlap
    chosen: list[int] = []
    best = float(score.max())
    for i in np.argsort(-score, kind="stable"):
        if chosen and float(score[i]) < min_relative * best:
            break
        if any(float(sv[i] @ sv[j]) >= duplicate_cosine for j in chosen):
            continue
        chosen.append(int(i))
        if len(chosen) == max_sentences:
            break
    lines = [HEADER, ""]
    cited: list[int] = []
    for k, i in enumerate(chosen, 1):
        sentence, number, _ = candidates[i]
        lines.append(f'{k}. "{sentence}" [{number}]')
        if number not in cited:
            cited.append(number)
    return "\n".join(lines), cited
