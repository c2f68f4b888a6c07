"""The collection schema shared by Qdrant Edge and Qdrant server, so both hold the same data.

- one named dense vector `dense` (cosine);
- payload: the chunk fields, keyword indexes on `source`, `file_hash` and `section`, integer
  indexes on `page_start` and `page_end`, and one full-text index scored by BM25: on `text` in a
  collection built without document context (CollectionInfo.context false: every collection made
  before it existed), on `index_text` (the chunk's context, a blank line, its text:
  Chunk.indexed_text) in one built with it, where `text` stays the plain text that is cited and
  `context` the context alone;
- `file_chunks`: how many chunks the file had when written (completeness check on re-ingest).
"""

from __future__ import annotations

from typing import Any

from rag.models import Chunk

DENSE = "dense"
TEXT_FIELD = "text"
INDEX_TEXT_FIELD = "index_text"  # context + text, BM25-indexed in a context collection
KEYWORD_FIELDS = ("source", "file_hash", "section")
INTEGER_FIELDS = ("page_start", "page_end")


def text_field(context: bool) -> str:
    """The payload field BM25 searches: index_text with document context, text without."""
    return INDEX_TEXT_FIELD if context else TEXT_FIELD


def chunk_payload(chunk: Chunk, file_chunks: int, context: bool = False) -> dict[str, Any]:
    """A chunk's payload. Without context exactly the chunk's fields as before context existed;
    with it also `context` and `index_text` (every point of such a collection has both, "" and
    the text when a chunk has no context, so that BM25 sees every chunk)."""
    payload = chunk.model_dump(exclude={"id", "context"})
    payload["file_chunks"] = file_chunks
    if context:
        payload["context"] = chunk.context or ""
        payload[INDEX_TEXT_FIELD] = chunk.indexed_text
    return payload


def payload_indexes(text_index, keyword, integer, context: bool = False) -> list[tuple[str, Any]]:
    """(field, index schema) for every indexed payload field, given each engine's spelling of a
    text index, a keyword index and an integer index, so both engines index the same fields."""
    return ([(text_field(context), text_index)] + [(f, keyword) for f in KEYWORD_FIELDS]
            + [(f, integer) for f in INTEGER_FIELDS])
