"""The command line's options are the config's fields: each default is read from the config (its
field default, or the file given with --config), flags win, and the parsed options become a
validated RagConfig. Piped output keeps each file path whole on one line."""

from __future__ import annotations

import argparse
import io
import re
import sys

import pytest

from pipelines.cli.app import build_parser
from pipelines.cli.options import CONFIG_DEST, OPTIONS_DEST, config_from_args
from pipelines.config import RagConfig, load_config
from rag.errors import ConfigError

COMMANDS = [["ingest", "docs"], ["search", "q"], ["ask", "q"], ["chat"], ["eval", "retrieval", "folder"],
            ["eval", "sts", "f.tsv"], ["mine", "f.txt"]]


def parse(argv: list[str], cfg: RagConfig | None = None) -> argparse.Namespace:
    return build_parser(cfg).parse_args(argv)


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_every_option_default_is_the_config_field(argv):
    args = parse(argv)
    cfg = RagConfig()
    options = getattr(args, OPTIONS_DEST)
    assert options, argv
    for opt in options:
        if argv[:2] == ["eval", "retrieval"] and opt.dest == "collection":
            assert args.collection is None  # one collection per data set and model, see default_collection
            continue
        want = cfg.get(opt.fields[0])
        got = getattr(args, opt.dest)
        if opt.from_cli is not None and got is not None:
            got = opt.from_cli(got)
        assert got == want or (got is None and opt.kwargs.get("action") == "append"), (opt.flags, got, want)
    assert config_from_args(args) == cfg  # nothing given: exactly the defaults


def test_config_file_values_become_defaults_and_flags_win(tmp_path):
    f = tmp_path / "rag.toml"
    f.write_text('[chunking]\nsize = 128\n[retrieval]\nfusion = "rrf"\nweights = [2.0, 1.0]\n'
                 '[llm]\nbackend = "none"\ntimeout = 5\n[ingest]\nexclude = ["drafts/*"]\n')
    cfg = load_config(f)
    args = parse(["ingest", "docs", "--chunk-overlap", "8"], cfg)
    out = config_from_args(args)
    assert (out.chunking.size, out.chunking.overlap) == (128, 8)
    assert out.ingest.exclude == ["drafts/*"] and out.ingest.include == RagConfig().ingest.include
    args = parse(["ask", "q", "--weights", "1,3", "--timeout", "9"], cfg)
    out = config_from_args(args)
    assert out.retrieval.fusion == "rrf" and out.retrieval.weights == (1.0, 3.0)
    # no weights anywhere: None, the collection's own default (rag.search.retrieval.default_weights)
    assert config_from_args(parse(["ask", "q"])).retrieval.weights is None
    assert parse(["search", "q"]).weights == "auto"
    assert out.llm.backend == "none" and out.llm.timeout == 9
    assert getattr(args, CONFIG_DEST) is cfg
    # eval retrieval keeps its per-data-set collection unless the file names one
    assert parse(["eval", "retrieval", "x"], cfg).collection is None
    f.write_text('[store]\ncollection = "mine"\n')
    assert parse(["eval", "retrieval", "x"], load_config(f)).collection == "mine"


def test_bad_option_values_are_config_errors_naming_the_options():
    with pytest.raises(ConfigError, match="--weights '1' needs two numbers"):
        config_from_args(parse(["search", "q", "--weights", "1"]))
    with pytest.raises(ConfigError, match=r"options: \[chunking.size\]"):
        config_from_args(parse(["ingest", "d", "--chunk-size", "4"]))


def test_no_stemming_and_context_window_map_onto_their_fields():
    out = config_from_args(parse(["ingest", "d", "--no-stemming"]))
    assert out.ingest.stemming is False
    out = config_from_args(parse(["ask", "q", "--context-window", "2048"]))
    assert out.prompt.context_window == out.llm.context_window == 2048


def test_piped_tables_keep_each_file_path_on_one_line(monkeypatch):
    from pipelines import render
    from pipelines.ingest import FileOutcome, IngestReport

    long = "/data/" + "/".join(f"folder-number-{i:02d}" for i in range(12)) + "/quarterly report [draft].pdf"
    where = "Qdrant Edge /srv/some/rather/long/store/folder/for/the/company/documents"
    report = IngestReport(collection=where, outcomes=[
        FileOutcome(source=long, status="failed", reason="PDF is encrypted (needs a password)"),
        FileOutcome(source="/data/ok.txt", status="ingested", chunks=3, warnings=["2 pages had no text"])])
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buf)  # not a terminal, as under `| grep` or cron
    render.print_ingest_report(report)
    lines = buf.getvalue().splitlines()
    assert any(long in line and "PDF is encrypted" in line for line in lines), buf.getvalue()
    assert any("/data/ok.txt" in line and "2 pages had no text" in line for line in lines)
    assert re.search(r"failed\W+1\W", buf.getvalue())
    assert any(where in line for line in lines)  # the title is not wrapped to the narrow table
