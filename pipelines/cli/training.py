"""`rag train` and `rag adapt`: fine-tune the encoder (or train a reranker), adapt it without
labels."""

from __future__ import annotations

import argparse

from pipelines.cli.options import STORE, add_config_option, add_options, config_from_args


def _train_args(t: argparse.ArgumentParser, cfg, epochs: int | None = None, batch_size: int | None = None) -> None:
    """The training loop's settings; defaults from rag.training.trainer.TrainSettings, except where
    an objective has its own (in-batch negatives want larger batches and fewer epochs)."""
    from rag.training.trainer import TrainSettings

    d = TrainSettings()
    g = t.add_argument_group("training")
    g.add_argument("--out", required=True, help="output model folder (loads in rag, sentence-transformers)")
    g.add_argument("--model", default=cfg.encoder.model, help="starting model (default: %(default)s)")
    g.add_argument("--device", default=cfg.encoder.device, help="cpu, cuda, mps (default: best available)")
    g.add_argument("--epochs", type=int, default=epochs or d.epochs, help="(default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=batch_size or d.batch_size, help="(default: %(default)s)")
    g.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate (default: %(default)s)")
    g.add_argument("--warmup", type=float, default=d.warmup_ratio,
                   help="share of steps for linear warm-up (default: %(default)s)")
    g.add_argument("--max-seq-length", type=int, help="truncate training texts to this many tokens, for speed "
                                                     "(the saved model keeps its own limit; default: the model's)")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--json", action="store_true", help="print the report as JSON")
    add_config_option(t, cfg)


def _dev_args(t: argparse.ArgumentParser, with_holdout: bool) -> None:
    g = t.add_argument_group("dev evaluation (each epoch; the best epoch is kept)")
    g.add_argument("--dev", metavar="FILE|BEIR_DIR", help="STS file (Spearman) or BEIR folder (nDCG@10 in memory)")
    g.add_argument("--dev-split", default="dev", help="qrels split of a --dev BEIR folder (default: %(default)s)")
    if with_holdout:
        g.add_argument("--holdout", type=int, metavar="N",
                       help="BEIR training data: hold N train queries out of training as the dev set")
    g.add_argument("--dev-corpus", type=int, default=1000, metavar="N",
                   help="BEIR dev: judged documents plus random others up to N; 0 = whole corpus "
                        "(default: %(default)s)")


def register(sub, cfg) -> None:
    from rag.training.losses import MNR_SCALE

    p = sub.add_parser("train", help="fine-tune the sentence encoder (Sentence-BERT objectives)")
    tsub = p.add_subparsers(dest="objective", required=True)
    t = tsub.add_parser("sts", help="cosine-similarity regression on STS-B format pairs (scores 0-5)")
    t.add_argument("train_file")
    t.add_argument("--dev", help="STS dev file: evaluated each epoch, best epoch kept")
    _train_args(t, cfg)
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
    _dev_args(t, with_holdout=True)
    _train_args(t, cfg, epochs=1, batch_size=32)
    g = t.add_argument_group("loss settings")
    g.add_argument("--scale", type=float, default=MNR_SCALE, help="mnr: cosine scale (default: %(default)s)")
    g.add_argument("--triplet-metric", choices=("euclidean", "cosine"), default="euclidean")
    g.add_argument("--triplet-margin", type=float, help="default: 5 (euclidean), 0.5 (cosine)")
    g.add_argument("--max-score", type=float, help="cosine: gold scores are divided by this "
                                                   "(default: 5 if any score > 1, else 1)")
    t.set_defaults(func=cmd_train_pairs)

    t = tsub.add_parser(
        "cross-encoder", help="a reranker from a BEIR folder's qrels, with hard negatives mined by hybrid search",
        description="Train a cross-encoder reranker (use it with --rerank). Each training query's judged "
                    "passages are positives; per positive, --negatives unjudged passages from the hybrid "
                    "retriever's top --mine-depth are negatives. Binary cross-entropy; the dev set (--holdout "
                    "train queries, or --dev-split of the same folder) is reranked each epoch (nDCG@10 of "
                    "its top --dev-depth candidates) and the best epoch kept. The corpus is ingested into "
                    "the collection `rag eval retrieval` uses (beir-FOLDER) when it is not there yet.")
    t.add_argument("data", metavar="BEIR_DIR")
    t.add_argument("--split", default="train", help="qrels split to train on (default: %(default)s)")
    t.add_argument("--holdout", type=int, default=50, metavar="N",
                   help="hold N training queries out as the dev set (default: %(default)s; 0 = no dev)")
    t.add_argument("--dev-split", help="use this qrels split as the dev set instead of a holdout")
    t.add_argument("--negatives", type=int, default=4, help="hard negatives per positive (default: %(default)s)")
    t.add_argument("--mine-depth", type=int, default=30, help="mine negatives from this many top documents "
                                                            "(default: %(default)s)")
    t.add_argument("--dev-depth", type=int, default=20, help="dev candidates reranked (default: %(default)s)")
    t.add_argument("--max-length", type=int, default=256, help="tokens per (query, passage) pair, passage "
                                                             "cut first (default: %(default)s)")
    add_options(t, "store (where the corpus collection is)", STORE, cfg,
                collection=cfg.store.collection if cfg.is_set("store.collection") else None)
    _train_args(t, cfg, epochs=1, batch_size=16)
    t.set_defaults(func=cmd_train_cross_encoder)

    p = sub.add_parser("adapt", help="unsupervised domain adaptation on your own chunks (inverse cloze, "
                                     "in-batch negatives)",
                       description="Fine-tune the encoder with no labels: for each chunk, one sentence "
                                   "is the query and the rest of the chunk its positive (inverse cloze "
                                   "task); multiple negatives ranking loss with in-batch negatives.")
    p.add_argument("source", nargs="?", metavar="FOLDER|FILE|BEIR_DIR",
                   help="files to chunk, or a BEIR folder's corpus (or use --from-collection)")
    p.add_argument("--from-collection", metavar="NAME", help="read the chunk texts of this collection")
    p.add_argument("--store", default=cfg.store.dir, metavar="DIR", help="store folder for --from-collection")
    p.add_argument("--url", default=cfg.store.url, help="Qdrant server URL for --from-collection")
    p.add_argument("--max-pairs", type=int, default=5000, help="at most this many pairs (default: %(default)s)")
    p.add_argument("--min-words", type=int, default=5, help="shortest query sentence in words (default: %(default)s)")
    _dev_args(p, with_holdout=False)
    _train_args(p, cfg, epochs=1, batch_size=32)
    p.set_defaults(func=cmd_adapt)


def _settings(args, **extra):
    from rag.training.trainer import TrainSettings

    return TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         warmup_ratio=args.warmup, max_seq_length=args.max_seq_length, **extra)


def _run_training(args, title: str, fn) -> int:
    """Run fn(on_step, on_epoch) under a progress bar, then print the epoch table (or JSON)."""
    from pipelines import render

    with render.training_progress(enabled=not args.json) as bar:
        report = fn(bar.on_step, bar.on_epoch)
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        render.print_training_report(report, title, args.model)
    return 0


def cmd_train_sts(args) -> int:
    from rag.training.data import sts_training_data
    from rag.training.trainer import StsEvaluator, train

    data = sts_training_data(args.train_file)
    return _run_training(args, "Fine-tuned", lambda on_step, on_epoch: train(
        args.model, data, args.out, loss="cosine", settings=_settings(args, max_score=5.0),
        evaluator=StsEvaluator(args.dev) if args.dev else None, device=args.device,
        on_step=on_step, on_epoch=on_epoch))


def cmd_train_pairs(args) -> int:
    from pathlib import Path

    from rag.errors import ConfigError
    from rag.training.data import read_beir_pairs, read_training_data
    from rag.training.trainer import IrEvaluator, beir_holdout, make_evaluator, train

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


def cmd_train_cross_encoder(args) -> int:
    from pipelines import render
    from pipelines.evaluate import corpus_collection, default_collection, document_search
    from pipelines.stores import open_store
    from rag.errors import ConfigError
    from rag.evaluation.beir import corpus_passages, load_beir
    from rag.ingest.chunking import Chunker
    from rag.training.cross_encoder import RerankDev, mine_pairs, train_cross_encoder
    from rag.training.trainer import beir_holdout

    cfg = config_from_args(args)
    data = load_beir(args.data, args.split)
    if args.dev_split and args.holdout:
        args.holdout = 0  # an explicit dev split replaces the default holdout
    held = beir_holdout(args.data, args.split, args.holdout, args.seed) if args.holdout else set()
    context, units = cfg.chunking.context, cfg.chunking.sentence_vectors
    store = cfg.store.settings().model_copy(
        update={"collection": args.collection or default_collection(args.data, cfg.encoder.model, context, units)})
    encoder = cfg.encoder.build()
    corpus_collection(args.data, encoder, store, Chunker(context=context, sentence_vectors=units), progress=not args.json)
    corpus = corpus_passages(args.data)
    settings = {k: v for k, v in cfg.retrieval.settings().items() if k not in ("mode", "reranker")}
    vs = open_store(store)
    try:
        search = document_search(vs, encoder, depth=max(args.mine_depth, args.dev_depth), mode="hybrid", **settings)
        train_q = {q: t for q, t in data.queries.items() if q not in held}
        with render.count_progress("mining hard negatives", len(train_q), enabled=not args.json) as advance:
            pairs = mine_pairs(train_q, data.qrels, corpus, search, negatives=args.negatives,
                               depth=args.mine_depth, seed=args.seed, progress=advance)
        dev = None
        if held or args.dev_split:
            d = load_beir(args.data, args.dev_split) if args.dev_split else data
            dev_q = {q: t for q, t in d.queries.items() if (q in held if held else True)}
            dev = RerankDev.from_search(dev_q, d.qrels, corpus, search, depth=args.dev_depth)
    finally:
        vs.close()
    if not pairs:
        raise ConfigError(f"{args.data}: no training pairs (no judged passage of the {args.split} split is in the corpus)")
    positives = sum(p.label > 0 for p in pairs)
    if not args.json:
        render.note(f"{len(train_q)} training queries -> {positives} positives, {len(pairs) - positives} hard "
                    f"negatives" + (f"; dev: {len(dev.queries)} queries, first-stage nDCG@10 {dev.first_stage():.4f}"
                                     if dev else ""))
    return _run_training(args, "Cross-encoder", lambda on_step, on_epoch: train_cross_encoder(
        args.model, pairs, args.out, settings=_settings(args), dev=dev, device=args.device,
        max_length=args.max_length, on_step=on_step, on_epoch=on_epoch))


def cmd_adapt(args) -> int:
    from pipelines import render
    from pipelines.stores import StoreSettings, collection_texts
    from rag.errors import ConfigError
    from rag.training.adapt import adapt_texts_from_files, inverse_cloze_pairs
    from rag.training.trainer import make_evaluator, train

    if bool(args.source) == bool(args.from_collection):
        raise ConfigError("give a FOLDER|FILE|BEIR_DIR or --from-collection NAME (one of them)")
    if args.from_collection:
        texts = collection_texts(StoreSettings(store_dir=args.store, collection=args.from_collection, url=args.url))
    else:
        texts = adapt_texts_from_files(args.source, args.model)
    data = inverse_cloze_pairs(texts, max_pairs=args.max_pairs, min_words=args.min_words, seed=args.seed)
    if not args.json:
        render.note(f"{len(texts)} chunks -> {len(data)} inverse-cloze pairs")
    evaluator = make_evaluator(args.dev, args.dev_split, args.dev_corpus or None, args.seed)
    return _run_training(args, "Adapted", lambda on_step, on_epoch: train(
        args.model, data, args.out, loss="mnr", settings=_settings(args), evaluator=evaluator,
        device=args.device, on_step=on_step, on_epoch=on_epoch))
