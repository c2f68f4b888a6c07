"""Token-aware chunking that prefers paragraph and sentence boundaries.

Sizes are counted in the encoder's own tokenizer, special tokens included, so a chunk never
exceeds the encoder's maximum sequence length: nothing is silently truncated at encoding time.
Sentences (by rag.text.sentences, the package's one rule) are packed greedily up to
`chunk_size`; the next chunk starts with the trailing sentences of the previous one that fit in
`chunk_overlap`. A sentence longer than a chunk is cut at token boundaries (at a space where one
is near). Markdown sections never share a chunk.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rag.errors import ConfigError
from rag.models import Chunk, Document
from rag.text.sentences import sentence_spans
from rag.text.tokens import count_tiktoken

CHUNK_NAMESPACE = uuid.UUID("6f1c2a4e-8d5b-4c1e-9a57-3b0e2f7d9c11")
PAGE_SEPARATOR = "\n\n"
DEFAULT_CHUNK_SIZE = 256  # encoder tokens, special tokens included
DEFAULT_CHUNK_OVERLAP = 32


class Tokenizes(Protocol):
    """What the chunker needs from an encoder."""

    max_seq_length: int | None

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def token_offsets(self, text: str) -> list[tuple[int, int]]: ...


@dataclass
class _Unit:
    start: int
    end: int
    page: int
    section: str | None
    tokens: int  # content tokens, without the special tokens
    part: int = 0  # index of the document part (page or Markdown section) it comes from


def chunk_id(source: str, char_start: int, char_end: int, text: str) -> str:
    """Stable identity from position and content: re-ingesting the same file gives the same ids."""
    return str(uuid.uuid5(CHUNK_NAMESPACE, f"{source}\x00{char_start}\x00{char_end}\x00{text}"))


def document_text(doc: Document) -> tuple[str, list[tuple[int, int, int, str | None]]]:
    """The document's text (pages joined by a blank line) and (start, end, page, section) spans."""
    parts, spans, pos = [], [], 0
    for page in doc.pages:
        if parts:
            parts.append(PAGE_SEPARATOR)
            pos += len(PAGE_SEPARATOR)
        parts.append(page.text)
        spans.append((pos, pos + len(page.text), page.number, page.section))
        pos += len(page.text)
    return "".join(parts), spans


class Chunker:
    """Split documents into chunks of at most `chunk_size` encoder tokens (special tokens included).

    chunk_size: None uses the encoder's max_seq_length.
    chunk_overlap: tokens of trailing sentences repeated at the start of the next chunk.
    """

    def __init__(self, chunk_size: int | None = DEFAULT_CHUNK_SIZE, chunk_overlap: int = DEFAULT_CHUNK_OVERLAP):
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap

    def to_dict(self) -> dict[str, Any]:
        return {"type": "Chunker",
                "init_parameters": {"chunk_size": self.chunk_size, "chunk_overlap": self.chunk_overlap}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Chunker:
        return cls(**data.get("init_parameters", {}))

    def limits(self, encoder: Tokenizes) -> tuple[int, int]:
        """(chunk size, special-token count) after checking the settings against the encoder."""
        special = encoder.count_tokens([""])[0]  # also loads the tokenizer, resolves max_seq_length
        max_len = encoder.max_seq_length or 512
        size = self.chunk_size or max_len
        if size > max_len:
            raise ConfigError(f"chunk_size {size} exceeds the encoder's max_seq_length {max_len}: "
                              "chunks would be truncated when embedded; use chunk_size <= "
                              f"{max_len}")
        if size - special < 8:
            raise ConfigError(f"chunk_size {size} is too small (the encoder adds {special} special tokens)")
        if not 0 <= self.chunk_overlap < (size - special) // 2:
            raise ConfigError(f"chunk_overlap {self.chunk_overlap} must be >= 0 and below half "
                              f"of chunk_size ({size})")
        return size, special

    # ------------------------------------------------------------------ main entry
    def split(self, doc: Document, encoder: Tokenizes) -> list[Chunk]:
        size, special = self.limits(encoder)
        budget = size - special
        text, pages = document_text(doc)
        units = self._units(text, pages, encoder, budget, special)
        groups = self._pack(units, budget)
        chunks = self._make_chunks(doc, text, groups, encoder, size)
        return chunks

    def _units(self, text, pages, encoder: Tokenizes, budget: int, special: int) -> list[_Unit]:
        raw: list[tuple[int, int, int, str | None, int]] = []
        for part, (start, end, number, section) in enumerate(pages):
            for s, e in sentence_spans(text[start:end], start):
                raw.append((s, e, number, section, part))
        counts = encoder.count_tokens([text[s:e] for s, e, _, _, _ in raw])
        units: list[_Unit] = []
        for (s, e, page, section, part), n in zip(raw, counts):
            n -= special
            if n <= budget:
                units.append(_Unit(s, e, page, section, n, part))
            else:
                units.extend(_Unit(a, b, page, section, k, part)
                             for a, b, k in _split_long(text, s, e, encoder, budget, special))
        return units

    def _pack(self, units: list[_Unit], budget: int) -> list[list[_Unit]]:
        groups: list[list[_Unit]] = []
        current: list[_Unit] = []
        used = 0
        fresh = 0  # units in `current` not carried over as overlap
        for u in units:
            # a new Markdown section, even one with the same heading path as the last
            last = current[-1] if current else None
            boundary = last is not None and (u.section != last.section or (
                u.section is not None and u.part != last.part))
            # +1 per joint: a space between sentences can cost a token in some tokenizers
            if current and (boundary or used + u.tokens + 1 > budget):
                if fresh:
                    groups.append(current)
                current, used = ([] if boundary else self._overlap(current)), 0
                used = sum(x.tokens + 1 for x in current)
                fresh = 0
                if used + u.tokens + 1 > budget:  # overlap leaves no room: drop it
                    current, used = [], 0
            current.append(u)
            used += u.tokens + 1
            fresh += 1
        if current and fresh:
            groups.append(current)
        return groups

    def _overlap(self, group: list[_Unit]) -> list[_Unit]:
        kept, total = [], 0
        for u in reversed(group):
            if total + u.tokens > self.chunk_overlap:
                break
            kept.insert(0, u)
            total += u.tokens + 1
        return kept if len(kept) < len(group) else []

    def _make_chunks(self, doc: Document, text: str, groups: list[list[_Unit]],
                     encoder: Tokenizes, size: int) -> list[Chunk]:
        bodies = [text[g[0].start:g[-1].end] for g in groups]
        counts = encoder.count_tokens(bodies)
        # Joints can tokenize differently from the parts; re-split the rare group that overflows.
        fixed_groups, fixed_bodies, fixed_counts = [], [], []
        for g, body, n in zip(groups, bodies, counts):
            if n <= size:
                fixed_groups.append(g)
                fixed_bodies.append(body)
                fixed_counts.append(n)
                continue
            for part in _halve(g, text, encoder, size):
                fixed_groups.append(part)
                b = text[part[0].start:part[-1].end]
                fixed_bodies.append(b)
                fixed_counts.append(encoder.count_tokens([b])[0])
        tik = count_tiktoken(fixed_bodies)
        chunks = []
        for i, (g, body, n, t) in enumerate(zip(fixed_groups, fixed_bodies, fixed_counts, tik)):
            start, end = g[0].start, g[-1].end
            chunks.append(Chunk(
                id=chunk_id(doc.source, start, end, body), source=doc.source,
                file_hash=doc.file_hash, chunk_index=i, page_start=g[0].page,
                page_end=g[-1].page, section=g[0].section, char_start=start, char_end=end,
                text=body, n_tokens=n, n_tiktoken=t))
        return chunks


def _halve(group: list[_Unit], text: str, encoder: Tokenizes, size: int) -> list[list[_Unit]]:
    if len(group) == 1:
        return [group]  # a single unit was already cut to the budget by token offsets
    mid = len(group) // 2
    out = []
    for part in (group[:mid], group[mid:]):
        n = encoder.count_tokens([text[part[0].start:part[-1].end]])[0]
        out.extend([part] if n <= size else _halve(part, text, encoder, size))
    return out


def _split_long(text: str, start: int, end: int, encoder: Tokenizes,
                budget: int, special: int) -> list[tuple[int, int, int]]:
    """Cut one over-long sentence into pieces of at most `budget` content tokens, using the
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


def chunk_documents(docs: Sequence[Document], encoder: Tokenizes,
                    chunker: Chunker | None = None) -> list[Chunk]:
    """Convenience for scripts: all chunks of several documents."""
    chunker = chunker or Chunker()
    return [c for d in docs for c in chunker.split(d, encoder)]
