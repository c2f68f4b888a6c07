"""`rag eval retrieval` (BEIR folders), `rag eval sts` (STS-B files) and `rag eval answers` (questions
with reference answers, through the configured pipeline)."""

from __future__ import annotations

from pipelines.cli.options import (CONTEXT, ENCODER, FUSION, STORE, add_answer_options, add_config_option, add_options,
                                   config_from_args)


def register(sub, cfg) -> None:
    p = sub.add_parser("eval", help="evaluate retrieval on a BEIR-format folder, similarity on STS, or answers "
                                    "against reference answers")
    esub = p.add_subparsers(dest="what", required=True)

    e = esub.add_parser("retrieval", help="nDCG@10, recall@10/100, MRR@10 for dense, bm25 and hybrid")
    e.add_argument("folder", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv")
    e.add_argument("--split", default="test", help="qrels split (default: %(default)s)")
    # The collection defaults to one per data set and model (see default_collection), unless the
    # config file names one.
    add_options(e, "store", STORE, cfg,
                collection=cfg.store.collection if cfg.is_set("store.collection") else None)
    add_options(e, "hybrid fusion (defaults chosen on SciFact train queries)", FUSION, cfg)
    add_options(e, "encoder (the default collection is beir-FOLDER, or beir-FOLDER-MODELNAME for "
                   "another model)", ENCODER, cfg)
    add_options(e, "chunking (the default collection gets -no-context, -no-sentence-vectors "
                   "without them)", CONTEXT, cfg)
    e.add_argument("--modes", default="dense,bm25,hybrid", help="comma-separated (default: %(default)s)")
    e.add_argument("--out", metavar="JSON", help="write the report as JSON here")
    e.add_argument("--no-progress", action="store_true")
    add_config_option(e, cfg)
    e.set_defaults(func=cmd_eval_retrieval)

    e = esub.add_parser("sts", help="Spearman and Pearson of cosine similarity against STS gold scores")
    e.add_argument("file", help="STS-B format file (tab-separated: ..., score, sentence 1, sentence 2)")
    add_options(e, "encoder", ENCODER, cfg)
    e.add_argument("--json", action="store_true")
    add_config_option(e, cfg)
    e.set_defaults(func=cmd_eval_sts)

    e = esub.add_parser("answers", help="questions with reference answers (CSV) through the configured pipeline: "
                                        "document hits, reference figures in passages and answer, citations, "
                                        "grounding, latency")
    e.add_argument("file", metavar="QA.csv", help="columns: question, reference answer, optional source-document "
                                                  "glob (as in sec10q's qna_multi.csv)")
    add_answer_options(e, cfg)
    e.add_argument("--limit", type=int, metavar="N", help="the first N questions only")
    e.add_argument("--fail-under", action="append", default=[], metavar="METRIC=VALUE",
                   help="exit 1 when an overall figure is below VALUE, repeatable; METRIC: hit_rate, on_target_rate, "
                        "figure_recall_passages, all_figures_passages_rate, figure_recall_answer, "
                        "citation_valid_rate, grounded_rate")
    e.add_argument("--json", action="store_true", help="print the report as JSON")
    e.add_argument("--out", metavar="JSON", help="write the report as JSON here")
    e.add_argument("--no-progress", action="store_true")
    add_config_option(e, cfg)
    e.set_defaults(func=cmd_eval_answers)


def cmd_eval_retrieval(args) -> int:
    from pathlib import Path

    from pipelines import render
    from pipelines.evaluate import default_collection, eval_retrieval
    from rag.ingest.chunking import Chunker

    cfg = config_from_args(args)
    context, units = cfg.chunking.context, cfg.chunking.sentence_vectors
    store = cfg.store.settings().model_copy(
        update={"collection": args.collection or default_collection(args.folder, cfg.encoder.model, context,
                                                                       units)})
    report = eval_retrieval(args.folder, split=args.split, store=store, encoder=cfg.encoder.build(),
                            chunker=Chunker(context=context, sentence_vectors=units),
                            modes=[m.strip() for m in args.modes.split(",") if m.strip()],
                            retriever_settings={k: v for k, v in cfg.retrieval.settings().items() if k != "mode"},
                            progress=not args.no_progress)
    render.print_eval_report(report)
    if args.out:
        Path(args.out).write_text(report.model_dump_json(indent=2))
        print(f"wrote {args.out}")
    return 0


def cmd_eval_sts(args) -> int:
    from pipelines import render
    from rag.evaluation.sts import evaluate_sts

    cfg = config_from_args(args)
    result = evaluate_sts(cfg.encoder.build(), args.file)
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        render.print_sts_result(result, cfg.encoder.model)
    return 0


def cmd_eval_answers(args) -> int:
    from pathlib import Path

    from pipelines import render
    from pipelines.answer import RagPipeline
    from pipelines.evaluate_answers import evaluate_answers, load_qa, parse_bars, unmet

    bars = parse_bars(args.fail_under)  # a bad bar stops the command before any question is asked
    items = load_qa(args.file, args.limit)
    pipe = RagPipeline.from_config(config_from_args(args))
    try:
        with render.count_progress("eval answers", len(items), "questions",
                                   enabled=not args.no_progress and not args.json) as advance:
            report = evaluate_answers(pipe, items, file=args.file, advance=advance)
    finally:
        pipe.close()
    if args.json:
        print(report.model_dump_json(indent=2))
    else:
        render.print_answer_eval(report)
    if args.out:
        Path(args.out).write_text(report.model_dump_json(indent=2))
        render.note(f"wrote {args.out}")
    failed = unmet(report, bars)
    for line in failed:
        render.note(f"[bold red]below the bar[/bold red]: {line}")
    return 1 if failed else 0
