"""`rag serve`: an OpenAI-compatible HTTP server for chat over your documents.

Any OpenAI client talks to it (`OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=KEY)`), and
each answer comes with what it rests on: the numbered sources its [n] markers name, the citation
check and the grounding check. The server composes RagPipeline (retrieval, prompt, LLM or
extracts, the checks) and holds no retrieval or prompt logic of its own.

- `app.py`: the FastAPI app (`create_app(config, options)`), its routes and error shape, and
  `run_server` / `serve_in_background`.
- `schemas.py`: the request and response models (OpenAI shapes plus the RAG fields).
- `contract.py`: the OpenAPI document finished to say what the server answers (statuses, errors,
  the upload's body) and the `Allow` of a 405.
- `security.py`: the bind rule, the key check, the body-size limit (plain ASGI).
- `keys.py`: keys per client (`--keys FILE`): which collections a key may read and write;
  `access.py`: the same questions asked by every route and MCP tool.
- `mcp_http.py`: the MCP tools (pipelines/mcp_tools.py) at /mcp, streamable HTTP.
- `options.py`: how it listens and how much it takes on (`ServeOptions`).
- `state.py`: the one owner of the open collections, the encoder and the LLM's generation slots.
- `generation.py`: the LLM gate (generation slots sized by what the backend declares).
- `serialised.py`: qdrant-client's local mode, one call at a time.
- `jobs.py`: the one writer: upload (ingest) jobs and deletions, in order.
- `spool.py`: uploads and their job records on disk until settled; unfinished jobs resume at start.

FastAPI and uvicorn (the `server` extra) are imported only here and inside the `rag serve`
command, so the other commands and the Python API never load them.

- `documents.py`: uploads (streamed to server-named files), ingest jobs and the document routes.
- `static/`: the chat page at GET / (no build step, nothing from a CDN).

Not implemented yet: collection create / delete endpoints, cancelling an ingest job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rag._lazy import lazy_exports

_EXPORTS = {"create_app": "pipelines.server.app", "serve_in_background": "pipelines.server.app",
            "ServeOptions": "pipelines.server.options", "ServerState": "pipelines.server.state"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from pipelines.server.app import create_app, serve_in_background
    from pipelines.server.options import ServeOptions
    from pipelines.server.state import ServerState
