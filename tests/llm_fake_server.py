"""A real HTTP server on loopback that speaks the OpenAI chat completions protocol (JSON and SSE)
and Ollama's /api/chat (JSON and NDJSON), with faults scripted per request.

The backends are tested over real sockets rather than a mocked transport, so timeouts, a socket
closed mid-stream and chunked framing behave as they do against vLLM, llama.cpp or Ollama.
(llama.cpp's server is not installed here and takes minutes to compile.)

    with FakeLLMServer(answer="Paris is the capital.") as server:
        server.push(Fault.status(503), Fault.status(429, retry_after="1"))  # next two requests
        backend = OpenAICompatibleBackend("fake-model", server.openai_url)
        ...
        assert len(server.requests) == 3

Handlers run on daemon threads and every wait checks a stop flag, so `stop()` returns at once
even while a "hang" fault is holding a request.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OPENAI_PATH = "/v1/chat/completions"
OLLAMA_PATH = "/api/chat"


@dataclass
class Fault:
    """How to answer one request. The default answers normally."""

    status: int = 200
    retry_after: str | None = None
    message: str | None = None        # the error text, put in each protocol's error shape
    code: str | None = None           # OpenAI error code (e.g. "context_length_exceeded")
    hang: float = 0.0                 # seconds to wait before answering at all
    cut_after: int | None = None      # stream: close the socket after this many text chunks
    stall_after: int | None = None    # stream: after this many chunks wait `hang` s (then go on)
    chunked: bool = True              # stream framing; False: delimited by closing the socket
    raw_body: bytes | None = None     # send exactly this body with `status` (malformed JSON...)

    @classmethod
    def error(cls, status: int, message: str | None = None, **kw: Any) -> Fault:
        return cls(status=status, message=message, **kw)

    @classmethod
    def rate_limited(cls, retry_after: str | None = None) -> Fault:
        return cls(status=429, retry_after=retry_after, message="Rate limit reached")

    @classmethod
    def hung(cls, seconds: float = 30.0) -> Fault:
        return cls(hang=seconds)

    @classmethod
    def cut(cls, after_chunks: int = 2, chunked: bool = True) -> Fault:
        return cls(cut_after=after_chunks, chunked=chunked)

    @classmethod
    def malformed(cls, body: bytes = b'{"choices": [{"message": {"content": "unterminated') -> Fault:
        return cls(raw_body=body)

    @classmethod
    def unauthorized(cls, message: str = "Incorrect API key provided") -> Fault:
        return cls(status=401, message=message, code="invalid_api_key")

    @classmethod
    def context_length(cls, llama_cpp: bool = False) -> Fault:
        if llama_cpp:
            return cls(status=400, code="exceed_context_size_error",
                       message="the request exceeds the available context size, try increasing it")
        return cls(status=400, code="context_length_exceeded",
                   message="This model's maximum context length is 8192 tokens. However, your "
                           "messages resulted in 9001 tokens.")


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]           # names lower-cased
    body: Any                         # decoded JSON, or the raw text if it was not JSON
    at: float = field(default_factory=time.monotonic)


class FakeLLMServer:
    """Serves `answer` (split into `chunk_chars`-character stream chunks) for the models in
    `models`; an unknown model gets each protocol's 404. Faults queued with `push` apply to the
    next requests in order; `always` sets one for every request after the queue is empty."""

    def __init__(self, answer: str = "The capital of France is Paris.", *,
                 models: tuple[str, ...] = ("fake-model",), chunk_chars: int = 4,
                 usage: tuple[int, int] = (12, 7)):
        self.answer = answer
        self.models = models
        self.chunk_chars = chunk_chars
        self.usage = usage
        self.requests: list[RecordedRequest] = []
        self._faults: deque[Fault] = deque()
        self._always: Fault | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control
    def start(self) -> FakeLLMServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False
        httpd.handle_error = lambda request, address: None  # clients that hung up are expected
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True, name="fake-llm-server")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def openai_url(self) -> str:
        return self.url + "/v1"

    def push(self, *faults: Fault) -> None:
        with self._lock:
            self._faults.extend(faults)

    def always(self, fault: Fault | None) -> None:
        with self._lock:
            self._always = fault

    def next_fault(self) -> Fault:
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            return self._always or Fault()

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def sleep(self, seconds: float) -> bool:
        """Wait unless the server is stopping; True if it is."""
        return self._stop.wait(seconds)

    def chunks(self) -> list[str]:
        n = self.chunk_chars
        return [self.answer[i:i + n] for i in range(0, len(self.answer), n)]


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released), for connection-refused tests."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeLLMServer

    def log_message(self, format: str, *args: Any) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:
        """The model listings clients use to discover a server: OpenAI's /v1/models and
        Ollama's /api/tags."""
        self.fake.record(RecordedRequest("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, None))
        if self.path == "/v1/models":
            return self._json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in self.fake.models]})
        if self.path == "/api/tags":
            return self._json(200, {"models": [{"name": m, "model": m} for m in self.fake.models]})
        return self._json(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self.fake.record(RecordedRequest("POST", self.path, {k.lower(): v for k, v in self.headers.items()},
                                         body))
        fault = self.fake.next_fault()
        try:
            self._answer(fault, body)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True  # the client gave up (its timeout): nothing to do

    # ------------------------------------------------------------------ routing
    def _answer(self, fault: Fault, body: Any) -> None:
        if fault.hang and fault.stall_after is None and self.fake.sleep(fault.hang):
            self.close_connection = True
            return
        if self.path == OPENAI_PATH:
            proto = "openai"
        elif self.path == OLLAMA_PATH:
            proto = "ollama"
        else:
            return self._json(404, {"error": f"no route {self.path}"})
        if fault.raw_body is not None:
            return self._send(fault.status, "application/json", fault.raw_body, fault)
        if fault.status != 200:
            return self._error(proto, fault.status, fault.message or "error", fault.code, fault)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self._error(proto, 400, "messages is required", "invalid_request_error", fault)
        model = body.get("model")
        if model not in self.fake.models:
            if proto == "openai":
                message, code = f"The model `{model}` does not exist", "model_not_found"
            else:
                message, code = f"model '{model}' not found", None
            return self._error(proto, 404, message, code, fault)
        stream = body.get("stream", proto == "ollama")  # Ollama streams unless told not to
        if not stream:
            full = self._openai_full(model) if proto == "openai" else self._ollama_full(model)
            return self._json(200, full)
        events = self._openai_events(model) if proto == "openai" else self._ollama_events(model)
        ctype = "text/event-stream" if proto == "openai" else "application/x-ndjson"
        self._stream(events, ctype, fault)

    # ------------------------------------------------------------------ bodies
    def _openai_full(self, model: str) -> dict[str, Any]:
        p, c = self.fake.usage
        return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": self.fake.answer}}],
                "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}}

    def _ollama_full(self, model: str) -> dict[str, Any]:
        p, c = self.fake.usage
        return {"model": model, "created_at": "2025-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": self.fake.answer},
                "done": True, "done_reason": "stop", "prompt_eval_count": p, "eval_count": c}

    def _openai_events(self, model: str) -> list[tuple[bool, bytes]]:
        """(carries text, bytes) per event, with the extras real servers send: a role-only first
        chunk, a keep-alive comment, a finish chunk and a usage-only chunk."""
        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"
        p, c = self.fake.usage
        usage = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": model, "choices": [],
                 "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}}
        return ([(False, event({"role": "assistant", "content": ""})), (False, b": keep-alive\n\n")]
                + [(True, event({"content": piece})) for piece in self.fake.chunks()]
                + [(False, event({}, "stop")), (False, b"data: " + json.dumps(usage).encode() + b"\n\n"),
                   (False, b"data: [DONE]\n\n")])

    def _ollama_events(self, model: str) -> list[tuple[bool, bytes]]:
        def line(obj: dict[str, Any]) -> bytes:
            return json.dumps(obj).encode() + b"\n"
        p, c = self.fake.usage
        return ([(True, line({"model": model, "message": {"role": "assistant", "content": piece},
                              "done": False})) for piece in self.fake.chunks()]
                + [(False, line({"model": model, "message": {"role": "assistant", "content": ""},
                                 "done": True, "done_reason": "stop", "prompt_eval_count": p,
                                 "eval_count": c}))])

    # ------------------------------------------------------------------ writing
    def _error(self, proto: str, status: int, message: str, code: str | None, fault: Fault) -> None:
        if proto == "openai":
            body = {"error": {"message": message, "type": code or "server_error", "code": code}}
        else:
            body = {"error": message}
        self._send(status, "application/json", json.dumps(body).encode(), fault)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, "application/json", json.dumps(obj).encode(), Fault())

    def _send(self, status: int, ctype: str, data: bytes, fault: Fault) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        if fault.retry_after is not None:
            self.send_header("Retry-After", fault.retry_after)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: list[tuple[bool, bytes]], ctype: str, fault: Fault) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        if fault.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        texts, stalled = 0, False
        for carries_text, data in events:
            if fault.cut_after is not None and texts >= fault.cut_after:
                break  # leave without the end marker (and without the final empty chunk)
            if fault.stall_after is not None and not stalled and texts >= fault.stall_after:
                stalled = True
                if self.fake.sleep(fault.hang):
                    break
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if fault.chunked else data)
            texts += carries_text
        else:
            if fault.chunked:
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.close_connection = True
            return
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# ---------------------------------------------------------------------- test helpers
MESSAGES = [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What is the capital of France?"}]


def complete(backend: Any, mode: str, messages: Any = None, settings: Any = None) -> Any:
    """generate (mode "sync") or agenerate under asyncio.run (mode "async")."""
    messages = MESSAGES if messages is None else messages
    if mode == "sync":
        return backend.generate(messages, settings)
    return asyncio.run(backend.agenerate(messages, settings))


def collect(backend: Any, mode: str, into: list[str] | None = None, settings: Any = None) -> str:
    """The streamed answer (stream or astream); pieces also go to `into`, so a test can see
    what arrived before an error."""
    pieces = [] if into is None else into
    if mode == "sync":
        for piece in backend.stream(MESSAGES, settings):
            pieces.append(piece)
    else:
        async def drain() -> None:
            async for piece in backend.astream(MESSAGES, settings):
                pieces.append(piece)
        asyncio.run(drain())
    return "".join(pieces)
