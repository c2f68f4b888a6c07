"""`rag mine` and `rag cluster`: what a set of embeddings holds, over a file of texts (embedded
here) or a collection (its stored vectors, nothing encoded): the pairs above a cosine threshold,
and the communities of similar texts."""

from __future__ import annotations

import json

from pipelines.cli.options import ENCODER, add_config_option, add_options, config_from_args

_FILE_HELP = (".txt (one text a line), .csv/.tsv/.jsonl (--column, default 'text' or the first), "
              "or an STS-B file (its unique sentences)")


def _source_args(p, cfg, verb: str) -> None:
    p.add_argument("file", nargs="?", metavar="FILE", help=_FILE_HELP)
    p.add_argument("--collection", help=f"{verb} a collection's chunks (stored vectors, no encoding)")
    p.add_argument("--store", default=cfg.store.dir, metavar="DIR", help="store folder for --collection")
    p.add_argument("--url", default=cfg.store.url, help="Qdrant server URL for --collection")
    p.add_argument("--column", help="column / key holding the text")
    add_options(p, "encoder (for a file)", ENCODER, cfg)


def register(sub, cfg) -> None:
    p = sub.add_parser("mine", help="paraphrase / near-duplicate mining: all pairs above a cosine threshold",
                       description="Embed texts (or read a collection's stored vectors) and list every pair "
                                   "with cosine >= threshold, computed in bounded memory, best first.")
    _source_args(p, cfg, "mine")
    p.add_argument("--threshold", type=float, default=0.9, help="cosine threshold (default: %(default)s)")
    p.add_argument("--block", type=int, default=2048, help="tile edge; memory ~ block^2 * 4 bytes")
    p.add_argument("--top", type=int, default=20, help="pairs to print (default: %(default)s)")
    p.add_argument("--out", metavar="TSV", help="write all pairs here (i, j, cosine, text i, text j)")
    p.add_argument("--json", action="store_true", help="print all pairs as JSON")
    add_config_option(p, cfg)
    p.set_defaults(func=cmd_mine)

    p = sub.add_parser("cluster", help="group similar texts: community detection over the embeddings",
                       description="Embed texts (or read a collection's stored vectors) and find communities: "
                                   "each text with at least --min-size texts at cosine >= --threshold "
                                   "(itself included) proposes its neighbourhood; the largest are kept "
                                   "first, without overlap (sentence-transformers' community_detection, "
                                   "computed in bounded memory). Each cluster is shown with its size, its "
                                   "most central text and its top terms by BM25 weight; texts in no "
                                   "cluster are counted.")
    _source_args(p, cfg, "cluster")
    p.add_argument("--threshold", type=float, default=0.75, help="cosine to a cluster's centre "
                                                                 "(default: %(default)s)")
    p.add_argument("--min-size", type=int, default=10, help="smallest cluster (default: %(default)s)")
    p.add_argument("--terms", type=int, default=8, help="top terms per cluster (default: %(default)s)")
    p.add_argument("--block", type=int, default=1024, help="tile edge; memory ~ block^2 * 4 bytes")
    p.add_argument("--top", type=int, default=20, help="clusters to print (default: %(default)s)")
    p.add_argument("--out", metavar="TSV", help="write every clustered text here (cluster, index, id, "
                                                "source, text)")
    p.add_argument("--json", action="store_true", help="print every cluster and its members as JSON")
    add_config_option(p, cfg)
    p.set_defaults(func=cmd_cluster)


def _load(args, fields: tuple[str, ...] = ("text",)):
    """(label, texts, point ids or None, payloads or None, unit vectors) from a FILE or --collection."""
    from pipelines.stores import StoreSettings, collection_points
    from rag.errors import ConfigError
    from rag.training.mining import read_texts

    if bool(args.file) == bool(args.collection):
        raise ConfigError("give a FILE or --collection NAME (one of them)")
    if args.collection:
        ids, payloads, vectors = collection_points(
            StoreSettings(store_dir=args.store, collection=args.collection, url=args.url), fields)
        return f"collection '{args.collection}'", [p.get("text", "") for p in payloads], ids, payloads, vectors
    texts = read_texts(args.file, args.column)
    return args.file, texts, None, None, config_from_args(args).encoder.build().encode(texts)


def cmd_mine(args) -> int:
    import time
    from pathlib import Path

    from pipelines import render
    from rag.training.mining import mine_pairs

    t0 = time.perf_counter()
    label, texts, _, _, vectors = _load(args)
    pairs = mine_pairs(vectors, args.threshold, block=args.block)
    seconds = time.perf_counter() - t0
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write("i\tj\tcosine\ttext_i\ttext_j\n")
            for i, j, s in pairs:
                fh.write(f"{i}\t{j}\t{s:.4f}\t{_one_line(texts[i])}\t{_one_line(texts[j])}\n")
    if args.json:
        print(json.dumps({"texts": len(texts), "threshold": args.threshold, "pairs": [
            {"i": i, "j": j, "cosine": round(s, 6), "text_i": texts[i], "text_j": texts[j]} for i, j, s in pairs]},
            indent=2))
        return 0
    render.print_mined_pairs(pairs, texts, args.threshold, label, seconds, args.top)
    if args.out:
        print(f"wrote {len(pairs)} pairs to {Path(args.out)}")
    return 0


def cmd_cluster(args) -> int:
    import time
    from pathlib import Path

    from pipelines import render
    from rag.embed.clustering import community_detection, describe
    from rag.errors import ConfigError

    if not -1.0 <= args.threshold <= 1.0:
        raise ConfigError(f"--threshold {args.threshold}: a cosine, within [-1, 1]")
    if args.min_size < 1 or args.block < 1:
        raise ConfigError("--min-size and --block must be at least 1")
    t0 = time.perf_counter()
    label, texts, ids, payloads, vectors = _load(args, ("text", "source", "page_start", "page_end"))
    with render.count_progress("clustering", len(texts), unit="texts", enabled=not args.json) as advance:
        found = community_detection(vectors, args.threshold, args.min_size, block=args.block, on_rows=advance)
    clusters = describe(texts, vectors, found, terms=args.terms)
    seconds = time.perf_counter() - t0

    def member(i: int) -> dict:
        m = {"index": i, "text": texts[i]}
        if ids is not None:
            m.update(id=ids[i], source=payloads[i].get("source"), page_start=payloads[i].get("page_start"),
                     page_end=payloads[i].get("page_end"))
        return m

    clustered = sum(c.size for c in clusters)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write("cluster\tindex\tid\tsource\ttext\n")
            for c in clusters:
                for i in c.members:
                    m = member(i)
                    fh.write(f"{c.id}\t{i}\t{m.get('id', '')}\t{m.get('source') or ''}\t{_one_line(texts[i])}\n")
    if args.json:
        print(json.dumps({
            "texts": len(texts), "threshold": args.threshold, "min_size": args.min_size,
            "clustered": clustered, "unclustered": len(texts) - clustered, "seconds": round(seconds, 3),
            "clusters": [{"id": c.id, "size": c.size, "central": member(c.central),
                          "terms": [{"term": t, "weight": w} for t, w in c.terms],
                          "members": [member(i) for i in c.members]} for c in clusters]}, indent=2))
        return 0
    render.print_clusters(clusters, texts, args.threshold, args.min_size, label, seconds, args.top)
    if args.out:
        print(f"wrote the {clustered} clustered texts to {Path(args.out)}")
    return 0


def _one_line(text: str) -> str:
    return " ".join(text.split())
