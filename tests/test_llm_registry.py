"""The backend registry: the one list of backend names, what every other place accepts; building
and rebuilding backends by name; what each backend declares about itself."""

from __future__ import annotations

import subprocess
import sys
import typing

import pytest

from connectors.llm.local import LocalTransformersBackend
from connectors.llm.ollama import OllamaBackend
from connectors.llm.openai import OpenAICompatibleBackend
from connectors.llm.registry import BACKEND_NAMES, backend_class, backend_from_dict, make_backend
from helpers_ingest import cli_env
from pipelines.config import LLMConfig, RagConfig
from rag.answer.llm import IN_PROCESS, NETWORK, LLMBackend
from rag.errors import ConfigError


def test_the_config_and_the_cli_accept_exactly_the_registrys_names():
    from pipelines.cli.options import LLM

    assert BACKEND_NAMES == ("auto", "openai", "ollama", "local", "none")
    assert typing.get_args(LLMConfig.model_fields["backend"].annotation) == BACKEND_NAMES
    (llm_option,) = [o for o in LLM if o.fields == ("llm.backend",)]
    assert llm_option.kwargs["choices"] == BACKEND_NAMES
    with pytest.raises(ConfigError, match="backend"):
        from pipelines.config import validate_config

        validate_config({"llm": {"backend": "llamafile"}}, "options")


@pytest.mark.parametrize("name, cls", [("openai", OpenAICompatibleBackend), ("ollama", OllamaBackend),
                                       ("local", LocalTransformersBackend)])
def test_a_backend_is_found_by_its_name_or_class_name_and_rebuilt_from_its_dict(name, cls):
    assert backend_class(name) is backend_class(cls.__name__) is cls
    settings = RagConfig(llm={"backend": name, "model": "m", "base_url": "http://127.0.0.1:9/v1",
                              "context_window": 4096}).llm
    built = make_backend(settings)
    assert type(built) is cls and isinstance(built, LLMBackend)
    again = backend_from_dict(built.to_dict())
    assert type(again) is cls and again.to_dict() == built.to_dict()
    assert backend_from_dict({**built.to_dict(), "type": name}).to_dict() == built.to_dict()


def test_unknown_names_and_none_and_missing_settings():
    with pytest.raises(ConfigError, match="unknown LLM backend type 'llamafile'"):
        backend_from_dict({"type": "llamafile"})
    assert make_backend(LLMConfig(backend="none")) is None
    with pytest.raises(ConfigError, match="llm backend 'ollama' needs a model name"):
        make_backend(LLMConfig(backend="ollama"))
    with pytest.raises(ConfigError, match="llm backend 'openai' needs base_url"):
        make_backend(LLMConfig(backend="openai", model="m"))
    ollama = make_backend(LLMConfig(backend="ollama", model="m"))
    assert ollama.api_key_env is None and ollama.base_url == "http://127.0.0.1:11434"  # no OpenAI key sent


def test_each_backend_declares_its_concurrency_and_token_counter():
    local = LocalTransformersBackend(model="/some/folder", context_window=2048)
    assert local.max_concurrency == IN_PROCESS == 1
    assert local.token_counter == local.count_tokens  # the model's own tokenizer (nothing loaded yet)
    for network in (OpenAICompatibleBackend("m", "http://127.0.0.1:9/v1"), OllamaBackend("m")):
        assert network.max_concurrency is NETWORK and network.token_counter is None


def test_the_registry_loads_no_backend_until_one_is_asked_for():
    code = ("import sys, connectors.llm.registry, pipelines.cli.options; "
            "print(sorted(m for m in ('httpx', 'torch', 'transformers', 'connectors.llm.openai', "
            "'connectors.llm.local') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
