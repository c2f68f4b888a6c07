"""The LLM backends by name: the one place that knows which backends exist.

A backend is named by `--llm NAME`, by `[llm] backend` in a config file, and by the `type` of a
saved `to_dict()`. Each name maps to its class here, imported on first use only (the local
backend loads torch; `rag --help` loads none of them). Two names are not classes: `auto` asks the
environment which LLM to use (`resolve_backend`, which may probe a server once), `none` means no
LLM (answers are extracts). The config's `Backend` type and the CLI's `--llm` choices are
`BACKEND_NAMES`, so a backend added here is accepted everywhere.

The settings come from the caller as a plain object (`BackendSettings`: pipelines.config's
LLMConfig is one): pipelines import connectors, never the reverse.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Protocol, TypeVar

from rag.answer.llm import LLMBackend
from rag.errors import ConfigError, LLMError

AUTO, NONE = "auto", "none"
#: name -> "module:Class", in the order `--llm` lists them.
BACKENDS = {"openai": "connectors.llm.openai:OpenAICompatibleBackend",
            "ollama": "connectors.llm.ollama:OllamaBackend",
            "local": "connectors.llm.local:LocalTransformersBackend"}
BACKEND_NAMES = (AUTO, *BACKENDS, NONE)

OPENAI_API_URL = "https://api.openai.com/v1"
OPENAI_DEFAULT_MODEL = "gpt-4o-mini"  # with OPENAI_API_KEY alone


class BackendSettings(Protocol):
    """What is read of an LLM config to choose and build its backend."""

    backend: str
    model: str | None
    base_url: str | None
    api_key_env: str
    timeout: float
    max_retries: int
    context_window: int | None
    device: str | None

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Any: ...


S = TypeVar("S", bound=BackendSettings)


def backend_class(kind: str) -> type:
    """The class of a backend name ("openai") or of its class name ("OpenAICompatibleBackend",
    the `type` its to_dict writes)."""
    for name, target in BACKENDS.items():
        module, cls = target.split(":")
        if kind in (name, cls):
            return getattr(importlib.import_module(module), cls)
    raise ConfigError(f"unknown LLM backend type '{kind}'")


def backend_from_dict(data: dict[str, Any]) -> LLMBackend:
    """Rebuild a backend from its to_dict()."""
    return backend_class(data.get("type", "")).from_dict(data)


def make_backend(settings: BackendSettings) -> LLMBackend | None:
    """The LLM backend the settings name, or None for extracts only. `auto` is resolved first (see
    resolve_backend; that probes the environment's servers once). Otherwise nothing is loaded
    or contacted here: backends connect or load on first use."""
    if settings.backend == AUTO:
        settings, _ = resolve_backend(settings)
    if settings.backend == NONE:
        return None
    return backend_class(settings.backend).from_settings(settings)


def resolve_backend(settings: S, env: dict[str, str] | None = None) -> tuple[S, str]:
    """Turn `backend = "auto"` into the backend to use, and say why (shown with every answer).

    In order: a base_url given (flag or config) -> that OpenAI-compatible server; $OPENAI_BASE_URL
    -> that server; the key variable ($OPENAI_API_KEY) alone -> api.openai.com; an Ollama
    answering at $OLLAMA_HOST or its default address (probed once, half a second) -> its first
    model; else none: extracts, quoted with citations. The model is --llm-model, else
    $OPENAI_MODEL, else the first the server lists. The local 135M model is never picked by
    auto: it is a small offline demo, used only when asked for (--llm local).
    """
    env = dict(os.environ if env is None else env)
    if settings.backend != AUTO:
        return settings, (f"--llm {settings.backend}" if settings.backend != NONE
                          else "no LLM (--llm none): extracts")
    model = settings.model or env.get("OPENAI_MODEL")
    base, origin = None, ""
    if settings.base_url:
        base, origin = settings.base_url, "the configured base URL"
    elif env.get("OPENAI_BASE_URL"):
        base, origin = env["OPENAI_BASE_URL"], "$OPENAI_BASE_URL"
    elif env.get(settings.api_key_env):
        base, origin = OPENAI_API_URL, f"${settings.api_key_env}"
        model = model or OPENAI_DEFAULT_MODEL
    if base is not None:
        if not model:
            from connectors.llm.openai import list_models

            try:
                listed = list_models(base, env.get(settings.api_key_env), timeout=min(settings.timeout, 5.0))
            except LLMError as e:
                return settings.model_copy(update={"backend": NONE}), (
                    f"{origin} names {base}, but {e}; no model to ask (give --llm-model): extracts")
            if not listed:
                raise ConfigError(f"{origin} names {base}, which lists no model: give --llm-model or $OPENAI_MODEL")
            model = listed[0]
        return (settings.model_copy(update={"backend": "openai", "base_url": base, "model": model}),
                f"OpenAI-compatible server {base} ({origin}), model {model}")
    from connectors.llm.ollama import DEFAULT_BASE_URL, list_models as ollama_models

    host = env.get("OLLAMA_HOST") or DEFAULT_BASE_URL
    host = host if "://" in host else f"http://{host}"
    try:
        pulled = ollama_models(host, timeout=0.5)
    except LLMError:
        pulled = []
    if pulled:
        model = settings.model if settings.model in pulled else pulled[0]
        return (settings.model_copy(update={"backend": "ollama", "base_url": host, "model": model}),
                f"Ollama at {host}, model {model}")
    return settings.model_copy(update={"backend": NONE}), (
        "no LLM configured (no --llm/--base-url, $OPENAI_BASE_URL or $OPENAI_API_KEY, and no Ollama at "
        f"{host}): extracts. For generated answers: --llm openai --base-url URL --llm-model NAME, or "
        "--llm local for the small offline demo model")
