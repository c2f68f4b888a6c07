"""The words that set a group of texts apart from the rest: each group's top terms by summed
BM25 weight, the labels `rag cluster` prints.

For a term t in text d of a corpus of N texts (Robertson & Zaragoza, "The Probabilistic
Relevance Framework: BM25 and Beyond", 2009, eq. 3.26, with Lucene's non-negative IDF):

    w(t, d) = idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t)  = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

and a group's score for t is the sum of w(t, d) over its texts: a term scores high when many of
the group's texts use it and few texts overall do (the class-based TF-IDF idea of BERTopic,
Grootendorst 2022, with BM25's saturation and length norm in place of raw counts). Words are
lower-cased runs of letters and digits (apostrophes and inner hyphens kept), English stop words
and pure numbers dropped. A plural in -s counts with its singular ("markets" with "market") and
the group shows the form its texts use most; no other stemming, so labels are words as written.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

K1, B = 1.2, 0.75

_WORD = re.compile(r"[^\W_](?:[\w'’-]*[^\W_])?")
STOP_WORDS = frozenset("""
a about above after again against all am an and any are aren't as at be because been before being below
between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each
few for from further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself
him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself let's me more most mustn't
my myself no nor not of off on once only or other ought our ours ourselves out over own same shan't she she'd
she'll she's should shouldn't so some such than that that's the their theirs them themselves then there there's
these they they'd they'll they're they've this those through to too under until up very was wasn't we we'd we'll
we're we've were weren't what what's when when's where where's which while who who's whom why why's will with
won't would wouldn't you you'd you'll you're you've your yours yourself yourselves also may might must shall
however thus therefore within without via per among upon whether yet us one two three
""".split())


def words(text: str) -> list[str]:
    """The words of a text that can label it: lower-cased, no stop words, no bare numbers."""
    out = []
    for w in _WORD.findall(text.lower()):
        w = w.replace("’", "'")
        w = w.removesuffix("'s")
        if len(w) > 1 and w not in STOP_WORDS and not w.replace("-", "").isdigit():
            out.append(w)
    return out


def _key(word: str) -> str:
    """The form a word is counted under: a plural -s dropped (not -ss, -us, -is, nor short words)."""
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is", "'")):
        return word[:-1]
    return word


def top_terms(texts: Sequence[str], groups: Sequence[Sequence[int]], k: int = 8) -> list[list[tuple[str, float]]]:
    """For each group (indices into `texts`), its k terms of highest summed BM25 weight, best first
    (ties: alphabetical), with the weight. The IDF and average length are over all `texts`."""
    if k <= 0:
        return [[] for _ in groups]
    wanted = {i for g in groups for i in g}
    df: Counter[str] = Counter()
    lengths = []
    bags: dict[int, Counter[str]] = {}
    surface: dict[int, list[str]] = {}
    for i, text in enumerate(texts):
        ws = words(text)
        lengths.append(len(ws))
        bag = Counter(_key(w) for w in ws)
        df.update(bag.keys())
        if i in wanted:
            bags[i], surface[i] = bag, ws
    n = len(texts)
    avgdl = (sum(lengths) / n) if n and sum(lengths) else 1.0
    idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
    out = []
    for g in groups:
        score: dict[str, float] = {}
        forms: Counter[str] = Counter()
        for i in g:
            norm = K1 * (1 - B + B * lengths[i] / avgdl)
            for t, tf in bags[i].items():
                score[t] = score.get(t, 0.0) + idf[t] * tf * (K1 + 1) / (tf + norm)
            forms.update(surface[i])
        shown = {}
        for w, c in sorted(forms.items(), key=lambda wc: (-wc[1], wc[0])):
            shown.setdefault(_key(w), w)
        best = sorted(score.items(), key=lambda kv: (-kv[1], shown[kv[0]]))[:k]
        out.append([(shown[t], round(s, 4)) for t, s in best])
    return out
