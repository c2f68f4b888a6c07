"""The OpenAI-compatible backend against a real loopback server: answers, streams, retries,
timeouts, cut streams and every error a user can act on, sync and async. Also the shared
Retry-After and backoff helpers."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from connectors.llm.http import ProtocolViolation, backoff_delay, parse_retry_after
from connectors.llm.openai import OpenAICompatibleBackend, SSEChatDecoder
from rag.errors import (LLMAuthError, LLMConnectionError, LLMContextLengthError, LLMError,
                        LLMNotFoundError, LLMRateLimitError, LLMResponseError, LLMTimeoutError)
from rag.answer.llm import GenerationSettings, LLMBackend
from tests.llm_fake_server import MESSAGES, FakeLLMServer, Fault, collect, complete, free_port

ANSWER = "The capital of France is Paris."
KEY = "sk-test-DISTINCTIVE-9f3a7c"
MODES = ["sync", "async"]


@pytest.fixture(autouse=True)
def no_real_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@pytest.fixture
def server():
    with FakeLLMServer(answer=ANSWER) as s:
        yield s


def make(server: FakeLLMServer, **kw) -> OpenAICompatibleBackend:
    opts = dict(timeout=2.0, max_retries=2, backoff_base=0.01, backoff_max=0.05)
    opts.update(kw)
    return OpenAICompatibleBackend("fake-model", server.openai_url, **opts)


# ---------------------------------------------------------------------- happy path
@pytest.mark.parametrize("mode", MODES)
def test_generate_sends_the_request_and_parses_answer_and_usage(server, mode, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    settings = GenerationSettings(max_tokens=64, temperature=0.2, top_p=0.9, stop=["\n\n"], seed=7)
    completion = complete(make(server), mode, settings=settings)
    assert completion.text == ANSWER
    assert (completion.model, completion.finish_reason) == ("fake-model", "stop")
    assert (completion.prompt_tokens, completion.completion_tokens) == (12, 7)
    assert completion.seconds > 0
    [request] = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body == {"model": "fake-model", "messages": MESSAGES, "max_tokens": 64,
                            "temperature": 0.2, "top_p": 0.9, "stop": ["\n\n"], "seed": 7}


def test_defaults_omit_stop_and_seed_and_no_key_means_no_auth_header(server):
    make(server).generate(MESSAGES)
    [request] = server.requests
    assert "stop" not in request.body and "seed" not in request.body and "stream" not in request.body
    assert "authorization" not in request.headers


def test_extra_headers_are_sent(server):
    make(server, headers={"X-Team": "search"}).generate(MESSAGES)
    assert server.requests[0].headers["x-team"] == "search"


@pytest.mark.parametrize("mode", MODES)
def test_stream_concatenates_to_the_full_answer(server, mode):
    pieces: list[str] = []
    assert collect(make(server), mode, into=pieces) == ANSWER
    assert len(pieces) > 1 and all(pieces)
    [request] = server.requests
    assert request.body["stream"] is True
    assert request.headers["accept"] == "text/event-stream"


# ---------------------------------------------------------------------- retries
@pytest.mark.parametrize("mode", MODES)
def test_429_honours_retry_after_then_succeeds(server, mode):
    server.push(Fault.rate_limited(retry_after="1"))
    start = time.monotonic()
    assert complete(make(server), mode).text == ANSWER
    waited = server.requests[1].at - server.requests[0].at
    assert len(server.requests) == 2
    assert 0.9 <= waited < 2.0 and time.monotonic() - start < 3.0


def test_retry_after_as_http_date_is_honoured(server):
    when = datetime.now(timezone.utc) + timedelta(seconds=2)
    server.push(Fault.rate_limited(retry_after=format_datetime(when, usegmt=True)))
    assert make(server).generate(MESSAGES).text == ANSWER
    assert 0.5 <= server.requests[1].at - server.requests[0].at < 2.5


@pytest.mark.parametrize("mode", MODES)
def test_429_forever_raises_rate_limit_after_max_retries_plus_one(server, mode):
    server.always(Fault.rate_limited())
    with pytest.raises(LLMRateLimitError, match="HTTP 429.*after 3 attempts"):
        complete(make(server, max_retries=2), mode)
    assert len(server.requests) == 3


def test_retry_after_beyond_the_cap_fails_at_once_saying_how_long(server):
    server.push(Fault.rate_limited(retry_after="120"))
    start = time.monotonic()
    with pytest.raises(LLMRateLimitError, match="wait 120 s"):
        make(server, max_retry_after=30).generate(MESSAGES)
    assert len(server.requests) == 1 and time.monotonic() - start < 1.0


@pytest.mark.parametrize("mode", MODES)
def test_500_then_success(server, mode):
    server.push(Fault.error(500, "boom"))
    assert complete(make(server), mode).text == ANSWER
    assert len(server.requests) == 2


@pytest.mark.parametrize("mode", MODES)
def test_5xx_forever_fails_after_bounded_tries(server, mode):
    server.always(Fault.error(503, "overloaded"))
    with pytest.raises(LLMResponseError, match="HTTP 503 after 4 attempts: overloaded"):
        complete(make(server, max_retries=3), mode)
    assert len(server.requests) == 4


@pytest.mark.parametrize("mode", MODES)
def test_stream_retries_before_any_text(server, mode):
    server.push(Fault.error(502), Fault.rate_limited(retry_after="0"), Fault.cut(after_chunks=0))
    assert collect(make(server, max_retries=3), mode) == ANSWER
    assert len(server.requests) == 4


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_errors_are_not_retried(server, status):
    server.always(Fault.error(status, "no"))
    with pytest.raises(LLMError):
        make(server, max_retries=3).generate(MESSAGES)
    assert len(server.requests) == 1


# ---------------------------------------------------------------------- timeouts and cuts
@pytest.mark.parametrize("mode", MODES)
def test_hang_past_timeout_raises_timeout_within_bounded_time(server, mode):
    server.always(Fault.hung(30))
    backend = make(server, timeout=0.3, max_retries=1)
    start = time.monotonic()
    with pytest.raises(LLMTimeoutError, match=r"timeout of 0\.3 s \(after 2 attempts\)"):
        complete(backend, mode)
    assert time.monotonic() - start < 0.3 * 2 + 1.5
    assert len(server.requests) == 2


@pytest.mark.parametrize("mode", MODES)
def test_stream_stalled_after_text_raises_timeout(server, mode):
    server.push(Fault(stall_after=2, hang=30))
    pieces: list[str] = []
    with pytest.raises(LLMTimeoutError, match="stalled .* after 8 characters"):
        collect(make(server, timeout=0.3, max_retries=1), mode, into=pieces)
    assert "".join(pieces) == ANSWER[:8]
    assert len(server.requests) == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("chunked", [True, False])
def test_stream_cut_mid_answer_raises_not_a_truncated_success(server, mode, chunked):
    server.push(Fault.cut(after_chunks=2, chunked=chunked))
    pieces: list[str] = []
    with pytest.raises(LLMConnectionError, match="stream was cut after 8 characters"):
        collect(make(server, max_retries=3), mode, into=pieces)
    assert "".join(pieces) == ANSWER[:8]
    assert len(server.requests) == 1  # text was already yielded: a retry would repeat it


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize("mode", MODES)
def test_malformed_json_raises_response_error_quoting_the_body(server, mode):
    server.push(Fault.malformed())
    with pytest.raises(LLMResponseError, match="not JSON.*unterminated") as info:
        complete(make(server), mode)
    assert str(info.value).startswith(f"openai-compatible {server.openai_url} (model fake-model): ")


@pytest.mark.parametrize("body", [b'{"choices": []}', b'{"choices": [{"text": "x"}]}', b"[1, 2]",
                                  b'{"choices": [{"message": {"content": 3}}]}'])
def test_wrong_shapes_raise_response_error(server, body):
    server.push(Fault.malformed(body))
    with pytest.raises(LLMResponseError):
        make(server).generate(MESSAGES)


def test_long_bodies_are_quoted_short(server):
    server.push(Fault.malformed(b"<html>" + b"x" * 5000))
    with pytest.raises(LLMResponseError) as info:
        make(server).generate(MESSAGES)
    assert len(str(info.value)) < 400


def test_malformed_stream_event_raises_response_error(server):
    server.push(Fault(raw_body=b"data: {oops\n\n"))
    with pytest.raises(LLMResponseError, match="stream event is not JSON"):
        collect(make(server), "sync")


@pytest.mark.parametrize("mode", MODES)
def test_401_names_the_variable_and_never_leaks_the_key(server, mode, monkeypatch, caplog):
    monkeypatch.setenv("MY_LLM_KEY", KEY)
    backend = make(server, api_key_env="MY_LLM_KEY")
    server.push(Fault.error(503), Fault.unauthorized(f"Incorrect API key provided: {KEY}"))
    with caplog.at_level(logging.DEBUG), pytest.raises(LLMAuthError, match="MY_LLM_KEY") as info:
        complete(backend, mode)
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"
    for text in (str(info.value), repr(info.value), repr(backend), str(backend.to_dict()), caplog.text):
        assert KEY not in text


def test_401_without_a_key_says_to_set_the_variable(server):
    server.push(Fault.unauthorized())
    with pytest.raises(LLMAuthError, match="set the environment variable OPENAI_API_KEY"):
        make(server).generate(MESSAGES)


def test_403_is_an_auth_error(server):
    server.push(Fault.error(403, "model not allowed"))
    with pytest.raises(LLMAuthError, match="HTTP 403"):
        make(server).generate(MESSAGES)


@pytest.mark.parametrize("mode", MODES)
def test_unknown_model_raises_not_found_naming_url_and_model(server, mode):
    backend = OpenAICompatibleBackend("gpt-nope", server.openai_url, backoff_base=0.01)
    with pytest.raises(LLMNotFoundError, match="gpt-nope") as info:
        complete(backend, mode)
    assert server.openai_url in str(info.value)


def test_base_url_without_version_prefix_raises_not_found(server):
    with pytest.raises(LLMNotFoundError, match="check the base URL"):
        OpenAICompatibleBackend("fake-model", server.url).generate(MESSAGES)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("llama_cpp", [False, True])
def test_context_length_error(server, mode, llama_cpp):
    server.push(Fault.context_length(llama_cpp=llama_cpp))
    with pytest.raises(LLMContextLengthError, match="context"):
        complete(make(server), mode)
    assert len(server.requests) == 1


def test_in_band_context_error_in_stream_is_recognised():
    with pytest.raises(ProtocolViolation) as info:
        SSEChatDecoder().feed('error: {"code": 400, "message": "the request exceeds the available '
                              'context size", "type": "exceed_context_size_error"}')
    assert info.value.error_cls is LLMContextLengthError


@pytest.mark.parametrize("mode", MODES)
def test_connection_refused_fails_quickly_naming_the_url(mode):
    url = f"http://127.0.0.1:{free_port()}/v1"
    backend = OpenAICompatibleBackend("x", url, max_retries=1, backoff_base=0.01, timeout=2)
    start = time.monotonic()
    with pytest.raises(LLMConnectionError, match="connection refused") as info:
        complete(backend, mode)
    assert str(info.value).startswith(f"openai-compatible {url} (model x): ")
    assert time.monotonic() - start < 2.0


# ---------------------------------------------------------------------- serialisation
def test_to_dict_from_dict_round_trip():
    backend = OpenAICompatibleBackend("llama-3", "http://gpu-box:8000/v1", api_key_env="VLLM_KEY",
                                      timeout=30, max_retries=5, context_window=32768,
                                      headers={"X-Team": "search"})
    data = backend.to_dict()
    assert data["type"] == "OpenAICompatibleBackend"
    assert data["init_parameters"]["api_key_env"] == "VLLM_KEY"
    again = OpenAICompatibleBackend.from_dict(data)
    assert again.to_dict() == data
    assert (again.name, again.context_window) == ("openai-compatible", 32768)
    assert isinstance(again, LLMBackend)


@pytest.mark.parametrize("bad", ["ftp://x/v1", "not a url", ""])
def test_bad_base_url_is_a_config_error(bad):
    from rag.errors import ConfigError
    with pytest.raises(ConfigError):
        OpenAICompatibleBackend("m", bad)


# ---------------------------------------------------------------------- shared helpers
def test_parse_retry_after():
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after("1.5", now) == 1.5
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:10 GMT", now) == 10.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("-4", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_backoff_doubles_with_jitter_up_to_the_cap():
    for retry, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = [backoff_delay(retry, 0.5, 8.0) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1
