"""The MCP tools over your collections, one definition for both transports: `rag mcp` (stdio,
what desktop assistants and IDEs launch) and `/mcp` inside `rag serve` (streamable HTTP).

    search            query -> ranked passages (chunk id, source, pages, score, text)
    ask               question -> the cited answer, its numbered sources, the citation and
                      grounding checks (the configured LLM, or quoted extracts)
    list_collections  the collections this client may read, the default marked
    list_documents    the documents (sources) of a collection, with their chunk counts
    get_passage       chunk id -> its text, source and pages; its neighbours on request

Each tool works on a ServerState (pipelines.server.state: the open collections, the encoder,
the pipeline and its generation slots), so the HTTP tools share the server's encoder and store,
and on the Grant of the caller (pipelines.server.keys): over HTTP the key of the request, so a
key's tools see only its collections, and another's answers as a missing one; over stdio
every collection. Errors come back as MCP tool errors (isError) carrying the CLI's message
(rag.errors), never a traceback. Results are bounded, since a client's context is small: at most
MAX_TOP_K passages, each text cut at MAX_TEXT_CHARS (marked), MAX_DOCUMENTS documents a page,
MAX_NEIGHBOURS neighbours a side.

The `mcp` SDK (the `mcp` extra) is imported by this module, which only `rag mcp` and the
server's `/mcp` route import.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from pipelines.server.access import EVERYTHING, not_found, readable
from pipelines.server.keys import Grant
from pipelines.server.schemas import CollectionName
from rag.errors import ConfigError, RagError
from rag.models import Answer, page_label
from rag.search import payload as P
from rag.search.store import Condition, Leg, QuerySpec

logger = logging.getLogger("pipelines.mcp")

MAX_TOP_K = 20
DEFAULT_TOP_K = 5
MAX_TEXT_CHARS = 2000  # of one passage's text in a result
MAX_DOCUMENTS = 200  # documents in one list_documents page
MAX_NEIGHBOURS = 3  # chunks on each side of a passage
INSTRUCTIONS = (
    "Search and question the user's own documents (PDFs, notes, reports) held in collections. "
    "Use `search` to find passages, `ask` for a cited answer, `get_passage` to read a passage "
    "in full or with its surroundings, `list_collections` and `list_documents` to see what is there. "
    "Cite passages by their source and pages.")

Collection = Annotated[CollectionName | None, Field(
    None, description="collection to use (list_collections names them); omit for the default one")]
Mode = Annotated[Literal["dense", "bm25", "hybrid"] | None, Field(
    None, description="dense (meaning), bm25 (exact words, names, numbers) or hybrid (both; "
                      "the server's default when omitted)")]


class RagTools:
    """The tools' work over `state`, for the caller `grant_of(ctx)` names. Plain async methods,
    so they can be called (and tested) without a transport."""

    def __init__(self, state, grant_of: Callable[[Any], Grant] = lambda ctx: EVERYTHING):
        self.state, self.grant_of = state, grant_of

    def _collection(self, ctx, name: str | None) -> str:
        return readable(self.state, self.grant_of(ctx), name)

    async def search(self, ctx, query: str, top_k: int | None, mode: str | None, filters: list[str] | None,
                     collection: str | None) -> dict[str, Any]:
        name = self._collection(ctx, collection)

        def run():
            return self.state.collection(name).search(query, top_k=top_k or DEFAULT_TOP_K, filters=filters or None,
                                                      mode=mode)

        response = await asyncio.to_thread(run)
        return {"collection": name, "query": response.query, "mode": response.mode,
                "results": [_passage(r.id, r.text, r.source, r.page_start, r.page_end, rank=r.rank,
                                     score=r.score, section=r.section) for r in response.results],
                "notes": response.notes}

    async def ask(self, ctx, question: str, top_k: int | None, mode: str | None, filters: list[str] | None,
                  collection: str | None) -> dict[str, Any]:
        from pipelines.server.schemas import AnswerFields

        name = self._collection(ctx, collection)
        served = await asyncio.to_thread(self.state.collection, name)
        pipeline = self.state.request_pipeline(served, loop=asyncio.get_running_loop(), streaming=False,
                                               mode=mode, top_k=top_k)
        answer: Answer = await pipeline.aask(question, filters=filters or None)
        fields = AnswerFields.of(answer, []).model_dump(mode="json")
        return {"collection": name, "answer": answer.text,
                "sources": [{"n": p.number, **_passage(p.chunk_ids[0] if p.chunk_ids else "", p.text, p.source,
                                                       p.page_start, p.page_end, score=p.score),
                             "chunk_ids": p.chunk_ids} for p in answer.passages],
                **fields}

    async def list_collections(self, ctx) -> dict[str, Any]:
        grant = self.grant_of(ctx)
        default = grant.default_collection(self.state.default_collection)

        def run() -> list[dict[str, Any]]:
            out = []
            for name in grant.visible(self.state.collections()):
                item: dict[str, Any] = {"name": name, "default": name == default}
                try:
                    item["chunks"] = self.state.collection(name).handle.count()
                except RagError as e:
                    item["error"] = str(e)
                out.append(item)
            return out

        return {"collections": await asyncio.to_thread(run)}

    async def list_documents(self, ctx, collection: str | None, offset: int) -> dict[str, Any]:
        name = self._collection(ctx, collection)

        def run() -> dict[str, int]:
            counts: dict[str, int] = {}
            for _, payload in self.state.collection(name).handle.payloads([P.SOURCE]):
                source = payload.get(P.SOURCE)
                if source is not None:
                    counts[source] = counts.get(source, 0) + 1
            return counts

        counts = await asyncio.to_thread(run)
        names = sorted(counts)
        page = names[offset:offset + MAX_DOCUMENTS]
        more = offset + len(page) < len(names)
        return {"collection": name, "total": len(names), "offset": offset,
                "documents": [{"source": s, "chunks": counts[s]} for s in page],
                "next_offset": offset + len(page) if more else None}

    async def get_passage(self, ctx, chunk_id: str, neighbours: int, collection: str | None) -> dict[str, Any]:
        name = self._collection(ctx, collection)
        try:
            chunk_id = str(uuid.UUID(chunk_id.strip()))
        except ValueError:
            raise ConfigError(f"chunk id '{chunk_id[:80]}' is not a chunk id (a UUID, the `id` of a search "
                              "result)") from None
        return await asyncio.to_thread(self._passage_with_neighbours, name, chunk_id, neighbours)

    def _passage_with_neighbours(self, name: str, chunk_id: str, neighbours: int) -> dict[str, Any]:
        store = self.state.collection(name).handle
        hits = store.retrieve([chunk_id], with_vectors=neighbours > 0)
        if not hits:
            raise ChunkNotFoundError(f"collection '{name}' has no chunk {chunk_id} (use the `id` of a search "
                                     "result from the same collection)")
        hit = hits[0]
        out = {"collection": name, **_payload_passage(hit.id, hit.payload, limit=None)}
        if neighbours > 0:
            index = hit.payload.get(P.CHUNK_INDEX)
            if index is not None and hit.vector is not None:
                # The same version of the same file, chunk_index within `neighbours`: any query over
                # that filter finds them all; the chunk's own vector is one at hand.
                spec = QuerySpec(legs=[Leg(kind="dense", vector=list(hit.vector), limit=2 * neighbours + 1)],
                                 limit=2 * neighbours + 1, filter=[
                                     Condition(key=P.SOURCE, value=hit.payload[P.SOURCE]),
                                     Condition(key=P.FILE_HASH, value=hit.payload.get(P.FILE_HASH, "")),
                                     Condition(key=P.CHUNK_INDEX, gte=index - neighbours, lte=index + neighbours)])
                around = sorted((h for h in store.query_batch([spec])[0] if h.id != hit.id),
                                key=lambda h: h.payload.get(P.CHUNK_INDEX, 0))
                out["before"] = [_payload_passage(h.id, h.payload) for h in around
                                 if h.payload.get(P.CHUNK_INDEX, 0) < index]
                out["after"] = [_payload_passage(h.id, h.payload) for h in around
                                if h.payload.get(P.CHUNK_INDEX, 0) > index]
        return out


class ChunkNotFoundError(RagError):
    """get_passage of an id the collection does not hold."""


def _passage(chunk_id: str, text: str, source: str, page_start: int | None, page_end: int | None,
             limit: int | None = MAX_TEXT_CHARS, **extra: Any) -> dict[str, Any]:
    cut = limit is not None and len(text) > limit
    out = {"id": chunk_id, **{k: v for k, v in extra.items() if v is not None}, "source": source,
           "pages": page_label(page_start or 0, page_end or 0), "text": text[:limit] if cut else text}
    if cut:
        out["truncated"] = f"text cut at {limit} of {len(text)} characters: get_passage gives it whole"
    return out


def _payload_passage(chunk_id: str, payload: dict, limit: int | None = MAX_TEXT_CHARS) -> dict[str, Any]:
    return _passage(chunk_id, payload.get(P.TEXT, ""), payload.get(P.SOURCE, ""), payload.get(P.PAGE_START),
                    payload.get(P.PAGE_END), limit=limit, section=payload.get(P.SECTION))


# ---------------------------------------------------------------------------- the MCP server


async def _guarded(work: Awaitable[dict[str, Any]], tool: str) -> dict[str, Any] | CallToolResult:
    """A tool's result, or a tool error (isError) whose text is the message the CLI would print,
    word for word (a raised ToolError would come back prefixed "Error executing tool ...")."""
    try:
        return await work
    except RagError as e:
        message = str(e)
    except Exception:
        logger.exception("MCP tool %s failed", tool)
        message = f"{tool} failed: internal error (the server log has the details)"
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def build_mcp_server(state, grant_of: Callable[[Any], Grant] | None = None) -> MCPServer:
    """An MCPServer with the five tools over `state`. `grant_of(ctx)`: the caller's Grant (default:
    every collection, as over stdio)."""
    tools = RagTools(state, grant_of or (lambda ctx: EVERYTHING))
    # WARNING: the SDK configures the root logger (basicConfig) at this level; at INFO it would log
    # every request, and let every library's INFO records through in `rag serve`.
    server = MCPServer("rag", instructions=INSTRUCTIONS, version="1", log_level="WARNING")
    read_only = ToolAnnotations(readOnlyHint=True, destructiveHint=False, idempotentHint=True, openWorldHint=False)

    async def search(
        query: Annotated[str, Field(min_length=1, max_length=2000, description="what to look for: a question, "
                                    "keywords, a name or a figure")],
        ctx: Context,
        top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K, description="how many passages")] = DEFAULT_TOP_K,
        mode: Mode = None,
        filters: Annotated[list[str] | None, Field(None, max_length=10, description=(
            "payload filters, each KEY=VALUE: source=FILE (as search results name it), page=3 or "
            "page=2-5, section=TITLE"))] = None,
        collection: Collection = None,
    ) -> dict[str, Any]:
        return await _guarded(tools.search(ctx, query, top_k, mode, filters, collection), "search")

    async def ask(
        question: Annotated[str, Field(min_length=1, max_length=2000, description="the question, in full "
                                       "(it is answered from the documents alone)")],
        ctx: Context,
        top_k: Annotated[int | None, Field(None, ge=1, le=MAX_TOP_K, description="passages to retrieve "
                                           "(default: the server's)")] = None,
        mode: Mode = None,
        filters: Annotated[list[str] | None, Field(None, max_length=10, description="as for search")] = None,
        collection: Collection = None,
    ) -> dict[str, Any]:
        return await _guarded(tools.ask(ctx, question, top_k, mode, filters, collection), "ask")

    async def list_collections(ctx: Context) -> dict[str, Any]:
        return await _guarded(tools.list_collections(ctx), "list_collections")

    async def list_documents(
        ctx: Context,
        collection: Collection = None,
        offset: Annotated[int, Field(ge=0, description="skip this many (next_offset of the previous page)")] = 0,
    ) -> dict[str, Any]:
        return await _guarded(tools.list_documents(ctx, collection, offset), "list_documents")

    async def get_passage(
        chunk_id: Annotated[str, Field(min_length=1, max_length=64, description="the `id` of a search result "
                                       "or an answer's source")],
        ctx: Context,
        neighbours: Annotated[int, Field(ge=0, le=MAX_NEIGHBOURS, description=(
            "also return this many chunks before and after it in the same document"))] = 0,
        collection: Collection = None,
    ) -> dict[str, Any]:
        return await _guarded(tools.get_passage(ctx, chunk_id, neighbours, collection), "get_passage")

    descriptions = {
        search: "Search the documents for passages about a query. Returns ranked passages, best first, each with "
                f"its chunk id, source file, pages, score and text (cut at {MAX_TEXT_CHARS} characters). Use it "
                "to find facts to quote; use get_passage with a result's id to read more around it.",
        ask: "Answer a question from the documents, with numbered citations [n] to the sources returned with it, "
             "and checks: which citations are valid, and which sentences state figures or names not found in "
             "the passages they cite (grounding). The answer comes from the server's LLM, or as quoted "
             "extracts when it has none.",
        list_collections: "List the document collections you may search, with their sizes in chunks; the "
                          "default one (used when a tool is given no collection) is marked.",
        list_documents: f"List the documents (source files) of a collection with their chunk counts, "
                        f"{MAX_DOCUMENTS} at a time (next_offset gives the next page).",
        get_passage: "Read one passage by its chunk id (from search or ask): its full text, source and pages; "
                     f"with neighbours=N also up to N ({MAX_NEIGHBOURS} at most) chunks before and after it "
                     "in the same document.",
    }
    for fn, description in descriptions.items():
        server.add_tool(fn, name=fn.__name__, description=description, annotations=read_only)
    return server
