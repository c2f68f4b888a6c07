"""The Ollama native backend (/api/chat) against a real loopback server: answers, NDJSON
streams, retries, timeouts, cut streams and errors, sync and async. The retry and error code is
shared with the OpenAI-compatible backend (tested in depth in test_llm_openai.py); these tests
check that Ollama's protocol is wired to it correctly."""

from __future__ import annotations

import time

import pytest

from connectors.llm.ollama import OllamaBackend
from rag.errors import (LLMAuthError, LLMConnectionError, LLMContextLengthError, LLMNotFoundError,
                        LLMRateLimitError, LLMResponseError, LLMTimeoutError)
from rag.answer.llm import GenerationSettings, LLMBackend
from tests.llm_fake_server import MESSAGES, FakeLLMServer, Fault, collect, complete, free_port

ANSWER = "Ollama says: the capital of France is Paris."
KEY = "ollama-key-DISTINCTIVE-51c2"
MODES = ["sync", "async"]


@pytest.fixture
def server():
    with FakeLLMServer(answer=ANSWER, models=("llama3.2:1b",), usage=(20, 11)) as s:
        yield s


def make(server: FakeLLMServer, **kw) -> OllamaBackend:
    opts = dict(timeout=2.0, max_retries=2, backoff_base=0.01, backoff_max=0.05)
    opts.update(kw)
    return OllamaBackend("llama3.2:1b", server.url, **opts)


# ---------------------------------------------------------------------- happy path
@pytest.mark.parametrize("mode", MODES)
def test_generate_sends_options_and_parses_answer_and_counts(server, mode):
    settings = GenerationSettings(max_tokens=64, temperature=0.3, top_p=0.8, stop=["###"], seed=3)
    completion = complete(make(server, context_window=4096), mode, settings=settings)
    assert completion.text == ANSWER
    assert (completion.model, completion.finish_reason) == ("llama3.2:1b", "stop")
    assert (completion.prompt_tokens, completion.completion_tokens) == (20, 11)
    [request] = server.requests
    assert request.path == "/api/chat"
    assert request.body == {"model": "llama3.2:1b", "messages": MESSAGES, "stream": False,
                            "options": {"num_predict": 64, "temperature": 0.3, "top_p": 0.8,
                                        "num_ctx": 4096, "stop": ["###"], "seed": 3}}
    assert "authorization" not in request.headers


@pytest.mark.parametrize("mode", MODES)
def test_stream_concatenates_to_the_full_answer(server, mode):
    pieces: list[str] = []
    assert collect(make(server), mode, into=pieces) == ANSWER
    assert len(pieces) > 1
    assert server.requests[0].body["stream"] is True
    assert "seed" not in server.requests[0].body["options"]


# ---------------------------------------------------------------------- retries
@pytest.mark.parametrize("mode", MODES)
def test_429_honours_retry_after_then_succeeds(server, mode):
    server.push(Fault.rate_limited(retry_after="1"))
    assert complete(make(server), mode).text == ANSWER
    assert len(server.requests) == 2
    assert 0.9 <= server.requests[1].at - server.requests[0].at < 2.0


@pytest.mark.parametrize("mode", MODES)
def test_429_forever_raises_after_max_retries_plus_one(server, mode):
    server.always(Fault.rate_limited())
    with pytest.raises(LLMRateLimitError):
        complete(make(server, max_retries=1), mode)
    assert len(server.requests) == 2


@pytest.mark.parametrize("mode", MODES)
def test_500_then_success_and_500_forever(server, mode):
    server.push(Fault.error(500, "llama runner process has terminated"))
    assert complete(make(server), mode).text == ANSWER
    server.always(Fault.error(500, "llama runner process has terminated"))
    with pytest.raises(LLMResponseError, match="HTTP 500 after 3 attempts: llama runner"):
        complete(make(server, max_retries=2), mode)
    assert len(server.requests) == 2 + 3


@pytest.mark.parametrize("mode", MODES)
def test_stream_retries_before_any_text(server, mode):
    server.push(Fault.error(503), Fault.cut(after_chunks=0))
    assert collect(make(server), mode) == ANSWER
    assert len(server.requests) == 3


# ---------------------------------------------------------------------- timeouts and cuts
@pytest.mark.parametrize("mode", MODES)
def test_hang_past_timeout_raises_timeout_within_bounded_time(server, mode):
    server.always(Fault.hung(30))
    start = time.monotonic()
    with pytest.raises(LLMTimeoutError, match="0.3 s"):
        complete(make(server, timeout=0.3, max_retries=1), mode)
    assert time.monotonic() - start < 0.3 * 2 + 1.5
    assert len(server.requests) == 2


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("chunked", [True, False])
def test_stream_cut_mid_answer_raises_not_a_truncated_success(server, mode, chunked):
    server.push(Fault.cut(after_chunks=3, chunked=chunked))
    pieces: list[str] = []
    with pytest.raises(LLMConnectionError, match="stream was cut after 12 characters"):
        collect(make(server), mode, into=pieces)
    assert "".join(pieces) == ANSWER[:12]
    assert len(server.requests) == 1


@pytest.mark.parametrize("mode", MODES)
def test_error_line_inside_a_stream_raises(server, mode):
    server.push(Fault(raw_body=b'{"message": {"role": "assistant", "content": "Hi"}, "done": false}\n'
                               b'{"error": "an error was encountered while running the model"}\n'))
    pieces: list[str] = []
    with pytest.raises(LLMResponseError, match="running the model"):
        collect(make(server), mode, into=pieces)
    assert pieces == ["Hi"]


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("body", [b"{not json", b'{"done": true}', b'{"message": {"content": null}}'])
def test_malformed_answers_raise_response_error(server, mode, body):
    server.push(Fault.malformed(body))
    with pytest.raises(LLMResponseError) as info:
        complete(make(server), mode)
    assert str(info.value).startswith(f"ollama {server.url} (model llama3.2:1b): ")


def test_malformed_stream_line_raises_response_error(server):
    server.push(Fault(raw_body=b'{"message": {"content": "x"}, "done": fa\n'))
    with pytest.raises(LLMResponseError, match="stream line is not JSON"):
        collect(make(server), "sync")


@pytest.mark.parametrize("mode", MODES)
def test_unknown_model_raises_not_found_with_pull_hint(server, mode):
    backend = OllamaBackend("qwen-nope", server.url, backoff_base=0.01)
    with pytest.raises(LLMNotFoundError, match=r"ollama pull qwen-nope.*model 'qwen-nope' not found"):
        complete(backend, mode)
    assert len(server.requests) == 1


def test_base_url_with_v1_raises_not_found(server):
    with pytest.raises(LLMNotFoundError, match="server root"):
        OllamaBackend("llama3.2:1b", server.url + "/v1").generate(MESSAGES)


@pytest.mark.parametrize("mode", MODES)
def test_auth_through_a_proxy_never_leaks_the_key(server, mode, monkeypatch):
    monkeypatch.setenv("OLLAMA_PROXY_TOKEN", KEY)
    backend = make(server, api_key_env="OLLAMA_PROXY_TOKEN")
    server.push(Fault.error(401, f"bad token {KEY}"))
    with pytest.raises(LLMAuthError, match="OLLAMA_PROXY_TOKEN") as info:
        complete(backend, mode)
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"
    for text in (str(info.value), repr(backend), str(backend.to_dict())):
        assert KEY not in text


@pytest.mark.parametrize("mode", MODES)
def test_context_length_error(server, mode):
    server.push(Fault.error(400, "the input length exceeds the context length"))
    with pytest.raises(LLMContextLengthError):
        complete(make(server), mode)
    assert len(server.requests) == 1


@pytest.mark.parametrize("mode", MODES)
def test_connection_refused_fails_quickly_naming_the_url(mode):
    url = f"http://127.0.0.1:{free_port()}"
    backend = OllamaBackend("m", url, max_retries=1, backoff_base=0.01)
    start = time.monotonic()
    with pytest.raises(LLMConnectionError, match=f"connection refused at {url}/api/chat"):
        complete(backend, mode)
    assert time.monotonic() - start < 2.0


# ---------------------------------------------------------------------- serialisation
def test_to_dict_from_dict_round_trip():
    backend = OllamaBackend("llama3.2:1b", context_window=16384, timeout=60)
    data = backend.to_dict()
    assert data["type"] == "OllamaBackend"
    assert data["init_parameters"]["base_url"] == "http://127.0.0.1:11434"
    again = OllamaBackend.from_dict(data)
    assert again.to_dict() == data
    assert (again.name, again.context_window) == ("ollama", 16384)
    assert isinstance(again, LLMBackend)
