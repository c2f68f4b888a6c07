"""The small family of errors a user can act on. Each message names the file, setting or cause."""

from __future__ import annotations


class RagError(Exception):
    """Base class: anything the command line reports as one clear line, not a stack trace."""


class LoadError(RagError):
    """A file could not be turned into text. Nothing of it is written to the store."""

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class StoreLockedError(RagError):
    """The store folder is open in another process."""


class StoreWriteError(RagError):
    """A store write still failed with a transient error (connection refused or reset, timeout,
    HTTP 429/502/503/504) after the allowed retries. `sources` are the files the write concerned:
    the ingest job reports them failed with `reason` and goes on with the others."""

    def __init__(self, sources: list[str], reason: str):
        self.sources = list(sources)
        self.reason = reason
        super().__init__(f"{', '.join(self.sources)}: {reason}")


class ModelMismatchError(RagError):
    """A collection was built with another encoder than the one asked for."""


class CollectionNotFoundError(RagError):
    """The named collection does not exist."""


class ConfigError(RagError):
    """A setting is invalid."""


class LLMError(RagError):
    """An LLM backend failed. The message names the backend, the URL or model, and the cause;
    it never contains an API key."""


class LLMConnectionError(LLMError):
    """The server could not be reached, or it closed the connection (also mid-stream)."""


class LLMTimeoutError(LLMError):
    """The server did not answer within the timeout (after the allowed retries)."""


class LLMAuthError(LLMError):
    """401/403: the API key is missing, wrong or not allowed to use this model."""


class LLMNotFoundError(LLMError):
    """404: wrong base URL, or the model is not served there."""


class LLMRateLimitError(LLMError):
    """429 still returned after the allowed retries."""


class LLMContextLengthError(LLMError):
    """The prompt plus the requested answer is longer than the model's context window."""


class LLMResponseError(LLMError):
    """The server answered with something that is not the protocol (malformed JSON, no choices,
    a 5xx after the allowed retries)."""
