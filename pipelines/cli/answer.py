"""`rag ask` and `rag chat`: answers with citations from a collection, through an LLM backend."""

from __future__ import annotations

import sys

from pipelines.cli.options import add_answer_options, add_config_option, config_from_args


def _answer_args(p, cfg) -> None:
    add_answer_options(p, cfg)
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="payload filter, repeatable: source=PATH, page=3 or 2-5, section=...")
    p.add_argument("--no-stream", action="store_true", help="print the answer when it is complete")
    p.add_argument("--json", action="store_true", help="print the answer object as JSON")
    add_config_option(p, cfg)


def register(sub, cfg) -> None:
    p = sub.add_parser("ask", help="answer a question from a collection, with numbered citations")
    p.add_argument("question")
    _answer_args(p, cfg)
    p.set_defaults(func=cmd_ask)
    p = sub.add_parser("chat", help="multi-turn questions over a collection (reads questions from stdin)")
    _answer_args(p, cfg)
    p.set_defaults(func=cmd_chat)


def build_pipeline(args):
    """The options as a config (validated like a config file), built by the same code."""
    from pipelines.answer import RagPipeline

    return RagPipeline.from_config(config_from_args(args))


def _run_one(chat_or_pipe, question: str, args, out) -> int:
    """Stream (or not) one answer, then the sources table and the notes."""
    from pipelines import render
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
    render.print_answer_sources(answer)
    return 0


def cmd_ask(args) -> int:
    pipe = build_pipeline(args)
    try:
        return _run_one(pipe, args.question, args, sys.stdout)
    finally:
        pipe.close()


def cmd_chat(args) -> int:
    from pipelines import render

    pipe = build_pipeline(args)
    chat = pipe.chat()
    interactive = sys.stdin.isatty()
    if interactive:
        render.note("[bold]rag chat[/bold]: ask about your documents. /reset forgets the conversation, "
                    "/exit (or Ctrl-D) quits.")
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
                render.note("conversation forgotten")
                continue
            if not interactive:
                sys.stdout.write(f"> {question}\n")
            _run_one(chat, question, args, sys.stdout)
    finally:
        pipe.close()
    return 0
