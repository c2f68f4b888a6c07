"""Answers and chat over a collection: retriever -> prompt assembler -> LLM backend (or extracts).

```python
from pipelines.answer import RagPipeline
from connectors.llm.openai import OpenAICompatibleBackend

with RagPipeline(store=StoreSettings(collection="docs"),
                 llm=OpenAICompatibleBackend(base_url="http://127.0.0.1:8080/v1", model="smollm2")) as rag:
    rag.ingest(["reports/"])
    answer = rag.ask("What was the revenue in Q3?")
    print(answer.text, [p.source for p in answer.cited_passages])
    chat = rag.chat()
    chat.ask("What was the revenue in Q3?"); chat.ask("And in Q2?")
```

With `llm=None` answers are extracts (quoted sentences with citations). If the LLM fails (server
down, timeout, stream cut), the answer falls back to extracts and its notes say why; set
`fallback_to_extracts=False` to get the error instead.
"""

from __future__ import annotations

import copy
import inspect
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypeAlias

from pipelines.stores import StoreSettings, collection_encoder, open_store
from rag.ingest.chunking import Chunker
from rag.errors import ConfigError, LLMError
from rag.answer.extractive import extract
from rag.embed.cache import VectorCache
from rag.answer.llm import ChatMessage, GenerationSettings, LLMBackend
from rag.models import Answer, Passage
from rag.answer.cleanup import StreamCleaner, clean_answer
from rag.answer.grounding import check_answer_grounding
from rag.answer.prompt import (DEFAULT_CONTEXT_WINDOW, Prompt, PromptAssembler, PromptTemplate, check_citations,
                               strip_citations)
from rag.search.retrieval import Retriever, SearchResponse
from rag.tracing import OFF, span, start
from rag.tracing import enabled as tracing_on

#: What a pipeline searches with: a Retriever, or (query, top_k, filters) -> SearchResponse.
Searcher: TypeAlias = Retriever | Callable[[str, int | None, Any], SearchResponse]
#: Constructor arguments kept under another attribute name (every other one under its own).
ARGUMENT_ATTRIBUTES = {"retriever": "retriever_settings"}


class RagPipeline:
    """encoder -> store -> retriever -> prompt -> backend, each part replaceable.

    encoder: a SentenceEncoder (default: the model the collection was built with).
    retriever: Retriever settings (mode, fusion, weights, candidates, top_k, mmr_lambda).
    prompt: a PromptAssembler (default: sized to the backend's context window).
    llm: an LLMBackend, or None for extracts. generation: max_tokens, temperature, ...
    searcher: what to search with instead of opening `store`: a Retriever, or a callable
        (query, top_k, filters) -> SearchResponse (a server's open collection). The pipeline
        closes only a store it opened itself.
    on_prepared: called with the prompt's passages as soon as they are chosen, before the LLM is
        asked (a stream's first event can show the sources).

    `derive(**overrides)` is the same pipeline with some arguments changed (one request's
    backend, settings, searcher): every other argument is shared as it is.
    """

    def __init__(self, encoder=None, store: StoreSettings | None = None, chunker: Chunker | None = None,
                 retriever: dict[str, Any] | None = None, prompt: PromptAssembler | None = None,
                 llm: LLMBackend | None = None, generation: GenerationSettings | None = None,
                 fallback_to_extracts: bool = True, llm_origin: str | None = None,
                 sentence_cache: VectorCache | None = None, searcher: Searcher | None = None,
                 on_prepared: Callable[[list[Passage]], None] | None = None):
        self.encoder = encoder
        self.store = store or StoreSettings()
        self.chunker = chunker or Chunker()
        self.retriever_settings = dict(retriever or {})
        self.llm = llm
        self.generation = generation or GenerationSettings()
        if prompt is None:
            window = llm.context_window if llm is not None else DEFAULT_CONTEXT_WINDOW
            prompt = PromptAssembler(context_window=window,
                                     max_answer_tokens=min(self.generation.max_tokens, window // 2))
        if prompt.token_counter is None:
            prompt.token_counter = model_token_counter(llm)  # the budget in the model's own tokens
        self.prompt = prompt
        self.fallback_to_extracts = fallback_to_extracts
        # How the backend was chosen (e.g. by `llm = "auto"`), said with every answer.
        self.llm_origin = llm_origin or (f"backend {llm.name}" if llm is not None else "no LLM: extracts")
        # The vectors of the passages' sentences extracts were picked from: the next question
        # (a follow-up, another user of the server) mostly re-reads the same passages.
        self.sentence_cache = sentence_cache if sentence_cache is not None else VectorCache()
        self.searcher = searcher
        self.on_prepared = on_prepared
        self._vs = None
        self._retriever: Retriever | None = None

    def derive(self, **overrides: Any) -> RagPipeline:
        """This pipeline with the constructor arguments in `overrides` changed, e.g. one request's
        `llm`, `generation`, `searcher` and `on_prepared`. It is a copy, so every other argument
        (one added later too) is the very object this pipeline holds; nothing is rebuilt from
        the overrides (the prompt stays this one's). The copy owns no store: it searches with the
        `searcher` given, else with this pipeline's searcher or its open retriever, else it opens
        (and closes) a store of its own."""
        unknown = set(overrides) - set(inspect.signature(type(self)).parameters)
        if unknown:
            raise TypeError(f"derive() got arguments the pipeline does not take: {', '.join(sorted(unknown))}")
        derived = copy.copy(self)
        derived.searcher = self.searcher if self.searcher is not None else self._retriever
        derived._vs, derived._retriever = None, None
        for name, value in overrides.items():
            setattr(derived, ARGUMENT_ATTRIBUTES.get(name, name), value)
        return derived

    # ------------------------------------------------------------------ building
    @classmethod
    def from_config(cls, config) -> RagPipeline:
        """From a RagConfig or the path of a TOML config file."""
        from connectors.llm.registry import make_backend, resolve_backend
        from pipelines.config import RagConfig, load_config
        from rag.embed.encoder import DEFAULT_MODEL

        cfg: RagConfig = config if isinstance(config, RagConfig) else load_config(config)
        llm_cfg, origin = resolve_backend(cfg.llm)
        llm = make_backend(llm_cfg)
        generation = GenerationSettings(max_tokens=cfg.prompt.max_answer_tokens, temperature=cfg.llm.temperature)
        window = cfg.prompt.context_window or (llm.context_window if llm is not None else DEFAULT_CONTEXT_WINDOW)
        template = PromptTemplate.from_file(cfg.prompt.template) if cfg.prompt.template else None
        prompt = PromptAssembler(template=template, context_window=window,
                                 max_answer_tokens=min(cfg.prompt.max_answer_tokens, window // 2),
                                 max_passages=cfg.prompt.max_passages, margin=cfg.prompt.margin,
                                 count_tokens=model_token_counter(llm))
        # No encoder given: the one the collection records is used (any other is refused).
        encoder = cfg.encoder.build() if cfg.encoder.model != DEFAULT_MODEL or cfg.encoder.device else None
        retriever = {**cfg.retrieval.settings(), "top_k": cfg.retrieval.top_k or cfg.prompt.max_passages}
        return cls(encoder=encoder, store=cfg.store.settings(), chunker=cfg.chunking.build(), retriever=retriever,
                   prompt=prompt, llm=llm, generation=generation, llm_origin=origin)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "RagPipeline", "init_parameters": {
            "encoder": self.encoder.to_dict() if self.encoder is not None else None,
            "store": self.store.model_dump(), "chunker": self.chunker.to_dict(),
            "retriever": _serialisable(self.retriever_settings),
            "prompt": self.prompt.to_dict(),
            "llm": self.llm.to_dict() if self.llm is not None else None,
            "generation": self.generation.model_dump(), "fallback_to_extracts": self.fallback_to_extracts}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RagPipeline:
        from connectors.llm.registry import backend_from_dict
        from rag.embed.encoder import SentenceEncoder

        p = data.get("init_parameters", {})
        return cls(encoder=SentenceEncoder.from_dict(p["encoder"]) if p.get("encoder") else None,
                   store=StoreSettings(**p.get("store", {})), chunker=Chunker.from_dict(p["chunker"]),
                   retriever=p.get("retriever"), prompt=PromptAssembler.from_dict(p["prompt"]),
                   llm=backend_from_dict(p["llm"]) if p.get("llm") else None,
                   generation=GenerationSettings(**p.get("generation", {})),
                   fallback_to_extracts=p.get("fallback_to_extracts", True))

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> RagPipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the store this pipeline opened (the embedded store is held by one process at a
        time); a searcher given is its owner's to close."""
        if self._vs is not None:
            self._vs.close()
        self._vs, self._retriever = None, None

    def _get_retriever(self) -> Retriever:
        if self._retriever is None:
            vs = open_store(self.store)
            try:
                self.encoder = collection_encoder(vs.info.model, self.store, self.encoder)
            except Exception:
                vs.close()
                raise
            self._vs = vs
            self._retriever = Retriever(vs, self.encoder, **self.retriever_settings)
        return self._retriever

    # ------------------------------------------------------------------ ingest and search
    def ingest(self, paths: Sequence[str], **kwargs):
        """Ingest files or folders into the pipeline's collection (see pipelines.ingest.ingest)."""
        from pipelines.ingest import ingest
        from rag.embed.encoder import SentenceEncoder

        self.close()  # the writer needs the store for itself
        if self.encoder is None:
            self.encoder = SentenceEncoder()
        return ingest(list(paths), encoder=self.encoder, store=self.store, chunker=self.chunker, **kwargs)

    def search(self, query: str, top_k: int | None = None, filters=None) -> SearchResponse:
        searcher = self.searcher
        if searcher is None:
            searcher = self._get_retriever()
        if isinstance(searcher, Retriever):
            return searcher.search(query, top_k=top_k, filters=filters)
        return searcher(query, top_k, filters)

    # ------------------------------------------------------------------ answers
    def prepare(self, question: str, history: Sequence[ChatMessage] = (), filters=None,
                retrieval_query: str | None = None) -> tuple[Prompt, SearchResponse]:
        """Retrieve for `retrieval_query` (default: the question) and assemble the prompt."""
        response = self.search(retrieval_query or question, filters=filters)
        with span("rag.answer.prompt") as traced:
            prompt = self.prompt.assemble(question, response.results, history=history)
            traced.update(**{"rag.answer.passages": len(prompt.passages), "gen_ai.usage.input_tokens":
                             prompt.prompt_tokens})
        if self.on_prepared is not None:
            self.on_prepared(prompt.passages)
        return prompt, response

    def ask(self, question: str, history: Sequence[ChatMessage] = (), filters=None,
            retrieval_query: str | None = None) -> Answer:
        answer = None
        for item in self.stream(question, history, filters, retrieval_query, _stream=False):
            answer = item
        assert isinstance(answer, Answer)
        return answer

    def stream(self, question: str, history: Sequence[ChatMessage] = (), filters=None,
               retrieval_query: str | None = None, _stream: bool = True) -> Iterator[str | Answer]:
        """Yields the answer's text as it is generated, then the finished Answer (last item)."""
        started = time.perf_counter()
        traced = start("rag.answer", **{"rag.answer.streamed": _stream})
        try:
            with traced.current():
                prompt, response = self.prepare(question, history, filters, retrieval_query)
            answer = self._answer_shell(question, prompt, response, retrieval_query)
            if not prompt.passages or self.llm is None:
                with traced.current():
                    text = self._without_llm(answer, question, retrieval_query, prompt, response)
                yield text
            else:
                answer.kind, answer.backend = "generated", self.llm.name
                cleaner = StreamCleaner()  # what the model echoes of the prompt is not shown
                call = self._llm_span(traced, prompt)
                try:
                    if _stream:
                        for piece in self.llm.stream(prompt.messages, self.generation):
                            if text := cleaner.feed(piece):
                                yield text
                        if text := cleaner.finish():
                            yield text
                        self._end_stream(answer, cleaner)
                    else:
                        completion = self.llm.generate(prompt.messages, self.generation)
                        self._set_generated(answer, *clean_answer(completion.text))
                        answer.finish_reason = completion.finish_reason
                        yield answer.text
                except LLMError as e:
                    self._llm_failed(call, answer, e, cleaner.raw)
                    with traced.current():
                        answer.text = self._extract(question, retrieval_query, prompt, response)
                    yield "\n\n" + answer.text if cleaner.shown else answer.text
                finally:
                    self._end_llm_span(call, answer)
                self._note_length(answer)
            with traced.current():
                finished = self._finish(answer, prompt, started, traced)
            yield finished
        finally:
            traced.end()

    async def aask(self, question: str, history: Sequence[ChatMessage] = (), filters=None,
                   retrieval_query: str | None = None) -> Answer:
        answer = None
        async for item in self.astream(question, history, filters, retrieval_query):
            answer = item
        assert isinstance(answer, Answer)
        return answer

    async def astream(self, question: str, history: Sequence[ChatMessage] = (), filters=None,
                      retrieval_query: str | None = None) -> AsyncIterator[str | Answer]:
        """Async version of `stream`: retrieval and the prompt run in a worker thread (they use
        the local encoder and store), generation through the backend's async API."""
        import asyncio

        started = time.perf_counter()
        traced = start("rag.answer", **{"rag.answer.streamed": True})
        try:
            with traced.current():  # asyncio.to_thread runs the block's calls in this context
                prompt, response = await asyncio.to_thread(self.prepare, question, history, filters,
                                                           retrieval_query)
            answer = self._answer_shell(question, prompt, response, retrieval_query)
            if not prompt.passages or self.llm is None:
                with traced.current():
                    text = await asyncio.to_thread(self._without_llm, answer, question, retrieval_query, prompt,
                                                   response)
                yield text
                with traced.current():
                    finished = self._finish(answer, prompt, started, traced)
                yield finished
                return
            answer.kind, answer.backend = "generated", self.llm.name
            cleaner = StreamCleaner()
            call = self._llm_span(traced, prompt)
            try:
                async for piece in self.llm.astream(prompt.messages, self.generation):
                    if text := cleaner.feed(piece):
                        yield text
                if text := cleaner.finish():
                    yield text
                self._end_stream(answer, cleaner)
            except LLMError as e:
                self._llm_failed(call, answer, e, cleaner.raw)
                with traced.current():
                    answer.text = await asyncio.to_thread(self._extract, question, retrieval_query, prompt,
                                                          response)
                yield "\n\n" + answer.text if cleaner.shown else answer.text
            finally:
                self._end_llm_span(call, answer)
            self._note_length(answer)
            with traced.current():
                finished = self._finish(answer, prompt, started, traced)
            yield finished
        finally:
            traced.end()

    def _end_stream(self, answer: Answer, cleaner: StreamCleaner) -> None:
        answer.finish_reason = self._streamed_finish("".join(cleaner.raw))
        self._set_generated(answer, cleaner.shown.strip(), cleaner.changed)

    @staticmethod
    def _set_generated(answer: Answer, text: str, cleaned: bool) -> None:
        answer.text = text
        if cleaned:
            answer.notes.append("prompt scaffolding the model echoed (a bare [n] line, 'Question:', "
                                "'Answer:') was removed from its output")

    @staticmethod
    def _finish(answer: Answer, prompt: Prompt, started: float, traced=OFF) -> Answer:
        """The checks every answer gets, whatever produced it: citations name passages of the
        prompt, and the figures and names each sentence states are in a passage it cites."""
        answer.seconds = time.perf_counter() - started
        check_citations(answer)
        with span("rag.answer.grounding") as grounding:
            check_answer_grounding(answer)
            grounding.update(**{"rag.grounding.sentences": len(answer.support),
                                "rag.grounding.unsupported": len(answer.unsupported)})
        traced.update(**{"rag.answer.kind": answer.kind, "rag.answer.backend": answer.backend,
                         "rag.answer.citations_valid": answer.citations_valid})
        return answer

    def _llm_span(self, parent, prompt: Prompt):
        """The span of one LLM call, with OpenTelemetry's generative-AI attributes."""
        if not tracing_on():
            return OFF
        described = self.llm.to_dict() if hasattr(self.llm, "to_dict") else {}
        model = (described.get("init_parameters") or described).get("model") or self.llm.name
        return start(f"chat {model}", parent, **{
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": self.llm.name,
            "gen_ai.request.model": model, "gen_ai.request.max_tokens": self.generation.max_tokens,
            "gen_ai.request.temperature": self.generation.temperature,
            "gen_ai.usage.input_tokens": prompt.prompt_tokens})

    def _end_llm_span(self, call, answer: Answer) -> None:
        if call is not OFF and answer.kind == "generated":
            call.update(**{"gen_ai.usage.output_tokens": self.prompt.count(answer.text) if answer.text else 0,
                           "gen_ai.response.finish_reasons": [answer.finish_reason or "stop"]})
        call.end()

    def _streamed_finish(self, text: str) -> str | None:
        """Streams carry text only: an answer whose length (in the prompt budget's tokens, the
        model's own for a local model) reaches max_tokens is taken as cut by the limit."""
        limit = self.generation.max_tokens
        return "length" if self.prompt.count(text) >= int(0.95 * limit) else None

    def _note_length(self, answer: Answer) -> None:
        if answer.kind == "generated" and answer.finish_reason == "length":
            answer.notes.append(f"the answer reached max_tokens ({self.generation.max_tokens}) and may be "
                                "cut short: raise --max-tokens")

    def _without_llm(self, answer: Answer, question: str, retrieval_query: str | None, prompt: Prompt,
                     response: SearchResponse) -> str:
        """No passage (the LLM is not asked: it would answer from nothing), or no LLM (extracts)."""
        if not prompt.passages:
            answer.text = "The collection has no passage that matches this question, so there is nothing to answer from."
            answer.kind = "none"
            answer.notes.append("no passages retrieved: the LLM was not asked")
        else:
            answer.text = self._extract(question, retrieval_query, prompt, response)
        return answer.text

    def _extract(self, question: str, retrieval_query: str | None, prompt: Prompt,
                 response: SearchResponse) -> str:
        """Extracts: the sentences' vectors through the cache, which first takes the vectors the
        collection stores of the results' sentences (sentence vectors, embedded alone as extracts
        embed them), and the search's query vector reused: in a collection with sentence vectors
        an extractive answer embeds only the sentences no unit holds (rows, cut sentences)."""
        for r in response.results:
            self.sentence_cache.put(r.stored_sentences())
        known = {response.query: response.query_vector} if response.query_vector is not None else None
        text, _ = extract(_phrasings(question, retrieval_query), prompt.passages, self.encoder,
                          cache=self.sentence_cache, known=known)
        return text

    def _llm_failed(self, call, answer: Answer, error: LLMError, pieces: list[str]) -> None:
        """The LLM failed mid-answer (stream and astream alike): the error on its span, then
        raised again, or, with fallback_to_extracts, noted on the answer (extracts follow)."""
        call.update(**{"error.type": type(error).__name__})
        if not self.fallback_to_extracts:
            raise error
        self._fall_back(answer, error, pieces)

    @staticmethod
    def _fall_back(answer: Answer, error: LLMError, pieces: list[str]) -> None:
        answer.notes.append(f"LLM failed ({error}); answered with extracts instead"
                            + (f"; the {len(''.join(pieces))} characters generated before the failure "
                               "were discarded" if pieces else ""))
        answer.kind, answer.backend = "extractive", "extractive"

    def _answer_shell(self, question: str, prompt: Prompt, response: SearchResponse,
                      retrieval_query: str | None) -> Answer:
        return Answer(question=question, standalone_question=retrieval_query, text="", kind="extractive",
                      backend="extractive", backend_origin=self.llm_origin, passages=prompt.passages,
                      prompt_tokens=prompt.prompt_tokens, notes=[*response.notes, *prompt.notes])

    def chat(self) -> ChatSession:
        return ChatSession(self)


# ---------------------------------------------------------------- chat

REWRITE_SYSTEM = (
    "Rewrite the user's last question as one standalone question that can be understood without the "
    "conversation. Keep the names, figures, periods and dates from the conversation that it refers to. "
    "Output only the rewritten question."
)
_REFERRING = frozenset("it its they them their this that these those he she his her there same such "
                       "former latter ones one".split())
_FOLLOW_UP_START = ("and ", "what about", "how about", "also", "but ", "or ", "then ", "same for")
_WORDS = re.compile(r"[a-z0-9']+")
_STOP = frozenset("a an and the of in on for to is are was were be do does did what which who how when "
                  "where why about with by as at from than then also but or".split())


def rule_rewrite(question: str, previous: str | None) -> str:
    """Without an LLM: a question that refers back (a pronoun, 'and ...', 'what about ...', or
    fewer than three content words) is completed with the previous standalone question."""
    if not previous:
        return question
    words = _WORDS.findall(question.lower())
    content = [w for w in words if w not in _STOP and w not in _REFERRING]
    q = question.strip()
    if set(words) & _REFERRING or q.lower().startswith(_FOLLOW_UP_START) or len(content) < 3:
        return f"{q} (follow-up to: {previous})"
    return q


class ChatSession:
    """Multi-turn answers. Each follow-up is rewritten into a standalone question before
    retrieval (by the LLM, or by `rule_rewrite` without one); earlier turns go into the prompt,
    oldest dropped first when the token budget needs the room."""

    def __init__(self, pipeline: RagPipeline):
        self.pipeline = pipeline
        self.history: list[ChatMessage] = []
        self.standalone: list[str] = []

    def reset(self) -> None:
        self.history.clear()
        self.standalone.clear()

    def rewrite(self, question: str) -> str:
        question = question.strip()
        if not question:
            raise ConfigError("empty question")
        previous = self.standalone[-1] if self.standalone else None
        llm = self.pipeline.llm
        if previous is None:
            return question
        if llm is not None:
            convo = "\n".join(f"{m.role.capitalize()}: {m.content[:600]}" for m in self.history[-6:])
            messages = [ChatMessage(role="system", content=REWRITE_SYSTEM),
                        ChatMessage(role="user", content=f"Conversation:\n{convo}\n\nLast question: {question}\n\n"
                                                         "Standalone question:")]
            try:
                text = llm.generate(messages, GenerationSettings(max_tokens=64, temperature=0.0)).text
                rewritten = _first_line(text)
                if rewritten and len(rewritten) <= 4 * len(question) + 200:
                    return rewritten
            except LLMError:
                pass  # fall through to the rule
        return rule_rewrite(question, previous)

    def stream(self, question: str, filters=None) -> Iterator[str | Answer]:
        standalone = self.rewrite(question)
        answer = None
        for item in self.pipeline.stream(question, history=self.history, filters=filters,
                                         retrieval_query=standalone if standalone != question.strip() else None):
            answer = item
            yield item
        assert isinstance(answer, Answer)
        self.standalone.append(standalone)
        self.history += [ChatMessage(role="user", content=question.strip()),
                         ChatMessage(role="assistant", content=strip_citations(answer.text))]

    def ask(self, question: str, filters=None) -> Answer:
        answer = None
        for item in self.stream(question, filters):
            answer = item
        assert isinstance(answer, Answer)
        return answer


def _phrasings(question: str, retrieval_query: str | None) -> list[str]:
    return [question] if not retrieval_query or retrieval_query == question else [question, retrieval_query]


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        line = re.sub(r"^(standalone question|question|rewritten question)\s*:\s*", "", line.strip(), flags=re.I)
        line = line.strip().strip('"“”').strip()
        if line:
            return line
    return ""


def model_token_counter(llm: LLMBackend | None) -> Callable[[str], int] | None:
    """The backend's own token counter when it declares one (a local model), else None (tiktoken)."""
    return llm.token_counter if llm is not None else None


def _serialisable(settings: dict[str, Any]) -> dict[str, Any]:
    """Retriever settings with a reranker object written as its to_dict (Retriever reads both)."""
    r = settings.get("reranker")
    return {**settings, "reranker": r.to_dict()} if hasattr(r, "to_dict") else dict(settings)
