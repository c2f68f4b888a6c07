"""What every HTTP LLM backend shares: retries with backoff, error mapping, key handling.

The OpenAI-compatible and the Ollama backends differ only in the URL path, the request body
and how a response or a stream line is read; `HttpLLMBackend` runs the request itself. The
sync methods use `httpx.Client` and the async ones `httpx.AsyncClient`, and both loops call the
same decision code (`_after_failure`), so a 503 or a 429 is handled identically in both worlds
and no event loop is ever nested.

A fresh client is made per call: an `AsyncClient` is bound to the event loop it was first used
on (a cached one breaks across `asyncio.run` calls), and a backend that holds no socket stays
light, picklable and serialisable. The cost, one connection set-up per answer, is small next
to the seconds an answer takes; the TLS context, the expensive part, is built once.

The API key is read from the environment at request time, so it is never stored on the object,
in `to_dict`, in a repr or in a log line, and every error message is scrubbed of it in case a
server echoes it back.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import httpx

from connectors.backoff import backoff_delay, parse_retry_after  # noqa: F401 (also imported from here)
from rag.errors import (ConfigError, LLMAuthError, LLMConnectionError, LLMContextLengthError,
                        LLMError, LLMNotFoundError, LLMRateLimitError, LLMResponseError,
                        LLMTimeoutError)
from rag.answer.llm import (DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, NETWORK, ChatMessage, Completion,
                            GenerationSettings, as_messages)

if TYPE_CHECKING:
    from connectors.llm.registry import BackendSettings

logger = logging.getLogger(__name__)

B = TypeVar("B", bound="HttpLLMBackend")

#: Statuses worth another try: the server is overloaded or restarting, not rejecting us.
RETRY_STATUSES = frozenset({500, 502, 503, 504})

#: Phrases servers use when prompt + max_tokens exceed the window (OpenAI, vLLM, llama.cpp,
#: Ollama, LM Studio). Matched case-insensitively in the body of a 4xx or an in-band error.
CONTEXT_LENGTH_MARKERS = (
    "context_length_exceeded", "maximum context length", "context length", "exceeds the context",
    "exceed_context_size", "exceeds the available context size", "context window",
    "context size",
)

EXCERPT_CHARS = 200


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """At most `limit` characters of a body, on one line, so an error stays readable."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def mentions_context_length(text: str) -> bool:
    low = text.lower()
    return any(marker in low for marker in CONTEXT_LENGTH_MARKERS)


def server_message(body: str) -> str:
    """The human part of an error body: OpenAI/vLLM/llama.cpp put it in error.message, Ollama in
    error, FastAPI in detail; anything else is quoted raw (shortened)."""
    try:
        data = json.loads(body)
    except ValueError:
        return excerpt(body)
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return excerpt(err["message"])
        for key in ("error", "message", "detail"):
            if isinstance(data.get(key), str):
                return excerpt(data[key])
    return excerpt(body)


@functools.lru_cache(maxsize=1)
def ssl_context() -> ssl.SSLContext:
    """One verified TLS context for all clients: building it (loading the CA bundle) costs
    ~90 ms, which a fresh client per call would otherwise pay every time."""
    return httpx.create_ssl_context()


def is_retryable(exc: httpx.HTTPError) -> bool:
    """Timeouts and network failures (refused, reset, closed before the answer) may pass; a bad
    URL scheme or a protocol bug on our side will not."""
    return isinstance(exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError))


def connection_refused(exc: BaseException) -> bool:
    """True if a ConnectionRefusedError is anywhere in the chain: anyio (the async client)
    reports "All connection attempts failed" and keeps the real cause underneath."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ConnectionRefusedError) or "refused" in str(current).lower():
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class ProtocolViolation(Exception):
    """Raised by a backend's parsers when a body is not the protocol; the backend turns it into
    `error_cls` with its own label (name, URL, model) in front."""

    def __init__(self, message: str, error_cls: type[LLMError] = LLMResponseError):
        super().__init__(message)
        self.error_cls = error_cls


class StreamDecoder(ABC):
    """Turns the lines of a streamed body into text pieces. `done` becomes True at the
    protocol's end marker; a stream that ends without it was cut."""

    done: bool = False

    @abstractmethod
    def feed(self, line: str) -> list[str]:
        """The text pieces carried by one line (often none)."""


class _Default:
    """Marks an argument left out, where None is a meaningful value (no API key)."""

    def __repr__(self) -> str:
        return "<default>"


DEFAULT = _Default()


class HttpLLMBackend(ABC):
    """The request loop, retries and errors of an HTTP LLM backend; subclasses give the
    protocol (`path`, `payload`, `parse_completion`, `decoder`)."""

    #: Short protocol name; the start of every error message.
    backend_name: ClassVar[str] = "http"
    #: Where the server usually listens, and the variable that usually holds its key.
    default_base_url: ClassVar[str] = ""
    default_api_key_env: ClassVar[str | None] = None

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        *,
        api_key_env: str | None | _Default = DEFAULT,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_after: float = 30.0,
        context_window: int = 8192,
        headers: dict[str, str] | None = None,
    ):
        base_url = self.default_base_url if base_url is None else base_url
        if isinstance(api_key_env, _Default):
            api_key_env = self.default_api_key_env
        try:
            url = httpx.URL(base_url)
        except httpx.InvalidURL:
            url = httpx.URL()
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(f"{self.backend_name}: base_url must be an http(s) URL, got {base_url!r}")
        if not model:
            raise ConfigError(f"{self.backend_name} {base_url}: model must be set")
        if timeout <= 0 or max_retries < 0 or backoff_base < 0 or backoff_max < 0 or max_retry_after < 0:
            raise ConfigError(f"{self.backend_name} {base_url}: timeout must be > 0 and the retry "
                              "settings >= 0")
        if context_window < 1:
            raise ConfigError(f"{self.backend_name} {base_url}: context_window must be >= 1")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.max_retry_after = float(max_retry_after)
        self._context_window = int(context_window)
        self.headers = dict(headers or {})

    # ------------------------------------------------------------------ protocol hooks
    @property
    @abstractmethod
    def path(self) -> str:
        """Appended to base_url, e.g. "/chat/completions"."""

    @abstractmethod
    def payload(self, messages: list[ChatMessage], settings: GenerationSettings,
                stream: bool) -> dict[str, Any]:
        """The JSON request body."""

    @abstractmethod
    def parse_completion(self, data: Any) -> Completion:
        """A Completion (seconds left at 0) from the decoded JSON body; raise ProtocolViolation,
        KeyError, IndexError, TypeError or ValueError if it is not the protocol."""

    @abstractmethod
    def decoder(self) -> StreamDecoder:
        """A fresh decoder for one streamed body."""

    def not_found_hint(self) -> str:
        return f"check the base URL and that model {self.model!r} is served there"

    # ------------------------------------------------------------------ LLMBackend protocol
    @property
    def name(self) -> str:
        return self.backend_name

    @property
    def context_window(self) -> int:
        return self._context_window

    @property
    def max_concurrency(self) -> int | None:
        """A server: as many answers at a time as the caller allows."""
        return NETWORK

    @property
    def token_counter(self) -> None:
        """The server's tokenizer is out of reach: the prompt is budgeted with tiktoken."""
        return None

    @classmethod
    def from_settings(cls: type[B], settings: BackendSettings) -> B:
        """The backend an [llm] config section (or the --llm options) describes; nothing is
        contacted here."""
        if not settings.model:
            raise ConfigError(f"llm backend '{settings.backend}' needs a model name (--llm-model or [llm] model)")
        kwargs: dict[str, Any] = {"model": settings.model, "timeout": settings.timeout,
                                  "max_retries": settings.max_retries, **cls.settings_arguments(settings)}
        if settings.context_window:
            kwargs["context_window"] = settings.context_window
        if settings.base_url:
            kwargs["base_url"] = settings.base_url
        return cls(**kwargs)

    @classmethod
    def settings_arguments(cls, settings: BackendSettings) -> dict[str, Any]:
        """What this protocol takes from the settings besides the common ones (checked here)."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        # "type" is the class name, as the encoder and chunker write it.
        return {"type": type(self).__name__, "init_parameters": self.init_parameters()}

    def init_parameters(self) -> dict[str, Any]:
        # Header values are serialised as given: credentials belong in the api_key_env variable.
        return {
            "base_url": self.base_url, "model": self.model, "api_key_env": self.api_key_env,
            "timeout": self.timeout, "max_retries": self.max_retries,
            "backoff_base": self.backoff_base, "backoff_max": self.backoff_max,
            "max_retry_after": self.max_retry_after, "context_window": self._context_window,
            "headers": dict(self.headers),
        }

    @classmethod
    def from_dict(cls: type[B], data: dict[str, Any]) -> B:
        return cls(**data.get("init_parameters", {}))

    def __repr__(self) -> str:
        # Header values may be credentials: show their names only.
        return (f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r}, "
                f"api_key_env={self.api_key_env!r}, headers={sorted(self.headers)!r})")

    # ------------------------------------------------------------------ sync
    def generate(self, messages: Sequence[ChatMessage | dict[str, str]],
                 settings: GenerationSettings | None = None) -> Completion:
        body = self.payload(as_messages(messages), settings or GenerationSettings(), stream=False)
        start = time.perf_counter()
        with httpx.Client(timeout=self.timeout, verify=ssl_context()) as client:
            attempt = 0
            while True:
                try:
                    response = client.post(self.url, json=body, headers=self.request_headers(False))
                except httpx.HTTPError as exc:
                    delay = self._after_failure(attempt, exc=exc)
                else:
                    if response.is_success:
                        return self._completion(response.text, time.perf_counter() - start)
                    delay = self._after_failure(attempt, status=response.status_code,
                                                headers=response.headers, body=response.text)
                time.sleep(delay)
                attempt += 1

    def stream(self, messages: Sequence[ChatMessage | dict[str, str]],
               settings: GenerationSettings | None = None) -> Iterator[str]:
        body = self.payload(as_messages(messages), settings or GenerationSettings(), stream=True)
        with httpx.Client(timeout=self.timeout, verify=ssl_context()) as client:
            attempt = 0
            while True:
                sent = 0
                try:
                    with client.stream("POST", self.url, json=body,
                                       headers=self.request_headers(True)) as response:
                        if response.is_success:
                            decoder = self.decoder()
                            for line in response.iter_lines():
                                for piece in self._decode(decoder, line):
                                    sent += len(piece)
                                    yield piece
                                if decoder.done:
                                    return
                            raise httpx.RemoteProtocolError("the body ended before the end marker")
                        response.read()
                        delay = self._after_failure(attempt, status=response.status_code,
                                                    headers=response.headers, body=response.text)
                except httpx.HTTPError as exc:
                    if sent:
                        raise self._stream_cut(exc, sent) from exc
                    delay = self._after_failure(attempt, exc=exc)
                time.sleep(delay)
                attempt += 1

    # ------------------------------------------------------------------ async
    async def agenerate(self, messages: Sequence[ChatMessage | dict[str, str]],
                        settings: GenerationSettings | None = None) -> Completion:
        body = self.payload(as_messages(messages), settings or GenerationSettings(), stream=False)
        start = time.perf_counter()
        async with httpx.AsyncClient(timeout=self.timeout, verify=ssl_context()) as client:
            attempt = 0
            while True:
                try:
                    response = await client.post(self.url, json=body,
                                                 headers=self.request_headers(False))
                except httpx.HTTPError as exc:
                    delay = self._after_failure(attempt, exc=exc)
                else:
                    if response.is_success:
                        return self._completion(response.text, time.perf_counter() - start)
                    delay = self._after_failure(attempt, status=response.status_code,
                                                headers=response.headers, body=response.text)
                await asyncio.sleep(delay)
                attempt += 1

    async def astream(self, messages: Sequence[ChatMessage | dict[str, str]],
                      settings: GenerationSettings | None = None) -> AsyncIterator[str]:
        body = self.payload(as_messages(messages), settings or GenerationSettings(), stream=True)
        async with httpx.AsyncClient(timeout=self.timeout, verify=ssl_context()) as client:
            attempt = 0
            while True:
                sent = 0
                try:
                    async with client.stream("POST", self.url, json=body,
                                             headers=self.request_headers(True)) as response:
                        if response.is_success:
                            decoder = self.decoder()
                            async for line in response.aiter_lines():
                                for piece in self._decode(decoder, line):
                                    sent += len(piece)
                                    yield piece
                                if decoder.done:
                                    return
                            raise httpx.RemoteProtocolError("the body ended before the end marker")
                        await response.aread()
                        delay = self._after_failure(attempt, status=response.status_code,
                                                    headers=response.headers, body=response.text)
                except httpx.HTTPError as exc:
                    if sent:
                        raise self._stream_cut(exc, sent) from exc
                    delay = self._after_failure(attempt, exc=exc)
                await asyncio.sleep(delay)
                attempt += 1

    # ------------------------------------------------------------------ shared request parts
    @property
    def url(self) -> str:
        return self.base_url + self.path

    @property
    def label(self) -> str:
        return f"{self.backend_name} {self.base_url} (model {self.model})"

    def api_key(self) -> str | None:
        """Read at request time: never kept on the object."""
        if not self.api_key_env:
            return None
        return os.environ.get(self.api_key_env) or None

    def request_headers(self, stream: bool) -> dict[str, str]:
        headers = {"Accept": "text/event-stream" if stream else "application/json", **self.headers}
        key = self.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def error(self, cls: type[LLMError], message: str) -> LLMError:
        """`cls` with the label in front, the API key (if a server echoed it) blanked out."""
        text = f"{self.label}: {message}"
        key = self.api_key()
        if key and len(key) >= 4:
            text = text.replace(key, "***")
        return cls(text)

    def _completion(self, text: str, seconds: float) -> Completion:
        try:
            data = json.loads(text)
        except ValueError:
            raise self.error(LLMResponseError, f"the answer is not JSON: {excerpt(text)!r}") from None
        try:
            completion = self.parse_completion(data)
        except ProtocolViolation as exc:
            raise self.error(exc.error_cls, f"{exc}: {excerpt(text)!r}") from None
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise self.error(LLMResponseError, f"unexpected answer shape ({type(exc).__name__}: "
                                               f"{exc}): {excerpt(text)!r}") from None
        return completion.model_copy(update={"seconds": seconds})

    def _decode(self, decoder: StreamDecoder, line: str) -> list[str]:
        try:
            return decoder.feed(line)
        except ProtocolViolation as exc:
            raise self.error(exc.error_cls, str(exc)) from None

    def _stream_cut(self, exc: httpx.HTTPError, sent: int) -> LLMError:
        """A failure after text was yielded: the caller already has part of the answer, so a
        retry would duplicate it; say how far it got instead of returning a truncated answer."""
        if isinstance(exc, httpx.TimeoutException):
            return self.error(LLMTimeoutError, f"the stream stalled for more than {self.timeout:g} s "
                                               f"after {sent} characters")
        return self.error(LLMConnectionError, f"the stream was cut after {sent} characters "
                                              f"({type(exc).__name__}: {exc})")

    # ------------------------------------------------------------------ retry decision
    def _after_failure(self, attempt: int, *, exc: httpx.HTTPError | None = None,
                       status: int | None = None, headers: httpx.Headers | None = None,
                       body: str = "") -> float:
        """Seconds to wait before attempt `attempt + 1`, or raise the error the caller should see.
        Shared by the four request loops so sync and async behave the same."""
        tries = attempt + 1
        can_retry = attempt < self.max_retries
        if exc is not None:
            if not (can_retry and is_retryable(exc)):
                raise self._transport_error(exc, tries) from exc
            return self._wait(attempt, f"{type(exc).__name__}")
        assert status is not None
        retry_after = parse_retry_after((headers or httpx.Headers()).get("retry-after"))
        if status == 429:
            if retry_after is not None and retry_after > self.max_retry_after:
                raise self.error(LLMRateLimitError,
                                 f"rate limited (HTTP 429): the server asks to wait {retry_after:g} s, "
                                 f"more than the {self.max_retry_after:g} s this backend waits "
                                 f"(max_retry_after)")
            if not can_retry:
                raise self.error(LLMRateLimitError, f"rate limited (HTTP 429) after {tries} attempts: "
                                                    f"{server_message(body)}")
            return self._wait(attempt, "HTTP 429", retry_after)
        if status in RETRY_STATUSES:
            if not can_retry:
                raise self.error(LLMResponseError, f"server error HTTP {status} after {tries} attempts: "
                                                   f"{server_message(body)}")
            capped = None if retry_after is None else min(retry_after, self.max_retry_after)
            return self._wait(attempt, f"HTTP {status}", capped)
        raise self._status_error(status, body)

    def _wait(self, attempt: int, cause: str, retry_after: float | None = None) -> float:
        delay = retry_after if retry_after is not None else backoff_delay(
            attempt, self.backoff_base, self.backoff_max)
        logger.warning("%s: %s, retrying in %.2f s (attempt %d of %d)", self.label, cause, delay,
                       attempt + 2, self.max_retries + 1)
        return delay

    def _status_error(self, status: int, body: str) -> LLMError:
        message = server_message(body)
        if status in (401, 403):
            if not self.api_key_env:
                hint = "this backend sends no API key (set api_key_env to the variable that holds one)"
            elif self.api_key():
                hint = f"the key in the environment variable {self.api_key_env} was refused"
            else:
                hint = f"set the environment variable {self.api_key_env} to a valid API key"
            return self.error(LLMAuthError, f"not authorised (HTTP {status}): {hint}; server says: {message}")
        if status == 404:
            return self.error(LLMNotFoundError, f"not found (HTTP {status}) at {self.url}: "
                                                f"{self.not_found_hint()}; server says: {message}")
        if 400 <= status < 500 and mentions_context_length(body):
            return self.error(LLMContextLengthError, f"prompt plus max_tokens exceed the model's context "
                                                     f"window (HTTP {status}): {message}")
        if 400 <= status < 500:
            return self.error(LLMError, f"request rejected (HTTP {status}): {message}")
        return self.error(LLMResponseError, f"unexpected HTTP {status}: {message}")

    def _transport_error(self, exc: httpx.HTTPError, tries: int) -> LLMError:
        after = f" (after {tries} attempt{'s' if tries > 1 else ''})"
        if isinstance(exc, httpx.ConnectTimeout):
            return self.error(LLMTimeoutError, f"could not connect within {self.timeout:g} s{after}")
        if isinstance(exc, httpx.TimeoutException):
            return self.error(LLMTimeoutError, f"no answer within the timeout of {self.timeout:g} s{after}")
        if isinstance(exc, httpx.ConnectError):
            if connection_refused(exc):
                return self.error(LLMConnectionError, f"connection refused at {self.url}: is the server "
                                                      f"running?{after}")
            return self.error(LLMConnectionError, f"cannot connect to {self.url}: {exc}{after}")
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.NetworkError)):
            return self.error(LLMConnectionError, f"the server closed the connection before answering "
                                                  f"({type(exc).__name__}: {exc}){after}")
        return self.error(LLMConnectionError, f"request failed ({type(exc).__name__}: {exc})")


def probe_json(url: str, api_key: str | None, timeout: float, read: Any) -> list[str]:
    """GET a small JSON listing once, no retries (used to discover a server before any answer):
    `read(data)` picks the names; a server that answers with an error or non-JSON gives [].
    Raises LLMConnectionError (never naming the key) when nothing answers within `timeout`."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with httpx.Client(timeout=timeout, verify=ssl_context()) as client:
            response = client.get(url, headers=headers)
    except (httpx.TransportError, httpx.InvalidURL) as e:
        raise LLMConnectionError(f"nothing answered at {url} within {timeout:g} s ({type(e).__name__})") from None
    if response.status_code != 200:
        return []
    try:
        data = response.json()
        return read(data) if isinstance(data, dict) else []
    except (ValueError, TypeError, KeyError):
        return []
