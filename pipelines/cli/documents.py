"""`rag ingest` and `rag search`: put files into a collection, and search it."""

from __future__ import annotations

import json

from pipelines.cli.options import (CHUNKING, CLUSTER, ENCODER, INGEST, RETRIEVAL, STORE, add_config_option, add_options,
                                   config_from_args, top_k_option)


def register(sub, cfg) -> None:
    p = sub.add_parser("ingest", help="turn PDFs, text and Markdown files into a searchable collection")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders")
    add_options(p, "store", STORE, cfg)
    add_options(p, "Qdrant server or cluster (a new collection; Qdrant computes BM25 statistics per shard)",
                CLUSTER, cfg)
    add_options(p, "encoder", ENCODER, cfg)
    add_options(p, "chunking (fixed per collection)", CHUNKING, cfg)
    add_options(p, "ingest", INGEST, cfg)
    p.add_argument("--prune", action="store_true", help="remove chunks of files that are gone")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="load and encode on a Ray cluster (pip install -e \".[ray]\"): ADDRESS is 'auto', "
                        "HOST:PORT, or none for a local Ray on this machine's CPUs")
    p.add_argument("--ray-writers", type=int, metavar="N",
                   help="with --ray: writer actors (default: one per encoder actor with --url, where they "
                        "write in parallel; with the embedded store the driver writes, or 1 writer actor)")
    p.add_argument("--watch", action="store_true",
                   help="after ingesting (with --prune), follow the folders and keep the collection equal to "
                        "them: new and changed files ingested, deleted and renamed ones removed, until "
                        "Ctrl-C or SIGTERM (pip install -e \".[watch]\")")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the report as JSON (with --watch, one line "
                                                       "per job)")
    add_config_option(p, cfg)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("search", help="search a collection (dense, BM25 or hybrid)")
    p.add_argument("query")
    add_options(p, "store", STORE, cfg)
    add_options(p, "retrieval (defaults chosen on SciFact train queries)", [*RETRIEVAL, top_k_option("10")], cfg)
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="payload filter on both legs, repeatable: source=PATH, page=3 or 2-5, section=...")
    p.add_argument("--explain", action="store_true", help="show each leg's rank and score")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    add_config_option(p, cfg)
    p.set_defaults(func=cmd_search)


def cmd_ingest(args) -> int:
    from pipelines import render
    from pipelines.ingest import ingest
    from rag.search.store import TextIndexSettings

    cfg = config_from_args(args)
    ing = cfg.ingest
    if args.ray:
        return _ingest_ray(args, cfg)
    if args.ray_writers is not None:
        from rag.errors import ConfigError

        raise ConfigError("--ray-writers goes with --ray")
    if args.watch:
        return _ingest_watch(args, cfg)
    report = ingest(
        args.paths, encoder=cfg.encoder.build(), store=cfg.store.settings(), chunker=cfg.chunking.build(),
        include=ing.include, exclude=ing.exclude, prune=args.prune,
        text_index=None if ing.stemming else TextIndexSettings.plain(), batch_size=ing.batch_size,
        progress=not args.no_progress and not args.json,
        near_duplicates=ing.near_duplicates, dup_threshold=ing.dup_threshold, ocr=ing.ocr,
        write_retry=ing.write_retry(),
    )
    if args.json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        render.print_ingest_report(report)
    return 1 if report.failed else 0


def _ingest_watch(args, cfg) -> int:
    from pipelines import render
    from pipelines.watch import WatchJob, watch
    from rag.search.store import TextIndexSettings

    ing = cfg.ingest
    job = WatchJob(store=cfg.store.settings(), progress=not args.no_progress and not args.json, ingest_args=dict(
        encoder=cfg.encoder.build(), chunker=cfg.chunking.build(), include=ing.include, exclude=ing.exclude,
        text_index=None if ing.stemming else TextIndexSettings.plain(), batch_size=ing.batch_size,
        near_duplicates=ing.near_duplicates, dup_threshold=ing.dup_threshold, ocr=ing.ocr,
        write_retry=ing.write_retry()))
    first = True

    def on_report(report) -> None:
        nonlocal first
        if args.json:
            print(report.model_dump_json(), flush=True)
        elif first:
            render.print_ingest_report(report)
            render.note(f"watching {', '.join(map(str, args.paths))} (Ctrl-C or SIGTERM to stop)")
        else:
            render.print_watch_outcomes(report)
        first = False

    watch(args.paths, job, on_report)
    return 0


def _ingest_ray(args, cfg) -> int:
    from pipelines import render
    from pipelines.ray_ingest import ingest_ray
    from rag.errors import ConfigError
    from rag.search.store import TextIndexSettings

    ing = cfg.ingest
    if args.prune or ing.near_duplicates:
        raise ConfigError("--ray does not take --prune or --near-duplicates yet: run them without --ray")
    report = ingest_ray(
        args.paths, encoder=cfg.encoder.build(), store=cfg.store.settings(), chunker=cfg.chunking.build(),
        include=ing.include, exclude=ing.exclude,
        text_index=None if ing.stemming else TextIndexSettings.plain(), batch_size=ing.batch_size,
        progress=not args.no_progress and not args.json, address=args.ray, ocr=ing.ocr,
        write_retry=ing.write_retry(), writers=args.ray_writers,
    )
    if args.json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        render.print_ingest_report(report)
    return 1 if report.failed else 0


def cmd_search(args) -> int:
    from pipelines import render
    from pipelines.stores import open_store
    from rag.embed.encoder import SentenceEncoder
    from rag.search.retrieval import Retriever

    cfg = config_from_args(args)
    vs = open_store(cfg.store.settings())
    try:
        retriever = Retriever(vs, SentenceEncoder(vs.info.model), top_k=cfg.retrieval.search_top_k,
                              **cfg.retrieval.settings())
        resp = retriever.search(args.query, filters=args.filter, explain=args.explain)
    finally:
        vs.close()
    if args.json:
        print(resp.model_dump_json(indent=2))
    else:
        render.print_search_response(resp, explain=args.explain)
    return 0
