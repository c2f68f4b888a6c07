"""Data models that cross module boundaries: documents, pages, chunks."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from rag.text.sentences import ends_a_sentence

CONTEXT_SEPARATOR = "\n\n"  # between a chunk's context and its text in Chunk.indexed_text


def page_label(start: int, end: int) -> str:
    """How a page range is shown and cited: "3" for one page, "3-5" for several. One function, so
    that the prompt, the answer's sources and the search results name pages alike."""
    return str(start) if start == end else f"{start}-{end}"


class Page(BaseModel):
    """Cleaned text of one page (PDF) or one whole file (text); `section`: the heading path it sits
    under (Markdown/HTML/DOCX headings, the PDF outline), when known."""

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
    title: str | None = Field(None, description="the document's title as the loader found it "
                              "(metadata, first heading); None when it found none")
    ocr_pages: int = Field(0, description="pages whose text was read by OCR")


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
    text: str = Field(description="the document's text, as cited and put in prompts (never the context)")
    n_tokens: int = Field(description="length of indexed_text (what is embedded) in the encoder's own "
                          "tokenizer, special tokens included")
    n_tiktoken: int = Field(description="length of text in tiktoken (cl100k_base), for prompt budgets")
    context: str | None = Field(None, description="the document context put in front of the text "
                                "that is embedded and indexed (rag.ingest.context): None when the "
                                "chunker ran without context, '' when it had nothing to say")
    units: list[tuple[int, int]] | None = Field(None, description="(start, end) offsets into text "
                                                "of the units that get a vector each "
                                                "(rag.ingest.units); None when the chunker made none")

    @property
    def indexed_text(self) -> str:
        """What is embedded and indexed for BM25: the context, a blank line, the text (the blank
        line as in a BEIR passage's title and text); the text alone without a context."""
        return self.with_context(self.text)

    @property
    def unit_texts(self) -> list[str]:
        """What is embedded for each unit: a sentence alone, and a unit that does not end as a
        sentence does (a table row, a list item, a heading) after the context, as indexed_text is
        made from the chunk's text. Measured: on the 10-Q tables a row needs its filing's name
        (figure recall 0.328 without, 0.560 with), while a short sentence drowns under a long
        title ("Our default pooling strategy is MEAN." has cosine 0.661 to the question asked
        of it alone, 0.169 behind the paper's file name and title)."""
        units = [self.text[a:b] for a, b in self.units or ()]
        return [u if ends_a_sentence(u) else self.with_context(u) for u in units]

    def with_context(self, text: str) -> str:
        return f"{self.context}{CONTEXT_SEPARATOR}{text}" if self.context else text


class Passage(BaseModel):
    """One numbered passage of a prompt: a retrieved chunk, or several overlapping chunks of the
    same file merged. `number` is what the answer cites as [number]."""

    number: int = Field(ge=1)
    text: str
    source: str
    page_start: int
    page_end: int
    section: str | None = None
    score: float = Field(description="retrieval score of its best chunk")
    rank: int = Field(description="retrieval rank of its best chunk")
    chunk_ids: list[str] = Field(default_factory=list)
    n_tokens: int = Field(0, description="tiktoken length of the passage block in the prompt")
    truncated: bool = Field(False, description="cut to fit the token budget (said in the prompt notes)")

    @property
    def pages(self) -> str:
        return page_label(self.page_start, self.page_end)


class SentenceSupport(BaseModel):
    """How one answer sentence fares. `index` is 1-based (as notes show it); `cited` its valid
    citations; `terms` what was checked (as written), [] when nothing was; `missing` the terms no
    checked passage holds; `checked_against` the passages looked in (the cited ones, or all when it
    cites none; [] when there was nothing to check); `found_in` the passages, cited or not, that
    hold every term (for an uncited sentence: what it could have cited)."""

    index: int = Field(ge=1)
    text: str
    cited: list[int] = Field(default_factory=list)
    terms: list[str] = Field(default_factory=list)
    supported: bool
    missing: list[str] = Field(default_factory=list)
    checked_against: list[int] = Field(default_factory=list)
    found_in: list[int] = Field(default_factory=list)


class Answer(BaseModel):
    """An answer and what it rests on. `passages` are those that were in the prompt; the answer's
    [k] citations are checked against them after generation."""

    question: str
    standalone_question: str | None = Field(None, description="the follow-up rewritten for retrieval (chat)")
    text: str
    kind: str = Field(description="'generated' by an LLM, or 'extractive' (sentences quoted, no LLM)")
    backend: str
    backend_origin: str | None = Field(None, description="how the backend was chosen (e.g. by llm = 'auto')")
    passages: list[Passage] = Field(default_factory=list)
    cited: list[int] = Field(default_factory=list, description="valid citation numbers, in order of first use")
    invalid_citations: list[int] = Field(default_factory=list, description="[k] that name no passage in the prompt")
    prompt_tokens: int = 0
    finish_reason: str | None = None
    seconds: float = 0.0
    notes: list[str] = Field(default_factory=list)
    support: list[SentenceSupport] = Field(default_factory=list, description="per sentence: are the figures, "
                                           "dates and names it states in a passage it cites (grounding check)")

    @property
    def unsupported(self) -> list[SentenceSupport]:
        return [s for s in self.support if not s.supported]

    @property
    def cited_passages(self) -> list[Passage]:
        by_number = {p.number: p for p in self.passages}
        return [by_number[n] for n in self.cited]

    @property
    def uncited_passages(self) -> list[Passage]:
        cited = set(self.cited)
        return [p for p in self.passages if p.number not in cited]

    @property
    def citations_valid(self) -> bool:
        """True when the answer cites at least one passage and every citation is in range."""
        return bool(self.cited) and not self.invalid_citations
