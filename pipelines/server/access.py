"""What the key of a request may touch, asked by every route and MCP tool the same way.

A collection the key may not read is answered exactly as one that does not exist: the same
CollectionNotFoundError, with the message the store gives for a missing one (so the 404's body
cannot tell them apart). A collection it may read but not write is an AccessDeniedError (403).
The decisions are the Grant's (keys.py); this module adds the server's default collection and
the store's wording.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.server.keys import GRANT_SCOPE_KEY, AccessDeniedError, Grant
from rag.errors import CollectionNotFoundError

EVERYTHING = Grant.everything()  # no key (loopback), or a --server-key-env key


def grant_of(scope: dict[str, Any]) -> Grant:
    """The Grant RequireKey put on the request (every collection when the server has no key)."""
    return scope.get(GRANT_SCOPE_KEY) or EVERYTHING


def not_found(state, name: str) -> CollectionNotFoundError:
    """The error the store gives for a missing collection `name`, word for word."""
    store = state.config.store
    if store.url or store.local_path:
        from connectors.qdrant.client import not_found_message

        return CollectionNotFoundError(not_found_message(name))
    from connectors.qdrant.edge import not_found_message

    return CollectionNotFoundError(not_found_message(Path(store.dir).expanduser().resolve(), name))


def readable(state, grant: Grant, name: str | None) -> str:
    """The collection a request reads: `name`, else the key's default. Not the key's: 404."""
    name = name or grant.default_collection(state.default_collection)
    if not grant.may_read(name):
        raise not_found(state, name)
    return name


def writable(state, grant: Grant, name: str | None) -> str:
    """The collection a request writes to: 404 as `readable`, then 403 when read-only."""
    name = readable(state, grant, name)
    if not grant.may_write(name):
        raise AccessDeniedError(f"this key may read collection '{name}' but not write to it "
                                "(upload, delete): ask for a key that may")
    return name


def refuse_read_only(grant: Grant) -> None:
    """403 at once for a key that may write nowhere (before an upload's bytes are read)."""
    if not grant.may_write_any():
        raise AccessDeniedError("this key may not write to any collection (upload, delete): it reads only")
