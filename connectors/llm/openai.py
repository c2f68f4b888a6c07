"""OpenAI chat completions over HTTP: OpenAI itself, vLLM, the llama.cpp server, LM Studio, and
Ollama's /v1 endpoint all speak it, so one backend covers the hosted and the local servers.

Only the protocol lives here (request body, answer and server-sent-event parsing); the request
loop, retries and error mapping are shared with the Ollama backend in `connectors.llm.http`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from connectors.llm.http import (HttpLLMBackend, ProtocolViolation, StreamDecoder, excerpt, probe_json,
                                 mentions_context_length)
from rag.errors import ConfigError, LLMContextLengthError, LLMResponseError
from rag.answer.llm import ChatMessage, Completion, GenerationSettings

if TYPE_CHECKING:
    from connectors.llm.registry import BackendSettings

DEFAULT_BASE_URL = "http://127.0.0.1:8080/v1"  # llama.cpp server's default address


def in_band_error(error: Any) -> ProtocolViolation:
    """An {"error": ...} object inside a 200 body or a stream: servers report a prompt that
    is too long this way too, so it gets the same class as the HTTP 400."""
    message = error.get("message") if isinstance(error, dict) else error
    text = excerpt(str(message if message is not None else error))
    cls = LLMContextLengthError if mentions_context_length(json.dumps(error)) else LLMResponseError
    return ProtocolViolation(f"the server reported an error: {text}", cls)


class SSEChatDecoder(StreamDecoder):
    """Server-sent events of `"stream": true`: one `data: {json}` line per chunk, `data: [DONE]`
    at the end. Comments (`: keep-alive`), blank lines and other fields (event:, id:) carry no
    text. Every chat-completions server sends single-line data fields, so each data line is
    decoded on its own rather than collecting multi-line events."""

    def feed(self, line: str) -> list[str]:
        if line.startswith("error:"):  # llama.cpp reports some failures this way mid-stream
            data = line[len("error:"):].strip()
            try:
                error: Any = json.loads(data)
            except ValueError:
                error = data
            raise in_band_error(error)
        if not line.startswith("data:"):
            return []
        data = line[len("data:"):].strip()
        if data == "[DONE]":
            self.done = True
            return []
        try:
            event = json.loads(data)
        except ValueError:
            raise ProtocolViolation(f"a stream event is not JSON: {excerpt(data)!r}") from None
        if not isinstance(event, dict):
            raise ProtocolViolation(f"a stream event is not an object: {excerpt(data)!r}")
        if "error" in event:
            raise in_band_error(event["error"])
        choices = event.get("choices")
        if not isinstance(choices, list):
            raise ProtocolViolation(f"a stream event has no choices list: {excerpt(data)!r}")
        if not choices:  # e.g. the usage-only chunk of stream_options.include_usage
            return []
        delta = choices[0].get("delta") if isinstance(choices[0], dict) else None
        if not isinstance(delta, dict):
            raise ProtocolViolation(f"a stream event has no choices[0].delta: {excerpt(data)!r}")
        content = delta.get("content")
        if content is None:  # the role-only first chunk, the finish_reason chunk
            return []
        if not isinstance(content, str):
            raise ProtocolViolation(f"choices[0].delta.content is not a string: {excerpt(data)!r}")
        return [content] if content else []


class OpenAICompatibleBackend(HttpLLMBackend):
    """POST {base_url}/chat/completions. `base_url` includes the version prefix
    (https://api.openai.com/v1, http://127.0.0.1:8080/v1, http://127.0.0.1:11434/v1).
    The API key is read from the environment variable named by `api_key_env` at each request;
    local servers that need none work with the variable unset."""

    backend_name = "openai-compatible"
    default_base_url = DEFAULT_BASE_URL
    default_api_key_env = "OPENAI_API_KEY"

    @classmethod
    def settings_arguments(cls, settings: BackendSettings) -> dict[str, Any]:
        if not settings.base_url:
            raise ConfigError("llm backend 'openai' needs base_url (--base-url or [llm] base_url), "
                              "e.g. http://127.0.0.1:8080/v1")
        return {"api_key_env": settings.api_key_env}

    @property
    def path(self) -> str:
        return "/chat/completions"

    def payload(self, messages: list[ChatMessage], settings: GenerationSettings,
                stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": settings.max_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
        }
        if settings.stop:
            body["stop"] = list(settings.stop)
        if settings.seed is not None:
            body["seed"] = settings.seed
        if stream:
            body["stream"] = True
        return body

    def parse_completion(self, data: Any) -> Completion:
        if isinstance(data, dict) and "error" in data and "choices" not in data:
            raise in_band_error(data["error"])
        choices = data["choices"]
        if not isinstance(choices, list) or not choices:
            raise ProtocolViolation("the answer has no choices")
        choice = choices[0]
        content = choice["message"]["content"]
        if content is None:  # e.g. a reasoning model cut by max_tokens before it answered
            content = ""
        if not isinstance(content, str):
            raise ProtocolViolation("choices[0].message.content is not a string")
        usage = data.get("usage") or {}
        return Completion(text=content, model=data.get("model") or self.model,
                          finish_reason=choice.get("finish_reason"),
                          prompt_tokens=usage.get("prompt_tokens"),
                          completion_tokens=usage.get("completion_tokens"))

    def decoder(self) -> StreamDecoder:
        return SSEChatDecoder()


def list_models(base_url: str, api_key: str | None = None, timeout: float = 2.0) -> list[str]:
    """The model ids an OpenAI-compatible server lists at GET {base_url}/models (empty when it
    lists none or does not implement the route). LLMConnectionError when nothing answers."""
    return probe_json(f"{base_url.rstrip('/')}/models", api_key, timeout,
                      lambda data: [str(m["id"]) for m in data.get("data", []) if isinstance(m, dict) and "id" in m])
