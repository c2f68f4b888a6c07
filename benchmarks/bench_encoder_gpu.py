"""The encoder's accelerator path, where one is present: device choice, fp16 fidelity, throughput.

On a CUDA machine our SentenceEncoder picks CUDA and fp16 by itself. This checks that it does,
that its fp16 embeddings match sentence-transformers' fp32 embeddings on the same device
(cosine), and compares sentences/s with sentence-transformers in fp32 and in fp16, same model,
same batch size, alternating runs in one process.

    python benchmarks/bench_encoder_gpu.py [--model DIR] [--sentences FILE] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag.embed.device import pick_device  # noqa: E402
from rag.embed.encoder import DEFAULT_MODEL, SentenceEncoder, resolve_model  # noqa: E402

STS_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "stsbenchmark" / "sts-test.csv"


def load_sentences(path: Path) -> list[str]:
    if path.suffix == ".csv":
        out = set()
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) >= 7:
                out.update(parts[5:7])
        return sorted(out)
    return [s for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]


def main() -> int:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(resolve_model(DEFAULT_MODEL)))
    ap.add_argument("--sentences", default=str(STS_TEST))
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    device = pick_device()
    if device == "cpu":
        print("SKIPPED: no CUDA or MPS device here; this benchmark is for accelerators")
        return 2
    path = Path(args.sentences)
    if not path.is_file():
        print(f"SKIPPED: {path} not found")
        return 2
    sentences = load_sentences(path)
    ours = SentenceEncoder(args.model, batch_size=args.batch_size)
    ours.warm_up()
    # .float(): transformers 5 loads a checkpoint in its stored dtype by default
    st32 = SentenceTransformer(args.model, device=device).float()
    st16 = SentenceTransformer(args.model, device=device).half()
    for m in (st32, st16):
        m.max_seq_length = ours.max_seq_length

    def st(model):
        return model.encode(sentences, batch_size=args.batch_size, normalize_embeddings=True,
                            convert_to_numpy=True)

    a = ours.encode(sentences).astype(np.float64)
    ref = st(st32).astype(np.float64)
    cos = (a * ref).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(ref, axis=1))
    runs = {"ours (fp16, auto)": lambda: ours.encode(sentences), "sentence-transformers fp32": lambda: st(st32),
            "sentence-transformers fp16": lambda: st(st16)}
    times = {k: [] for k in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            torch.cuda.synchronize() if device == "cuda" else None
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize() if device == "cuda" else None
            times[name].append(time.perf_counter() - t0)
    rate = {k: len(sentences) / statistics.median(v) for k, v in times.items()}
    figures = {
        "reference_dtype": str(next(st32.parameters()).dtype), "device": device, "gpu": torch.cuda.get_device_name(0) if device == "cuda" else device,
        "dtype": str(next(ours.transformer.parameters()).dtype), "sentences": len(sentences),
        "batch_size": args.batch_size, "min_cosine_vs_st_fp32": float(cos.min()),
        "mean_cosine_vs_st_fp32": float(cos.mean()), "sentences_per_s": rate,
        "ratio_ours_vs_st_fp32": rate["ours (fp16, auto)"] / rate["sentence-transformers fp32"],
        "ratio_ours_vs_st_fp16": rate["ours (fp16, auto)"] / rate["sentence-transformers fp16"],
    }
    print(f"device {figures['gpu']} ({device}), our dtype {figures['dtype']}, {len(sentences)} sentences, "
          f"batch {args.batch_size}")
    print(f"fidelity vs sentence-transformers fp32: min cosine {figures['min_cosine_vs_st_fp32']:.6f}, "
          f"mean {figures['mean_cosine_vs_st_fp32']:.6f}")
    for k, v in rate.items():
        print(f"{k:32s} {v:10.0f} sentences/s")
    print(f"ratio ours / ST fp32: {figures['ratio_ours_vs_st_fp32']:.2f}x; ours / ST fp16: "
          f"{figures['ratio_ours_vs_st_fp16']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
