"""Paraphrase mining: quality on STS-B test, and time and memory on 100k texts.

1. `sts`: every unique sentence of sts-test.csv is embedded with the default model and mined
   at the lowest threshold of a sweep; for each threshold, among the reported pairs that the
   gold file annotates, the share with gold score >= 4.0 (precision), the number of reported
   pairs the gold file does not annotate (no judgement: neither right nor wrong), and the share
   of gold >= 4.0 pairs that are reported (recall; gold pairs of two identical sentences
   cannot be a pair of distinct texts and are left out).
2. `scale`: mine_pairs (tiles of --block) against sentence-transformers'
   util.paraphrase_mining_embeddings (its defaults: query chunks of 5000 x corpus chunks of
   100000, top_k 100 per text, max_pairs 500000) on the same 100k embeddings, each in its own
   process; peak memory is the growth of the process's peak RSS (VmHWM) over its value after
   the embeddings are loaded; the pair sets at the threshold are compared. Embeddings: the
   stored vectors of a collection (--collection, e.g. the 100k recombined-SciFact chunks of
   bench_search.py) or random unit vectors (--random).

    python benchmarks/bench_mining.py sts [--file ../shared/data/stsbenchmark/sts-test.csv]
    python benchmarks/bench_mining.py scale --store /tmp/rs --collection recombined-100000 [--threshold 0.9]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


DEFAULT_STS = Path(__file__).resolve().parents[2] / "shared" / "data" / "stsbenchmark" / "sts-test.csv"
SWEEP = (0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def sts(args) -> None:
    from rag.embed.encoder import SentenceEncoder
    from rag.training.mining import mine_pairs
    from rag.evaluation.sts import load_sts

    pairs = load_sts(args.file)
    sentences = list(dict.fromkeys(s for p in pairs for s in (p.sentence1, p.sentence2)))
    index = {s: i for i, s in enumerate(sentences)}
    gold: dict[tuple[int, int], float] = {}
    same = 0
    for p in pairs:
        i, j = sorted((index[p.sentence1], index[p.sentence2]))
        if i == j:
            same += 1
            continue
        gold[(i, j)] = max(gold.get((i, j), 0.0), p.score)  # a pair annotated twice: its best score
    positives = {k for k, s in gold.items() if s >= 4.0}
    t0 = time.perf_counter()
    emb = SentenceEncoder(args.model).encode(sentences)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    found = mine_pairs(emb, min(SWEEP))
    t_mine = time.perf_counter() - t0
    print(f"{len(sentences)} unique sentences, {len(gold)} gold pairs of distinct sentences "
          f"({len(positives)} with score >= 4.0; {same} pairs of identical sentences left out); "
          f"encode {t_enc:.1f} s, mine {t_mine:.2f} s\n")
    print("| threshold | reported | in gold file | of which gold >= 4.0 | precision (gold-annotated) "
          "| not in gold file | recall of gold >= 4.0 |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for t in SWEEP:
        rep = [(i, j) for i, j, s in found if s >= t]
        annotated = [k for k in rep if k in gold]
        good = sum(1 for k in annotated if gold[k] >= 4.0)
        row = {"threshold": t, "reported": len(rep), "annotated": len(annotated), "good": good,
               "precision": good / len(annotated) if annotated else float("nan"),
               "not_in_gold": len(rep) - len(annotated), "recall": good / len(positives)}
        rows.append(row)
        print(f"| {t:.2f} | {len(rep)} | {len(annotated)} | {good} | {row['precision']:.3f} | "
              f"{row['not_in_gold']} | {row['recall']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


def scale(args) -> None:
    from measured_child import load_embeddings, print_ratios, run_measured

    emb, label = load_embeddings(args)
    results = {
        "ours": run_measured(emb, "from rag.training.mining import mine_pairs",
                             "result = [(i, j) for i, j, s in mine_pairs(emb, params['threshold'], "
                             "block=params['block'])]", threshold=args.threshold, block=args.block),
        "st": run_measured(emb, "from sentence_transformers import util",
                           "result = sorted((min(int(i), int(j)), max(int(i), int(j))) for s, i, j in "
                           "util.paraphrase_mining_embeddings(torch.from_numpy(emb)) if s >= params['threshold'])",
                           threshold=args.threshold),
    }
    for r in results.values():
        r["pairs"] = sorted(map(tuple, r.pop("result")))
    ours, st = (set(map(tuple, results[k]["pairs"])) for k in ("ours", "st"))
    print(f"{label}, threshold {args.threshold}\n")
    print("| miner | seconds | peak extra memory (MiB) | pairs >= threshold |")
    print("|---|---|---|---|")
    for k, name in (("ours", f"rag.training.mining.mine_pairs (block {args.block})"),
                    ("st", "sentence-transformers paraphrase_mining_embeddings (defaults)")):
        r = results[k]
        print(f"| {name} | {r['seconds']:.1f} | {r['peak_extra_bytes'] / 2**20:.0f} | {len(r['pairs'])} |")
    print_ratios(results["ours"], results["st"])
    print(f"pair sets: {len(ours & st)} in both, {len(ours - st)} only ours, {len(st - ours)} only "
          "sentence-transformers" + (" (identical)" if ours == st else ""))


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
    s.add_argument("--threshold", type=float, default=0.9)
    s.add_argument("--block", type=int, default=2048)
    s.set_defaults(func=scale)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
