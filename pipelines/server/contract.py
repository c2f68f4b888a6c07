"""The OpenAPI document of `rag serve`, as true as the server (GET /openapi.json).

FastAPI writes what it can see: the JSON bodies' models and a 422 for their validation. The
server answers more than that, and differently, so the document is finished here:
- every status a route can answer is listed (`route_statuses`), each error with the one error
  shape, `{"error": {"message", "type", "code"}}` (`ErrorResponse`): 400 for every invalid
  request (JSON, query or path alike: the server never answers 422), 401 without the key (when
  the server has one: then every /v1 route declares the bearer scheme), 404, 409, 413 (bodies
  over the limit), 415 (an upload's file type or content), 429 (the client's share, with
  Retry-After), 500, 502 (the LLM), 503 (the store held by another process, with Retry-After),
  507 (the upload spool cannot be written);
- the upload's multipart body: `file` parts (1 to 20, each named with an accepted suffix, the
  per-file limit) and the optional `collection` field;
- a streamed chat answer's `text/event-stream` beside the JSON completion.
The request models (schemas.py) are as strict as the server's own checks, so that a request
the document allows is not refused with a 400. Method-not-allowed answers list every method
of the path in `Allow` (`allowed_methods`), not only those of the first route that matched it.
tests/test_server_contract.py runs schemathesis against a real server with every check on.
"""

from __future__ import annotations

import copy
from typing import Any

from pipelines.server import schemas as S

#: One event of a streamed answer (stream: true): its data a chat.completion.chunk as JSON, or
#: [DONE] last.
SSE_EVENT = {"type": "object", "required": ["data"],
             "properties": {"data": {"type": "string", "description": "a chat.completion.chunk (JSON), or [DONE]"},
                            "event": {"type": "string"}}}
VALIDATION_STATUS = 400  # every invalid request, whatever part of it is wrong
ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}}

#: What each error status means here.
ERROR_DESCRIPTIONS = {
    400: "invalid request: a JSON body, query or path value that does not fit the schema (never 422), a "
         "filter or setting the server cannot use, a malformed upload",
    401: "missing or wrong server key (send 'Authorization: Bearer KEY')",
    403: "this key (rag serve --keys) may read the collection but not write to it",
    404: "no such collection, document, job or route",
    409: "conflict: the collection exists already, is the served default, or was built with another encoder",
    413: "the request body (or one uploaded file, or the number of files) is over the limit",
    415: "an uploaded file's type (its name's suffix) is not accepted, or its content does not match it",
    429: "this client has too many requests or chats in flight: retry after Retry-After seconds",
    500: "internal error (the server log has the details)",
    502: "the LLM backend failed or stopped",
    503: "the store is held by another process: retry after Retry-After seconds",
    507: "the server cannot keep the upload (disk full, or its spool cannot be written): nothing was kept",
}

#: The statuses each route answers besides success and the ones every route shares (`route_statuses`).
ROUTE_ERRORS: dict[tuple[str, str], frozenset[int]] = {
    ("get", "/v1/models"): frozenset(),
    ("post", "/v1/search"): frozenset({404, 409, 503}),
    ("post", "/v1/chat/completions"): frozenset({404, 409, 502, 503}),
    ("post", "/v1/documents"): frozenset({403, 404, 409, 415, 503, 507}),
    ("get", "/v1/documents"): frozenset({404, 409, 503}),
    ("get", "/v1/jobs/{job_id}"): frozenset({404}),
    ("delete", "/v1/documents/{doc_id}"): frozenset({403, 404, 409, 503}),
    ("get", "/v1/collections"): frozenset(),
    ("post", "/v1/collections"): frozenset({403, 409, 503}),
    ("delete", "/v1/collections/{name}"): frozenset({403, 404, 409, 503}),
}


def route_statuses(method: str, path: str, operation: dict[str, Any], with_key: bool) -> list[int]:
    """The error statuses one operation can answer: 500 everywhere; on /v1 routes 429 (the
    client's share) and 401 when the server has a key; 400 wherever there is something to
    validate (a body, a parameter: the upload's body is read by the route itself); 413 for a
    body (the size limit); and the route's own (ROUTE_ERRORS)."""
    statuses = {500}
    if path.startswith("/v1/"):
        statuses |= {429} | ({401} if with_key else set())
    if operation.get("parameters") or operation.get("requestBody") or method == "post":
        statuses.add(VALIDATION_STATUS)
    if method == "post":
        statuses.add(413)
    statuses |= ROUTE_ERRORS.get((method, path), frozenset())
    return sorted(statuses)


def upload_body(max_upload_bytes: int) -> dict[str, Any]:
    """POST /v1/documents' body, as documents.py reads it."""
    from pipelines.server.documents import ALLOWED_SUFFIXES, MAX_UPLOAD_FILES

    suffixes = " ".join(ALLOWED_SUFFIXES)
    return {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "array", "minItems": 1, "maxItems": MAX_UPLOAD_FILES,
                     "items": {"type": "string", "format": "binary"},
                     "description": f"the files, one 'file' part each, at most {max_upload_bytes:,} bytes each. "
                                    f"A part's filename must end in one of {suffixes}, and its content must "
                                    "match: a PDF starts with %PDF-, a .docx is a zip, .txt/.md/.markdown "
                                    "are UTF-8 text and .html/.htm text without NUL bytes (415 otherwise). "
                                    "The filename's last component is the document's source label; two "
                                    "parts of one upload may not share it (400)."},
            "collection": {**_collection_schema(), "description": "the collection to add them to "
                                                                  "(default: the served one)"}}},
        "encoding": {"file": {"contentType": "application/pdf, text/plain, text/markdown, text/html, "
                                             "application/vnd.openxmlformats-officedocument.wordprocessingml.document, "
                                             "application/octet-stream"}}}}}


def _collection_schema() -> dict[str, Any]:
    from pydantic import TypeAdapter

    return TypeAdapter(S.CollectionName).json_schema()


def finish_document(spec: dict[str, Any], *, with_key: bool, max_upload_bytes: int) -> dict[str, Any]:
    """FastAPI's document (`spec`) made true to the server; a new dict."""
    spec = copy.deepcopy(spec)
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["ErrorDetail"] = {"type": "object", "required": ["message", "type", "code"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "code": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}
    schemas["ErrorResponse"] = {"type": "object", "required": ["error"],
                                "properties": {"error": {"$ref": "#/components/schemas/ErrorDetail"}},
                                "description": "every error: OpenAI's shape"}
    if with_key:
        components["securitySchemes"] = {"serverKey": {"type": "http", "scheme": "bearer",
                                                       "description": "the server key (--server-key-env)"}}
    for path, operations in spec.get("paths", {}).items():
        for method, op in operations.items():
            if (method, path) == ("post", "/v1/documents"):
                op["requestBody"] = upload_body(max_upload_bytes)
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            for status in route_statuses(method, path, op, with_key):
                response: dict[str, Any] = {"description": ERROR_DESCRIPTIONS[status],
                                            "content": {"application/json": {"schema": ERROR_REF}}}
                if status in (429, 503):
                    response["headers"] = RETRY_AFTER
                responses[str(status)] = response
            if (method, path) == ("post", "/v1/chat/completions"):
                responses["200"].setdefault("content", {})["text/event-stream"] = {"schema": SSE_EVENT}
            if with_key and path.startswith("/v1/"):
                op["security"] = [{"serverKey": []}]
    return spec


def allowed_methods(app, path: str) -> list[str]:
    """Every method some route of `app` takes at `path` (HEAD with GET, as Starlette answers it)."""
    methods: set[str] = set()
    for route in app.router.routes:
        regex, route_methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and route_methods and regex.match(path):
            methods |= set(route_methods)
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def install(app, *, with_key: bool, max_upload_bytes: int) -> None:
    """Serve the finished document at /openapi.json (built once, on first request)."""
    plain, finished = app.openapi, []

    def openapi() -> dict[str, Any]:
        if not finished:
            finished.append(finish_document(plain(), with_key=with_key, max_upload_bytes=max_upload_bytes))
        return finished[0]

    app.openapi = openapi
