"""`rag serve`: an OpenAI-compatible HTTP server for chat over a collection (pipelines.server).

It takes the store, retrieval, prompt and LLM options `rag ask` takes, so a config file serves
exactly what it answers, plus where to listen and who may connect. FastAPI and uvicorn are
imported inside the command only: `rag --help` and the other commands never load them.
"""

from __future__ import annotations

from pipelines.cli.options import add_answer_options, add_config_option, config_from_args
# security.py is plain Python (no web stack): the defaults of the flags come from it.
from pipelines.server.security import (DEFAULT_HOST, DEFAULT_NETWORK_GENERATIONS, DEFAULT_PORT, MAX_CHATS_PER_CLIENT,
                                       MAX_REQUESTS_PER_CLIENT, MAX_UPLOAD_BYTES)


def register(sub, cfg) -> None:
    p = sub.add_parser(
        "serve", help="serve chat over a collection as an OpenAI-compatible HTTP API (with sources)",
        description="POST /v1/chat/completions (streamed or not; each answer with its numbered sources, "
                    "citation and grounding checks), GET /v1/models (one per collection), POST /v1/search "
                    "(as rag search --json), POST/GET /v1/documents and GET /v1/jobs/ID (uploads, ingested in the "
                    "background), DELETE /v1/documents/ID, GET/POST /v1/collections and DELETE /v1/collections/NAME, "
                    "GET /health; the web chat page at /; the MCP tools at /mcp (streamable HTTP, with the mcp extra). "
                    "Needs the server extra: "
                    "pip install -e '.[server]'.")
    add_answer_options(p, cfg)
    g = p.add_argument_group("server")
    g.add_argument("--host", default=DEFAULT_HOST,
                   help="address to listen on (default: %(default)s, this machine only; any other needs "
                        "--server-key-env)")
    g.add_argument("--port", type=int, default=DEFAULT_PORT, help="(default: %(default)s)")
    g.add_argument("--server-key-env", metavar="NAME",
                   help="environment variable holding the key clients must send as 'Authorization: Bearer "
                        "KEY', or several keys separated by commas, one per client (default: no key, loopback "
                        "only)")
    g.add_argument("--keys", metavar="FILE",
                   help="TOML file of keys per client: each a name, its SHA-256 or the variable holding it, the "
                        "collections it may read and write, optional limits; a key sees only its collections "
                        "(README: two teams on one server)")
    g.add_argument("--workers", type=int, default=1,
                   help="worker processes (default: %(default)s; more need a Qdrant server, --url)")
    g.add_argument("--max-concurrent-generations", type=int, metavar="N",
                   help=f"answers generated at once by a network LLM (default: {DEFAULT_NETWORK_GENERATIONS}; "
                        "a local model: 1)")
    g.add_argument("--max-requests-per-client", type=int, default=MAX_REQUESTS_PER_CLIENT, metavar="N",
                   help="API requests one client (key, or address without a key) may have in flight; one "
                        "more gets 429 with Retry-After (default: %(default)s)")
    g.add_argument("--max-chats-per-client", type=int, default=MAX_CHATS_PER_CLIENT, metavar="N",
                   help="chat completions one client may have in flight, streams included (default: %(default)s)")
    g.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from this origin, repeatable (default: CORS off)")
    g.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_BYTES / 1_000_000, metavar="MB",
                   help="largest file POST /v1/documents accepts, in MB (default: %(default)g)")
    g.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    g.add_argument("--watch", action="append", default=[], metavar="DIR",
                   help="keep the default collection equal to this folder, repeatable: ingested with prune at "
                        "start, then followed as `rag ingest --watch` does, every write through the server's "
                        "writer (pip install -e \".[watch]\")")
    add_config_option(p, cfg)
    p.set_defaults(func=cmd_serve)


def serve_options(args):
    """The server options of a parsed command line, checked: a non-loopback address needs a key,
    more than one worker needs a Qdrant server. ConfigError (exit 2) otherwise, before anything
    is opened or bound."""
    from pipelines.server.security import check_bind, check_workers
    from pipelines.server.options import ServeOptions
    from rag.errors import ConfigError

    cfg = config_from_args(args)
    if args.max_concurrent_generations is not None and args.max_concurrent_generations < 1:
        raise ConfigError("--max-concurrent-generations must be 1 or more")
    for flag, value in (("--max-requests-per-client", args.max_requests_per_client),
                        ("--max-chats-per-client", args.max_chats_per_client)):
        if value < 1:
            raise ConfigError(f"{flag} {value}: give 1 or more")
    if not args.max_upload_mb > 0:
        raise ConfigError(f"--max-upload-mb {args.max_upload_mb:g}: give a size above 0")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: give 0-65535")
    options = ServeOptions(host=args.host, port=args.port, server_key_env=args.server_key_env, keys_file=args.keys,
                           workers=max(args.workers, 1), max_concurrent_generations=args.max_concurrent_generations,
                           cors_origins=args.cors_origin, log_level=args.log_level,
                           max_requests_per_client=args.max_requests_per_client,
                           max_chats_per_client=args.max_chats_per_client,
                           max_upload_bytes=max(1, int(args.max_upload_mb * 1_000_000)), watch=args.watch)
    if args.watch and options.workers > 1:
        raise ConfigError("--watch takes one worker: each worker would follow the folders")
    key = options.server_key()
    if options.keys_file:
        options.key_grants()  # a wrong key file stops the command here, before anything is opened
    check_bind(options.host, key or options.keys_file)
    check_workers(cfg.store, args.workers)
    return cfg, options


def cmd_serve(args) -> int:
    from rag.errors import ConfigError

    cfg, options = serve_options(args)
    try:
        from pipelines.server.app import run_server
    except ImportError as e:
        raise ConfigError(f"rag serve needs the server extra ({e.name} is missing): "
                          "pip install -e '.[server]'") from None
    from pipelines import render

    key = "a key (Authorization: Bearer)" if options.requires_key() else "no key"
    render.note(f"rag serve: http://{options.host}:{options.port}/v1, {key}; Ctrl-C stops it")
    return run_server(cfg, options)
