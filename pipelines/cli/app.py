"""The `rag` command line."""

from __future__ import annotations

import argparse
import json
import sys

from rag.errors import RagError


def _store_args(p: argparse.ArgumentParser) -> None:
    from pipelines.stores import DEFAULT_COLLECTION, DEFAULT_STORE_DIR

    g = p.add_argument_group("store")
    g.add_argument("--store", default=DEFAULT_STORE_DIR, metavar="DIR",
                   help=f"Qdrant Edge folder (embedded default; default: ./{DEFAULT_STORE_DIR})")
    g.add_argument("--collection", default=DEFAULT_COLLECTION, help="collection name (default: %(default)s)")
    g.add_argument("--url", help="Qdrant server or cluster URL instead of the embedded store "
                                 "(API key from $QDRANT_API_KEY)")
    g.add_argument("--qdrant-path", help="qdrant-client local-mode folder instead of the embedded store")


def _store_settings(args):
    from pipelines.stores import StoreSettings

    return StoreSettings(store_dir=args.store, collection=args.collection, url=args.url,
                         local_path=args.qdrant_path)


def build_parser() -> argparse.ArgumentParser:
    from rag.embed.encoder import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="rag", description="Retrieval-augmented generation over your documents.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="turn PDFs, text and Markdown files into a searchable collection")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    _store_args(p)
    p.add_argument("--model", default=DEFAULT_MODEL, help="encoder: hub name or local folder (default: %(default)s)")
    p.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    p.add_argument("--chunk-size", type=int, default=256, help="chunk size in encoder tokens (default: %(default)s)")
    p.add_argument("--chunk-overlap", type=int, default=32, help="overlap in encoder tokens (default: %(default)s)")
    p.add_argument("--include", action="append", metavar="GLOB", help="file globs to take (default: *.pdf *.txt *.md ...)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="file globs to skip")
    p.add_argument("--prune", action="store_true", help="remove chunks of files that are gone")
    p.add_argument("--batch-size", type=int, default=128, help="chunks per encode/write batch")
    p.add_argument("--no-stemming", action="store_true",
                   help="new collection: BM25 index without English stemming and stop words")
    p.add_argument("--near-duplicates", choices=("flag", "skip"),
                   help="report (flag) or leave out (skip) chunks nearly identical to an earlier chunk of the "
                        "job or of another file in the collection (default: no check)")
    p.add_argument("--dup-threshold", type=float, default=0.95, metavar="COSINE",
                   help="near-duplicate cosine threshold (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("search", help="search a collection (dense, BM25 or hybrid)")
    p.add_argument("query")
    _store_args(p)
    _retriever_args(p)
    p.add_argument("-k", "--top-k", type=int, default=10, help="results to show (default: %(default)s)")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="payload filter on both legs, repeatable: source=PATH, page=3 or 2-5, section=...")
    p.add_argument("--explain", action="store_true", help="show each leg's rank and score")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("eval", help="evaluate retrieval on a BEIR-format folder")
    esub = p.add_subparsers(dest="what", required=True)
    e = esub.add_parser("retrieval", help="nDCG@10, recall@10/100, MRR@10 for dense, bm25 and hybrid")
    e.add_argument("folder", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv")
    e.add_argument("--split", default="test", help="qrels split (default: %(default)s)")
    _store_args(e)
    e.set_defaults(collection=None)
    _retriever_args(e)
    e.add_argument("--modes", default="dense,bm25,hybrid", help="comma-separated (default: %(default)s)")
    e.add_argument("--model", default=DEFAULT_MODEL,
                   help="encoder to evaluate: hub name or local folder (default: %(default)s); the "
                        "default collection is beir-FOLDER, or beir-FOLDER-MODELNAME for another model")
    e.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    e.add_argument("--out", metavar="JSON", help="write the report as JSON here")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=cmd_eval_retrieval)
    e = esub.add_parser("sts", help="Spearman and Pearson of cosine similarity against STS gold scores")
    e.add_argument("file", help="STS-B format file (tab-separated: ..., score, sentence 1, sentence 2)")
    e.add_argument("--model", default=DEFAULT_MODEL, help="encoder: hub name or local folder (default: %(default)s)")
    e.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval_sts)

    p = sub.add_parser("train", help="fine-tune the sentence encoder (Sentence-BERT objectives)")
    tsub = p.add_subparsers(dest="objective", required=True)
    t = tsub.add_parser("sts", help="cosine-similarity regression on STS-B format pairs (scores 0-5)")
    t.add_argument("train_file")
    t.add_argument("--dev", help="STS dev file: evaluated each epoch, best epoch kept")
    _train_args(t, epochs=4, batch_size=16)
    t.set_defaults(func=cmd_train_sts)
    t = tsub.add_parser(
        "pairs", help="pairs, triplets or labelled pairs from a CSV/TSV/JSONL file or a BEIR folder",
        description="Fine-tune on (anchor, positive) pairs, (anchor, positive, negative) triplets or "
                    "(sentence 1, sentence 2, label) rows. Columns come from a header (anchor/query/"
                    "sentence1, positive/sentence2, negative, label/score) or --columns. A BEIR folder "
                    "gives (query, title + text) pairs from qrels/SPLIT.tsv. Losses: mnr = multiple "
                    "negatives ranking, in-batch negatives (+ the third column as a hard negative); "
                    "cosine = MSE of cosine vs score; softmax = classifier over (u, v, |u-v|); "
                    "triplet = max(d(a,p) - d(a,n) + margin, 0).")
    t.add_argument("data", metavar="FILE|BEIR_DIR")
    t.add_argument("--loss", choices=("auto", "mnr", "cosine", "softmax", "triplet"), default="auto",
                   help="auto: mnr for pairs and triplets, cosine for numeric labels, softmax for class "
                        "labels (default: %(default)s)")
    t.add_argument("--columns", metavar="A,B[,C]", help="column names or 0-based indexes: anchor, positive, "
                                                        "then negative or label")
    t.add_argument("--kind", choices=("triplets", "labelled"), help="what a 3-column file holds (default: guessed)")
    t.add_argument("--split", default="train", help="BEIR qrels split to train on (default: %(default)s)")
    g = t.add_argument_group("dev evaluation (each epoch; the best epoch is kept)")
    g.add_argument("--dev", metavar="FILE|BEIR_DIR", help="STS file (Spearman) or BEIR folder (nDCG@10 in memory)")
    g.add_argument("--dev-split", default="dev", help="qrels split of a --dev BEIR folder (default: %(default)s)")
    g.add_argument("--holdout", type=int, metavar="N",
                   help="BEIR training data: hold N train queries out of training as the dev set")
    g.add_argument("--dev-corpus", type=int, default=1000, metavar="N",
                   help="BEIR dev: judged documents plus random others up to N; 0 = whole corpus "
                        "(default: %(default)s)")
    _train_args(t, epochs=1, batch_size=32)
    g = t.add_argument_group("loss settings")
    g.add_argument("--scale", type=float, default=20.0, help="mnr: cosine scale (default: %(default)s)")
    g.add_argument("--triplet-metric", choices=("euclidean", "cosine"), default="euclidean")
    g.add_argument("--triplet-margin", type=float, help="default: 5 (euclidean), 0.5 (cosine)")
    g.add_argument("--max-score", type=float, help="cosine: gold scores are divided by this "
                                                   "(default: 5 if any score > 1, else 1)")
    t.set_defaults(func=cmd_train_pairs)

    p = sub.add_parser("adapt", help="unsupervised domain adaptation on your own chunks (inverse cloze, "
                                     "in-batch negatives)",
                       description="Fine-tune the encoder with no labels: for each chunk, one sentence "
                                   "is the query and the rest of the chunk its positive (inverse cloze "
                                   "task); multiple negatives ranking loss with in-batch negatives.")
    p.add_argument("source", nargs="?", metavar="FOLDER|FILE|BEIR_DIR",
                   help="files to chunk, or a BEIR folder's corpus (or use --from-collection)")
    p.add_argument("--from-collection", metavar="NAME", help="read the chunk texts of this collection")
    p.add_argument("--store", default=None, metavar="DIR", help="store folder for --from-collection")
    p.add_argument("--url", help="Qdrant server URL for --from-collection")
    p.add_argument("--max-pairs", type=int, default=5000, help="at most this many pairs (default: %(default)s)")
    p.add_argument("--min-words", type=int, default=5, help="shortest query sentence in words (default: %(default)s)")
    p.add_argument("--dev", metavar="FILE|BEIR_DIR", help="STS file or BEIR folder evaluated each epoch")
    p.add_argument("--dev-split", default="dev", help="qrels split of a --dev BEIR folder (default: %(default)s)")
    p.add_argument("--dev-corpus", type=int, default=1000, metavar="N", help="as for rag train pairs")
    _train_args(p, epochs=1, batch_size=32)
    p.set_defaults(func=cmd_adapt)

    p = sub.add_parser("mine", help="paraphrase / near-duplicate mining: all pairs above a cosine threshold",
                       description="Embed texts (or read a collection's stored vectors) and list every pair "
                                   "with cosine >= threshold, computed in bounded memory, best first.")
    p.add_argument("file", nargs="?", metavar="FILE",
                   help=".txt (one text a line), .csv/.tsv/.jsonl (--column, default 'text' or the first), "
                        "or an STS-B file (its unique sentences)")
    p.add_argument("--collection", help="mine a collection's chunks (stored vectors, no encoding)")
    p.add_argument("--store", default=None, metavar="DIR", help="store folder for --collection")
    p.add_argument("--url", help="Qdrant server URL for --collection")
    p.add_argument("--column", help="column / key holding the text")
    p.add_argument("--threshold", type=float, default=0.9, help="cosine threshold (default: %(default)s)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="encoder for a file (default: %(default)s)")
    p.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    p.add_argument("--block", type=int, default=2048, help="tile edge; memory ~ block^2 * 4 bytes")
    p.add_argument("--top", type=int, default=20, help="pairs to print (default: %(default)s)")
    p.add_argument("--out", metavar="TSV", help="write all pairs here (i, j, cosine, text i, text j)")
    p.add_argument("--json", action="store_true", help="print all pairs as JSON")
    p.set_defaults(func=cmd_mine)

    from pipelines.cli.answer import add_answer_commands

    add_answer_commands(sub)
    return parser


def _retriever_args(p: argparse.ArgumentParser) -> None:
    from rag.search.retrieval import DEFAULT_CANDIDATES, DEFAULT_FUSION, DEFAULT_WEIGHTS

    g = p.add_argument_group("retrieval (defaults chosen on SciFact train queries)")
    g.add_argument("--mode", choices=("dense", "bm25", "hybrid"), default="hybrid")
    g.add_argument("--fusion", choices=("rrf", "wsf", "dbsf"), default=DEFAULT_FUSION,
                   help="rrf (reciprocal rank, k=--rrf-k), wsf (min-max weighted scores), dbsf "
                        "(distribution-based) (default: %(default)s)")
    g.add_argument("--rrf-k", type=int, default=60, help="RRF k, 1-based ranks (default: %(default)s)")
    g.add_argument("--weights", default=",".join(f"{w:g}" for w in DEFAULT_WEIGHTS), metavar="DENSE,BM25",
                   help="per-leg weights (default: %(default)s)")
    g.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES,
                   help="candidate depth per leg (default: %(default)s)")
    g.add_argument("--mmr", type=float, metavar="LAMBDA", help="diversify with MMR (e.g. 0.7)")


def _retriever_settings(args) -> dict:
    from rag.errors import ConfigError

    try:
        weights = tuple(float(w) for w in args.weights.split(","))
    except ValueError:
        raise ConfigError(f"--weights '{args.weights}' is not two numbers like 1,1") from None
    if len(weights) != 2:
        raise ConfigError(f"--weights '{args.weights}' needs two numbers: dense,bm25")
    return {"fusion": args.fusion, "rrf_k": args.rrf_k, "weights": weights,
            "candidates": args.candidates, "mmr_lambda": args.mmr}


def cmd_search(args) -> int:
    from pipelines.render import print_search_response
    from pipelines.stores import open_store
    from rag.embed.encoder import SentenceEncoder
    from rag.search.retrieval import Retriever

    settings = _retriever_settings(args)
    vs = open_store(_store_settings(args))
    try:
        retriever = Retriever(vs, SentenceEncoder(vs.info.model), mode=args.mode, top_k=args.top_k, **settings)
        resp = retriever.search(args.query, filters=args.filter, explain=args.explain)
    finally:
        vs.close()
    if args.json:
        print(resp.model_dump_json(indent=2))
    else:
        print_search_response(resp, explain=args.explain)
    return 0


def cmd_eval_retrieval(args) -> int:
    from pathlib import Path

    from pipelines.evaluate import eval_retrieval, print_eval_report
    from pipelines.stores import StoreSettings

    from pipelines.evaluate import default_collection
    from rag.embed.encoder import SentenceEncoder

    settings = _retriever_settings(args)
    store = StoreSettings(store_dir=args.store, url=args.url, local_path=args.qdrant_path,
                          collection=args.collection or default_collection(args.folder, args.model))
    report = eval_retrieval(args.folder, split=args.split, store=store,
                            encoder=SentenceEncoder(args.model, device=args.device),
                            modes=[m.strip() for m in args.modes.split(",") if m.strip()],
                            retriever_settings=settings, progress=not args.no_progress)
    print_eval_report(report)
    if args.out:
        Path(args.out).write_text(report.model_dump_json(indent=2))
        print(f"wrote {args.out}")
    return 0


def cmd_ingest(args) -> int:
    from pipelines.ingest import ingest, print_near_duplicates
    from pipelines.render import print_ingest_report
    from rag.ingest.chunking import Chunker
    from rag.embed.encoder import SentenceEncoder
    from rag.ingest.loaders import DEFAULT_INCLUDE
    from rag.search.store import TextIndexSettings

    report = ingest(
        args.paths,
        encoder=SentenceEncoder(args.model, device=args.device),
        store=_store_settings(args),
        chunker=Chunker(args.chunk_size, args.chunk_overlap),
        include=args.include or DEFAULT_INCLUDE,
        exclude=args.exclude,
        prune=args.prune,
        text_index=TextIndexSettings.plain() if args.no_stemming else None,
        batch_size=args.batch_size,
        progress=not args.no_progress and not args.json,
        near_duplicates=args.near_duplicates,
        dup_threshold=args.dup_threshold,
    )
    if args.json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        print_ingest_report(report)
        print_near_duplicates(report)
    return 1 if report.failed else 0


def cmd_eval_sts(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from rag.embed.encoder import SentenceEncoder
    from rag.evaluation.sts import evaluate_sts

    result = evaluate_sts(SentenceEncoder(args.model, device=args.device), args.file)
    if args.json:
        print(result.model_dump_json(indent=2))
        return 0
    t = Table(title=f"STS: {args.file} ({args.model})", title_justify="left")
    for c in ("pairs", "spearman", "pearson"):
        t.add_column(c, justify="right")
    t.add_row(str(result.pairs), f"{result.spearman:.4f}", f"{result.pearson:.4f}")
    Console().print(t)
    return 0


def _train_args(t: argparse.ArgumentParser, epochs: int, batch_size: int) -> None:
    from rag.embed.encoder import DEFAULT_MODEL

    g = t.add_argument_group("training")
    g.add_argument("--out", required=True, help="output model folder (loads in rag, sentence-transformers)")
    g.add_argument("--model", default=DEFAULT_MODEL, help="starting model (default: %(default)s)")
    g.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    g.add_argument("--epochs", type=int, default=epochs, help="(default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=batch_size, help="(default: %(default)s)")
    g.add_argument("--lr", type=float, default=2e-5, help="AdamW learning rate (default: %(default)s)")
    g.add_argument("--warmup", type=float, default=0.1, help="share of steps for linear warm-up (default: %(default)s)")
    g.add_argument("--max-seq-length", type=int, help="truncate training texts to this many tokens, for speed (the saved model "
                        "keeps its own limit; default: the model's)")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--json", action="store_true", help="print the report as JSON")


def _settings(args, **extra):
    from rag.training.trainer import TrainSettings

    return TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         warmup_ratio=args.warmup, max_seq_length=args.max_seq_length, **extra)


def _run_training(args, title: str, fn) -> int:
    """Run fn(on_step, on_epoch) under a progress bar (steps, loss, ETA); print the epoch table."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    from rich.table import Table

    from pipelines.render import console

    with Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TextColumn("ETA"),
                  TimeRemainingColumn(), console=console, disable=args.json) as bar:
        task = bar.add_task("train", total=None, loss="-")

        import time

        t0 = time.perf_counter()

        def on_step(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, loss=f"{loss:.4f}")
            if not console.is_terminal and not args.json and (step % max(1, total // 20) == 0 or step == total):
                spent = time.perf_counter() - t0  # a log file gets a line every 5% instead of a bar
                console.print(f"step {step}/{total} loss {loss:.4f} elapsed {spent:.0f} s "
                              f"ETA {spent / step * (total - step):.0f} s (training only)")

        def on_epoch(e) -> None:
            dev = "" if e.dev_score is None else f", dev {e.dev_score:.4f}"
            bar.console.print(f"epoch {e.epoch}: train loss {e.train_loss:.4f}{dev} ({e.seconds:.0f} s)")

        report = fn(on_step, on_epoch)
    if args.json:
        print(report.model_dump_json(indent=2))
        return 0
    t = Table(title=f"{title}: {args.model} -> {report.output} ({report.loss} loss, {report.examples} examples, "
                    f"{report.seconds:.0f} s)", title_justify="left")
    for c in ("epoch", "train loss", f"dev {report.dev_metric or '-'}", "seconds", ""):
        t.add_column(c, justify="right")
    for e in report.epochs:
        t.add_row(str(e.epoch), f"{e.train_loss:.4f}", "-" if e.dev_score is None else f"{e.dev_score:.4f}",
                  f"{e.seconds:.0f}", "kept" if e.epoch == report.best_epoch else "")
    Console().print(t)
    return 0


def cmd_train_sts(args) -> int:
    from rag.evaluation.sts import load_sts
    from rag.training.trainer import StsEvaluator, train
    from rag.training.data import TrainData

    pairs = load_sts(args.train_file)
    data = TrainData(kind="labelled", texts=[(p.sentence1, p.sentence2) for p in pairs],
                     labels=[p.score for p in pairs], source=args.train_file)
    return _run_training(args, "Fine-tuned", lambda on_step, on_epoch: train(
        args.model, data, args.out, loss="cosine", settings=_settings(args, max_score=5.0),
        evaluator=StsEvaluator(args.dev) if args.dev else None, device=args.device,
        on_step=on_step, on_epoch=on_epoch))


def cmd_train_pairs(args) -> int:
    from pathlib import Path

    from rag.errors import ConfigError
    from rag.training.trainer import IrEvaluator, beir_holdout, make_evaluator, train
    from rag.training.data import read_beir_pairs, read_training_data

    columns = [c.strip() for c in args.columns.split(",")] if args.columns else None
    corpus_size = args.dev_corpus or None
    if args.holdout:
        if not Path(args.data).is_dir():
            raise ConfigError("--holdout needs a BEIR folder as training data")
        if args.dev:
            raise ConfigError("give either --dev or --holdout, not both")
        held = beir_holdout(args.data, args.split, args.holdout, args.seed)
        data = read_beir_pairs(args.data, args.split, exclude_queries=held)
        evaluator = IrEvaluator.from_beir(args.data, args.split, query_ids=held, corpus_size=corpus_size,
                                          seed=args.seed)
    else:
        data = read_training_data(args.data, columns=columns, kind=args.kind, split=args.split)
        evaluator = make_evaluator(args.dev, args.dev_split, corpus_size, args.seed)
    loss = args.loss
    if loss == "auto":
        loss = "mnr" if data.kind != "labelled" else ("cosine" if data.numeric else "softmax")
    settings = _settings(args, mnr_scale=args.scale, triplet_metric=args.triplet_metric,
                         triplet_margin=args.triplet_margin, max_score=args.max_score)
    return _run_training(args, "Fine-tuned", lambda on_step, on_epoch: train(
        args.model, data, args.out, loss=loss, settings=settings, evaluator=evaluator, device=args.device,
        on_step=on_step, on_epoch=on_epoch))


def cmd_adapt(args) -> int:
    from pipelines.render import console
    from pipelines.stores import DEFAULT_STORE_DIR, StoreSettings
    from pipelines.stores import collection_texts
    from rag.training.adapt import adapt_texts_from_files, inverse_cloze_pairs
    from rag.errors import ConfigError
    from rag.training.trainer import make_evaluator, train

    if bool(args.source) == bool(args.from_collection):
        raise ConfigError("give a FOLDER|FILE|BEIR_DIR or --from-collection NAME (one of them)")
    if args.from_collection:
        texts = collection_texts(StoreSettings(store_dir=args.store or DEFAULT_STORE_DIR,
                                                          collection=args.from_collection, url=args.url))
    else:
        texts = adapt_texts_from_files(args.source, args.model)
    data = inverse_cloze_pairs(texts, max_pairs=args.max_pairs, min_words=args.min_words, seed=args.seed)
    if not args.json:
        console.print(f"{len(texts)} chunks -> {len(data)} inverse-cloze pairs")
    evaluator = make_evaluator(args.dev, args.dev_split, args.dev_corpus or None, args.seed)
    return _run_training(args, "Adapted", lambda on_step, on_epoch: train(
        args.model, data, args.out, loss="mnr", settings=_settings(args), evaluator=evaluator,
        device=args.device, on_step=on_step, on_epoch=on_epoch))


def cmd_mine(args) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from pipelines.stores import DEFAULT_STORE_DIR, StoreSettings
    from rag.errors import ConfigError
    from pipelines.stores import collection_vectors
    from rag.training.mining import mine_pairs, read_texts

    if bool(args.file) == bool(args.collection):
        raise ConfigError("give a FILE or --collection NAME (one of them)")
    import time

    t0 = time.perf_counter()
    if args.collection:
        texts, vectors = collection_vectors(StoreSettings(store_dir=args.store or DEFAULT_STORE_DIR,
                                                          collection=args.collection, url=args.url))
        label = f"collection '{args.collection}'"
    else:
        from rag.embed.encoder import SentenceEncoder

        texts = read_texts(args.file, args.column)
        vectors = SentenceEncoder(args.model, device=args.device).encode(texts)
        label = args.file
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
    t = Table(title=f"{len(pairs)} pairs with cosine >= {args.threshold} among {len(texts)} texts of {label} "
                    f"({seconds:.1f} s)" + (f"; top {args.top}" if len(pairs) > args.top else ""),
              title_justify="left", show_lines=True)
    t.add_column("cosine", justify="right")
    t.add_column("text", overflow="fold")
    t.add_column("near-duplicate", overflow="fold")
    for i, j, s in pairs[:args.top]:
        t.add_row(f"{s:.4f}", texts[i][:300], texts[j][:300])
    Console().print(t)
    if args.out:
        print(f"wrote {len(pairs)} pairs to {Path(args.out)}")
    return 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    return [leaf for a in subs for p in dict.fromkeys(a.choices.values()) for leaf in _leaf_parsers(p)]


def _config_path(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None


def with_config(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """Every command takes `--config FILE` (TOML, see pipelines/config.py): its values become the
    defaults of the command's options, and flags given on the command line still win."""
    path = _config_path(argv)
    defaults = {}
    if path:
        from pipelines.config import load_config

        defaults = load_config(path).cli_defaults()
    for leaf in _leaf_parsers(parser):
        leaf.add_argument("--config", metavar="FILE", help="TOML config file giving this command's defaults")
        dests = {a.dest for a in leaf._actions}
        leaf.set_defaults(**{k: v for k, v in defaults.items() if k in dests})
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = with_config(build_parser(), argv)
    except RagError as e:
        print(f"rag: error: {e}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except RagError as e:
        print(f"rag: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rag: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
