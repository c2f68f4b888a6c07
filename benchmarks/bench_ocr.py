"""OCR quality and speed on pages whose text is known: the arXiv PDFs' own text layers.

    python benchmarks/bench_ocr.py [--pages-per-pdf 2] [--out /tmp/bench_ocr.json]

For the first `--pages-per-pdf` pages of each PDF in ../shared/data/pdfs/arxiv (not broken/):
render the page (pypdfium2, rag.ingest.ocr.RENDER_DPI), recognise it (rapidocr-onnxruntime, in
the reading order rag.ingest.ocr.boxes_to_text gives), and compare with pypdf's text of the same
page (the reference), both cleaned by rag.text.clean.clean_pages and NFKC-normalised.
Character error rate = Levenshtein distance / reference length, two ways: whitespace collapsed
to single spaces (reading order and line breaks count), and whitespace removed (only the
characters count). Case and punctuation count in both. Render and recognition are timed apart;
pages/s is for the two together, on this machine, one process.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from rag.ingest.ocr import boxes_to_text, engine, recognise, render_pages  # noqa: E402
from rag.text.clean import clean_pages  # noqa: E402

ARXIV = ROOT.parent / "shared" / "data" / "pdfs" / "arxiv"


def levenshtein(a: str, b: str) -> int:
    """Edit distance, one numpy row at a time: d[j] = min over k <= j of t[k] + (j - k), where
    t holds the deletion and substitution costs, so each row is a running minimum."""
    if not a or not b:
        return len(a) + len(b)
    bb = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    idx = np.arange(len(b) + 1)
    prev = idx.copy()
    for i, c in enumerate(np.frombuffer(a.encode("utf-32-le"), dtype=np.uint32), 1):
        t = np.empty_like(prev)
        t[0] = i
        t[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (bb != c))
        prev = np.minimum.accumulate(t - idx) + idx
    return int(prev[-1])


def normalise(text: str, keep_spaces: bool) -> str:
    text = unicodedata.normalize("NFKC", text)
    return re.sub(r"\s+", " " if keep_spaces else "", text).strip()


def main() -> int:
    import pypdf

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages-per-pdf", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    t0 = time.perf_counter()
    engine()
    load_s = time.perf_counter() - t0
    rows, totals = [], {"dist_sp": 0, "ref_sp": 0, "dist_ns": 0, "ref_ns": 0, "render": 0.0, "recognise": 0.0, "pages": 0}
    for pdf in sorted(ARXIV.glob("*.pdf")):
        data = pdf.read_bytes()
        reader = pypdf.PdfReader(io.BytesIO(data))
        n = min(args.pages_per_pdf, len(reader.pages))
        refs = clean_pages([reader.pages[i].extract_text() or "" for i in range(n)])
        stats = {"dist_sp": 0, "ref_sp": 0, "dist_ns": 0, "ref_ns": 0}
        t_render = t_rec = 0.0
        pages = iter(render_pages(data, range(n)))
        for i in range(n):
            t = time.perf_counter()
            _, image = next(pages)
            t_render += time.perf_counter() - t
            t = time.perf_counter()
            text = boxes_to_text(recognise(image), image.shape[1])
            t_rec += time.perf_counter() - t
            ocr = clean_pages([text])[0]
            for keep, key in ((True, "sp"), (False, "ns")):
                ref, hyp = normalise(refs[i], keep), normalise(ocr, keep)
                stats[f"dist_{key}"] += levenshtein(hyp, ref)
                stats[f"ref_{key}"] += len(ref)
        for k, v in stats.items():
            totals[k] += v
        totals["render"] += t_render
        totals["recognise"] += t_rec
        totals["pages"] += n
        rows.append({"pdf": pdf.name, "pages": n, "cer_spaces": stats["dist_sp"] / max(stats["ref_sp"], 1),
                     "cer_no_spaces": stats["dist_ns"] / max(stats["ref_ns"], 1), "ref_chars": stats["ref_ns"],
                     "render_s": t_render, "recognise_s": t_rec})
    t = Table(title=f"OCR against pypdf's text layer: arXiv PDFs, first {args.pages_per_pdf} page(s) each")
    for col in ("pdf", "pages", "ref chars", "CER (spaces)", "CER (no spaces)", "render s", "recognise s"):
        t.add_column(col, justify="left" if col == "pdf" else "right")
    for r in rows:
        t.add_row(r["pdf"], str(r["pages"]), f"{r['ref_chars']:,}", f"{r['cer_spaces']:.3f}",
                  f"{r['cer_no_spaces']:.3f}", f"{r['render_s']:.2f}", f"{r['recognise_s']:.1f}")
    overall = {"cer_spaces": totals["dist_sp"] / max(totals["ref_sp"], 1),
               "cer_no_spaces": totals["dist_ns"] / max(totals["ref_ns"], 1),
               "pages": totals["pages"], "render_s": totals["render"], "recognise_s": totals["recognise"],
               "pages_per_s": totals["pages"] / max(totals["render"] + totals["recognise"], 1e-9),
               "engine_load_s": load_s}
    t.add_row("all", str(overall["pages"]), "", f"{overall['cer_spaces']:.3f}", f"{overall['cer_no_spaces']:.3f}",
              f"{overall['render_s']:.2f}", f"{overall['recognise_s']:.1f}")
    console = Console(width=None if sys.stdout.isatty() else 10000)
    console.print(t)
    console.print(f"OCR speed: {overall['pages_per_s']:.3f} pages/s (render {overall['render_s'] / overall['pages']:.2f} "
                  f"s/page, recognise {overall['recognise_s'] / overall['pages']:.1f} s/page; engine load "
                  f"{load_s:.2f} s once); reference: pypdf reads these pages' text layers in the same process")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "overall": overall}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
