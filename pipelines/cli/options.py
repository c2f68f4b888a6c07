"""Command-line options mapped once onto the config (`pipelines.config.RagConfig`).

Each option names the config field(s) it sets, and its default is that field's value: the config
file's when `--config FILE` gives one, else the field's own default. So every default is written
in one place (the component's constant, read by the config field), flags still win over the
file, and a command turns its options into a validated `RagConfig` with `config_from_args`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.llm.registry import BACKEND_NAMES
from pipelines.config import RagConfig, validate_config
from rag.ingest.pdf import OCR_MODES
from rag.errors import ConfigError

CONFIG_DEST = "_rag_config"  # the config the defaults came from, on every parsed namespace
OPTIONS_DEST = "_rag_options"  # the options registered on the parsed command


@dataclass(frozen=True)
class Option:
    """One flag and the config field(s) it sets. `to_cli` shows a config value as the flag's
    default (weights (1, 1) as "1,1"); `from_cli` turns the flag's value back into the field's."""

    flags: tuple[str, ...]
    fields: tuple[str, ...]
    help: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    to_cli: Callable[[Any], Any] | None = None
    from_cli: Callable[[Any], Any] | None = None

    @property
    def dest(self) -> str:
        """argparse's destination: the first long flag, dashes as underscores."""
        long = next((f for f in self.flags if f.startswith("--")), self.flags[0])
        return long.lstrip("-").replace("-", "_")


AUTO_WEIGHTS = "auto"  # --weights: the collection's default (rag.search.retrieval.default_weights)


def _weights_to_cli(weights: Sequence[float] | None) -> str:
    return ",".join(f"{w:g}" for w in weights) if weights is not None else AUTO_WEIGHTS


def _weights_from_cli(text: str) -> tuple[float, float] | None:
    if str(text).strip() == AUTO_WEIGHTS:
        return None  # the collection's default
    try:
        weights = tuple(float(w) for w in str(text).split(","))
    except ValueError:
        raise ConfigError(f"--weights '{text}' is not two numbers like 1,1") from None
    if len(weights) != 2:
        raise ConfigError(f"--weights '{text}' needs two numbers: dense,bm25")
    return weights  # type: ignore[return-value]


def _opt(flags: str | tuple[str, ...], fields: str | tuple[str, ...], help: str, **kwargs) -> Option:
    to_cli, from_cli = kwargs.pop("to_cli", None), kwargs.pop("from_cli", None)
    return Option(flags=(flags,) if isinstance(flags, str) else flags,
                  fields=(fields,) if isinstance(fields, str) else fields,
                  help=help, kwargs=kwargs, to_cli=to_cli, from_cli=from_cli)


DEVICE_HELP = "cpu, cuda, mps (default: best available)"

STORE = [
    _opt("--store", "store.dir", "Qdrant Edge folder, the embedded default (default: %(default)s)", metavar="DIR"),
    _opt("--collection", "store.collection", "collection name (default: %(default)s)"),
    _opt("--url", "store.url", "Qdrant server or cluster URL instead of the embedded store "
                               "(API key from $QDRANT_API_KEY)"),
    _opt("--qdrant-path", "store.local_path", "qdrant-client local-mode folder instead of the embedded store"),
]
CLUSTER = [  # a new collection on a Qdrant server or cluster (--url); rag ingest only
    _opt("--shards", "store.shard_number", "new collection: shard number", type=int, metavar="N"),
    _opt("--replicas", "store.replication_factor", "new collection: replication factor", type=int, metavar="N"),
    _opt("--write-consistency", "store.write_consistency_factor",
         "new collection: replicas that must acknowledge a write", type=int, metavar="N"),
    _opt("--on-disk-payload", "store.on_disk_payload", "new collection: payloads on disk, not in RAM",
         action="store_const", const=True),
    _opt("--quantization", "store.quantization", "new collection: int8 scalar quantization, the quantized "
                                                 "vectors in RAM and the originals on disk", choices=("int8",)),
    _opt("--bulk", "store.bulk", "new collection: defer building HNSW until the load ends (restored then)",
         action="store_const", const=True),
]
ENCODER = [
    _opt("--model", "encoder.model", "encoder: hub name or local folder (default: %(default)s)"),
    _opt("--device", "encoder.device", DEVICE_HELP),
]
CHUNKING = [
    _opt("--chunk-size", "chunking.size", "chunk size in encoder tokens (default: %(default)s)", type=int),
    _opt("--chunk-overlap", "chunking.overlap", "overlap in encoder tokens (default: %(default)s)", type=int),
    _opt("--no-context", "chunking.context", "embed and index each chunk's text alone, without its "
                                             "document's title and section in front", action="store_false"),
    _opt("--no-sentence-vectors", "chunking.sentence_vectors", "new collection: one vector per chunk, "
         "without a vector per sentence (the dense leg then scores the chunk vector alone)",
         action="store_false"),
]
CONTEXT = CHUNKING[2:]  # --no-context and --no-sentence-vectors alone (rag eval retrieval)
INGEST = [
    _opt("--include", "ingest.include", "file glob to take, repeatable (default: *.pdf *.txt *.md ...)",
         action="append", metavar="GLOB", to_cli=lambda v: None, from_cli=lambda v: v),
    _opt("--exclude", "ingest.exclude", "file glob to skip, repeatable", action="append", metavar="GLOB",
         to_cli=lambda v: None, from_cli=lambda v: v),
    _opt("--batch-size", "ingest.batch_size", "chunks per encode/write batch (default: %(default)s)", type=int),
    _opt("--no-stemming", "ingest.stemming", "new collection: BM25 index without English stemming and stop "
                                             "words", action="store_false"),
    _opt("--near-duplicates", "ingest.near_duplicates",
         "report (flag) or leave out (skip) chunks nearly identical to an earlier chunk of the job or of "
         "another file in the collection (default: no check)", choices=("flag", "skip")),
    _opt("--dup-threshold", "ingest.dup_threshold", "near-duplicate cosine threshold (default: %(default)s)",
         type=float, metavar="COSINE"),
    _opt("--ocr", "ingest.ocr", "PDF pages read by OCR: auto (those without a text layer), off (they fail "
                                "or are skipped), force (every page) (default: %(default)s)",
         choices=OCR_MODES),
    _opt("--write-retries", "ingest.write_retries", "times a store write failing with a transient error "
                                                    "(refused, reset, timeout, HTTP 429/502/503/504) is tried "
                                                    "again, with backoff (default: %(default)s)", type=int, metavar="N"),
]
RETRIEVAL = [
    _opt("--mode", "retrieval.mode", "(default: %(default)s)", choices=("dense", "bm25", "hybrid")),
    _opt("--fusion", "retrieval.fusion", "rrf (reciprocal rank, k=--rrf-k), wsf (min-max weighted scores), "
                                         "dbsf (distribution-based) (default: %(default)s)",
         choices=("rrf", "wsf", "dbsf")),
    _opt("--rrf-k", "retrieval.rrf_k", "RRF k, 1-based ranks (default: %(default)s)", type=int),
    _opt("--weights", "retrieval.weights", "per-leg weights, or auto: 2,1 on a collection with sentence "
         "vectors, 1,1 without (default: %(default)s)", metavar="DENSE,BM25",
         to_cli=_weights_to_cli, from_cli=_weights_from_cli),
    _opt("--candidates", "retrieval.candidates", "candidate depth per leg (default: %(default)s)", type=int),
    _opt("--unit-weight", "retrieval.unit_weight", "collections with sentence vectors: the chunk vector's "
         "share w of the dense score, w x chunk + (1 - w) x best sentence (default: %(default)s)",
         type=float, metavar="W"),
    _opt("--mmr", "retrieval.mmr", "diversify with MMR (e.g. 0.7)", type=float, metavar="LAMBDA"),
    _opt("--rerank", "retrieval.rerank", "rerank the fused candidates with this cross-encoder model folder "
                                         "(e.g. one from `rag train cross-encoder`)", metavar="MODEL"),
    _opt("--rerank-depth", "retrieval.rerank_depth", "fused candidates the cross-encoder rescores "
                                                     "(default: %(default)s)", type=int, metavar="N"),
    _opt("--route", "retrieval.route", "document routing: auto searches only the documents a query names "
                                       "by their titles and file names (a company, a quarter), off searches "
                                       "every document (default: %(default)s)", choices=("auto", "off")),
]
FUSION = RETRIEVAL[1:]  # all but --mode (rag eval compares the modes)
PROMPT = [
    _opt("--max-tokens", "prompt.max_answer_tokens", "answer length limit (default: %(default)s)", type=int),
    _opt("--max-passages", "prompt.max_passages", "passages in the prompt at most (default: %(default)s)",
         type=int),
    _opt("--template", "prompt.template", "prompt template: TOML with system/user, or a text file",
         metavar="FILE"),
    _opt("--context-window", ("prompt.context_window", "llm.context_window"),
         "override the model's context window (tokens)", type=int),
]
LLM = [
    _opt("--llm", "llm.backend", "auto: the server given by --base-url, $OPENAI_BASE_URL or $OPENAI_API_KEY, "
                                 "or an Ollama at its default address, else quoted extracts; openai: any "
                                 "OpenAI-compatible server (vLLM, llama.cpp, Ollama /v1); ollama: Ollama's "
                                 "native API; local: the small SmolLM2-135M offline demo; none: extracts "
                                 "(default: %(default)s)",
         choices=BACKEND_NAMES),
    _opt("--llm-model", "llm.model", "model name on the server, or a local folder / .gguf file"),
    _opt("--base-url", "llm.base_url", "server URL, e.g. http://127.0.0.1:8080/v1 (openai) or "
                                       "http://127.0.0.1:11434 (ollama)"),
    _opt("--api-key-env", "llm.api_key_env", "environment variable holding the API key (default: %(default)s)"),
    _opt("--timeout", "llm.timeout", "seconds per request (default: %(default)s)", type=float),
    _opt("--max-retries", "llm.max_retries", "retries on 429/5xx/timeouts (default: %(default)s)", type=int),
    _opt("--temperature", "llm.temperature", "(default: %(default)s)", type=float),
    _opt("--llm-device", "llm.device", "device for --llm local (cpu, cuda, mps)"),
]


def top_k_option(default_help: str) -> Option:
    return _opt(("-k", "--top-k"), "retrieval.top_k", f"how many to retrieve (default: {default_help})", type=int)


def add_answer_options(parser: argparse.ArgumentParser, cfg: RagConfig) -> None:
    """The option groups of every command that answers from a collection (ask, chat, serve):
    store, retrieval, prompt and LLM, so a config file serves exactly what it answers."""
    add_options(parser, "store", STORE, cfg)
    add_options(parser, "retrieval (defaults chosen on SciFact train queries)",
                [*RETRIEVAL, top_k_option("--max-passages")], cfg)
    add_options(parser, "prompt", PROMPT, cfg)
    add_options(parser, "LLM (default: auto; every answer says which backend produced it)", LLM, cfg)


def add_options(parser: argparse.ArgumentParser, title: str, options: Sequence[Option], cfg: RagConfig,
                **overrides: Any) -> None:
    """Add `options` as one argument group; defaults from `cfg` unless given in `overrides`
    (by destination). The options are remembered so that `config_from_args` maps them back."""
    group = parser.add_argument_group(title)
    for opt in options:
        default = overrides[opt.dest] if opt.dest in overrides else cfg.get(opt.fields[0])
        if opt.to_cli is not None and opt.dest not in overrides:
            default = opt.to_cli(default)
        if opt.kwargs.get("action") == "store_false":
            group.add_argument(*opt.flags, dest=opt.dest, help=opt.help, action="store_false",
                               default=bool(default))
        else:
            group.add_argument(*opt.flags, dest=opt.dest, help=opt.help, default=default, **opt.kwargs)
    registered = parser.get_default(OPTIONS_DEST) or []
    parser.set_defaults(**{OPTIONS_DEST: [*registered, *options], CONFIG_DEST: cfg})


def add_config_option(parser: argparse.ArgumentParser, cfg: RagConfig) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML config file giving this command's defaults")
    parser.set_defaults(**{CONFIG_DEST: cfg})


def config_from_args(args: argparse.Namespace) -> RagConfig:
    """The config the command runs with: the defaults' config, with every registered option's
    value written into its field(s), validated like a config file (errors name the options)."""
    cfg: RagConfig = getattr(args, CONFIG_DEST)
    data = cfg.model_dump()
    for opt in getattr(args, OPTIONS_DEST, None) or []:
        value = getattr(args, opt.dest)
        if opt.from_cli is not None and value is not None:
            value = opt.from_cli(value)
        if value is None:
            continue  # not given (a repeatable option, or a default of None): the config's value stands
        for path in opt.fields:
            section, name = path.split(".")
            data[section][name] = value
    out = validate_config(data, "options")
    out.source = cfg.source
    return out


def config_path(argv: Sequence[str]) -> str | None:
    """The `--config FILE` of a command line, looked up before the parser is built (its values
    become the parser's defaults)."""
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None
