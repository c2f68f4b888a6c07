"""Serve chat over documents as an OpenAI-compatible API, and call it as a client would.

    python examples/chat_server.py                  # demo notes, auto: your LLM, else extracts
    python examples/chat_server.py --llm none --serve   # ... and keep serving until Ctrl-C

It ingests two demo notes, starts the server on 127.0.0.1 (a free port), asks one question over
HTTP and prints the answer with its numbered sources. Any OpenAI client works the same way:

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:PORT/v1", api_key="unused")
    done = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "..."}])
    done.choices[0].message.content, done.model_extra["sources"]

From the command line the same server is `rag serve --store STORE --collection chat`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import httpx

from pipelines import RagConfig, ingest
from pipelines.server import create_app, serve_in_background
from rag import RagError, SentenceEncoder

DEMO = {
    "espresso.md": "# Espresso\n\nAn espresso is brewed by forcing hot water through finely ground coffee "
                   "at about nine bars of pressure. A shot takes 25 to 30 seconds.",
    "tea.txt": "Green tea is steeped at 70 to 80 degrees Celsius for two to three minutes. Boiling "
               "water makes it bitter. Black tea takes boiling water and four minutes.",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llm", choices=("auto", "openai", "ollama", "none"), default="auto")
    ap.add_argument("--base-url", help="LLM server URL")
    ap.add_argument("--model", help="LLM model name on the server")
    ap.add_argument("--question", default="How long does an espresso shot take?")
    ap.add_argument("--serve", action="store_true", help="keep serving after the demo call, until Ctrl-C")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rag-serve-") as tmp:
        work = Path(tmp)
        for name, text in DEMO.items():
            (work / "docs" / name).parent.mkdir(exist_ok=True)
            (work / "docs" / name).write_text(text)
        config = RagConfig(store={"dir": str(work / "store"), "collection": "chat"},
                           llm={"backend": args.llm, "base_url": args.base_url, "model": args.model})
        try:
            encoder = SentenceEncoder()
            ingest([str(work / "docs")], encoder=encoder, store=config.store.settings(), progress=False)
            with serve_in_background(create_app(config, encoder=encoder)) as url:
                print(f"serving {url}/v1")
                ask(url, args.question)
                if args.serve:
                    wait_for_ctrl_c()
        except RagError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 0


def ask(url: str, question: str) -> None:
    """One non-streamed chat completion; its sources are what the [n] markers name."""
    r = httpx.post(f"{url}/v1/chat/completions", timeout=120,
                   json={"model": "chat", "messages": [{"role": "user", "content": question}]})
    r.raise_for_status()
    done = r.json()
    print(f"> {question}\n{done['choices'][0]['message']['content']}")
    for s in done["sources"]:
        mark = "cited" if s["n"] in done["citations"]["valid"] else "     "
        print(f"  [{s['n']}] {mark} {Path(s['source']).name} p.{s['pages']}")
    print(f"  answered by: {done['backend']} ({done['backend_origin']})")


def wait_for_ctrl_c() -> None:
    import time

    print("serving until Ctrl-C")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
