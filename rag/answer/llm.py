"""The LLM backend protocol: one small interface that every backend implements.

Backends live in `connectors/` (OpenAI-compatible HTTP, Ollama native, local transformers);
the core only knows this protocol, so the prompt assembler and the answer pipeline work with
any of them, and with none (the extractive fallback in `rag.answer.extractive`).

Each backend offers `generate` and `stream`, sync and async. Network backends implement the
async methods natively and the sync ones as thin wrappers over a sync client, never by nesting
event loops. Errors are the `rag.errors.LLMError` family.

A backend also declares what its callers would otherwise guess from its class: how many answers
it generates well at a time (`max_concurrency`, which sizes the server's generation slots) and
whether it counts tokens itself (`token_counter`, which the prompt assembler budgets with).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

Role = Literal["system", "user", "assistant"]

# Network backends: seconds per request, and retries on 429 / 5xx / timeouts.
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 3

# `max_concurrency` of a backend that runs the model in this process: one answer at a time.
IN_PROCESS = 1
# `max_concurrency` of a backend that asks a server: as many at a time as the caller allows.
NETWORK = None


class ChatMessage(BaseModel):
    role: Role
    content: str


class GenerationSettings(BaseModel):
    """What to ask of the model for one answer. `max_tokens` is also the room the prompt
    assembler reserves for the answer inside the context window."""

    max_tokens: int = Field(512, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None


class Completion(BaseModel):
    text: str
    model: str
    finish_reason: str | None = Field(None, description="'stop', 'length', ... as the backend reports it")
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    seconds: float = 0.0


@runtime_checkable
class LLMBackend(Protocol):
    """Generate chat completions. `context_window` is the model's window in tokens (the prompt
    assembler keeps prompt + max_tokens inside it).

    `max_concurrency`: how many generations at a time the backend serves well. IN_PROCESS (1)
    for a model in this process (a second answer would only slow the first), NETWORK (None) for
    a server, which takes as many as its caller allows (`rag serve --max-concurrent-generations`),
    or a number a server is known to handle.

    `token_counter`: the model's own token count of a text, or None when the backend has none
    (the prompt assembler then budgets with tiktoken)."""

    @property
    def name(self) -> str: ...

    @property
    def context_window(self) -> int: ...

    @property
    def max_concurrency(self) -> int | None: ...

    @property
    def token_counter(self) -> Callable[[str], int] | None: ...

    def generate(self, messages: Sequence[ChatMessage], settings: GenerationSettings | None = None) -> Completion: ...

    def stream(self, messages: Sequence[ChatMessage], settings: GenerationSettings | None = None) -> Iterator[str]: ...

    async def agenerate(self, messages: Sequence[ChatMessage],
                        settings: GenerationSettings | None = None) -> Completion: ...

    def astream(self, messages: Sequence[ChatMessage],
                settings: GenerationSettings | None = None) -> AsyncIterator[str]: ...

    def to_dict(self) -> dict[str, Any]: ...


def as_messages(messages: Sequence[ChatMessage | dict[str, str]]) -> list[ChatMessage]:
    """Accept plain {'role', 'content'} dicts as well as ChatMessage."""
    return [m if isinstance(m, ChatMessage) else ChatMessage(**m) for m in messages]
