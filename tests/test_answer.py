"""The answer pipeline and chat over a real embedded collection: extracts without an LLM, a
scripted in-process backend for the generated path, fallback on LLM failure, rewriting of
follow-ups, the config file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence

import pytest

from pipelines.answer import RagPipeline, rule_rewrite
from pipelines.config import RagConfig, load_config
from pipelines.stores import StoreSettings
from rag.errors import ConfigError, LLMConnectionError, ModelMismatchError
from rag.answer.extractive import HEADER
from rag.answer.llm import IN_PROCESS, ChatMessage, Completion, GenerationSettings, LLMBackend
from rag.answer.prompt import PromptAssembler

FILES = {
    "apple.md": "# Revenue\n\nApple reported total net sales of $81.8 billion for the quarter ended July 1, 2023. "
                "iPhone net sales were $39.7 billion in the third quarter. Services revenue reached $21.2 billion.\n\n"
                "# Risks\n\nThe company faces risks from supply chain disruptions and foreign exchange rates.",
    "sbert.txt": "Sentence-BERT fine-tunes BERT in a siamese network on natural language inference data. "
                 "Mean pooling of the token embeddings works best. Finding the most similar pair among "
                 "10,000 sentences drops from 65 hours with BERT to about 5 seconds with SBERT.",
    "garden.txt": "Tomatoes need full sun and regular watering. Basil grows well next to tomatoes. "
                  "Prune the lower leaves of tomato plants to prevent disease.",
}


class Scripted:
    """An in-process LLM backend that answers from a script and records what it was sent."""

    name = "scripted"
    context_window = 2048
    max_concurrency = IN_PROCESS
    token_counter = None  # the prompt is budgeted with tiktoken

    def __init__(self, replies: Sequence[str], fail: Exception | None = None, fail_after: int | None = None):
        self.replies, self.fail, self.fail_after = list(replies), fail, fail_after
        self.calls: list[list[ChatMessage]] = []

    def _next(self, messages) -> str:
        self.calls.append(list(messages))
        if self.fail is not None and self.fail_after is None:
            raise self.fail
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]

    def generate(self, messages, settings=None) -> Completion:
        return Completion(text=self._next(messages), model="scripted", finish_reason="stop")

    def stream(self, messages, settings=None) -> Iterator[str]:
        text = self._next(messages)
        for i, word in enumerate(text.split(" ")):
            if self.fail_after is not None and i == self.fail_after:
                raise self.fail
            yield word if i == 0 else " " + word

    async def agenerate(self, messages, settings=None) -> Completion:
        return self.generate(messages, settings)

    async def astream(self, messages, settings=None) -> AsyncIterator[str]:
        for piece in self.stream(messages, settings):
            yield piece

    def to_dict(self):
        return {"type": "scripted", "init_parameters": {}}


@pytest.fixture(scope="module")
def collection(tmp_path_factory, encoder):
    from helpers_ingest import write
    from pipelines.ingest import ingest
    from rag.ingest.chunking import Chunker

    root = tmp_path_factory.mktemp("answer")
    write(root / "docs", FILES)
    store = StoreSettings(store_dir=str(root / "store"), collection="docs")
    rep = ingest([str(root / "docs")], encoder=encoder, store=store, chunker=Chunker(48, 8), progress=False)
    assert not rep.failed
    return store


def test_scripted_backend_satisfies_the_protocol():
    assert isinstance(Scripted(["x"]), LLMBackend)


def test_extractive_answer_quotes_the_right_sentence_with_its_citation(collection, encoder):
    with RagPipeline(encoder=encoder, store=collection, llm=None) as rag:
        a = rag.ask("What were iPhone net sales?")
    assert a.kind == "extractive" and a.text.startswith(HEADER)
    first = a.text.splitlines()[2]
    assert "$39.7 billion" in first
    n = int(first.rsplit("[", 1)[1].rstrip("]"))
    assert "$39.7 billion" in a.passages[n - 1].text and "apple.md" in a.passages[n - 1].source
    assert a.citations_valid and a.invalid_citations == []


def test_generated_answer_gets_checked_citations_and_the_prompt_has_the_passages(collection, encoder):
    llm = Scripted(["iPhone net sales were $39.7 billion [1]. Services were $21.2 billion [9]."])
    with RagPipeline(encoder=encoder, store=collection, llm=llm, retriever={"top_k": 3}) as rag:
        pieces = list(rag.stream("What were iPhone net sales?"))
    answer = pieces[-1]
    assert "".join(pieces[:-1]) == answer.text == llm.replies[0]
    assert answer.kind == "generated" and answer.backend == "scripted"
    assert answer.cited == [1] and answer.invalid_citations == [9]
    assert any("[9]" in n for n in answer.notes)
    sent = llm.calls[0]
    assert sent[0].role == "system" and sent[-1].role == "user"
    assert '<passage [1]' in sent[-1].content and "What were iPhone net sales?" in sent[-1].content
    assert "$39.7 billion" in answer.passages[0].text
    # the prompt fits the backend's window with the answer's room kept
    assert answer.prompt_tokens + rag.prompt.max_answer_tokens <= llm.context_window


def test_llm_failure_falls_back_to_extracts_with_a_note(collection, encoder):
    dead = Scripted(["unused"], fail=LLMConnectionError("scripted http://127.0.0.1:9: connection refused"))
    with RagPipeline(encoder=encoder, store=collection, llm=dead) as rag:
        a = rag.ask("What were iPhone net sales?")
        assert a.kind == "extractive" and "$39.7 billion" in a.text
        assert any("connection refused" in n and "extracts" in n for n in a.notes)
        # a stream cut after some words: the partial text is discarded and said so
        cut = Scripted(["Net sales were $39.7 billion [1] in the quarter."],
                       fail=LLMConnectionError("stream cut"), fail_after=3)
        rag.llm = cut
        pieces = list(rag.stream("What were iPhone net sales?"))
        a = pieces[-1]
        assert a.kind == "extractive" and a.text.startswith(HEADER)
        assert any("discarded" in n for n in a.notes)
    strict = RagPipeline(encoder=encoder, store=collection, llm=dead, fallback_to_extracts=False)
    with pytest.raises(LLMConnectionError):
        strict.ask("What were iPhone net sales?")
    strict.close()


def test_async_ask_matches_sync(collection, encoder):
    llm = Scripted(["Basil grows next to tomatoes [1]."])
    with RagPipeline(encoder=encoder, store=collection, llm=llm) as rag:
        sync = rag.ask("What grows well with tomatoes?")
        rag.close()
        a = asyncio.run(rag.aask("What grows well with tomatoes?"))
    assert a.text == sync.text and a.cited == sync.cited == [1]
    assert [p.chunk_ids for p in a.passages] == [p.chunk_ids for p in sync.passages]


def test_async_without_llm_and_async_fallback(collection, encoder):
    with RagPipeline(encoder=encoder, store=collection, llm=None) as rag:
        sync = rag.ask("What were iPhone net sales?")
        rag.close()
        a = asyncio.run(rag.aask("What were iPhone net sales?"))
        assert a.kind == "extractive" and a.text == sync.text and a.cited == sync.cited
        rag.close()
        rag.llm = Scripted(["Net sales were $39.7 billion [1] in the quarter."],
                           fail=LLMConnectionError("stream cut"), fail_after=2)

        async def run():
            return [item async for item in rag.astream("What were iPhone net sales?")]

        items = asyncio.run(run())
    a = items[-1]
    assert a.kind == "extractive" and a.text == sync.text
    assert any("stream cut" in n and "discarded" in n for n in a.notes)


def test_chat_rewrites_follow_ups_and_keeps_history(collection, encoder):
    llm = Scripted(["iPhone sales were $39.7 billion [1].",
                    "What were Apple's Services revenues in the quarter ended July 1, 2023?",
                    "Services were $21.2 billion [1]."])
    with RagPipeline(encoder=encoder, store=collection, llm=llm) as rag:
        chat = rag.chat()
        first = chat.ask("What were Apple's iPhone net sales?")
        second = chat.ask("And services?")
    assert first.standalone_question is None
    assert second.standalone_question.startswith("What were Apple's Services revenues")
    rewrite_call, answer_call = llm.calls[1], llm.calls[2]
    assert "And services?" in rewrite_call[-1].content and "iPhone" in rewrite_call[-1].content
    # the earlier turn is in the answer prompt, without its old citation numbers
    roles = [m.role for m in answer_call]
    assert roles == ["system", "user", "assistant", "user"]
    assert answer_call[2].content == "iPhone sales were $39.7 billion."
    assert any("$21.2 billion" in p.text for p in second.passages)
    assert len(chat.history) == 4


def test_chat_without_llm_uses_the_rule(collection, encoder):
    with RagPipeline(encoder=encoder, store=collection, llm=None) as rag:
        chat = rag.chat()
        chat.ask("How much faster is SBERT at finding the most similar pair?")
        a = chat.ask("And how does it pool?")
    assert a.standalone_question == ("And how does it pool? (follow-up to: How much faster is SBERT at "
                                     "finding the most similar pair?)")
    assert "Mean pooling" in a.text


def test_rule_rewrite():
    prev = "What were Apple's net sales in Q3 2023?"
    assert rule_rewrite("What about Q2?", prev).endswith(f"(follow-up to: {prev})")
    assert rule_rewrite("How did it change?", prev) != "How did it change?"
    assert rule_rewrite("Which risks does the company list about foreign exchange?", prev) == \
        "Which risks does the company list about foreign exchange?"
    assert rule_rewrite("Anything?", None) == "Anything?"


def test_nothing_retrieved_does_not_call_the_llm(tmp_path, encoder):
    from helpers_ingest import write
    from pipelines.ingest import ingest

    write(tmp_path / "d", {"a.txt": "Only one sentence lives here about granite."})
    store = StoreSettings(store_dir=str(tmp_path / "s"), collection="c")
    ingest([str(tmp_path / "d")], encoder=encoder, store=store, progress=False)
    llm = Scripted(["should not be used"])
    with RagPipeline(encoder=encoder, store=store, llm=llm, retriever={"mode": "bm25"}) as rag:
        a = rag.ask("zebra")
    assert a.passages == [] and llm.calls == [] and a.kind == "none"


def test_encoder_must_match_the_collection(collection):
    from rag.embed.encoder import SentenceEncoder

    other = SentenceEncoder("/nonexistent/other-model")
    with pytest.raises(ModelMismatchError, match="built with"):
        RagPipeline(encoder=other, store=collection, llm=None).search("x")


def test_pipeline_to_dict_round_trip(collection):
    rag = RagPipeline(store=collection, llm=None, retriever={"mode": "bm25", "top_k": 3},
                      prompt=PromptAssembler(context_window=4096, max_answer_tokens=256))
    again = RagPipeline.from_dict(rag.to_dict())
    assert again.to_dict() == rag.to_dict()


def test_config_file_builds_the_pipeline(tmp_path, collection):
    cfg = tmp_path / "rag.toml"
    cfg.write_text(f'''
[store]
dir = "{collection.store_dir}"
collection = "docs"

[retrieval]
mode = "bm25"
top_k = 2

[prompt]
max_answer_tokens = 200
template = "tpl.toml"

[llm]
backend = "none"
''')
    (tmp_path / "tpl.toml").write_text('user = "Context:\\n{context}\\nQ: {question}"')
    rag = RagPipeline.from_config(cfg)
    assert rag.llm is None and rag.retriever_settings["mode"] == "bm25"
    assert rag.prompt.template.user.startswith("Context:")
    with rag:
        a = rag.ask("tomatoes sun watering")
    assert len(a.passages) <= 2 and "garden.txt" in a.passages[0].source


@pytest.mark.parametrize("body, message", [
    ("[llm]\nbackend = 'gpt'\n", "llm.backend"),
    ("[retrieval]\ntop_k = 0\n", "retrieval.top_k"),
    ("[store]\ndirr = 'x'\n", "store.dirr"),
    ("[llm\n", "not valid TOML"),
])
def test_bad_config_is_a_clear_error(tmp_path, body, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(body)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(cfg)


def test_config_openai_without_base_url_is_a_clear_error():
    from connectors.llm.registry import make_backend

    with pytest.raises(ConfigError, match="base_url"):
        make_backend(RagConfig(llm={"backend": "openai", "model": "m"}).llm)


def test_an_answer_cut_by_max_tokens_says_so_streamed_or_not(collection, encoder):
    long = " ".join(f"word{i}" for i in range(200)) + " [1]"
    with RagPipeline(encoder=encoder, store=collection, llm=Scripted([long]),
                     generation=GenerationSettings(max_tokens=50)) as rag:
        streamed = list(rag.stream("tomatoes?"))[-1]
        assert streamed.finish_reason == "length"
        assert any("max_tokens (50)" in n for n in streamed.notes)
        rag.llm = Scripted(["Basil grows next to tomatoes [1]."])
        short = list(rag.stream("tomatoes?"))[-1]
    assert short.finish_reason is None and not any("max_tokens" in n for n in short.notes)


def test_generation_settings_reach_the_backend(collection, encoder):
    seen = {}

    class Recording(Scripted):
        def generate(self, messages, settings: GenerationSettings | None = None):
            seen["settings"] = settings
            return super().generate(messages, settings)

    with RagPipeline(encoder=encoder, store=collection, llm=Recording(["ok [1]"]),
                     generation=GenerationSettings(max_tokens=77, temperature=0.2)) as rag:
        rag.ask("tomatoes?")
    assert seen["settings"].max_tokens == 77 and seen["settings"].temperature == 0.2


# ---------------------------------------------------------------- derived pipelines


def test_a_derived_pipeline_shares_every_argument_it_does_not_override():
    """Every constructor argument, one added later included, reaches the derived pipeline as the
    very object the base holds, unless it is overridden."""
    import inspect

    from pipelines.answer import ARGUMENT_ATTRIBUTES

    base = RagPipeline()  # opens nothing
    attributes = {n: ARGUMENT_ATTRIBUTES.get(n, n) for n in inspect.signature(RagPipeline).parameters}
    for name, attribute in attributes.items():
        assert hasattr(base, attribute), f"argument {name} is kept as {attribute}? (ARGUMENT_ATTRIBUTES)"
        setattr(base, attribute, object())  # a value of its own each
    for name, attribute in attributes.items():
        assert getattr(base.derive(), attribute) is getattr(base, attribute), name
        new = object()
        derived = base.derive(**{name: new})
        assert getattr(derived, attribute) is new, name
        assert all(getattr(derived, a) is getattr(base, a) for n, a in attributes.items() if n != name), name
    with pytest.raises(TypeError, match="no_such_argument"):
        base.derive(no_such_argument=1)


def test_a_derived_pipeline_searches_with_its_searcher_and_leaves_the_store_open(collection, encoder):
    heard: list = []
    with RagPipeline(encoder=encoder, store=collection, llm=None) as base:
        whole = base.search("tomato watering")
        asked: list = []

        def searcher(query, top_k, filters):
            asked.append((query, top_k, filters))
            return base.search(query, top_k=2, filters=filters)

        one = base.derive(searcher=searcher, on_prepared=heard.append, fallback_to_extracts=False)
        answer = one.ask("How should tomatoes be watered?")
        assert asked == [("How should tomatoes be watered?", None, None)]
        assert heard == [answer.passages] and len(answer.passages) <= 2
        one.close()
        shared = base.derive()  # no searcher given: the base's open retriever
        assert shared.search("tomato watering").results == whole.results
        shared.close()
        assert base.search("tomato watering").results == whole.results  # still open
    assert base.on_prepared is None and base.fallback_to_extracts is True


# ---------------------------------------------------------------- rag ask / rag chat


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    from pipelines.cli import main

    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_rag_ask_streams_from_an_openai_compatible_server_then_lists_sources(collection, capsys, monkeypatch):
    from llm_fake_server import FakeLLMServer

    monkeypatch.setenv("RAG_TEST_KEY", "sk-test-do-not-print-123")
    with FakeLLMServer(answer="iPhone net sales were $39.7 billion [1].") as server:
        code, out, err = _cli(["ask", "What were iPhone net sales?", "--store", collection.store_dir,
                               "--collection", "docs", "--llm", "openai", "--base-url", server.openai_url,
                               "--llm-model", "fake-model", "--api-key-env", "RAG_TEST_KEY"], capsys)
        body = server.requests[-1].body
        auth = server.requests[-1].headers.get("authorization")
    assert code == 0, err
    assert out.startswith("iPhone net sales were $39.7 billion [1].")
    assert "Sources" in out and "apple.md" in out and "yes" in out
    assert body["stream"] is True and body["model"] == "fake-model"
    assert auth == "Bearer sk-test-do-not-print-123"
    assert "sk-test" not in out + err


def test_rag_ask_with_a_dead_server_answers_with_extracts_and_says_why(collection, capsys):
    from llm_fake_server import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    code, out, err = _cli(["ask", "What were iPhone net sales?", "--store", collection.store_dir,
                           "--collection", "docs", "--llm", "openai", "--base-url", url, "--llm-model", "m",
                           "--max-retries", "0", "--timeout", "2"], capsys)
    assert code == 0
    assert HEADER in out and "$39.7 billion" in out
    assert "LLM failed" in err and "127.0.0.1" in err and "Traceback" not in err


def test_rag_ask_json_and_config(collection, capsys, tmp_path):
    cfg = tmp_path / "rag.toml"
    cfg.write_text(f'[store]\ndir = "{collection.store_dir}"\ncollection = "docs"\n[llm]\nbackend = "none"\n'
                   '[retrieval]\ntop_k = 2\n')
    code, out, err = _cli(["ask", "What grows next to tomatoes?", "--config", str(cfg), "--json"], capsys)
    assert code == 0, err
    import json

    a = json.loads(out)
    assert a["kind"] == "extractive" and len(a["passages"]) <= 2 and "Basil" in a["text"]
    # a flag wins over the config
    code, out, _ = _cli(["ask", "What grows next to tomatoes?", "--config", str(cfg), "--json", "-k", "1"], capsys)
    assert len(json.loads(out)["passages"]) == 1


def test_rag_chat_reads_questions_from_stdin(collection, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("How much faster is SBERT at finding similar pairs?\n"
                                                 "And how does it pool?\n/exit\nnever asked\n"))
    code, out, err = _cli(["chat", "--store", collection.store_dir, "--collection", "docs", "--llm", "none"], capsys)
    assert code == 0, err
    assert out.count("> ") == 2 and "never asked" not in out
    assert "65 hours" in out and "Mean pooling" in out
    assert "follow-up to: How much faster is SBERT" in err


def test_rag_ask_on_a_missing_collection_is_one_clear_line(tmp_path, capsys):
    code, out, err = _cli(["ask", "x", "--store", str(tmp_path / "nothing"), "--llm", "none"], capsys)
    assert code == 2 and err.startswith("rag: error:") and "does not exist" in err


# ---------------------------------------------------------------- the honest default (llm = "auto")


@pytest.fixture
def no_llm_env(monkeypatch):
    """An environment that configures no LLM: no OpenAI variables, and OLLAMA_HOST at a loopback
    port nothing listens on (so an Ollama on this machine is not found either)."""
    from llm_fake_server import free_port

    for var in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{free_port()}")


def test_rag_ask_with_no_llm_configured_answers_with_cited_extracts_and_says_so(collection, capsys, no_llm_env):
    code, out, err = _cli(["ask", "Which pooling strategy does SBERT use?", "--store", collection.store_dir,
                           "--collection", "docs"], capsys)
    assert code == 0, err
    assert HEADER in out and "Mean pooling" in out
    quoted = next(line for line in out.splitlines() if "Mean pooling" in line)
    number = int(quoted.rsplit("[", 1)[1].rstrip("]"))
    assert any(line.startswith(f"│ [{number}]") and "yes" in line and "sbert.txt" in line
               for line in out.splitlines()), out  # the cited passage is the SBERT one
    assert "answered by: extractive" in err and "no LLM configured" in err, err


def test_auto_uses_the_server_in_openai_base_url_and_its_listed_model(collection, monkeypatch, no_llm_env):
    from llm_fake_server import FakeLLMServer

    from pipelines.config import RagConfig

    with FakeLLMServer(answer="Mean pooling works best [1].", models=("served-model",)) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.openai_url)
        cfg = RagConfig(store={"dir": collection.store_dir, "collection": "docs"})
        with RagPipeline.from_config(cfg) as rag:
            answer = rag.ask("How does SBERT pool?")
        posted = [r for r in server.requests if r.method == "POST"][-1]
    assert answer.kind == "generated" and answer.backend == "openai-compatible"
    assert "$OPENAI_BASE_URL" in answer.backend_origin and "served-model" in answer.backend_origin
    assert posted.body["model"] == "served-model"


def test_auto_finds_an_ollama_and_never_picks_the_local_demo_model(monkeypatch, no_llm_env):
    from llm_fake_server import FakeLLMServer

    from connectors.llm.registry import resolve_backend
    from pipelines.config import LLMConfig

    with FakeLLMServer(models=("llama3.2:1b", "qwen2.5")) as server:
        url = server.url
        monkeypatch.setenv("OLLAMA_HOST", url)
        cfg, origin = resolve_backend(LLMConfig())
        assert resolve_backend(LLMConfig(model="qwen2.5"))[0].model == "qwen2.5"  # a pulled model asked for
    assert (cfg.backend, cfg.model, cfg.base_url) == ("ollama", "llama3.2:1b", url)
    assert origin.startswith("Ollama at")
    cfg, origin = resolve_backend(LLMConfig())  # the server is gone: extracts, never the local model
    assert cfg.backend == "none" and "no LLM configured" in origin
    cfg, origin = resolve_backend(LLMConfig(), env={"OPENAI_API_KEY": "sk-x"})
    assert (cfg.backend, cfg.base_url, cfg.model) == ("openai", "https://api.openai.com/v1", "gpt-4o-mini")
    assert "sk-x" not in origin
    assert resolve_backend(LLMConfig(backend="local"))[0].backend == "local"


def test_echoed_prompt_scaffolding_is_removed_from_streamed_and_whole_answers(collection):
    # What SmolLM2-135M printed for "Which pooling strategy does SBERT use by default?"
    echoed = ("[1]\n\nQuestion: How does SBERT pool?\nAnswer: Mean pooling of the token embeddings works best [1].\n"
              "Question: And what else?\nAnswer: nothing")
    for streaming in (True, False):
        with RagPipeline(store=collection, llm=Scripted([echoed])) as rag:
            if streaming:
                items = list(rag.stream("How does SBERT pool?"))
                answer, shown = items[-1], "".join(items[:-1])
            else:
                answer = rag.ask("How does SBERT pool?")
                shown = answer.text
        assert answer.text == "Mean pooling of the token embeddings works best [1].", (streaming, answer.text)
        assert shown.strip() == answer.text
        assert any("scaffolding" in n for n in answer.notes)


def test_every_answer_is_grounding_checked_extracts_pass_and_a_wrong_figure_is_flagged(collection, capsys):
    with RagPipeline(store=collection, llm=None) as rag:
        extracts = rag.ask("What were iPhone net sales in the third quarter?")
    assert extracts.kind == "extractive" and extracts.support and extracts.unsupported == []
    assert any("$39.7 billion" in s.terms for s in extracts.support)  # a figure was checked, and held
    reply = "iPhone net sales were $45.1 billion [{n}]. Services revenue reached $21.2 billion [{n}]."
    with RagPipeline(store=collection, llm=Scripted(["x"])) as rag:
        prompt, _ = rag.prepare("What were iPhone net sales?")
        n = next(p.number for p in prompt.passages if "$39.7 billion" in p.text)
        rag.llm = Scripted([reply.format(n=n)])
        answer = rag.ask("What were iPhone net sales?")
    assert [s.supported for s in answer.support] == [False, True]
    assert answer.unsupported[0].missing == ["$45.1 billion"]
    assert any("no cited passage holds" in note for note in answer.notes)
    from pipelines import render

    render.print_answer_sources(answer)
    err = capsys.readouterr().err
    assert "unsupported: 1 of 2 sentence(s)" in err and "missing: $45.1 billion" in err


def test_extracts_embed_each_passage_sentence_once_across_questions(tmp_path, encoder):
    """In a collection without sentence vectors extracts embed the passages' sentences (with
    them they read the stored vectors: tests/test_units.py), each once across questions."""
    from helpers_ingest import write
    from pipelines.ingest import ingest
    from rag.ingest.chunking import Chunker
    from tests.test_vector_cache import Counting

    write(tmp_path / "docs", FILES)
    plain = StoreSettings(store_dir=str(tmp_path / "store"), collection="docs")
    assert not ingest([str(tmp_path / "docs")], encoder=encoder, store=plain, progress=False,
                      chunker=Chunker(48, 8, sentence_vectors=False)).failed
    counting = Counting(encoder)
    with RagPipeline(encoder=counting, store=plain, llm=None) as rag:
        first = rag.ask("What were iPhone net sales in the third quarter?")
        embedded = sum(len(c) for c in counting.calls)
        counting.calls.clear()
        again = rag.ask("What were iPhone net sales in the third quarter?")
    # The second time only the search's query reaches the encoder: the extract reuses its vector.
    assert [len(c) for c in counting.calls] == [1] and embedded > 1 + 2
    assert again.text == first.text and again.cited == first.cited
    assert rag.sentence_cache.stats["hits"] >= embedded - 1
