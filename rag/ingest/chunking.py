"""Token-aware chunking that prefers paragraph and sentence boundaries.

Sizes are counted in the encoder's own tokenizer, special tokens included, so a chunk never
exceeds the encoder's maximum sequence length: nothing is silently truncated at encoding time.
Sentences (by rag.text.sentences, the package's one rule) are packed greedily up to
`chunk_size`; the next chunk starts with the trailing sentences of the previous one that fit in
`chunk_overlap`. A sentence longer than a chunk is cut at token boundaries (at a space where one
is near). Markdown sections never share a chunk.

With `context` (the default), each chunk also carries its document's context (title and section,
rag.ingest.context) in front of the text that is embedded and indexed (Chunk.indexed_text). Its
tokens count against `chunk_size` like the text's: context + text fit the chunk size, special
tokens included, and the context is capped at a quarter of it. Chunk.text, and so the chunk id,
is cut from the document as without context.

With `sentence_vectors` (the default), each chunk also lists its units (rag.ingest.units:
sentences and lines, at most 128 tokens), which are embedded on their own beside it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rag.embed.protocol import Tokenizes  # the chunker's side of an encoder
from rag.errors import ConfigError
from rag.ingest.context import chunk_context, context_cap, cut_at_word, title_part
from rag.ingest.units import split_at_tokens, unit_spans
from rag.models import Chunk, Document
from rag.text.sentences import sentence_spans
from rag.text.tokens import count_tiktoken

CHUNK_NAMESPACE = uuid.UUID("6f1c2a4e-8d5b-4c1e-9a57-3b0e2f7d9c11")
PAGE_SEPARATOR = "\n\n"
DEFAULT_CHUNK_SIZE = 256  # encoder tokens, special tokens included
DEFAULT_CHUNK_OVERLAP = 32


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
    context: put the document's title and the chunk's section in front of what is embedded and
    indexed (Chunk.context, Chunk.indexed_text); False gives the chunks of before, context None.
    sentence_vectors: mark each chunk's units (rag.ingest.units, Chunk.units), which are
    embedded beside it; False gives the chunks of before, units None.
    """

    def __init__(self, chunk_size: int | None = DEFAULT_CHUNK_SIZE, chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
                 context: bool = True, sentence_vectors: bool = True):
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self.context = context
        self.sentence_vectors = sentence_vectors

    def to_dict(self) -> dict[str, Any]:
        return {"type": "Chunker",
                "init_parameters": {"chunk_size": self.chunk_size, "chunk_overlap": self.chunk_overlap,
                                    "context": self.context, "sentence_vectors": self.sentence_vectors}}

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
        contexts = _Contexts(doc, encoder, budget, special) if self.context else None
        # Content tokens left for the text of a section's chunks: the budget less its context's.
        room = {sec: budget - (contexts.reserve(sec) if contexts else 0) for _, _, _, sec in pages}
        units = self._units(text, pages, encoder, room, special)
        groups = self._pack(units, room)
        chunks = self._make_chunks(doc, text, groups, encoder, size, special, contexts)
        return chunks

    def _units(self, text, pages, encoder: Tokenizes, room: dict[str | None, int], special: int) -> list[_Unit]:
        raw: list[tuple[int, int, int, str | None, int]] = []
        for part, (start, end, number, section) in enumerate(pages):
            for s, e in sentence_spans(text[start:end], start):
                raw.append((s, e, number, section, part))
        counts = encoder.count_tokens([text[s:e] for s, e, _, _, _ in raw])
        units: list[_Unit] = []
        for (s, e, page, section, part), n in zip(raw, counts):
            n -= special
            budget = room[section]
            if n <= budget:
                units.append(_Unit(s, e, page, section, n, part))
            else:
                units.extend(_Unit(a, b, page, section, k, part)
                             for a, b, k in split_at_tokens(text, s, e, encoder, budget, special))
        return units

    def _pack(self, units: list[_Unit], room: dict[str | None, int]) -> list[list[_Unit]]:
        groups: list[list[_Unit]] = []
        current: list[_Unit] = []
        used = 0
        fresh = 0  # units in `current` not carried over as overlap
        for u in units:
            # a new Markdown section, even one with the same heading path as the last
            last = current[-1] if current else None
            boundary = last is not None and (u.section != last.section or (
                u.section is not None and u.part != last.part))
            budget = room[u.section]  # a chunk holds one section: its room is the chunk's
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
                     encoder: Tokenizes, size: int, special: int, contexts: _Contexts | None) -> list[Chunk]:
        def draft(g: list[_Unit]) -> Chunk:
            """The group's chunk with everything but its index and token counts."""
            start, end = g[0].start, g[-1].end
            body = text[start:end]
            return Chunk(id=chunk_id(doc.source, start, end, body), source=doc.source,
                         file_hash=doc.file_hash, chunk_index=0, page_start=g[0].page,
                         page_end=g[-1].page, section=g[0].section, char_start=start, char_end=end,
                         text=body, n_tokens=0, n_tiktoken=0,
                         context=None if contexts is None else contexts.of(g[0].section, body),
                         units=unit_spans(body, [(u.start - start, u.end - start, u.tokens) for u in g],
                                          encoder, special) if self.sentence_vectors else None)

        drafts = [draft(g) for g in groups]
        counts = encoder.count_tokens([c.indexed_text for c in drafts])
        # Joints can tokenize differently from the parts; re-split the rare group that overflows.
        fixed, fixed_counts = [], []
        for g, c, n in zip(groups, drafts, counts):
            if n <= size:
                fixed.append(c)
                fixed_counts.append(n)
                continue
            for part in _halve(g, lambda p: encoder.count_tokens([draft(p).indexed_text])[0], size):
                c = draft(part)
                fixed.append(c)
                fixed_counts.append(encoder.count_tokens([c.indexed_text])[0])
        tik = count_tiktoken([c.text for c in fixed])
        return [c.model_copy(update={"chunk_index": i, "n_tokens": n, "n_tiktoken": t})
                for i, (c, n, t) in enumerate(zip(fixed, fixed_counts, tik))]


class _Contexts:
    """The contexts of one document's chunks, capped to fit (rag.ingest.context), and how many
    content tokens each section must keep free for its chunks' context."""

    def __init__(self, doc: Document, encoder: Tokenizes, budget: int, special: int):
        self.title = title_part(doc.source, doc.title)
        self.encoder, self.special, self.cap = encoder, special, context_cap(budget)
        self._capped: dict[str, tuple[str, int]] = {}

    def _fit(self, raw: str) -> tuple[str, int]:
        """`raw` cut at a word to at most `cap` content tokens, and its content tokens."""
        if raw not in self._capped:
            ctx, limit = raw, self.cap
            n = self.encoder.count_tokens([ctx])[0] - self.special if ctx else 0
            while n > self.cap:  # a cut can tokenize differently: tighten until it fits
                ctx = cut_at_word(raw, self.encoder.token_offsets(raw), limit)
                n = self.encoder.count_tokens([ctx])[0] - self.special if ctx else 0
                limit -= 1
            self._capped[raw] = (ctx, n)
        return self._capped[raw]

    def reserve(self, section: str | None) -> int:
        """Content tokens a chunk of `section` keeps for its context: the longer of its two
        forms (with the title, and without it for a chunk that begins with the title), plus one
        for the blank line between context and text."""
        longest = max(self._fit(chunk_context(self.title, section, ""))[1],
                      self._fit(chunk_context(None, section, ""))[1])
        return longest + 1 if longest else 0

    def of(self, section: str | None, body: str) -> str:
        return self._fit(chunk_context(self.title, section, body))[0]


def _halve(group: list[_Unit], measure, size: int) -> list[list[_Unit]]:
    """Split `group` in halves until each part's chunk measures at most `size` tokens."""
    if len(group) == 1:
        return [group]  # a single unit was already cut to the budget by token offsets
    mid = len(group) // 2
    out = []
    for part in (group[:mid], group[mid:]):
        out.extend([part] if measure(part) <= size else _halve(part, measure, size))
    return out


def chunk_documents(docs: Sequence[Document], encoder: Tokenizes,
                    chunker: Chunker | None = None) -> list[Chunk]:
    """Convenience for scripts: all chunks of several documents."""
    chunker = chunker or Chunker()
    return [c for d in docs for c in chunker.split(d, encoder)]
