"""The collection schema shared by Qdrant Edge and Qdrant server, so both hold the same data.

- one named dense vector `dense` (cosine);
- payload: the chunk fields, `text` with a full-text index scored by BM25, keyword indexes on
  `source`, `file_hash` and `section`, integer indexes on `page_start` and `page_end`;
- `file_chunks`: how many chunks the file had when written (completeness check on re-ingest).
"""

from __future__ import annotations

from typing import Any

from rag.models import Chunk

DENSE = "dense"
TEXT_FIELD = "text"
KEYWORD_FIELDS = ("source", "file_hash", "section")
INTEGER_FIELDS = ("page_start", "page_end")


def chunk_payload(chunk: Chunk, file_chunks: int) -> dict[str, Any]:
    payload = chunk.model_dump(exclude={"id"})
    payload["file_chunks"] = file_chunks
    return payload



def payload_indexes(text_index, keyword, integer) -> list[tuple[str, Any]]:
    """(field, index schema) for every indexed payload field, given each engine's spelling of a
    text index, a keyword index and an integer index, so both engines index the same fields."""
    return ([(TEXT_FIELD, text_index)] + [(f, keyword) for f in KEYWORD_FIELDS]
            + [(f, integer) for f in INTEGER_FIELDS])
