"""The FastAPI app of `rag serve`: routes, the OpenAI error shape, and the chat runner.

    GET  /                       no key: the web chat page (static/index.html, app.js, app.css)
    GET  /health                 no key: {"status": "ok"}
    GET  /metrics                Prometheus text format (metrics.py)
    GET  /v1/models              one model per collection (OpenAI list shape)
    POST /v1/chat/completions    OpenAI chat completions, streamed (SSE) or not, with sources
    POST /v1/search              what `rag search --json` prints
    POST /v1/documents, GET /v1/documents, DELETE /v1/documents/{id}, GET /v1/jobs/{id}
                                 uploads and their ingest jobs, the document list (documents.py)
    GET/POST /v1/collections, DELETE /v1/collections/{name}
                                 list, create, delete collections (collections.py)
    POST /mcp                    the MCP tools, streamable HTTP (mcp_http.py)

With `--keys FILE` each key sees only its collections (keys.py, access.py): every route asks
access.py, and another key's collection answers as a missing one.

A chat request is answered by RagPipeline itself (`RagPipeline.astream`: retrieval, prompt,
LLM or extracts, the citation and grounding checks); a follow-up is rewritten first by
`ChatSession.rewrite`, as `rag chat` does. The answer runs as its own task that feeds a queue;
the response reads the queue and, between events and at least every quarter second, asks
whether the client is still there. When it has gone, the task is cancelled, which closes the
backend's stream and frees the generation slot, however the ASGI server reports disconnects.

Errors are always `{"error": {"message", "type", "code"}}`, never a stack trace: the RagError
family maps onto statuses (collection not found 404, bad setting 400, store busy 503, LLM
failure 502), anything else is a 500 with a generic message and the traceback in the server
log. A failure after a stream began ends it with an error chunk and `[DONE]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException

from pipelines.answer import ChatSession
from pipelines.config import RagConfig
from pipelines.server import contract
from pipelines.server import schemas as S
from pipelines.server.collections import add_collection_routes
from pipelines.server.documents import LimitBodyOrUpload, add_document_routes, upload_request_limit
from pipelines.server.access import grant_of, readable
from pipelines.server.keys import AccessDeniedError
from pipelines.server.security import MAX_BODY_BYTES, OPEN_ROUTES, LimitPerClient, RequireKey, send_error
from pipelines.server.generation import GenerationInterrupted
from pipelines.server.mcp_http import add_mcp_route
from pipelines.server.metrics import RequestMetrics, ServerMetrics
from pipelines.server.traces import TraceRequests
from pipelines.server.options import ServeOptions
from pipelines.server.state import ServerState
from rag.answer.llm import ChatMessage
from rag.answer.prompt import strip_citations
from rag.errors import (CollectionNotFoundError, ConfigError, LLMError, ModelMismatchError, RagError,
                        StoreLockedError)
from rag.models import Answer
from rag.search.retrieval import SearchResponse

logger = logging.getLogger("pipelines.server")

SETTINGS_ENV = "RAG_SERVE_SETTINGS"  # config and options for worker processes (--workers N)
POLL_SECONDS = 0.25  # how often a waiting response checks that its client is still there
QUEUE_SIZE = 256  # events an answer runs ahead of a slow client before it waits for it

#: The web page's files: a fixed route per file of the package's static folder (no path from the
#: client ever reaches the file system). They hold no secret, so they need no key: the page asks
#: for the key itself. CSP: the page loads and fetches nothing but this server.
STATIC_DIR = Path(__file__).with_name("static")
PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
              "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
              "/static/app.css": ("app.css", "text/css; charset=utf-8")}
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'", "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-cache", "Referrer-Policy": "no-referrer"}
PAGE_ROUTES = OPEN_ROUTES | {("GET", path) for path in [*PAGE_FILES, "/favicon.ico"]}

#: (status, code) per error class, most specific first.
ERROR_STATUS: list[tuple[type[Exception], int, str]] = [
    (CollectionNotFoundError, 404, "collection_not_found"),
    (AccessDeniedError, 403, "permission_denied"),
    (ConfigError, 400, "invalid_request"),
    (StoreLockedError, 503, "store_busy"),
    (ModelMismatchError, 409, "model_mismatch"),
    (GenerationInterrupted, 502, "llm_interrupted"),
    (LLMError, 502, "llm_error"),
    (RagError, 500, "rag_error"),
]


def status_of(exc: BaseException) -> tuple[int, str, str]:
    """(status, code, message) for an exception. A RagError's message is written for the user
    (it names the file, setting or cause, and never a key); anything else gets a generic one."""
    for cls, status, code in ERROR_STATUS:
        if isinstance(exc, cls):
            return status, code, str(exc)
    return 500, "internal_error", "internal server error (the server log has the details)"


def error_response(status: int, message: str, code: str | None, headers: dict[str, str] | None = None) -> Response:
    return Response(S.error_json(status, message, code), status_code=status, media_type="application/json",
                    headers=headers)


def exception_response(exc: BaseException) -> Response:
    status, code, message = status_of(exc)
    return error_response(status, message, code, headers={"Retry-After": "5"} if status == 503 else None)


class CatchAll:
    """The last line: an exception no handler took becomes a 500 in the error shape, logged once
    here with its traceback (the client sees no detail). Once a response has started (a stream),
    it can only be logged and the connection closed."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            logger.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if not started:
                _, code, message = status_of(Exception())
                await send_error(send, 500, message, code)


def _first_problem(exc: RequestValidationError) -> tuple[str, str]:
    """The first validation problem as one line, without the input that caused it (it may be
    long, or private)."""
    errors = exc.errors()
    if not errors:
        return "invalid request", "invalid_request"
    first = errors[0]
    if first.get("type") == "json_invalid":
        why = (first.get("ctx") or {}).get("error", "")
        return f"the body is not valid JSON{': ' + str(why) if why else ''}", "invalid_json"
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    more = f" ({len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}", "invalid_request"


# ---------------------------------------------------------------------------- the chat runner


class ChatRun:
    """One chat answer running as its own task. Events on the queue: ("sources", passages),
    ("text", piece) ..., then ("answer", Answer) or ("error", exception)."""

    def __init__(self, state: ServerState, request: S.ChatRequest, grant=None, metrics: ServerMetrics | None = None):
        self.loop = asyncio.get_running_loop()
        self.metrics = metrics
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        grant = grant or grant_of({})
        # A model naming a collection the key may not see is any other model name: the key's default.
        model = request.model if request.model and grant.may_read(request.model) else None
        self.collection = readable(state, grant, state.pick_collection(
            request.rag.collection, model, default=grant.default_collection(state.default_collection)))
        self.question, self.session_history, self.earlier, self.notes = _read_turns(request.messages)
        self.state, self.request = state, request
        self.task: asyncio.Task | None = None
        self.pipeline = None

    async def start(self) -> None:
        served = await asyncio.to_thread(self.state.collection, self.collection)
        req = self.request
        self.pipeline = self.state.request_pipeline(
            served, loop=self.loop, streaming=req.stream, mode=req.rag.mode, top_k=req.rag.top_k,
            temperature=req.temperature, max_tokens=req.max_completion_tokens or req.max_tokens,
            on_prepared=lambda passages: self.loop.call_soon_threadsafe(self.queue.put_nowait,
                                                                        ("sources", passages)))
        self.task = asyncio.create_task(self._produce())

    async def _produce(self) -> None:
        try:
            session = ChatSession(self.pipeline)
            session.history, session.standalone = self.session_history, self.earlier
            standalone = await asyncio.to_thread(session.rewrite, self.question)
            retrieval_query = standalone if standalone != self.question.strip() else None
            async with contextlib.aclosing(self.pipeline.astream(
                    self.question, history=session.history, filters=self.request.rag.filters,
                    retrieval_query=retrieval_query)) as items:
                async for item in items:
                    if isinstance(item, Answer):
                        if self.metrics is not None:
                            self.metrics.answer(item, self.usage(item).completion_tokens)
                        await self.queue.put(("answer", item))
                    elif item:
                        await self.queue.put(("text", item))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # reported to the client as an error (chunk)
            if not isinstance(e, RagError):
                logger.exception("chat answer failed")
            await self.queue.put(("error", e))

    async def next(self, request: Request) -> tuple[str, Any] | None:
        """The next event, or None once the client has gone."""
        while True:
            try:
                event = await asyncio.wait_for(self.queue.get(), POLL_SECONDS)
            except TimeoutError:
                if await request.is_disconnected():
                    return None
                if self.task is not None and self.task.done() and self.queue.empty():
                    return ("error", RagError("the answer stopped without a result"))
                continue
            return None if await request.is_disconnected() else event

    def cancel(self) -> None:
        """Stop the answer (the client left, or the response is done): cancelling its task closes
        the backend's stream and gives the generation slot back."""
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def usage(self, answer: Answer) -> S.Usage:
        completion = self.pipeline.prompt.count(answer.text) if answer.text else 0
        return S.Usage(prompt_tokens=answer.prompt_tokens, completion_tokens=completion,
                       total_tokens=answer.prompt_tokens + completion)


def _read_turns(messages: list[S.MessageIn]) -> tuple[str, list[ChatMessage], list[str], list[str]]:
    """(question, history, earlier questions, notes) from OpenAI messages: the last user message
    is the question, the user and assistant turns before it the history (assistant turns without
    their [n] markers, as ChatSession keeps them: those numbers named other passages), and the
    earlier questions what a follow-up is rewritten against. Messages after the last user
    message (an assistant's prefill, a tool's result) are not used, and a note says so. The
    request's schema guarantees a user message with text."""
    last = max(i for i, m in enumerate(messages) if m.role == "user")
    question = messages[last].text().strip()
    if not question:
        raise ConfigError("the last user message has no text")
    history: list[ChatMessage] = []
    earlier: list[str] = []
    ignored = 0
    for m in messages[:last]:
        text = m.text().strip()
        if m.role == "user" and text:
            history.append(ChatMessage(role="user", content=text))
            earlier.append(text)
        elif m.role == "assistant" and text:
            history.append(ChatMessage(role="assistant", content=strip_citations(text)))
        elif m.role in ("system", "developer"):
            ignored += 1
    notes = ["the request's system message(s) were not used: the server's prompt template gives the "
             "instructions"] if ignored else []
    if last < len(messages) - 1:
        notes.append(f"the {len(messages) - 1 - last} message(s) after the last user message were not used: "
                     "the last user message is the question")
    return question, history, earlier, notes


async def _stream_events(run: ChatRun, first: tuple[str, Any], request: Request) -> AsyncIterator[str]:
    writer = S.ChunkWriter(run.collection)
    include_usage = bool(run.request.stream_options and run.request.stream_options.include_usage)
    event: tuple[str, Any] | None = first
    try:
        while event is not None:
            kind, value = event
            if kind == "sources":
                yield writer.first(value)
            elif kind == "text":
                yield writer.text(value)
            elif kind == "answer":
                yield writer.last(value, run.notes)
                if include_usage:
                    yield writer.usage(run.usage(value))
                yield writer.done()
                return
            else:
                status, code, message = status_of(value)
                yield writer.error(status, message, code)
                yield writer.done()
                return
            event = await run.next(request)
        logger.info("client left during a streamed answer: generation stopped")
    finally:
        run.cancel()


class AnswerStream(StreamingResponse):
    """The SSE response of a streamed answer. It stops the answer whenever it ends, including when
    the client leaves before the first event is sent (the body's own `finally` would not run then)."""

    def __init__(self, run: ChatRun, events: AsyncIterator[str]):
        super().__init__(events, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.run = run

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.run.cancel()


def _completion(run: ChatRun, answer: Answer) -> S.ChatCompletion:
    writer = S.ChunkWriter(run.collection)
    return S.ChatCompletion(
        id=writer.id, created=writer.created, model=run.collection,
        choices=[S.Choice(message=S.AssistantMessage(content=answer.text), finish_reason=S.finish_reason(answer))],
        usage=run.usage(answer), sources=[S.Source.of(p) for p in answer.passages],
        **S.AnswerFields.of(answer, run.notes).model_dump())


# ---------------------------------------------------------------------------- the app


def create_app(config: RagConfig, options: ServeOptions | None = None, *, encoder: Any = None,
               state: ServerState | None = None) -> FastAPI:
    """The app for `config` (what to serve) and `options` (how). `encoder`: an encoder already
    loaded (the collection's model; default: loaded from the collection's record). `state`: one
    already opened (the CLI opens it first, so that a missing or locked store stops it before it
    listens); otherwise it opens at start-up and closes at shutdown."""
    options = options or ServeOptions()
    state = state or ServerState(config, options, encoder=encoder)
    key = options.server_key()
    grants = options.key_grants()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(state.open)
        logger.info("%s; key %s", state.describe(), f"required ({len(grants)} from {options.keys_file})" if grants
                    else "required" if key else "not required (loopback only)")
        try:
            async with mcp_sessions:  # the MCP route's session manager (set below)
                yield
        finally:
            await asyncio.to_thread(state.close)

    app = FastAPI(title="rag serve", version="1", lifespan=lifespan,
                  description="Chat over your documents, OpenAI-compatible, with the sources of every answer.")
    app.state.rag = state
    app.state.metrics = metrics = ServerMetrics(state)
    _add_error_handlers(app)
    _add_routes(app, state)
    _add_metrics_route(app, metrics)
    mcp_sessions = add_mcp_route(app, state, options.host)
    contract.install(app, with_key=bool(key or grants), max_upload_bytes=options.max_upload_bytes)
    # Added innermost first: CORS (outermost) answers preflights, then the key, then the
    # client's share, then the size.
    app.add_middleware(CatchAll)
    app.add_middleware(LimitBodyOrUpload, limit=options.max_body_bytes or MAX_BODY_BYTES,
                       upload_limit=upload_request_limit(options.max_upload_bytes))
    app.add_middleware(LimitPerClient, max_requests=options.max_requests_per_client,
                       max_chats=options.max_chats_per_client)
    if key or grants:
        app.add_middleware(RequireKey, key=key, open_routes=PAGE_ROUTES, grants=grants)
    if options.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=options.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"], allow_credentials=False)
    app.add_middleware(TraceRequests)  # a span per request when tracing is on
    app.add_middleware(RequestMetrics, metrics=metrics, routes=app.router.routes)  # outermost: rejected requests are counted too
    return app


def _add_metrics_route(app: FastAPI, metrics: ServerMetrics) -> None:
    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        body, content_type = await asyncio.to_thread(metrics.exposition)
        return Response(body, media_type=content_type)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # every method of the path, not only the first matching route's
            headers = {**(headers or {}), "Allow": ", ".join(contract.allowed_methods(request.app, request.url.path))}
        return error_response(exc.status_code, message, "not_found" if exc.status_code == 404 else None,
                              headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        message, code = _first_problem(exc)
        return error_response(400, message, code)

    @app.exception_handler(RagError)
    async def rag_error(request: Request, exc: RagError) -> Response:
        return exception_response(exc)


def _page_route(app: FastAPI, path: str, name: str, media_type: str) -> None:
    @app.get(path, include_in_schema=False, name=f"page:{name}")
    async def page() -> Response:
        body = await asyncio.to_thread((STATIC_DIR / name).read_bytes)
        return Response(body, media_type=media_type, headers=PAGE_HEADERS)


def _add_routes(app: FastAPI, state: ServerState) -> None:
    for path, (name, media_type) in PAGE_FILES.items():
        _page_route(app, path, name, media_type)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)  # no icon; answered so that browsers log no 404

    @app.get("/health", response_model=S.Health)
    async def health() -> S.Health:
        return S.Health()

    @app.get("/v1/models", response_model=S.ModelList)
    async def models(request: Request) -> S.ModelList:
        names = grant_of(request.scope).visible(await asyncio.to_thread(state.collections))
        return S.ModelList(data=[S.ModelCard(id=n) for n in names])

    @app.post("/v1/search", response_model=SearchResponse)
    async def search(body: S.SearchRequest, request: Request) -> Response:
        name = readable(state, grant_of(request.scope), body.collection)

        def run() -> str:
            # One worker-thread hop: the collection (open already, but it may not be), the
            # search, and its JSON (pydantic's serialiser, not the event loop's json.dumps).
            served = state.collection(name)
            return served.search(body.query, top_k=body.top_k, filters=body.filters, mode=body.mode,
                                 explain=body.explain).model_dump_json()

        return Response(await asyncio.to_thread(run), media_type="application/json")

    @app.post("/v1/chat/completions", response_model=S.ChatCompletion)
    async def chat(body: S.ChatRequest, request: Request) -> Response:
        run = ChatRun(state, body, grant_of(request.scope), request.app.state.metrics)
        await run.start()
        try:
            first = await run.next(request)
            if first is None:
                return Response(status_code=499)  # the client left: nobody to answer
            if first[0] == "error":
                return exception_response(first[1])  # before any byte was sent: a plain error response
            if body.stream:
                response = AnswerStream(run, _stream_events(run, first, request))
                run = None  # the response owns it now
                return response
            event: tuple[str, Any] | None = first
            while event is not None and event[0] not in ("answer", "error"):
                event = await run.next(request)
            if event is None:
                return Response(status_code=499)
            if event[0] == "error":
                return exception_response(event[1])
            return Response(_completion(run, event[1]).model_dump_json(), media_type="application/json")
        finally:
            if run is not None:
                run.cancel()

    add_document_routes(app, state, error_response, exception_response)
    add_collection_routes(app, state, error_response, exception_response)


# ---------------------------------------------------------------------------- running it


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening socket, so that a port in use is a clear error before anything starts
    (and port 0 picks a free one)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def _log_config(level: str) -> dict[str, Any]:
    import copy

    from uvicorn.config import LOGGING_CONFIG

    cfg = copy.deepcopy(LOGGING_CONFIG)
    cfg["loggers"]["pipelines.server"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return cfg


def run_server(config: RagConfig, options: ServeOptions) -> int:
    """Serve until interrupted (the `rag serve` command). One worker: the state is opened here
    first (a missing or locked store is a RagError before anything listens). More workers
    (a Qdrant server only): uvicorn starts each from `app_from_environment`."""
    import os

    import uvicorn

    if options.workers > 1:
        from pipelines.server.options import environment_settings

        os.environ[SETTINGS_ENV] = environment_settings(config, options)
        uvicorn.run("pipelines.server.app:app_from_environment", factory=True, host=options.host,
                    port=options.port, workers=options.workers, log_config=_log_config(options.log_level),
                    log_level=options.log_level)
        return 0
    sock = listening_socket(options.host, options.port)
    state = ServerState(config, options)
    try:
        state.open()
        app = create_app(config, options, state=state)
        server = uvicorn.Server(uvicorn.Config(app, log_config=_log_config(options.log_level),
                                               log_level=options.log_level, timeout_graceful_shutdown=5))
        server.run(sockets=[sock])
    finally:
        state.close()
        sock.close()
    return 0


def app_from_environment() -> FastAPI:
    """The app of one worker process, from the settings `run_server` put in the environment."""
    from pipelines.server.options import settings_from_environment

    config, options = settings_from_environment(SETTINGS_ENV)
    return create_app(config, options)


@contextlib.contextmanager
def serve_in_background(app: FastAPI, host: str = "127.0.0.1", port: int = 0,
                        start_timeout: float = 60.0) -> Iterator[str]:
    """Run `app` on a real uvicorn server in a thread for the length of the block; yields its base
    URL (http://HOST:PORT). For examples, notebooks and tests. Stops the server on the way out."""
    import uvicorn

    sock = listening_socket(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="rag-serve")
    thread.start()
    deadline = time.monotonic() + start_timeout
    try:
        while not server.started:
            if not thread.is_alive():
                raise RagError("the server stopped during start-up (its log says why)")
            if time.monotonic() > deadline:
                raise RagError(f"the server did not start within {start_timeout:g} s")
            time.sleep(0.02)
        bound_host, bound_port = sock.getsockname()[:2]
        yield f"http://{bound_host if ':' not in bound_host else f'[{bound_host}]'}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
