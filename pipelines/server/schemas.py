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

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictFloat,
                      StrictStr, StringConstraints, WithJsonSchema, field_validator, model_validator)

from pipelines.ingest_report import FileOutcome
from rag.answer.citations import citation_spans
from rag.models import Answer, Passage, SentenceSupport

Mode = Literal["dense", "bm25", "hybrid"]
# A collection is a folder of the store: no path separators, no "..", nothing hidden.
CollectionName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
def _json_integer(value: Any) -> Any:
    """A JSON integer as JSON Schema has it: an int, or a number with no fraction (3.0); never a
    string or a boolean (pydantic's lax mode would take "3" and true, which the schema refuses)."""
    if isinstance(value, bool | str):
        raise ValueError("must be an integer")
    return int(value) if isinstance(value, float) and value.is_integer() else value


def json_int(**bounds: int) -> Any:
    """An integer field's type with its bounds (given here, so the schema shows them)."""
    return Annotated[int, Field(**bounds), BeforeValidator(_json_integer)]

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
#: A string with something besides whitespace in it, as `str.strip` sees whitespace, written out so
#: that the schema's regex and the server's check agree on every character (regex flavours differ
#: on what \s is).
_SPACE = "".join(chr(c) for c in range(0x3001) if chr(c).isspace())
NON_BLANK = "[^" + "".join(f"\\u{ord(c):04x}" for c in _SPACE) + "]"
_NUMBER = "[0-9]{1,15}"  # whole numbers the store's integer fields take (and a JSON double holds exactly)
_MAX_NUMBER = 10 ** 15


def _filter_grammar() -> tuple[dict[str, str], str]:
    """The value pattern of each filter key (rag.search.retrieval.parse_filters' grammar), and the
    pattern of one `key=value` string."""
    from rag.search.retrieval import INTEGER_KEYS, PAGE_KEY, STRING_KEYS

    integer, page = f"{_NUMBER}(-{_NUMBER}|(,{_NUMBER})+)?", f"{_NUMBER}(-{_NUMBER})?"
    values = {key: f"^{integer}$" for key in sorted(INTEGER_KEYS)}
    values[PAGE_KEY] = f"^{page}$"
    values.update({key: NON_BLANK for key in sorted(STRING_KEYS)})
    item = (f"^(?:(?:{'|'.join(sorted(STRING_KEYS))})=[\\s\\S]*{NON_BLANK}|{PAGE_KEY}={page}$"
            f"|(?:{'|'.join(sorted(INTEGER_KEYS))})={integer}$)")
    return values, item


FILTER_VALUES, FILTER_ITEM = _filter_grammar()


def _ordered(raw: str | int) -> str | int:
    """A range `b-a` written high to low as `a-b` (JSON Schema cannot say a <= b, so the server
    takes either order)."""
    lo, sep, hi = str(raw).partition("-") if isinstance(raw, str) else ("", "", "")
    return f"{hi}-{lo}" if sep and lo.isdigit() and hi.isdigit() and int(hi) < int(lo) else raw


def _check_filters(value: Any) -> Any:
    """The server's check of `filters`, the schema's patterns applied as the schema says (search
    semantics, `$` the end of the string). A range is `a-b` (either order); a list of values
    `a,b,c`. Returns them with every range low to high."""
    import re

    def matches(pattern: str, text: str) -> bool:
        return re.search(pattern.replace("$", "\\Z"), text) is not None

    if isinstance(value, dict):
        pairs = list(value.items())
    else:
        pairs = [tuple(v.partition("=")[::2]) for v in value or []]
    for key, _ in pairs:
        if key not in FILTER_VALUES:
            raise ValueError(f"unknown filter key '{key[:40]}'; known keys: {', '.join(FILTER_VALUES)}")
    for item in [] if isinstance(value, dict) else value or []:
        if not matches(FILTER_ITEM, item):
            raise ValueError(f"filter '{item[:80]}' is not key=value with a value its key takes")
    for i, (key, raw) in enumerate(pairs):
        if isinstance(raw, float) and raw.is_integer():  # JSON's 3.0 is the integer 3
            raw = int(raw)
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise ValueError(f"filter {key}: give a string or a whole number")
        if isinstance(raw, int) and FILTER_VALUES[key] != NON_BLANK and not 0 <= raw < _MAX_NUMBER:
            raise ValueError(f"filter {key}: {raw} is not a whole number from 0")
        pairs[i] = (key, raw)
        if not matches(FILTER_VALUES[key], str(raw)):
            raise ValueError(f"filter {key}: '{str(raw)[:40]}' is not a value it takes")
    if isinstance(value, dict):
        return {k: v if FILTER_VALUES[k] == NON_BLANK else _ordered(v) for k, v in pairs}
    if value:
        return [f"{k}={v if FILTER_VALUES[k] == NON_BLANK else _ordered(v)}" for k, v in pairs]
    return value


def _filters_schema() -> dict[str, Any]:
    def value(key: str) -> dict[str, Any]:
        text = {"type": "string", "pattern": FILTER_VALUES[key]}
        number = {"type": "integer"} if FILTER_VALUES[key] == NON_BLANK else \
            {"type": "integer", "minimum": 0, "maximum": _MAX_NUMBER - 1}
        return {"anyOf": [text, number]}

    return {"anyOf": [
        {"type": "array", "items": {"type": "string", "pattern": FILTER_ITEM}},
        {"type": "object", "propertyNames": {"enum": list(FILTER_VALUES)},
         "properties": {k: value(k) for k in FILTER_VALUES}},
        {"type": "null"}],
        "description": "key=value strings or a {key: value} object, as `rag search --filter`: source, section, "
                       "file_hash (any text; a,b for either), page (3 or 2-5), integer fields (a number, a range "
                       "a-b in either order, or a,b,c)."}


Filters = Annotated[list[StrictStr] | dict[str, Any] | None, AfterValidator(_check_filters),
                    WithJsonSchema(_filters_schema())]
_TEXT_PART = {"type": "object", "required": ["type", "text"],
              "properties": {"type": {"const": "text"}, "text": {"type": "string", "pattern": NON_BLANK}}}

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
    """A message; a user's must have text (a non-blank string, or a text part with some)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={
        "if": {"properties": {"role": {"const": "user"}}},
        "then": {"required": ["content"], "properties": {"content": {"anyOf": [
            {"type": "string", "pattern": NON_BLANK}, {"type": "array", "contains": _TEXT_PART}]}}}})

    role: Role
    content: str | list[ContentPart] | None = None

    @model_validator(mode="after")
    def _user_has_text(self) -> MessageIn:
        if self.role == "user" and not self.text().strip():
            raise ValueError("a user message needs text (a non-blank string, or a text part with some)")
        return self

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
    top_k: json_int(ge=1, le=100) | None = None
    filters: Filters = None


class StreamOptions(_Lenient):
    include_usage: StrictBool = False


class ChatRequest(_Lenient):
    """POST /v1/chat/completions. `model` picks the collection when it names one that
    /v1/models lists; any other name (clients often send a fixed one) means the default."""

    model: str | None = None
    messages: list[MessageIn] = Field(min_length=1, description="the question is the last user message; "
                                      "the user and assistant turns before it are the conversation",
                                      json_schema_extra={"contains": {"required": ["role"],
                                                                      "properties": {"role": {"const": "user"}}}})
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    temperature: StrictFloat | None = Field(None, ge=0, le=2)
    max_tokens: json_int(ge=1) | None = None
    max_completion_tokens: json_int(ge=1) | None = None
    rag: RagOptions | None = Field(default_factory=RagOptions, description="null is no options")

    @field_validator("rag", mode="before")
    @classmethod
    def _no_rag_object(cls, value: Any) -> Any:
        return {} if value is None else value  # "rag": null is no options

    @field_validator("messages")
    @classmethod
    def _a_question(cls, value: list[MessageIn]) -> list[MessageIn]:
        if not any(m.role == "user" for m in value):
            raise ValueError("no user message: the last user message is the question")
        return value


class SearchRequest(_Strict):
    """POST /v1/search: what `rag search` takes; the answer is `rag search --json`'s."""

    query: str = Field(min_length=1, max_length=10_000)
    top_k: json_int(ge=1, le=1000) | None = None
    mode: Mode | None = None
    filters: Filters = None
    collection: CollectionName | None = None
    explain: StrictBool = False


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


# ---------------------------------------------------------------------------- the server's own answers
# What the routes beyond OpenAI's answer, declared in the OpenAPI document (and checked against
# every answer by tests/test_server_contract.py) and used to build those answers, so the two
# cannot drift apart. Errors are ErrorResponse everywhere.


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class UploadedFile(BaseModel):
    source: str = Field(description="the document's source label: the uploaded file's name")
    id: str = Field(description="the document's id (DELETE /v1/documents/{id})")


class UploadAccepted(BaseModel):
    """POST /v1/documents, 202: the files are on the server's disk and their job is queued."""

    job_id: str = Field(description="poll GET /v1/jobs/{job_id}")
    status: Literal["queued"] = "queued"
    collection: str
    files: list[UploadedFile]


class JobView(BaseModel):
    """GET /v1/jobs/{job_id}: an ingest job and, once it ended, each file's outcome."""

    job_id: str
    status: Literal["queued", "running", "done", "failed"]
    collection: str
    files: list[str] = Field(description="the files' source labels")
    outcomes: list[FileOutcome] = Field(description="one per file once the job is done")
    chunks_written: int
    total_points: int | None = Field(description="the collection's points after the job")
    error: str | None = Field(description="why the job failed (status failed)")
    created: float = Field(description="Unix time the upload was accepted")
    started: float | None
    finished: float | None
    notes: list[str] = Field(description="e.g. that the job ran again after a restart")


class DocumentInfo(BaseModel):
    id: str
    source: str
    chunks: int


class DocumentList(BaseModel):
    object: Literal["list"] = "list"
    collection: str
    data: list[DocumentInfo]


class DocumentDeleted(BaseModel):
    id: str
    source: str
    chunks: int = Field(description="chunks removed")
    collection: str
    deleted: Literal[True] = True


class CollectionInfo(BaseModel):
    """A collection; a listed one that cannot be opened (another process holds it, another
    encoder built it) has `error` instead of its settings."""

    id: str
    object: Literal["collection"] = "collection"
    default: bool = Field(description="where a request naming no collection goes")
    points: int | None = None
    model: str | None = None
    dimension: int | None = None
    chunk_size: int | None = None
    chunk_overlap: int | None = None
    error: str | None = None


class CollectionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CollectionInfo]


class CollectionDeleted(BaseModel):
    id: str
    object: Literal["collection"] = "collection"
    deleted: Literal[True] = True
    points: int = Field(description="points it held")


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
