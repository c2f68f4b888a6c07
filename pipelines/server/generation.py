"""The server's LLM gate: every generation first takes one of a fixed number of slots.

The number of slots comes from what the backend declares (`LLMBackend.max_concurrency`), not from
its class: a model in this process generates one answer at a time; a network backend as many as
`--max-concurrent-generations` (default DEFAULT_NETWORK_GENERATIONS) allows, or fewer if it says
so. The slot is taken only around the LLM call, so retrieval and extractive answers never wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from pipelines.server.security import DEFAULT_NETWORK_GENERATIONS
from rag.answer.llm import ChatMessage, Completion, GenerationSettings, LLMBackend
from rag.errors import LLMConnectionError, LLMError, RagError


class GenerationInterrupted(RagError):
    """The LLM failed after part of a streamed answer had gone to the client. Not an LLMError on
    purpose: the pipeline answers an LLMError with extracts, which here would be spliced onto
    half an answer the client already shows; the client gets an error chunk instead."""


def generation_slots(llm: LLMBackend | None, max_concurrent_generations: int | None) -> int:
    """How many answers the server lets `llm` generate at once: none without an LLM, else the
    backend's own limit (1 for an in-process model), capped by the server's option."""
    if llm is None:
        return 0
    allowed = max_concurrent_generations or DEFAULT_NETWORK_GENERATIONS
    return allowed if llm.max_concurrency is None else min(llm.max_concurrency, allowed)


class GatedLLM:
    """The served LLM backend: every call first takes a generation slot of the server's
    semaphore. `generate` is called from worker threads (ChatSession.rewrite) and waits for its
    slot on the server's event loop; the async calls wait in the loop itself. The backend's
    stream is closed with the call (`aclosing`), whoever stops iterating: the end of the answer,
    an error, or a client that left (its task is cancelled)."""

    def __init__(self, inner: LLMBackend, slots: asyncio.Semaphore, loop: asyncio.AbstractEventLoop,
                 interrupt_after_text: bool):
        self.inner, self.slots, self.loop = inner, slots, loop
        self.interrupt_after_text = interrupt_after_text

    # ------------------------------------------------------------------ what the backend declares
    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def context_window(self) -> int:
        return self.inner.context_window

    @property
    def max_concurrency(self) -> int | None:
        return self.inner.max_concurrency

    @property
    def token_counter(self) -> Callable[[str], int] | None:
        return self.inner.token_counter

    def to_dict(self) -> dict[str, Any]:
        return self.inner.to_dict()

    # ------------------------------------------------------------------ generation, in a slot
    @contextlib.contextmanager
    def _slot_from_thread(self) -> Iterator[None]:
        future = asyncio.run_coroutine_threadsafe(self.slots.acquire(), self.loop)
        while True:
            try:
                future.result(timeout=0.5)
                break
            except TimeoutError:
                if self.loop.is_closed() or not self.loop.is_running():
                    future.cancel()
                    raise LLMConnectionError("the server is shutting down") from None
        try:
            yield
        finally:
            self.loop.call_soon_threadsafe(self.slots.release)

    def generate(self, messages: Sequence[ChatMessage], settings: GenerationSettings | None = None) -> Completion:
        with self._slot_from_thread():
            return self.inner.generate(messages, settings)

    def stream(self, messages: Sequence[ChatMessage], settings: GenerationSettings | None = None) -> Iterator[str]:
        with self._slot_from_thread():
            yield from self.inner.stream(messages, settings)

    async def agenerate(self, messages: Sequence[ChatMessage],
                        settings: GenerationSettings | None = None) -> Completion:
        async with self.slots:
            return await self.inner.agenerate(messages, settings)

    async def astream(self, messages: Sequence[ChatMessage],
                      settings: GenerationSettings | None = None) -> AsyncIterator[str]:
        async with self.slots:
            sent = False
            async with contextlib.aclosing(self.inner.astream(messages, settings)) as pieces:
                try:
                    async for piece in pieces:
                        sent = sent or bool(piece)
                        yield piece
                except LLMError as e:
                    if sent and self.interrupt_after_text:
                        raise GenerationInterrupted(f"the answer stopped part-way: {e}") from e
                    raise
