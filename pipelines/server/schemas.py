"""What `rag serve` reads and writes: OpenAI's chat-completions shapes plus the RAG fields.

Requests are lenient where OpenAI clients are concerned (unknown top-level fields such as `n`,
`tools` or `user` are ignored, as every client sends its own mix) and strict in what is ours
(the `rag` object and /v1/search refuse unknown keys: a typo there would silently change the
search). Responses are the OpenAI shapes, so the official clients parse them, with extra
top-level fields that those clients keep in `model_extra`: the numbered `sources` the [n]
markers refer to, the `citations` and `grounding` checks every Answer gets, and which backend
answered and why.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from rag.answer.citations import citation_spans
from rag.models import Answer, Passage, SentenceSupport

Mode = Literal["dense", "bm25", "hybrid"]
# A collection is a folder of the store: no path separators, no "..", nothing hidden.
CollectionName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
Filters = list[str] | dict[str, str | int] | None

#: OpenAI's error `type` for each status (clients branch on it); `code` is ours and specific.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 409: "conflict_error",
               413: "invalid_request_error", 429: "rate_limit_error", 502: "upstream_error",
               503: "service_unavailable", 504: "upstream_error"}


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------- requests


class ContentPart(_Lenient):
    type: str
    text: str | None = None


class MessageIn(_Lenient):
    role: str
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The message's text: a string, or its text parts joined (images and the like are not
        read: retrieval and the prompt are text)."""
        if isinstance(self.content, list):
            return "\n".join(p.text for p in self.content if p.type == "text" and p.text)
        return self.content or ""


class RagOptions(_Strict):
    """The optional `rag` object of a chat request (`extra_body={"rag": {...}}` in the openai
    client): which collection, and how to retrieve for this one question."""

    collection: CollectionName | None = None
    mode: Mode | None = None
    top_k: int | None = Field(None, ge=1, le=100)
    filters: Filters = Field(None, description="key=value strings or a {key: value} object, as "
                             "`rag search --filter`: source, section, page=3 or 2-5, ...")


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatRequest(_Lenient):
    """POST /v1/chat/completions. `model` picks the collection when it names one that
    /v1/models lists; any other name (clients often send a fixed one) means the default."""

    model: str | None = None
    messages: list[MessageIn] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    rag: RagOptions = Field(default_factory=RagOptions)

    @field_validator("rag", mode="before")
    @classmethod
    def _no_rag_object(cls, value: Any) -> Any:
        return {} if value is None else value  # "rag": null is no options


class SearchRequest(_Strict):
    """POST /v1/search: what `rag search` takes; the answer is `rag search --json`'s."""

    query: str = Field(min_length=1, max_length=10_000)
    top_k: int | None = Field(None, ge=1, le=1000)
    mode: Mode | None = None
    filters: Filters = None
    collection: CollectionName | None = None
    explain: bool = False


# ---------------------------------------------------------------------------- responses


class Source(BaseModel):
    """A numbered passage of the prompt: what the answer's [n] refers to."""

    n: int
    source: str
    pages: str
    chunk_ids: list[str]
    text: str
    score: float

    @classmethod
    def of(cls, p: Passage) -> Source:
        return cls(n=p.number, source=p.source, pages=p.pages, chunk_ids=p.chunk_ids, text=p.text,
                   score=p.score)


class CitationSpan(BaseModel):
    """One citation marker of a text: text[start:end] is the marker ("[1, 2]", "[1-3]")."""

    start: int = Field(description="offset of the marker's '[', in Unicode code points (Python's "
                       "string indices; JavaScript's count UTF-16 units)")
    end: int = Field(description="offset just past its ']'")
    passages: list[int] = Field(description="the passage numbers it names, a list or range expanded")


class Citations(BaseModel):
    """An answer's citations, and where each marker stands in the text the client was sent (the
    message's content, or what a stream's content deltas made up), so that a client renders
    them without a citation grammar of its own."""

    valid: list[int] = Field(description="the [n] that name a passage, in order of first use")
    invalid: list[int] = Field(description="the [n] that name no passage of the prompt")
    spans: list[CitationSpan] = Field(description="every marker of the text sent, in order")

    @classmethod
    def of(cls, a: Answer, sent: str) -> Citations:
        spans = [CitationSpan(start=s.start, end=s.end, passages=list(s.passages)) for s in citation_spans(sent)]
        return cls(valid=a.cited, invalid=a.invalid_citations, spans=spans)


class Grounding(BaseModel):
    sentences: list[SentenceSupport]
    unsupported: int = Field(description="sentences stating a figure, date or name no cited passage holds")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str


class AnswerFields(BaseModel):
    """The RAG fields of a completion (and of a stream's last chunk)."""

    citations: Citations
    grounding: Grounding
    backend: str
    backend_origin: str | None
    kind: str = Field(description="generated, extractive, or none (nothing retrieved)")
    standalone_question: str | None = Field(description="the follow-up as rewritten for retrieval")
    notes: list[str]

    @classmethod
    def of(cls, a: Answer, notes: list[str], sent: str | None = None) -> AnswerFields:
        """`sent`: the text the client was sent, when it is not the answer's (a stream's deltas)."""
        return cls(citations=Citations.of(a, a.text if sent is None else sent),
                   grounding=Grounding(sentences=a.support, unsupported=len(a.unsupported)),
                   backend=a.backend, backend_origin=a.backend_origin, kind=a.kind,
                   standalone_question=a.standalone_question, notes=[*a.notes, *notes])


class ChatCompletion(AnswerFields):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    sources: list[Source]


class Delta(BaseModel):
    role: str | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "rag"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def error_detail(status: int, message: str, code: str | None = None) -> ErrorDetail:
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return ErrorDetail(message=message, type=kind, code=code)


def error_json(status: int, message: str, code: str | None = None) -> bytes:
    """The OpenAI error body for a status: {"error": {"message", "type", "code"}}."""
    return ErrorResponse(error=error_detail(status, message, code)).model_dump_json().encode()


def finish_reason(answer: Answer) -> str:
    """OpenAI's finish_reason: "length" when the answer hit max_tokens, else "stop"."""
    return "length" if answer.finish_reason == "length" else "stop"


class ChunkWriter:
    """The server-sent events of one streamed completion: every event a `chat.completion.chunk`
    with a `choices` array (empty only in the usage chunk, as OpenAI sends it), sources on the
    first, the checks and finish_reason on the last, then `data: [DONE]`. It keeps the text it
    sent: the last chunk's citation spans index into exactly that text, what a client that joins
    the content deltas holds (an answer that fell back to extracts after a failed generation
    is longer than Answer.text)."""

    def __init__(self, model: str):
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model
        self._sent: list[str] = []

    def _event(self, choices: list[ChunkChoice], **extra: Any) -> str:
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [c.model_dump(exclude_unset=True) for c in choices], **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def first(self, passages: list[Passage]) -> str:
        return self._event([ChunkChoice(delta=Delta(role="assistant", content=""), finish_reason=None)],
                           sources=[Source.of(p).model_dump() for p in passages])

    def text(self, piece: str) -> str:
        self._sent.append(piece)
        return self._event([ChunkChoice(delta=Delta(content=piece), finish_reason=None)])

    def last(self, answer: Answer, notes: list[str]) -> str:
        fields = AnswerFields.of(answer, notes, sent="".join(self._sent)).model_dump(mode="json")
        return self._event([ChunkChoice(delta=Delta(), finish_reason=finish_reason(answer))], **fields)

    def usage(self, usage: Usage) -> str:
        return self._event([], usage=usage.model_dump())

    def error(self, status: int, message: str, code: str | None) -> str:
        """A failure after the stream began: a chunk that says so (the openai client raises
        APIError on its `error` field), so a client never takes a cut answer for a whole one."""
        return self._event([ChunkChoice(delta=Delta(), finish_reason="error")],
                           error=error_detail(status, message, code).model_dump())

    @staticmethod
    def done() -> str:
        return "data: [DONE]\n\n"
