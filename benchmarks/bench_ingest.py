#!/usr/bin/env python
"""Ingest benchmark: our encoder against sentence-transformers, and the ingest pipeline against
the encoder alone. One process, one run: the figures that matter are the ratios, since the
machines are shared and absolute times are noisy.

1. Encoder throughput, ours (rag.embed.encoder.SentenceEncoder) vs sentence-transformers, same model
   folder, batch size, device and max_seq_length:
   (a) sentences/s on the unique STS-B test sentences;
   (b) chunks/s on the chunks of the arXiv PDFs (our loader + rag.ingest.chunking.Chunker());
   plus the fidelity of our embeddings to the reference: max |1 - cosine| over the chunks.
   Both models are warmed up first; timed runs alternate A B B A ... and the medians are compared.
2. Pipeline vs encoder alone: pipelines.ingest.ingest() of the same PDFs into a fresh Edge store,
   chunks/s (report.chunks_written / report.seconds) against the encoder encoding the same
   chunks in one call. "End to end" starts from an encoder that has not loaded its model;
   "steady state" reuses the warm encoder, each run into a fresh store. The steady-state runs
   are instrumented (by wrapping ingest's internals in this process, not by editing them) to
   show where the pipeline's time goes.

Usage: .venv/bin/python benchmarks/bench_ingest.py [--quick] [--json PATH] [--data DIR]
Exit status: 0 when every part ran, 2 when a part was skipped (data or reference missing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

# Mirror what our encoder sets on warm-up, before either implementation is loaded, so that both
# run with the same tokenizer threading; no model hub: the model folder is local.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "data"

BATCH_SIZE = 32
MAX_SEQ_LENGTH = 256
DEVICE = "cpu"
EXIT_SKIPPED = 2

# Targets. The pipeline one is the project's; the encoder ones say "parity with the reference".
TARGET_PIPELINE = 0.9
TARGET_PARITY = 0.95
TARGET_FIDELITY = 1e-5


# ---------------------------------------------------------------------------- data


def sts_sentences(path: Path, limit: int | None) -> list[str]:
    """Unique sentences (columns 5 and 6, 0-based) of an STS-B file, in first-seen order.
    Tab-separated with no quote handling: some lines have extra columns after these."""
    seen: dict[str, None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        cols = line.split("\t")
        if len(cols) < 7:
            continue
        for s in (cols[5], cols[6]):
            if s:
                seen.setdefault(s, None)
    out = list(seen)
    return out[:limit] if limit else out


def arxiv_pdfs(folder: Path, limit: int | None) -> list[Path]:
    """The arXiv PDFs (not the broken/ subfolder), in ingest's order (by resolved path)."""
    pdfs = sorted((p for p in folder.glob("*.pdf") if p.is_file()), key=lambda p: p.resolve().as_posix())
    return pdfs[:limit] if limit else pdfs


def make_chunks(pdfs: Sequence[Path], encoder) -> list:
    from rag.ingest.chunking import Chunker
    from rag.ingest.loaders import load

    chunker = Chunker()
    return [c for p in pdfs for c in chunker.split(load(p), encoder)]


# ---------------------------------------------------------------------------- timing helpers


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def alternate(runs: dict[str, Callable[[], object]], repeats: int) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Run each callable `repeats` times in A B B A A B ... order (drift hits both alike).
    Returns the seconds of every run and the last result of each."""
    names = list(runs)
    times: dict[str, list[float]] = {n: [] for n in names}
    last: dict[str, object] = {}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            s, last[n] = timed(runs[n])
            times[n].append(s)
    return times, last


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# ---------------------------------------------------------------------------- results


class Results:
    def __init__(self):
        self.rows: list[dict] = []  # the main table
        self.breakdown: list[dict] = []  # where the pipeline's time goes
        self.raw: dict[str, object] = {}
        self.skipped: list[str] = []
        self.notes: list[str] = []

    def row(self, measure: str, ours: float | None, ref: float | None, unit: str, target: str = "",
            ratio: float | None = None, fmt: str = "{:.1f}") -> None:
        if ratio is None and ours is not None and ref:
            ratio = ours / ref
        self.rows.append({"measure": measure, "ours": ours, "reference": ref, "unit": unit,
                          "ratio": ratio, "target": target, "fmt": fmt})


def skip(results: Results, what: str, missing: Path | str) -> None:
    msg = f"SKIPPED: {what}: {missing} not found"
    print(msg, flush=True)
    results.skipped.append(msg)


# ---------------------------------------------------------------------------- part 1: encoder


def bench_encoder(args, results: Results, ours, model_dir: str) -> list | None:
    """Returns the chunks (for part 2) when the PDFs were found."""
    sts_file = args.data / "stsbenchmark" / "sts-test.csv"
    pdf_dir = args.data / "pdfs" / "arxiv"
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        skip(results, "encoder vs sentence-transformers", "the sentence-transformers package")
        return make_chunks(arxiv_pdfs(pdf_dir, args.pdfs), ours) if pdf_dir.is_dir() else None
    import numpy as np

    st = SentenceTransformer(model_dir, device=DEVICE)
    st.max_seq_length = MAX_SEQ_LENGTH

    def run_st(texts):
        return st.encode(texts, batch_size=BATCH_SIZE, convert_to_numpy=True,
                         normalize_embeddings=True, show_progress_bar=False)

    def run_ours(texts):
        return ours.encode(texts, batch_size=BATCH_SIZE)

    warm = ["A warm-up sentence.", "Another, somewhat longer warm-up sentence for the encoder. " * 8] * 32
    for _ in range(2):
        run_ours(warm)
        run_st(warm)

    chunks = None
    if sts_file.is_file():
        sents = sts_sentences(sts_file, args.sentences)
        print(f"[encoder] STS-B: {len(sents)} unique sentences, {args.repeats} repeat(s) each", flush=True)
        times, _ = alternate({"ours": lambda: run_ours(sents), "st": lambda: run_st(sents)}, args.repeats)
        o, s = len(sents) / median(times["ours"]), len(sents) / median(times["st"])
        results.row(f"encoder: STS-B test sentences/s (n={len(sents)})", o, s, "sent/s",
                    f"≥ {TARGET_PARITY} (parity)")
        results.raw["sts"] = {"n": len(sents), "seconds": times}
    else:
        skip(results, "encoder on STS-B sentences", sts_file)

    if pdf_dir.is_dir():
        pdfs = arxiv_pdfs(pdf_dir, args.pdfs)
        t, chunks = timed(lambda: make_chunks(pdfs, ours))
        texts = [c.text for c in chunks]
        print(f"[encoder] arXiv: {len(pdfs)} PDFs -> {len(chunks)} chunks (loaded and chunked in "
              f"{t:.1f} s), {args.repeats} repeat(s) each", flush=True)
        times, last = alternate({"ours": lambda: run_ours(texts), "st": lambda: run_st(texts)}, args.repeats)
        o, s = len(texts) / median(times["ours"]), len(texts) / median(times["st"])
        results.row(f"encoder: arXiv chunks/s (n={len(texts)})", o, s, "chunk/s",
                    f"≥ {TARGET_PARITY} (parity)")
        a = np.asarray(last["ours"], dtype=np.float64)
        b = np.asarray(last["st"], dtype=np.float64)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        worst = float(np.max(np.abs(1.0 - cos)))
        results.row("fidelity: max |1 - cos| ours vs ST, chunks", worst, None, "",
                    f"≤ {TARGET_FIDELITY:g}", fmt="{:.2e}")
        results.raw["chunks"] = {"n": len(texts), "pdfs": [p.name for p in pdfs], "seconds": times,
                                 "max_abs_1_minus_cos": worst,
                                 "chunk_tokens_max": max((c.n_tokens for c in chunks), default=0)}
    else:
        skip(results, "encoder on arXiv chunks", pdf_dir)
    del st
    return chunks


# ---------------------------------------------------------------------------- part 2: pipeline


class Probe:
    """Seconds spent in each phase of one ingest() call."""

    def __init__(self):
        self.encode = self.write = self.wait = self.first_item = 0.0
        self.run_enter = self.run_exit = self.first_encode = None
        self.got_first = False


@contextmanager
def instrument(encoder, probe: Probe):
    """Wrap ingest's internals (in this process only) to time its phases. Skipped, with a note,
    if those internals have changed."""
    import importlib

    import pipelines.ingest_loader as loader
    from pipelines.writer import StoreWriter

    pi = importlib.import_module("pipelines.ingest")  # `import ... as` gives pipelines' re-exported function

    if not (hasattr(pi, "_run") and hasattr(loader, "LoaderProcess") and hasattr(StoreWriter, "_retry")):
        yield False
        return
    orig_loaded, orig_run, orig_retry = loader.LoaderProcess.items, pi._run, StoreWriter._retry

    def loaded(*a, **k):
        gen = orig_loaded(*a, **k)
        try:
            while True:
                t = time.perf_counter()
                try:
                    item = next(gen)
                except StopIteration:
                    probe.wait += time.perf_counter() - t
                    return
                dt = time.perf_counter() - t
                probe.wait += dt
                if not probe.got_first:
                    probe.first_item += dt  # IDLE ticks before the first file count towards it
                    probe.got_first = item is not loader.IDLE
                yield item
        finally:
            gen.close()

    def run(*a, **k):
        probe.run_enter = time.perf_counter()
        try:
            return orig_run(*a, **k)
        finally:
            probe.run_exit = time.perf_counter()

    def retry(self, *a):  # every store write, with its retries
        t = time.perf_counter()
        try:
            return orig_retry(self, *a)
        finally:
            probe.write += time.perf_counter() - t

    orig_encode = encoder.encode

    def encode(*a, **k):
        t = time.perf_counter()
        if probe.first_encode is None:
            probe.first_encode = t
        try:
            return orig_encode(*a, **k)
        finally:
            probe.encode += time.perf_counter() - t

    loader.LoaderProcess.items, pi._run, StoreWriter._retry = loaded, run, retry
    encoder.encode = encode
    try:
        yield True
    finally:
        loader.LoaderProcess.items, pi._run, StoreWriter._retry = orig_loaded, orig_run, orig_retry
        del encoder.encode  # back to the class method


def bench_pipeline(args, results: Results, model_dir: str, chunks: list | None) -> None:
    from pipelines.ingest import ingest
    from pipelines.stores import StoreSettings
    from rag.embed.encoder import SentenceEncoder

    pdf_dir = args.data / "pdfs" / "arxiv"
    if not pdf_dir.is_dir():
        skip(results, "pipeline vs encoder alone", pdf_dir)
        return
    pdfs = arxiv_pdfs(pdf_dir, args.pdfs)

    def new_encoder() -> SentenceEncoder:
        return SentenceEncoder(model_dir, device=DEVICE, batch_size=BATCH_SIZE, max_seq_length=MAX_SEQ_LENGTH)

    if chunks is None:
        chunks = make_chunks(pdfs, new_encoder())
    texts = [c.text for c in chunks]
    n = len(texts)
    flush = 128  # ingest()'s default batch_size: chunks gathered before each encode call

    tmp = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    runs = [0]

    def run_ingest(enc, probe: Probe | None = None):
        runs[0] += 1
        store = StoreSettings(store_dir=str(tmp / f"store{runs[0]}"))
        t0 = time.perf_counter()
        if probe is None:
            report = ingest([str(p) for p in pdfs], encoder=enc, store=store, progress=False)
        else:
            with instrument(enc, probe):
                report = ingest([str(p) for p in pdfs], encoder=enc, store=store, progress=False)
        t1 = time.perf_counter()
        bad = [o for o in report.outcomes if o.status != "ingested"]
        if bad:
            raise SystemExit(f"ingest did not ingest every file: {[(o.source, o.status, o.reason) for o in bad]}")
        if report.chunks_written != n:
            results.notes.append(f"ingest wrote {report.chunks_written} chunks, the encoder-alone "
                                 f"reference encodes {n}: rates are per chunk, but check the chunker")
        return report, t0, t1

    try:
        # End to end: encoders that have not loaded their model yet.
        print(f"[pipeline] end to end: ingest of {len(pdfs)} PDFs with a cold encoder", flush=True)
        enc = new_encoder()
        report, _, _ = run_ingest(enc)
        e2e_pipe = report.chunks_written / report.seconds
        cold = new_encoder()
        t_e2e_ref, _ = timed(lambda: (cold.warm_up(), cold.encode(texts)))
        e2e_ref = n / t_e2e_ref
        del cold
        results.row(f"pipeline end to end incl. model load, chunks/s (n={n})", e2e_pipe, e2e_ref,
                    "chunk/s", f"≥ {TARGET_PIPELINE} (info)")
        results.raw["pipeline_e2e"] = {"ingest_seconds": report.seconds, "chunks": report.chunks_written,
                                       "encoder_load_and_encode_seconds": t_e2e_ref}

        # Steady state: the warm encoder; each ingest into a fresh store.
        print(f"[pipeline] steady state: {args.repeats} repeat(s) of ingest / encoder alone "
              f"(one call) / encoder alone ({flush}-chunk calls, as ingest)", flush=True)
        probes: list[Probe] = []
        reports: list = []
        pipe_secs: list[float] = []

        def steady_ingest():
            probe = Probe()
            rep, t0, t1 = run_ingest(enc, probe)
            probe.call = (t0, t1)
            probes.append(probe)
            reports.append(rep)
            pipe_secs.append(rep.seconds)

        def by_flush():
            for i in range(0, n, flush):
                enc.encode(texts[i:i + flush])

        times, _ = alternate({"ingest": steady_ingest, "alone": lambda: enc.encode(texts),
                              "alone_flush": by_flush}, args.repeats)
        pipe_rate = n / median(pipe_secs)  # report.seconds, as the report itself counts
        alone_rate = n / median(times["alone"])
        flush_rate = n / median(times["alone_flush"])
        results.row(f"pipeline steady state, chunks/s (n={n})", pipe_rate, alone_rate, "chunk/s",
                    f"≥ {TARGET_PIPELINE}")
        results.row(f"encoder alone in {flush}-chunk calls (as ingest) vs one call", flush_rate,
                    alone_rate, "chunk/s", "(diagnostic)")
        results.raw["pipeline_steady"] = {"chunks": n, "ingest_report_seconds": pipe_secs,
                                          "ingest_call_seconds": times["ingest"],
                                          "encoder_alone_seconds": times["alone"],
                                          "encoder_alone_flush_seconds": times["alone_flush"]}

        # Breakdown of the median steady-state run.
        ok = [p for p in probes if p.run_enter is not None]
        if ok:
            mid = sorted(range(len(reports)), key=lambda i: reports[i].seconds)[(len(reports) - 1) // 2]
            p, rep = probes[mid], reports[mid]
            total = rep.seconds
            setup = p.run_enter - p.call[0]
            after = p.call[1] - p.run_exit
            other = total - setup - p.wait - p.encode - p.write - after
            phases = [
                ("setup before the load/encode loop (find, hash, open store)", setup),
                ("waiting for the loader process: first file (spawn, imports, load, chunk)", p.first_item),
                ("waiting for the loader process: later files", p.wait - p.first_item),
                ("encoding (encoder.encode)", p.encode),
                ("store writes (upsert, delete old versions)", p.write),
                ("after the loop (flush, count, close)", after),
                ("other (bookkeeping)", other),
            ]
            for name, secs in phases:
                results.breakdown.append({"phase": name, "seconds": secs, "share": secs / total})
            if p.first_encode is not None:
                idle = p.first_encode - p.call[0]
                phases.append(("(overlapping the above) start of ingest to the first encode call", idle))
                results.breakdown.append({"phase": phases[-1][0], "seconds": idle, "share": idle / total})
            results.breakdown.append({"phase": "total (report.seconds)", "seconds": total, "share": 1.0})
            results.breakdown.append({"phase": "outside encoding", "seconds": total - p.encode,
                                      "share": (total - p.encode) / total})
            results.raw["pipeline_breakdown"] = {name: secs for name, secs in phases}
            results.raw["pipeline_breakdown"]["encode_rate_inside_ingest"] = n / p.encode if p.encode else None
            inside = n / p.encode / alone_rate
            results.notes.append(
                f"inside ingest the encoder ran at {n / p.encode:.1f} chunks/s vs {alone_rate:.1f} "
                f"alone in one call ({inside:.2f}x)" + (
                    ": the loader process competes for the same cores, and 128-chunk calls pad "
                    "a little more (see the diagnostic row)" if inside < TARGET_PARITY else ""))
        else:
            results.notes.append("pipeline breakdown unavailable: ingest internals changed")
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------- output


def print_results(results: Results, header: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=130)
    for line in header:
        console.print(line, highlight=False, soft_wrap=True)
    table = Table(title="Ingest benchmark (ratio = ours / reference, same process)")
    for col, just in (("measure", "left"), ("ours", "right"), ("reference", "right"),
                      ("ratio", "right"), ("target", "left")):
        table.add_column(col, justify=just)
    for r in results.rows:
        f = r["fmt"]
        unit = f" {r['unit']}" if r["unit"] else ""
        table.add_row(r["measure"],
                      f.format(r["ours"]) + unit if r["ours"] is not None else "—",
                      f.format(r["reference"]) + unit if r["reference"] is not None else "—",
                      f"{r['ratio']:.3f}" if r["ratio"] is not None else "—",
                      r["target"])
    if results.rows:
        console.print(table)
    else:
        console.print("no figures: every part was skipped")
    if results.breakdown:
        bt = Table(title="Where a steady-state ingest's time goes (median run)")
        bt.add_column("phase")
        bt.add_column("seconds", justify="right")
        bt.add_column("share", justify="right")
        for b in results.breakdown:
            bt.add_row(b["phase"], f"{b['seconds']:.2f}", f"{100 * b['share']:.1f}%")
        console.print(bt)
    for n in results.notes:
        console.print(f"note: {n}", highlight=False)
    for s in results.skipped:
        console.print(s, highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help=f"shared data folder (default: {DEFAULT_DATA})")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 500 sentences, 2 PDFs, 1 repeat")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed runs of each implementation (default 3, --quick 1)")
    ap.add_argument("--only", choices=("encoder", "pipeline"), default=None,
                    help="run one part only")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.sentences = 500 if args.quick else None
    args.pdfs = 2 if args.quick else None
    args.data = args.data.expanduser()

    results = Results()
    if not args.data.is_dir():
        print(f"SKIPPED: data folder {args.data} not found (give it with --data)", flush=True)
        return EXIT_SKIPPED

    import torch

    from rag.embed.encoder import DEFAULT_MODEL, SentenceEncoder, resolve_model

    model_dir = str(resolve_model(DEFAULT_MODEL))
    ours = SentenceEncoder(model_dir, device=DEVICE, batch_size=BATCH_SIZE, max_seq_length=MAX_SEQ_LENGTH)
    started = time.perf_counter()
    load_start = load_average()
    ours.warm_up()  # also sets torch's CPU threads, which then apply to both implementations

    chunks = None
    if args.only in (None, "encoder"):
        chunks = bench_encoder(args, results, ours, model_dir)
    if args.only in (None, "pipeline"):
        bench_pipeline(args, results, model_dir, chunks)

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("transformers", "sentence_transformers"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    from rag.embed.device import available_cpus

    env = {"model": model_dir, "device": DEVICE, "batch_size": BATCH_SIZE,
           "max_seq_length": MAX_SEQ_LENGTH, "cpus": available_cpus(),
           "torch_threads": torch.get_num_threads(), "repeats": args.repeats, "quick": args.quick,
           "load_average_start": load_start, "load_average_end": load_average(),
           "wall_seconds": time.perf_counter() - started, **versions}
    header = [
        f"model {model_dir}",
        f"device {DEVICE}, batch {BATCH_SIZE}, max_seq_length {MAX_SEQ_LENGTH}, {env['cpus']} CPU(s), "
        f"torch threads {env['torch_threads']}, repeats {args.repeats} (median; A B B A order)"
        + (", QUICK subset" if args.quick else ""),
        f"torch {versions['torch']}, transformers {versions['transformers']}, sentence-transformers "
        f"{versions['sentence_transformers']}; load average {load_start} -> {env['load_average_end']}; "
        f"wall {env['wall_seconds']:.0f} s",
    ]
    try:
        peak = max(float(x) for x in env["load_average_end"].split()[:1] + load_start.split()[:1])
        if peak > env["cpus"]:
            results.notes.append(f"load average ({peak:.1f}) above the CPU count ({env['cpus']}): other "
                                 "work shared the cores; trust ratios of alternated runs, not absolute rates")
    except ValueError:
        pass
    print_results(results, header)
    if args.json:
        out = {"env": env, "figures": [{k: v for k, v in r.items() if k != "fmt"} for r in results.rows],
               "breakdown": results.breakdown, "raw": results.raw, "notes": results.notes,
               "skipped": results.skipped}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=str))
        print(f"figures written to {args.json}")
    return EXIT_SKIPPED if results.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
