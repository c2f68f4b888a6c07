"""Chat over your documents: ingest a folder, then answer questions with numbered citations.

    python examples/chat_app.py                                   # demo notes, auto: your LLM, else extracts
    python examples/chat_app.py DOCS --llm none                   # your folder, quoted extracts only
    python examples/chat_app.py DOCS --llm openai --base-url http://127.0.0.1:8080/v1 --model smollm2

Questions come from --question (repeatable) or, without it, from stdin, one per line. Follow-up
questions ("and for tea?") are rewritten into standalone ones before retrieval.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from connectors.llm.registry import BACKEND_NAMES, make_backend, resolve_backend
from pipelines import RagPipeline, StoreSettings
from pipelines.config import LLMConfig
from rag import Answer, RagError

DEMO = {
    "espresso.md": "# Espresso\n\nAn espresso is brewed by forcing hot water through finely ground coffee "
                   "at about nine bars of pressure. A shot takes 25 to 30 seconds.\n\n## Crema\n\n"
                   "The crema is the foam of emulsified oils on top of a fresh shot.",
    "tea.txt": "Green tea is steeped at 70 to 80 degrees Celsius for two to three minutes. Boiling "
               "water makes it bitter. Black tea takes boiling water and four minutes.",
}
DEMO_QUESTIONS = ["How long does an espresso shot take?", "And how hot should the water be for green tea?"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", help="documents to chat about (default: two demo notes)")
    ap.add_argument("--store", help="store folder (default: a temporary one)")
    ap.add_argument("--llm", choices=BACKEND_NAMES, default="auto")
    ap.add_argument("--model", help="LLM model name on the server (openai, ollama)")
    ap.add_argument("--base-url", help="LLM server URL")
    ap.add_argument("--question", action="append", help="ask this (repeatable); default: read stdin")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rag-chat-") as tmp:
        try:
            return run(args, Path(tmp))
        except RagError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2


def run(args, work: Path) -> int:
    folder = Path(args.folder) if args.folder else work / "docs"
    questions = args.question
    if not args.folder:
        folder.mkdir()
        for name, text in DEMO.items():
            (folder / name).write_text(text)
        questions = questions or DEMO_QUESTIONS

    llm_cfg, origin = resolve_backend(LLMConfig(backend=args.llm, model=args.model, base_url=args.base_url))
    llm = make_backend(llm_cfg)
    store = StoreSettings(store_dir=args.store or str(work / "store"), collection="chat")
    with RagPipeline(store=store, llm=llm, retriever={"top_k": 4}, llm_origin=origin) as rag:
        report = rag.ingest([str(folder)], progress=False)
        print(f"ingested {report.counts()['ingested']} files ({report.total_points} chunks); "
              f"answering with {llm.name if llm else 'extracts (no LLM)'}")
        chat = rag.chat()
        for question in questions or (line.strip() for line in sys.stdin):
            if not question:
                continue
            print(f"\n> {question}")
            answer = None
            for piece in chat.stream(question):
                if isinstance(piece, Answer):
                    answer = piece
                else:
                    print(piece, end="", flush=True)
            print()
            if answer.standalone_question:
                print(f"  (searched for: {answer.standalone_question})")
            for p in answer.passages:
                mark = "cited" if p.number in answer.cited else "     "
                print(f"  [{p.number}] {mark} {Path(p.source).name} p.{p.pages}")
            for note in answer.notes:
                print(f"  note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
