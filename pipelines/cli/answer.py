"""`rag ask` and `rag chat`: answers with citations from a collection, through an LLM backend."""

from __future__ import annotations

import argparse
import sys


def _answer_args(p: argparse.ArgumentParser) -> None:
    from pipelines.cli.app import _retriever_args, _store_args

    _store_args(p)
    _retriever_args(p)
    p.add_argument("-k", "--top-k", type=int, default=8, help="passages to retrieve (default: %(default)s)")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="payload filter, repeatable: source=PATH, page=3 or 2-5, section=...")
    g = p.add_argument_group("LLM (default: the local SmolLM2-135M-Instruct, offline)")
    g.add_argument("--llm", choices=("local", "openai", "ollama", "none"), default="local",
                   help="local: transformers on this machine; openai: any OpenAI-compatible server "
                        "(vLLM, llama.cpp, Ollama /v1); ollama: Ollama's native API; none: quoted "
                        "extracts, no LLM (default: %(default)s)")
    g.add_argument("--llm-model", help="model name on the server, or a local folder / .gguf file")
    g.add_argument("--base-url", help="server URL, e.g. http://127.0.0.1:8080/v1 (openai) or "
                                      "http://127.0.0.1:11434 (ollama)")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the API key (default: %(default)s)")
    g.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default: %(default)s)")
    g.add_argument("--max-retries", type=int, default=3, help="retries on 429/5xx/timeouts (default: %(default)s)")
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--max-tokens", type=int, default=512, help="answer length limit (default: %(default)s)")
    g.add_argument("--context-window", type=int, help="override the model's context window (tokens)")
    g.add_argument("--max-passages", type=int, default=8, help="passages in the prompt at most (default: %(default)s)")
    g.add_argument("--template", metavar="FILE", help="prompt template: TOML with system/user, or a text file")
    g.add_argument("--llm-device", help="device for --llm local (cpu, cuda, mps)")
    p.add_argument("--no-stream", action="store_true", help="print the answer when it is complete")
    p.add_argument("--json", action="store_true", help="print the answer object as JSON")


def add_answer_commands(sub) -> None:
    """Register `ask` and `chat` on the `rag` subcommand parser."""
    p = sub.add_parser("ask", help="answer a question from a collection, with numbered citations")
    p.add_argument("question")
    _answer_args(p)
    p.set_defaults(func=cmd_ask)
    p = sub.add_parser("chat", help="multi-turn questions over a collection (reads questions from stdin)")
    _answer_args(p)
    p.set_defaults(func=cmd_chat)


def build_pipeline(args):
    """The options as a config (validated the same way as a config file), built by the same code."""
    from pipelines.answer import RagPipeline
    from pipelines.cli.app import _retriever_settings
    from pipelines.config import validate_config

    r = _retriever_settings(args)
    cfg = validate_config({
        "store": {"dir": args.store, "collection": args.collection, "url": args.url, "local_path": args.qdrant_path},
        "retrieval": {"mode": args.mode, "fusion": r["fusion"], "rrf_k": r["rrf_k"], "weights": r["weights"],
                      "candidates": r["candidates"], "top_k": args.top_k, "mmr": r["mmr_lambda"]},
        "prompt": {"template": args.template, "max_answer_tokens": args.max_tokens, "max_passages": args.max_passages,
                   "context_window": args.context_window},
        "llm": {"backend": args.llm, "model": args.llm_model, "base_url": args.base_url,
                "api_key_env": args.api_key_env, "timeout": args.timeout, "max_retries": args.max_retries,
                "context_window": args.context_window, "temperature": args.temperature, "device": args.llm_device},
    }, "options")
    return RagPipeline.from_config(cfg)


def _run_one(chat_or_pipe, question: str, args, out) -> int:
    """Stream (or not) one answer, then the sources table and the notes."""
    from rag.models import Answer

    answer: Answer | None = None
    streaming = not args.no_stream and not args.json
    for item in chat_or_pipe.stream(question, filters=args.filter):
        if isinstance(item, Answer):
            answer = item
        elif streaming:
            out.write(item)
            out.flush()
    assert answer is not None
    if args.json:
        out.write(answer.model_dump_json(indent=2) + "\n")
        return 0
    if not streaming:
        out.write(answer.text)
    out.write("\n\n")
    out.flush()
    print_answer_sources(answer)
    return 0


def print_answer_sources(answer) -> None:
    from rich.console import Console
    from rich.table import Table

    from pipelines.render import console as err

    con = Console(file=sys.stdout, soft_wrap=False)
    if answer.standalone_question:
        err.print(f"[dim]searched for: {answer.standalone_question}[/dim]")
    if answer.passages:
        table = Table(title=f"Sources ({answer.kind}, {answer.backend}, {answer.seconds:.1f} s)", title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("cited")
        table.add_column("source", overflow="fold")
        table.add_column("pages", justify="right")
        table.add_column("score", justify="right")
        cited = set(answer.cited)
        for p in answer.passages:
            table.add_row(f"[{p.number}]", "yes" if p.number in cited else "", short_source(p.source), p.pages,
                          f"{p.score:.3f}")
        con.print(table)
    for note in answer.notes:
        err.print(f"[yellow]note:[/yellow] {note}")


def short_source(source: str) -> str:
    """A source path as the user would type it: relative to the working folder when inside it,
    else its last two parts."""
    from pathlib import Path

    path = Path(source)
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return "…/" + "/".join(path.parts[-2:]) if len(path.parts) > 2 else source


def cmd_ask(args) -> int:
    pipe = build_pipeline(args)
    try:
        return _run_one(pipe, args.question, args, sys.stdout)
    finally:
        pipe.close()


def cmd_chat(args) -> int:
    from pipelines.render import console as err

    pipe = build_pipeline(args)
    chat = pipe.chat()
    interactive = sys.stdin.isatty()
    if interactive:
        err.print("[bold]rag chat[/bold]: ask about your documents. /reset forgets the conversation, /exit (or Ctrl-D) quits.")
    try:
        while True:
            if interactive:
                sys.stdout.write("\n> ")
                sys.stdout.flush()
            line = sys.stdin.readline()
            if not line:
                break
            question = line.strip()
            if not question:
                continue
            if question in ("/exit", "/quit"):
                break
            if question == "/reset":
                chat.reset()
                err.print("conversation forgotten")
                continue
            if not interactive:
                sys.stdout.write(f"> {question}\n")
            _run_one(chat, question, args, sys.stdout)
    finally:
        pipe.close()
    return 0
