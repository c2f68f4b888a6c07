"""The payload schema of a collection: the names of what each point holds, defined once.

Every engine (connectors.qdrant) writes and indexes these fields and the core reads and filters
them, so both spell a field with the constant here, never with a string of its own: a field
renamed here is renamed everywhere, and a field the core reads is one the engines write.

- one named dense vector, DENSE (cosine); in a collection with sentence vectors
  (CollectionInfo.sentence_vectors) also UNITS, a multivector (cosine, MAX_SIM) holding one
  vector per unit of the chunk (rag.ingest.units), whose spans UNIT_SPANS holds;
- the chunk's fields (rag.models.Chunk, its id and context aside), and FILE_CHUNKS: how many
  chunks the file had when written (the completeness check on re-ingest);
- keyword indexes on KEYWORD_FIELDS, integer indexes on INTEGER_INDEXED, and one full-text
  index scored by BM25 (text_field): on TEXT in a collection built without document context
  (CollectionInfo.context false: every collection made before it existed), on INDEX_TEXT (the
  chunk's context, a blank line, its text: Chunk.indexed_text) in one built with it, where
  TEXT stays the plain text that is cited and CONTEXT the context alone.
"""

from __future__ import annotations

from typing import Any

from rag.models import Chunk

DENSE = "dense"  # the named dense vector
UNITS = "units"  # a sentence-vector collection only: the multivector of the chunk's units

SOURCE = "source"
FILE_HASH = "file_hash"
CHUNK_INDEX = "chunk_index"
PAGE_START = "page_start"
PAGE_END = "page_end"
SECTION = "section"
CHAR_START = "char_start"
CHAR_END = "char_end"
TEXT = "text"  # the document's text, as cited
N_TOKENS = "n_tokens"
N_TIKTOKEN = "n_tiktoken"
FILE_CHUNKS = "file_chunks"
CONTEXT = "context"  # a context collection only: the chunk's document context
INDEX_TEXT = "index_text"  # a context collection only: context + text, what BM25 indexes
UNIT_SPANS = "unit_spans"  # a sentence-vector collection only: [start, end] of each unit in TEXT

#: Fields holding whole numbers (filters parse their values as integers).
INTEGER_FIELDS = (PAGE_START, PAGE_END, CHUNK_INDEX, CHAR_START, CHAR_END, N_TOKENS, N_TIKTOKEN,
                  FILE_CHUNKS)
#: Fields with a keyword index (matched by equality).
KEYWORD_FIELDS = (SOURCE, FILE_HASH, SECTION)
#: Integer fields with an integer index (page ranges are filtered on them).
INTEGER_INDEXED = (PAGE_START, PAGE_END)


def text_field(context: bool) -> str:
    """The payload field BM25 searches: INDEX_TEXT with document context, TEXT without."""
    return INDEX_TEXT if context else TEXT


def chunk_payload(chunk: Chunk, file_chunks: int, context: bool = False,
                  units: bool = False) -> dict[str, Any]:
    """A chunk's payload. Without context exactly the chunk's fields as before context existed;
    with it also CONTEXT and INDEX_TEXT (every point of such a collection has both, "" and the
    text when a chunk has no context, so that BM25 sees every chunk); with sentence vectors
    (`units`) also UNIT_SPANS."""
    payload = chunk.model_dump(exclude={"id", "context", "units"})
    payload[FILE_CHUNKS] = file_chunks
    if context:
        payload[CONTEXT] = chunk.context or ""
        payload[INDEX_TEXT] = chunk.indexed_text
    if units:
        payload[UNIT_SPANS] = [list(span) for span in chunk.units or ()]
    return payload


def payload_indexes(text_index: Any, keyword: Any, integer: Any, context: bool = False) -> list[tuple[str, Any]]:
    """(field, index schema) for every indexed payload field, given an engine's spelling of a
    text index, a keyword index and an integer index, so every engine indexes the same fields."""
    return ([(text_field(context), text_index)] + [(f, keyword) for f in KEYWORD_FIELDS]
            + [(f, integer) for f in INTEGER_INDEXED])
