"""A chunk's units: the pieces of its text that each get a vector of their own (issue 26).

The encoder (all-MiniLM-L6-v2: trained on sentence pairs at 128 tokens) sums a 256-token chunk
up in one mean-pooled vector, in which the one sentence that answers a question drowns. Each
unit is encoded on its own (pooling its tokens out of the chunk's pass does not help, measured
on SciFact), and the dense leg scores the chunk by its best unit beside the chunk vector
(rag.search.units).

The rule, over the chunk's text:
- its sentences, by the package's one sentence rule (rag.text.sentences; the chunker's own
  pieces of an over-long sentence stay pieces);
- a sentence that spans several lines (text with no sentence ends: table rows, list items) is
  one unit per non-blank line;
- a unit longer than `UNIT_TOKENS` content tokens is cut at token boundaries as the chunker cuts
  an over-long sentence.
Spans are (start, end) character offsets into Chunk.text. What is encoded for a unit
(Chunk.unit_texts) is a sentence alone, and a unit that does not end as a sentence (a table row,
a list item) after the chunk's document context and a blank line, as for the chunk.
"""

from __future__ import annotations

from collections.abc import Sequence

from rag.embed.protocol import Tokenizes

UNIT_TOKENS = 128  # content tokens: the encoder's training length


def unit_spans(text: str, sentences: Sequence[tuple[int, int, int]], encoder: Tokenizes, special: int,
               limit: int = UNIT_TOKENS) -> list[tuple[int, int]]:
    """The units of `text` (a chunk's text) given its sentences as (start, end, content tokens),
    offsets into `text`. Never empty for a text with a sentence."""
    out: list[tuple[int, int]] = []
    measure: list[tuple[int, int]] = []  # lines and long sentences: counted, cut when too long
    for start, end, tokens in sentences:
        if "\n" in text[start:end]:
            measure.extend(_lines(text, start, end))
        elif tokens <= limit:
            out.append((start, end))
        else:
            measure.append((start, end))
    counts = encoder.count_tokens([text[a:b] for a, b in measure]) if measure else []
    for (a, b), n in zip(measure, counts):
        if n - special <= limit:
            out.append((a, b))
        else:
            out.extend((x, y) for x, y, _ in split_at_tokens(text, a, b, encoder, limit, special))
    return sorted(out)


def _lines(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """(start, end) of each non-blank line of text[start:end], surrounding spaces left out."""
    out, pos = [], start
    for line in text[start:end].split("\n"):
        a = pos + len(line) - len(line.lstrip())
        b = pos + len(line.rstrip())
        if b > a:
            out.append((a, b))
        pos += len(line) + 1
    return out


def split_at_tokens(text: str, start: int, end: int, encoder: Tokenizes,
                    budget: int, special: int) -> list[tuple[int, int, int]]:
    """Cut text[start:end] (a sentence longer than a chunk, or a unit longer than UNIT_TOKENS)
    into (start, end, content tokens) pieces of at most `budget` content tokens, using the
    tokenizer's character offsets; a cut moves back to a space when one is within reach."""
    piece = text[start:end]
    offsets = encoder.token_offsets(piece)
    out, i, n = [], 0, len(offsets)
    while i < n:
        j = min(i + budget, n)
        if j < n:
            # back off to a token that starts a word, so words are not split
            k = j
            while k > i + budget // 2 and not (offsets[k][0] > 0 and piece[offsets[k][0] - 1].isspace()):
                k -= 1
            if k > i + budget // 2:
                j = k
        # A piece cut inside a word can take more tokens on its own ("##xy" becomes "x", "##y"):
        # count it as the encoder will see it and give back the excess.
        while True:
            a, b = offsets[i][0], offsets[j - 1][1]
            k = encoder.count_tokens([piece[a:b]])[0] - special
            if k <= budget or j - i == 1:
                break
            j -= min(k - budget, j - i - 1)
        out.append((start + a, start + b, k))
        i = j
    return out
