"""Ollama's native chat API (POST {base_url}/api/chat). Unlike its /v1 endpoint it takes
`num_ctx`, so the context window the prompt assembler plans for is the one Ollama allocates
(Ollama otherwise uses its own small default and silently drops the start of a long prompt).

Only the protocol lives here; the request loop, retries and errors are in `connectors.llm.http`.
"""

from __future__ import annotations

import json
from typing import Any

from connectors.llm.http import (HttpLLMBackend, ProtocolViolation, StreamDecoder, excerpt, probe_json,
                                 mentions_context_length)
from rag.errors import LLMContextLengthError, LLMResponseError
from rag.answer.llm import ChatMessage, Completion, GenerationSettings

DEFAULT_BASE_URL = "http://127.0.0.1:11434"


def in_band_error(message: Any) -> ProtocolViolation:
    """Ollama reports failures as {"error": "..."}, also inside a 200 stream."""
    text = excerpt(str(message))
    cls = LLMContextLengthError if mentions_context_length(text) else LLMResponseError
    return ProtocolViolation(f"the server reported an error: {text}", cls)


class NDJSONChatDecoder(StreamDecoder):
    """Newline-delimited JSON: one object per line with message.content, the last one with
    "done": true (and the counts)."""

    def feed(self, line: str) -> list[str]:
        if not line.strip():
            return []
        try:
            event = json.loads(line)
        except ValueError:
            raise ProtocolViolation(f"a stream line is not JSON: {excerpt(line)!r}") from None
        if not isinstance(event, dict):
            raise ProtocolViolation(f"a stream line is not an object: {excerpt(line)!r}")
        if "error" in event:
            raise in_band_error(event["error"])
        message = event.get("message", {})
        content = message.get("content", "") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise ProtocolViolation(f"a stream line has no message.content string: {excerpt(line)!r}")
        if event.get("done") is True:
            self.done = True
        return [content] if content else []


class OllamaBackend(HttpLLMBackend):
    """Ollama's /api/chat. `base_url` is the server root (no /api, no /v1). Local Ollama needs no
    key; `api_key_env` names a variable holding a bearer token for a server behind a proxy."""

    backend_name = "ollama"
    default_base_url = DEFAULT_BASE_URL
    default_api_key_env = None

    @property
    def path(self) -> str:
        return "/api/chat"

    def not_found_hint(self) -> str:
        return (f"check that base_url is the server root (no /api or /v1) and that the model is "
                f"pulled (`ollama pull {self.model}`)")

    def payload(self, messages: list[ChatMessage], settings: GenerationSettings,
                stream: bool) -> dict[str, Any]:
        options: dict[str, Any] = {
            "num_predict": settings.max_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "num_ctx": self.context_window,
        }
        if settings.stop:
            options["stop"] = list(settings.stop)
        if settings.seed is not None:
            options["seed"] = settings.seed
        return {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": stream,  # always explicit: Ollama streams when it is left out
            "options": options,
        }

    def parse_completion(self, data: Any) -> Completion:
        if isinstance(data, dict) and "error" in data and "message" not in data:
            raise in_band_error(data["error"])
        content = data["message"]["content"]
        if not isinstance(content, str):
            raise ProtocolViolation("message.content is not a string")
        return Completion(text=content, model=data.get("model") or self.model,
                          finish_reason=data.get("done_reason"),
                          prompt_tokens=data.get("prompt_eval_count"),
                          completion_tokens=data.get("eval_count"))

    def decoder(self) -> StreamDecoder:
        return NDJSONChatDecoder()


def list_models(base_url: str = DEFAULT_BASE_URL, timeout: float = 0.5) -> list[str]:
    """The models an Ollama server has pulled (GET /api/tags), e.g. to find one answering at its
    default address. LLMConnectionError when nothing answers."""
    return probe_json(f"{base_url.rstrip('/')}/api/tags", None, timeout,
                      lambda data: [str(m["name"]) for m in data.get("models", []) if isinstance(m, dict) and "name" in m])
