"""The `rag` command: the parser (one module per command group registers its commands) and the
entry point that maps the error family onto exit codes.

Exit codes: 0 done; 1 the job ran but a file failed (ingest); 2 an error that stopped the command
(one `rag: error:` line, no traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from rag.errors import RagError


def build_parser(cfg=None) -> argparse.ArgumentParser:
    """The parser, with every option's default taken from `cfg` (a RagConfig; default: the
    config's own defaults)."""
    from pipelines.cli import analysis, answer, documents, evaluate, mcp, serve, training
    from pipelines.config import RagConfig

    cfg = cfg if cfg is not None else RagConfig()
    parser = argparse.ArgumentParser(prog="rag", description="Retrieval-augmented generation over your documents.")
    parser.add_argument("--trace-console", action="store_true",
                        help="print OpenTelemetry spans to stderr (pip install -e \".[otel]\"); with "
                             "$OTEL_EXPORTER_OTLP_ENDPOINT set they go there too")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (documents, evaluate, training, analysis, answer, serve, mcp):
        group.register(sub, cfg)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipelines.cli.options import config_path

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        path = config_path(argv)
        cfg = None
        if path:
            from pipelines.config import load_config

            cfg = load_config(path)
        parser = build_parser(cfg)
    except RagError as e:
        print(f"rag: error: {e}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    from pipelines import tracing

    try:
        tracing.configure(console=args.trace_console)
        return args.func(args)
    except RagError as e:
        print(f"rag: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rag: interrupted", file=sys.stderr)
        return 130
    finally:
        tracing.shutdown()


if __name__ == "__main__":
    sys.exit(main())
