"""Clustering (`rag cluster`): quality on STS-B test, and time and memory on 100k texts.

1. `sts`: every unique sentence of sts-test.csv is embedded with the default model and
   clustered (rag.embed.clustering.community_detection) for a sweep of thresholds and minimum
   sizes; for each setting, of the gold pairs (two distinct sentences) scored >= 4.0, the share
   placed in the same cluster, and of those scored <= 1.0, the share placed apart (in different
   clusters or in none), with the cluster count and the share of sentences clustered.
   sentence-transformers' util.community_detection runs on the same vectors at the same
   settings, same run, and the two cluster lists are compared (as sets of members: the order of
   members at equal cosine to their centre may differ).
2. `scale`: ours (tiles of --block) against sentence-transformers' community_detection (its
   default batch of 1024 rows) on the same 100k embeddings, each in its own process; peak memory
   is the growth of the process's peak RSS (VmHWM) over its value after the embeddings are
   loaded. Embeddings: the stored vectors of the 100k recombined-SciFact collection of
   bench_search.py (built here when missing: ~5 min) or random unit vectors (--random).

    python benchmarks/bench_cluster.py sts [--file ../shared/data/stsbenchmark/sts-test.csv]
    python benchmarks/bench_cluster.py scale --store /tmp/rs [--threshold 0.75 --min-size 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402

DEFAULT_STS = ROOT.parent / "shared" / "data" / "stsbenchmark" / "sts-test.csv"
SWEEP = ((0.6, 2), (0.7, 2), (0.75, 2), (0.8, 2), (0.85, 2), (0.6, 5), (0.75, 5), (0.5, 10), (0.75, 10))


def sts(args) -> None:
    import torch
    from sentence_transformers import util

    from rag.embed.clustering import community_detection
    from rag.embed.encoder import SentenceEncoder
    from rag.evaluation.sts import load_sts

    pairs = load_sts(args.file)
    sentences = list(dict.fromkeys(s for p in pairs for s in (p.sentence1, p.sentence2)))
    index = {s: i for i, s in enumerate(sentences)}
    gold = [(index[p.sentence1], index[p.sentence2], p.score) for p in pairs if p.sentence1 != p.sentence2]
    similar = [(i, j) for i, j, s in gold if s >= 4.0]
    unrelated = [(i, j) for i, j, s in gold if s <= 1.0]
    t0 = time.perf_counter()
    emb = SentenceEncoder(args.model).encode(sentences)
    t_enc = time.perf_counter() - t0
    print(f"{len(sentences)} unique sentences; {len(similar)} gold pairs >= 4.0, {len(unrelated)} <= 1.0; "
          f"encode {t_enc:.1f} s\n")
    print("| threshold | min size | clusters | sentences clustered | gold >= 4.0 together | gold <= 1.0 apart "
          "| ours s | sentence-transformers s | same clusters |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for threshold, min_size in SWEEP:
        t0 = time.perf_counter()
        found = community_detection(emb, threshold, min_size)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = util.community_detection(torch.from_numpy(emb), threshold=threshold, min_community_size=min_size)
        t_st = time.perf_counter() - t0
        label = np.full(len(sentences), -1)
        for k, c in enumerate(found):
            label[c] = k
        together = sum(1 for i, j in similar if label[i] >= 0 and label[i] == label[j]) / len(similar)
        apart = sum(1 for i, j in unrelated if label[i] < 0 or label[i] != label[j]) / len(unrelated)
        clustered = int((label >= 0).sum())
        same = [set(c.tolist()) for c in found] == [set(c) for c in ref]  # members' order aside
        row = dict(threshold=threshold, min_size=min_size, clusters=len(found), clustered=clustered,
                   together=together, apart=apart, seconds=t_ours, st_seconds=t_st, same_as_st=same)
        rows.append(row)
        print(f"| {threshold} | {min_size} | {len(found)} | {clustered} ({clustered / len(sentences):.1%}) | "
              f"{together:.3f} | {apart:.3f} | {t_ours:.2f} | {t_st:.2f} | {'yes' if same else 'NO'} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


def scale(args) -> None:
    from measured_child import load_embeddings, print_ratios, run_measured

    emb, label = load_embeddings(args)
    results = {
        "ours": run_measured(emb, "from rag.embed.clustering import community_detection",
                             "result = [c.tolist() for c in community_detection(emb, params['threshold'], "
                             "params['min_size'], block=params['block'])]",
                             threshold=args.threshold, min_size=args.min_size, block=args.block),
        "st": run_measured(emb, "from sentence_transformers import util",
                           "result = util.community_detection(torch.from_numpy(emb), threshold=params['threshold'], "
                           "min_community_size=params['min_size'])",
                           threshold=args.threshold, min_size=args.min_size),
    }
    for r in results.values():
        r["clusters"] = r.pop("result")
    print(f"{label}, threshold {args.threshold}, min size {args.min_size}\n")
    print("| clustering | seconds | peak extra memory (MiB) | clusters | texts clustered |")
    print("|---|---|---|---|---|")
    for k, name in (("ours", f"rag.embed.clustering.community_detection (block {args.block})"),
                    ("st", "sentence-transformers community_detection (batch 1024)")):
        r = results[k]
        print(f"| {name} | {r['seconds']:.1f} | {r['peak_extra_bytes'] / 2**20:.0f} | {len(r['clusters'])} | "
              f"{sum(map(len, r['clusters']))} |")
    ro, rs = results["ours"], results["st"]
    print_ratios(ro, rs)
    same = [set(c) for c in ro["clusters"]] == [set(c) for c in rs["clusters"]]
    a = {i: k for k, c in enumerate(ro["clusters"]) for i in c}
    b = {i: k for k, c in enumerate(rs["clusters"]) for i in c}
    agree = sum(1 for i in set(a) | set(b) if (i in a) == (i in b)
                and (i not in a or set(ro["clusters"][a[i]]) == set(rs["clusters"][b[i]])))
    print("cluster lists: " + ("identical (the same members, clusters in the same order)" if same else
                               f"differ; {agree} of {len(set(a) | set(b))} clustered texts in an identical cluster"))


def main() -> None:
    from measured_child import add_embedding_args

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("sts")
    s.add_argument("--file", default=str(DEFAULT_STS))
    s.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    s.add_argument("--json", help="write the sweep here")
    s.set_defaults(func=sts)
    s = sub.add_parser("scale")
    add_embedding_args(s)
    s.add_argument("--threshold", type=float, default=0.75)
    s.add_argument("--min-size", type=int, default=10)
    s.add_argument("--block", type=int, default=1024)
    s.set_defaults(func=scale)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
