"""Collections of `rag serve`: list, create, delete.

    GET    /v1/collections           {"object": "list", "data": [collection, ...]}
    POST   /v1/collections           {"name"} -> 201 collection (empty), 409 if it exists
    DELETE /v1/collections/{name}    -> {"id", "deleted": true, "points"}; 409 for the default

A collection is {"id", "object": "collection", "points", "default", "model", "dimension",
"chunk_size", "chunk_overlap"}. A new collection is made like the served default one (its
encoder, chunking and text-index settings): the server embeds every collection's queries and
uploads with the encoder it loaded, so a collection of another model would need a server of its
own (`rag ingest --model ... --collection ...`, then `rag serve --collection ...`).

Creation and deletion are writes: they run in the server's one writer, in order with uploads
and document deletions (a delete queued after an upload to the same collection runs after it).
Deleting closes the collection, renames its folder out of the way in one step (so no listing or
reopen sees half a collection) and then removes it, with its staged uploads. The default
collection cannot be deleted while it is served.

These need the embedded store (the server's store folder holds its collections). With a Qdrant
server (`--url`) or qdrant-client's local mode the server serves the one configured collection:
manage the others there (the Qdrant API or dashboard, `rag ingest --collection`).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from pipelines.server import schemas as S
from pipelines.server.access import EVERYTHING, grant_of, writable
from pipelines.server.keys import AccessDeniedError, Grant
from pipelines.server.state import ServerState, Served
from pipelines.stores import open_store
from rag.errors import ConfigError, RagError


class CollectionExistsError(RagError):
    """POST /v1/collections of a name already taken (409)."""


class DefaultCollectionError(RagError):
    """DELETE of the collection the server serves by default (409)."""


class CollectionCreate(BaseModel):
    name: S.CollectionName


def describe(state: ServerState, served: Served, default: str | None = None) -> S.CollectionInfo:
    info = served.handle.info
    return S.CollectionInfo(id=served.name, points=served.handle.count(),
                            default=served.name == (default or state.default_collection), model=info.model,
                            dimension=info.dimension, chunk_size=info.chunk_size,
                            chunk_overlap=info.chunk_overlap)


def list_collections(state: ServerState, grant: Grant = EVERYTHING) -> dict[str, Any]:
    """The collections `grant`'s key may read; "default" marks the one a request naming none
    goes to (the key's default)."""
    data = []
    default = grant.default_collection(state.default_collection)
    for name in grant.visible(state.collections()):
        try:
            data.append(describe(state, state.collection(name), default))
        except RagError as e:  # held by another process, another model ...: listed, with why
            data.append(S.CollectionInfo(id=name, default=name == default, error=str(e)))
    return S.CollectionList(data=data).model_dump(mode="json", exclude_none=True)


def _embedded_store_root(state: ServerState) -> Path:
    store = state.config.store
    if store.url or store.local_path:
        raise ConfigError("creating and deleting collections needs the embedded store: with a Qdrant server "
                          "or local mode, manage collections there (the Qdrant API, `rag ingest --collection`)")
    return Path(store.dir).expanduser().resolve()


def create_collection(state: ServerState, name: str) -> dict[str, Any]:
    """Make `name`, empty, like the default collection (run in the writer)."""
    _embedded_store_root(state)
    if name in state.collections():
        raise CollectionExistsError(f"collection '{name}' exists already")
    template = state.collection(None).handle.info
    settings = state.config.store.settings().model_copy(update={"collection": name})
    open_store(settings, info=template, create=True).close()
    return describe(state, state.collection(name)).model_dump(mode="json", exclude_none=True)


def delete_collection(state: ServerState, name: str) -> dict[str, Any]:
    """Close and remove `name` and its staged uploads (run in the writer)."""
    root = _embedded_store_root(state)
    if name == state.default_collection:
        raise DefaultCollectionError(f"collection '{name}' is the one this server serves by default: it "
                                     "cannot be deleted while served (restart with another --collection)")
    served = state.collection(name)  # 404 when missing, 503 when another process holds it
    points = served.handle.count()
    state.forget(name)
    served.store.close()
    trash = root / f".deleting-{uuid.uuid4().hex}"
    (root / name).rename(trash)  # one step: the collection is gone from every listing at once
    shutil.rmtree(trash, ignore_errors=True)
    with contextlib.suppress(OSError):
        shutil.rmtree(state.uploads_dir / name)
    return S.CollectionDeleted(id=name, points=points).model_dump(mode="json")


def add_collection_routes(app: FastAPI, state: ServerState, error_response, exception_response) -> None:
    """The routes above, on `app`; errors in the OpenAI shape."""

    @app.get("/v1/collections", response_model=S.CollectionList)
    async def collections(request: Request) -> Response:
        return JSONResponse(await asyncio.to_thread(list_collections, state, grant_of(request.scope)))

    @app.post("/v1/collections", status_code=201, response_model=S.CollectionInfo)
    async def create(body: CollectionCreate, request: Request) -> Response:
        if not grant_of(request.scope).may_write(body.name):  # before the 409: no probing others' names
            raise AccessDeniedError(f"this key may not create collection '{body.name}' (only those it may write)")
        try:
            made = await asyncio.wrap_future(state.writer.call(lambda: create_collection(state, body.name)))
        except CollectionExistsError as e:
            return error_response(409, str(e), "collection_exists")
        return JSONResponse(made, status_code=201)

    @app.delete("/v1/collections/{name}", response_model=S.CollectionDeleted)
    async def delete(name: S.CollectionName, request: Request) -> Response:
        writable(state, grant_of(request.scope), name)
        try:
            gone = await asyncio.wrap_future(state.writer.call(lambda: delete_collection(state, name)))
        except DefaultCollectionError as e:
            return error_response(409, str(e), "default_collection")
        return JSONResponse(gone)
