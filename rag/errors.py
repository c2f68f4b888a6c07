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


class ModelMismatchError(RagError):
    """A collection was built with another encoder than the one asked for."""


class CollectionNotFoundError(RagError):
    """The named collection does not exist."""


class ConfigError(RagError):
    """A setting is invalid."""
