"""Answers over Apple's 10-Q filings (../shared/data/sec10q: 4 filings, 39 questions with reference
answers written by others).

1. Context recall of figures: for each question whose reference answer quotes figures ($82,959
   million, 12.5%, 102,673,000 shares ...), does the assembled prompt context contain them? Rate
   of questions with every figure present, and the share of all figures present, for dense,
   bm25 and hybrid retrieval, side by side.
2. With an LLM backend (default: the local SmolLM2-135M-Instruct): answer latency and the
   citation-validity rate (the answer cites at least one passage and every [k] is one given),
   against the extractive fallback on the same prompts.
3. The grounding check on those answers: the share of answer sentences it marks unsupported (a
   figure, date or name no cited passage holds), per backend; `--sample N --sample-out FILE`
   writes N sentences drawn at random (seeded) with the check's verdict, to be judged by hand.

Questions: `--questions multi` (default) is qna_multi.csv, 116 questions on all three companies
(the 39 Apple ones included); `--questions aapl` is qna_aapl.csv alone.

    .venv/bin/python benchmarks/bench_sec10q.py                  # retrieval + local SmolLM2
    .venv/bin/python benchmarks/bench_sec10q.py --llm none       # retrieval + extracts only
    .venv/bin/python benchmarks/bench_sec10q.py --limit 10 --out /tmp/sec10q.json
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rag.evaluation.figures import context_numbers, figures  # noqa: E402  (after the path is set)

DATA = ROOT.parent / "shared" / "data" / "sec10q"


def load_questions(which: str, limit: int | None) -> list[dict]:
    name = {"aapl": "qna_aapl.csv", "multi": "qna_multi.csv"}[which]
    with open(DATA / name, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return rows[:limit] if limit else rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", default="/tmp/rag-bench-store", help="Edge store folder (default: %(default)s)")
    ap.add_argument("--collection", default="sec10q")
    ap.add_argument("--top-k", default="4,8,16",
                    help="passages retrieved, comma-separated for a sweep; answers use the largest (default: %(default)s)")
    ap.add_argument("--context-window", type=int, default=4096,
                    help="prompt budget window in tokens (default: %(default)s)")
    ap.add_argument("--max-tokens", type=int, default=256, help="answer tokens (default: %(default)s)")
    ap.add_argument("--llm", choices=("local", "none"), default="local")
    ap.add_argument("--questions", choices=("aapl", "multi"), default="multi")
    ap.add_argument("--limit", type=int, help="first N questions only")
    ap.add_argument("--sample", type=int, default=20, help="answer sentences to sample for hand-checking")
    ap.add_argument("--sample-out", help="write the sample (JSON lines) here")
    ap.add_argument("--threads", type=int, help="torch threads for the LLM (default: all cores)")
    ap.add_argument("--out", help="write all per-question results as JSON")
    args = ap.parse_args()

    if not (DATA / "qna_aapl.csv").is_file():
        print(f"sec10q data not found at {DATA}: this benchmark needs ../shared/data/sec10q", file=sys.stderr)
        return 2

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from pipelines.answer import RagPipeline
    from pipelines.ingest import ingest
    from pipelines.stores import StoreSettings
    from rag.embed.encoder import SentenceEncoder
    from rag.answer.cleanup import clean_answer
    from rag.answer.extractive import extract
    from rag.answer.grounding import check_grounding
    from rag.answer.llm import GenerationSettings
    from rag.answer.prompt import PromptAssembler, check_citations
    from rag.models import Answer

    con = Console(width=max(Console().width, 150))
    top_ks = sorted(int(k) for k in args.top_k.split(","))
    store = StoreSettings(store_dir=args.store, collection=args.collection)
    encoder = SentenceEncoder()
    t0 = time.perf_counter()
    rep = ingest([str(DATA / "docs")], encoder=encoder, store=store, progress=True)
    con.print(f"ingest: {rep.counts()} in {time.perf_counter() - t0:.1f} s")

    rows = load_questions(args.questions, args.limit)
    for r in rows:
        r["figures"] = sorted(figures(r["Answer"]))
    with_figures = [r for r in rows if r["figures"]]
    assembler = PromptAssembler(context_window=args.context_window, max_answer_tokens=args.max_tokens,
                                max_passages=max(top_ks))
    results: dict = {"questions": len(rows), "with_figures": len(with_figures), "modes": {}, "per_question": []}

    # 1. figures in the assembled context, per retrieval mode and depth
    prompts = {}
    for mode, top_k in [(m, k) for k in top_ks for m in ("dense", "bm25", "hybrid")]:
        pipe = RagPipeline(encoder=encoder, store=store, retriever={"mode": mode, "top_k": top_k},
                           prompt=assembler, llm=None)
        all_present = found = total = 0
        per_q = []
        for r in rows:
            prompt, _ = pipe.prepare(r["Question"])
            context = "\n".join(p.text for p in prompt.passages)
            numbers = context_numbers(context)
            present = [f for f in r["figures"] if f in numbers]
            if r["figures"]:
                total += len(r["figures"])
                found += len(present)
                all_present += len(present) == len(r["figures"])
            per_q.append({"question": r["Question"], "figures": r["figures"], "present": present,
                          "passages": len(prompt.passages), "prompt_tokens": prompt.prompt_tokens})
            if mode == "hybrid" and top_k == top_ks[-1]:
                prompts[r["Question"]] = prompt
        pipe.close()
        results["modes"][f"{mode}@{top_k}"] = {
            "mode": mode, "top_k": top_k, "all_figures_rate": all_present / max(1, len(with_figures)),
            "figure_recall": found / max(1, total), "figures": total,
            "prompt_tokens_mean": statistics.mean(q["prompt_tokens"] for q in per_q),
            "passages_mean": statistics.mean(q["passages"] for q in per_q), "per_question": per_q}

    table = Table(title=f"sec10q: reference figures in the assembled context ({args.context_window}-token window, "
                        f"{args.max_tokens} kept for the answer; {len(with_figures)} of {len(rows)} questions quote figures)",
                  title_justify="left")
    for col in ("mode", "top k", "questions with every figure", "figures present", "passages", "prompt tokens"):
        table.add_column(col, justify="right")
    for m in results["modes"].values():
        table.add_row(m["mode"], str(m["top_k"]), f"{m['all_figures_rate']:.3f}",
                      f"{m['figure_recall']:.3f} of {m['figures']}", f"{m['passages_mean']:.1f}",
                      f"{m['prompt_tokens_mean']:.0f}")
    con.print(table)

    # 2. answers: the LLM against the extractive fallback, on the same hybrid prompts
    backends = [("extractive", None)]
    if args.llm == "local":
        from connectors.llm.local import LocalTransformersBackend

        llm = LocalTransformersBackend()
        t0 = time.perf_counter()
        llm.warm_up()
        con.print(f"local LLM loaded in {time.perf_counter() - t0:.1f} s")
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        backends.append((llm.name, llm))
    settings = GenerationSettings(max_tokens=args.max_tokens, temperature=0.0)
    summary = Table(title=f"sec10q answers on the hybrid top-{top_ks[-1]} prompts", title_justify="left")
    for col in ("backend", "answers", "citations valid", "cites out of range", "no citation",
                "all figures quoted", "figures quoted", "sentences", "unsupported", "p50 s", "mean s", "max s"):
        summary.add_column(col, justify="right")
    for name, llm in backends:
        latencies, valid, invalid, uncited, fig_hits, fig_quoted = [], 0, 0, 0, 0, 0
        n_sentences = n_unsupported = 0
        answers = []
        with Progress(TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=Console(stderr=True)) as bar:
            task = bar.add_task("answers", total=len(rows))
            for r in rows:
                prompt = prompts[r["Question"]]
                t0 = time.perf_counter()
                if llm is None:
                    text, _ = extract(r["Question"], prompt.passages, encoder)
                    kind, finish = "extractive", None
                else:
                    c = llm.generate(prompt.messages, settings)
                    text, kind, finish = clean_answer(c.text)[0], "generated", c.finish_reason
                seconds = time.perf_counter() - t0
                a = check_citations(Answer(question=r["Question"], text=text, kind=kind, backend=name,
                                           passages=prompt.passages, finish_reason=finish, seconds=seconds))
                latencies.append(seconds)
                valid += a.citations_valid
                invalid += bool(a.invalid_citations)
                uncited += not a.cited
                quoted = [f for f in r["figures"] if f in context_numbers(text)]
                support = check_grounding(text, prompt.passages)
                n_sentences += len(support)
                n_unsupported += sum(not x.supported for x in support)
                fig_hits += bool(r["figures"]) and len(quoted) == len(r["figures"])
                fig_quoted += len(quoted)
                answers.append({"question": r["Question"], "answer": text, "cited": a.cited,
                                "invalid": a.invalid_citations, "seconds": seconds, "finish": finish,
                                "figures_quoted": quoted,
                                "support": [x.model_dump() for x in support]})
                bar.advance(task)
        n = len(rows)
        summary.add_row(name, str(n), f"{valid / n:.3f}", f"{invalid / n:.3f}", f"{uncited / n:.3f}",
                        f"{fig_hits / max(1, len(with_figures)):.3f}",
                        f"{fig_quoted / max(1, sum(len(r['figures']) for r in rows)):.3f}",
                        str(n_sentences), f"{n_unsupported / max(1, n_sentences):.3f}",
                        f"{statistics.median(latencies):.2f}",
                        f"{statistics.mean(latencies):.2f}", f"{max(latencies):.2f}")
        results[f"answers_{name}"] = {"citation_valid_rate": valid / n, "invalid_rate": invalid / n,
                                      "uncited_rate": uncited / n, "latency_p50": statistics.median(latencies),
                                      "latency_mean": statistics.mean(latencies), "sentences": n_sentences,
                                      "unsupported_rate": n_unsupported / max(1, n_sentences), "answers": answers}
    con.print(summary)
    if args.sample_out:
        import random

        pool = [{"backend": name, "question": a["question"], "passages": {p.number: p.text for p in
                 prompts[a["question"]].passages}, **x}
                for name, _ in backends for a in results[f"answers_{name}"]["answers"] for x in a["support"]]
        # Half flagged, half checked and passed (sentences with nothing to check say nothing
        # about the check): precision needs flagged ones, recall needs passed ones.
        rng = random.Random(7)
        flagged = [x for x in pool if not x["supported"]]
        passed = [x for x in pool if x["supported"] and x["terms"]]
        half = args.sample // 2
        sample = rng.sample(flagged, min(half, len(flagged)))
        sample += rng.sample(passed, min(args.sample - len(sample), len(passed)))
        with open(args.sample_out, "w", encoding="utf-8") as fh:
            for row in sample:
                fh.write(json.dumps(row) + "\n")
        con.print(f"wrote {len(sample)} sampled sentences to {args.sample_out}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
        con.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
