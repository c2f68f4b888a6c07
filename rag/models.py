"""Data models that cross module boundaries: documents, pages, chunks."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Page(BaseModel):
    """Cleaned text of one page (PDF) or one whole file (text); `section` for Markdown parts."""

    model_config = ConfigDict(frozen=True)

    number: int = Field(ge=1, description="1-based page number; 1 for non-paginated files")
    text: str
    section: str | None = None


class Document(BaseModel):
    """A loaded file: its cleaned pages plus what the loader noticed on the way."""

    source: str = Field(description="path of the file as given to the loader (resolved, POSIX)")
    file_hash: str = Field(description="sha256 of the file bytes")
    pages: list[Page]
    warnings: list[str] = Field(default_factory=list)


class Chunk(BaseModel):
    """A piece of a document small enough for the encoder, with everything needed to cite it."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="UUID derived from source, position and content: stable across runs")
    source: str
    file_hash: str
    chunk_index: int = Field(ge=0)
    page_start: int
    page_end: int
    section: str | None = None
    char_start: int = Field(description="offset into the document's cleaned text (pages joined by blank lines)")
    char_end: int
    text: str
    n_tokens: int = Field(description="length in the encoder's own tokenizer, special tokens included")
    n_tiktoken: int = Field(description="length in tiktoken (cl100k_base), for prompt budgets")
