"""Document management of `rag serve`: uploads, ingest jobs, the document list, deletion.

    POST   /v1/documents         multipart: one or more `file` fields, optional `collection`
                                 -> 202 {"job_id", "status": "queued", "collection", "files"}
    GET    /v1/jobs/{id}         state (queued, running, done, failed), FileOutcome per file,
                                 chunks_written, total_points, error
    GET    /v1/documents         ?collection= : the sources, each {"id", "source", "chunks"}
    DELETE /v1/documents/{id}    removes that source's chunks (id from GET /v1/documents)

Uploads are parsed here, streaming, without Starlette's form parser (which spools every file to
the system's temp folder first): each file part goes straight to a file the server names itself,
STORE/.uploads/.incoming/<uuid>.part, and is checked while it arrives:
- its size: over `--max-upload-mb` (default 25 MB) per file is a 413, as soon as the limit is
  passed; the whole request may hold MAX_UPLOAD_FILES such files (Content-Length over that is a
  413 before any byte is read);
- its type: the name's suffix must be .pdf, .txt, .md, .markdown, .html, .htm or .docx, and the
  content must match (a PDF starts with `%PDF-`, a .docx with the zip magic; a text file is UTF-8
  without NUL bytes, an HTML file has no NUL bytes): otherwise 415.
The client's file name is only a label: its last path component, sanitised
(`sanitise_label`), is the document's `source` in the store, in search results and in the
sources of answers ("../../x.txt" is "x.txt"). Re-uploading a file under the same name is the
same document: "unchanged" when its bytes are the same, "replaced" otherwise. Once the whole
request is read and the collection is known to exist, the files move to
STORE/.uploads/<collection>/<uuid><suffix>, then with the job's record into the spool (spool.py:
fsync'd, renamed into place in one step) before the 202, and the job is queued; they are deleted
when the job is settled (the store holds their chunks). On any error every file of the request
is removed; a disk that cannot take them (full, read-only) is a 507.

The writes run in the server's one writer (`ServerState.writer`, see jobs.py), in order; the
reads here (the document list) run alongside. Jobs are kept in the spool: a job a kill or stop
cut short runs again when the server starts, under its id, and finished jobs answer GET
/v1/jobs/{id} across restarts for a bounded time (spool.KEEP_SECONDS, KEEP_JOBS). With several
workers (a Qdrant server) each job is run by the worker that took the upload, which holds it in
the spool (spool.Claim); any worker answers its id from the record, and a worker that starts runs
again only the unfinished jobs whose worker has died.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import re
import unicodedata
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter, ValidationError

from pipelines.server import schemas as S
from pipelines.server.access import grant_of, readable, refuse_read_only, writable
from pipelines.server.security import LimitBody, send_error
from pipelines.server.jobs import DocumentNotFoundError, document_id
from pipelines.server.spool import SpoolUnavailable, refusal
from pipelines.server.state import ServerState
from rag.errors import RagError
from rag.search import payload as payload_fields

ALLOWED_SUFFIXES = (".pdf", ".txt", ".md", ".markdown", ".html", ".htm", ".docx")
UTF8_SUFFIXES = (".txt", ".md", ".markdown")  # checked as UTF-8 while they arrive
#: The magic bytes a file of this type starts with (after leading whitespace for PDF).
MAGIC = {".pdf": (b"%PDF-", "a PDF"), ".docx": (b"PK\x03\x04", "a .docx (a zip file)")}
MAX_UPLOAD_FILES = 20  # files per request
FORM_OVERHEAD = 1_000_000  # bytes of a request besides its files (part headers, fields)
MAX_FIELD_BYTES = 4096  # a form field that is not a file (collection)
MAX_LABEL_CHARS = 200
UPLOAD_ROUTES = frozenset({("POST", "/v1/documents")})
_COLLECTION = TypeAdapter(S.CollectionName)


class UploadError(Exception):
    """A refused upload: its status, message and code (the OpenAI error shape)."""

    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def sanitise_label(filename: str) -> str:
    """The label of an uploaded file: the last component of the name the client gave (either
    slash), without control characters or leading dots, at most MAX_LABEL_CHARS long (the
    suffix kept). Never used as a path."""
    name = unicodedata.normalize("NFC", filename).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = re.sub(r"\s+", " ", name).strip().lstrip(".").strip()
    if len(name) > MAX_LABEL_CHARS:
        stem, dot, suffix = name.rpartition(".")
        name = (stem[:MAX_LABEL_CHARS - len(suffix) - 1] + dot + suffix) if dot and len(suffix) < 16 \
            else name[:MAX_LABEL_CHARS]
    return name


def upload_request_limit(max_upload_bytes: int) -> int:
    return max_upload_bytes * MAX_UPLOAD_FILES + FORM_OVERHEAD


class LimitBodyOrUpload:
    """The body limit: LimitBody's 1 MB for the JSON routes; for the upload route only the
    Content-Length check against what a request may hold (the per-file limit is applied while
    the files stream to disk, by the route)."""

    def __init__(self, app, limit: int, upload_limit: int):
        self.app, self.plain, self.upload_limit = app, LimitBody(app, limit), upload_limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) not in UPLOAD_ROUTES:
            return await self.plain(scope, receive, send)
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await send_error(send, 400, "Content-Length is not a number", "invalid_request")
            if int(declared) > self.upload_limit:
                return await send_error(send, 413, f"the upload is larger than {self.upload_limit:,} bytes "
                                        f"(at most {MAX_UPLOAD_FILES} files of the per-file limit)",
                                        "request_too_large")
        return await self.app(scope, receive, send)


class _File:
    """One file part being received: its staged file, label and content check."""

    def __init__(self, folder: Path, label: str, suffix: str, limit: int):
        self.label, self.suffix, self.limit = label, suffix, limit
        self.path = folder / f"{uuid.uuid4().hex}.part"
        self.fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.size, self.head = 0, b""
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")() if suffix in UTF8_SUFFIXES else None

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise UploadError(413, f"{self.label}: larger than the upload limit of {self.limit:,} bytes "
                              "per file", "file_too_large")
        if len(self.head) < 1024:
            self.head += data[:1024 - len(self.head)]
        if self.decoder is not None:
            self._check_text(data, final=False)
        elif self.suffix in (".html", ".htm") and b"\x00" in data:  # its charset is the loader's to read
            raise UploadError(415, f"{self.label}: not text (it has NUL bytes): not an HTML file",
                              "unsupported_file_content")
        while data:
            data = data[os.write(self.fd, data):]

    def _check_text(self, data: bytes, final: bool) -> None:
        if b"\x00" in data:
            raise UploadError(415, f"{self.label}: not text (it has NUL bytes): a {self.suffix} file must be "
                              "UTF-8 text", "unsupported_file_content")
        try:
            self.decoder.decode(data, final)
        except UnicodeDecodeError:
            raise UploadError(415, f"{self.label}: not UTF-8 text: a {self.suffix} file must be UTF-8 "
                              "encoded", "unsupported_file_content") from None

    def finish(self) -> None:
        self.close()
        if self.decoder is not None:
            self._check_text(b"", final=True)
        elif self.suffix in MAGIC:
            magic, what = MAGIC[self.suffix]
            head = self.head.lstrip() if self.suffix == ".pdf" else self.head
            if not head.startswith(magic):
                raise UploadError(415, f"{self.label}: not {what} (it does not start with {magic!r})",
                                  "unsupported_file_content")

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def remove(self) -> None:
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class UploadParser:
    """Reads a multipart/form-data body from the request stream, writing each file as it comes."""

    def __init__(self, staging: Path, limit: int, request_limit: int):
        self.staging, self.limit, self.request_limit = staging, limit, request_limit
        self.files: list[_File] = []
        self.fields: dict[str, str] = {}
        self._header_name, self._header_value = b"", b""
        self._disposition = b""
        self._current: _File | None = None
        self._field: tuple[str, bytearray] | None = None
        self._field_bytes = 0
        self._error: UploadError | None = None

    # the python-multipart callbacks
    def on_part_begin(self) -> None:
        self._disposition, self._current, self._field = b"", None, None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in options:
            self._field = (name, bytearray())
            return
        if name != "file":
            raise UploadError(400, f"a file came in the field '{name}': send files in 'file' fields",
                              "invalid_request")
        if len(self.files) >= MAX_UPLOAD_FILES:
            raise UploadError(413, f"more than {MAX_UPLOAD_FILES} files in one upload", "too_many_files")
        label = sanitise_label(options[b"filename"].decode("utf-8", "replace"))
        suffix = Path(label).suffix.lower()
        if suffix not in ALLOWED_SUFFIXES:
            raise UploadError(415, f"{label or '(no name)'}: file type '{suffix or '(none)'}' is not accepted "
                              f"(accepted: {' '.join(ALLOWED_SUFFIXES)})", "unsupported_file_type")
        if any(f.label == label for f in self.files):
            raise UploadError(400, f"two files named '{label}' in one upload: a name is one document",
                              "duplicate_file")
        self._current = _File(self.staging, label, suffix, self.limit)
        self.files.append(self._current)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current is not None:
            self._current.write(data[start:end])
        elif self._field is not None:
            self._field_bytes += end - start
            if self._field_bytes > MAX_FIELD_BYTES:
                raise UploadError(413, "the form fields besides the files are too large", "request_too_large")
            self._field[1].extend(data[start:end])

    def on_part_end(self) -> None:
        if self._current is not None:
            self._current.finish()
        elif self._field is not None:
            self.fields[self._field[0]] = self._field[1].decode("utf-8", "replace")
        self._current = self._field = None

    async def parse(self, request: Request) -> None:
        from python_multipart.multipart import MultipartParser, parse_options_header

        kind, params = parse_options_header(request.headers.get("content-type", ""))
        if kind != b"multipart/form-data" or b"boundary" not in params:
            raise UploadError(400, "send the files as multipart/form-data, in 'file' fields", "invalid_request")
        callbacks: Any = {name: getattr(self, name) for name in (
            "on_part_begin", "on_header_field", "on_header_value", "on_header_end", "on_headers_finished",
            "on_part_data", "on_part_end")}
        parser = MultipartParser(params[b"boundary"], callbacks)
        received = 0
        try:
            self.staging.mkdir(parents=True, exist_ok=True)
            async for chunk in request.stream():
                received += len(chunk)
                if received > self.request_limit:
                    raise UploadError(413, f"the upload is larger than {self.request_limit:,} bytes",
                                      "request_too_large")
                parser.write(chunk)
            parser.finalize()
        except UploadError:
            raise
        except OSError as e:  # the disk is full, or the folder cannot be written: 507
            raise refusal(e) from None
        except Exception as e:  # a malformed body, or the client left
            from starlette.requests import ClientDisconnect

            if isinstance(e, ClientDisconnect):
                raise
            raise UploadError(400, f"malformed multipart body: {e}", "invalid_request") from None
        if self._current is not None or self._field is not None:
            raise UploadError(400, "the multipart body ended inside a part", "invalid_request")

    def remove(self) -> None:
        for f in self.files:
            f.remove()


async def receive_upload(request: Request, state: ServerState) -> dict[str, Any]:
    """Read, check and stage an upload, then queue its ingest job. UploadError or RagError
    (unknown collection: 404) otherwise, with every file of the request removed."""
    options = state.options
    uploads = state.uploads_dir
    grant = grant_of(request.scope)
    refuse_read_only(grant)  # 403 before a byte is staged
    parser = UploadParser(uploads / ".incoming", options.max_upload_bytes,
                          upload_request_limit(options.max_upload_bytes))
    try:
        await parser.parse(request)
        if not parser.files:
            raise UploadError(400, "no file: send one or more files in 'file' fields", "invalid_request")
        name = parser.fields.get("collection", "").strip() or grant.default_collection(state.default_collection)
        try:
            name = _COLLECTION.validate_python(name)
        except ValidationError:
            raise UploadError(400, f"collection '{name[:64]}': not a collection name", "invalid_request") from None
        writable(state, grant, name)  # not the key's: 404; read-only for it: 403
        await asyncio.to_thread(state.collection, name)  # CollectionNotFoundError: 404
        folder = uploads / name
        staged: list[tuple[Path, str]] = []
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for f in parser.files:
                target = folder / f"{f.path.stem}{f.suffix}"
                os.replace(f.path, target)
                f.path = target
                staged.append((target, f.label))
        except OSError as e:
            raise refusal(e) from None
        job = await asyncio.to_thread(state.writer.submit, name, staged)  # spooled, fsync'd: SpoolUnavailable
    except BaseException:
        parser.remove()
        raise
    return S.UploadAccepted(job_id=job.id, collection=name,
                            files=[S.UploadedFile(source=label, id=document_id(label)) for _, label in staged]
                            ).model_dump(mode="json")


def list_documents(state: ServerState, collection: str | None) -> dict[str, Any]:
    served = state.collection(collection)
    counts: dict[str, int] = {}
    for _, payload in served.handle.payloads([payload_fields.SOURCE]):
        source = payload.get(payload_fields.SOURCE)
        if source is not None:
            counts[source] = counts.get(source, 0) + 1
    return S.DocumentList(collection=served.name, data=[S.DocumentInfo(id=document_id(s), source=s, chunks=n)
                                                        for s, n in sorted(counts.items())]).model_dump(mode="json")


def add_document_routes(app: FastAPI, state: ServerState, error_response, exception_response) -> None:
    """The routes above, on `app`; errors in the OpenAI shape."""

    @app.post("/v1/documents", status_code=202, response_model=S.UploadAccepted)
    async def upload(request: Request) -> Response:
        try:
            body = await receive_upload(request, state)
        except UploadError as e:
            return error_response(e.status, e.message, e.code)
        except SpoolUnavailable as e:
            return error_response(507, str(e), e.code)
        except RagError as e:
            return exception_response(e)
        return JSONResponse(body, status_code=202)

    @app.get("/v1/jobs/{job_id}", response_model=S.JobView)
    async def job(job_id: str, request: Request) -> Response:
        found = state.writer.job(job_id)
        if found is None or not grant_of(request.scope).may_read(found.collection):
            return error_response(404, f"no job {job_id[:80]} (finished jobs are kept for a week, the "
                                  "latest 1000)", "job_not_found")
        return JSONResponse(found.view())

    @app.get("/v1/documents", response_model=S.DocumentList)
    async def documents(request: Request, collection: S.CollectionName | None = None) -> Response:
        name = readable(state, grant_of(request.scope), collection)
        return JSONResponse(await asyncio.to_thread(list_documents, state, name))

    @app.delete("/v1/documents/{doc_id}", response_model=S.DocumentDeleted)
    async def delete(doc_id: str, request: Request, collection: S.CollectionName | None = None) -> Response:
        name = writable(state, grant_of(request.scope), collection)
        await asyncio.to_thread(state.collection, name)
        try:
            removed = await asyncio.wrap_future(state.writer.delete(name, doc_id))
        except DocumentNotFoundError as e:
            return error_response(404, str(e), "document_not_found")
        return JSONResponse(S.DocumentDeleted(**removed, collection=name).model_dump(mode="json"))
