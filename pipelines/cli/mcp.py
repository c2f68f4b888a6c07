"""`rag mcp`: the MCP tools over stdio, for desktop assistants, IDEs and agent frameworks that
launch an MCP server as a subprocess (pipelines.mcp_tools: search, ask, list_collections,
list_documents, get_passage).

It takes the store, retrieval, prompt and LLM options `rag ask` takes, so a config file gives
the tools exactly what `rag search` and `rag ask` would. The store is opened, and the encoder
loaded, before the first message is read: a missing collection or a locked store is one
`rag: error:` line on stderr and exit 2. Stdout carries the protocol only; anything else goes to
stderr. The `mcp` SDK is imported inside the command (the `mcp` extra).
"""

from __future__ import annotations

from pipelines.cli.options import add_answer_options, add_config_option, config_from_args


def register(sub, cfg) -> None:
    p = sub.add_parser(
        "mcp", help="serve search and cited answers to MCP clients over stdio (desktop assistants, IDEs)",
        description="An MCP server on stdin/stdout with the tools search, ask, list_collections, list_documents "
                    "and get_passage over the store's collections. Add it to a client as the command line "
                    "`rag mcp --store DIR --collection NAME` (README: MCP). Needs the mcp extra: "
                    "pip install -e '.[mcp]'.")
    add_answer_options(p, cfg)
    add_config_option(p, cfg)
    p.set_defaults(func=cmd_mcp)


def cmd_mcp(args) -> int:
    import contextlib
    import sys

    from rag.errors import ConfigError

    cfg = config_from_args(args)
    try:
        import anyio

        from pipelines.mcp_tools import build_mcp_server
    except ImportError as e:
        raise ConfigError(f"rag mcp needs the mcp extra ({e.name} is missing): pip install -e '.[mcp]'") from None
    from pipelines.server.state import ServerState

    state = ServerState(cfg)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout is the protocol's alone
            state.open()
        anyio.run(build_mcp_server(state).run_stdio_async)
    finally:
        state.close()
    return 0
