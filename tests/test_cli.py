"""`rag ingest` as a user runs it: exit code 0 when every file went in, 1 when a file failed
(and the summary names it and why), 2 with one `rag: error:` line and no traceback for a
job-stopping error such as a store locked by another process; `--json` prints the report."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest

from helpers_ingest import (CLI_CHUNKING, edge_settings, finish, hold_store, sentences, snapshot, src,
                            start_rag, write)
from pipelines.stores import open_store
from rag.embed.encoder import DEFAULT_MODEL
from rag.search.store import CollectionInfo

pytestmark = pytest.mark.slow

BINARY = bytes(range(256)) * 8


def ingest_args(docs, settings, *extra: str) -> list[str]:
    return ["ingest", str(docs), "--store", settings.store_dir, "--collection", settings.collection,
            *CLI_CHUNKING, *extra]


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """The three jobs run side by side (each loads the encoder: seconds of CPU)."""
    root = tmp_path_factory.mktemp("cli")
    mixed = write(root / "mixed", {"good.txt": sentences("good", 4), "empty.txt": b"", "blob.txt": BINARY})
    clean = write(root / "clean", {"one.txt": sentences("one", 4), "two.md": f"# Two\n\n{sentences('two', 2)}"})
    stores = {"mixed": edge_settings(root / "s-mixed"), "json": edge_settings(root / "s-json"),
              "locked": edge_settings(root / "s-locked")}
    # The locked collection exists (made for this encoder) and another process holds it open.
    info = CollectionInfo(model=DEFAULT_MODEL, dimension=384, chunk_size=32, chunk_overlap=4)
    open_store(stores["locked"], info=info, create=True).close()
    holder = hold_store(stores["locked"])
    try:
        procs = {
            "mixed": start_rag(ingest_args(root / "mixed", stores["mixed"], "--no-progress"), cwd=root),
            "json": start_rag(ingest_args(root / "clean", stores["json"], "--no-progress", "--json"),
                              cwd=root),
            "locked": start_rag(ingest_args(root / "clean", stores["locked"], "--no-progress"), cwd=root),
        }
        runs = {name: finish(p) for name, p in procs.items()}
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    return SimpleNamespace(runs=runs, stores=stores, holder_pid=holder.pid,
                           mixed={k: src(p) for k, p in mixed.items()},
                           clean={k: src(p) for k, p in clean.items()})


def test_exit_code_1_and_the_summary_names_failed_files(cli):
    run = cli.runs["mixed"]
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    out = run.stdout
    assert "Ingest summary" in out
    for row, n in (("ingested", 1), ("unchanged", 0), ("failed", 2), ("chunks written", 2),
                   ("points in collection", 2)):
        assert re.search(rf"{row}\W+{n}\W", out), (row, out)
    assert "Failed files" in out
    lines = out.splitlines()
    for name, reason in (("empty.txt", "empty file (0 bytes)"), ("blob.txt", "binary file")):
        assert any(cli.mixed[name] in line and reason in line for line in lines), out
    assert not any(cli.mixed["good.txt"] in line for line in lines)  # only failed files are listed
    assert snapshot(cli.stores["mixed"]).sources == {cli.mixed["good.txt"]}


def test_exit_code_0_and_json_report(cli):
    run = cli.runs["json"]
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    report = json.loads(run.stdout)  # nothing but the JSON on stdout
    outcomes = {o["source"]: o for o in report["outcomes"]}
    assert set(outcomes) == {cli.clean["one.txt"], cli.clean["two.md"]}
    assert all(o["status"] == "ingested" and o["chunks"] > 0 and o["reason"] is None
               for o in outcomes.values())
    total = sum(o["chunks"] for o in outcomes.values())
    assert report["chunks_written"] == report["total_points"] == total
    assert snapshot(cli.stores["json"]).count == total
    assert "Qdrant Edge" in report["collection"]


def test_locked_store_is_one_error_line_and_exit_code_2(cli):
    run = cli.runs["locked"]
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("rag: error: store ")
    assert "open in another process" in lines[0] and f"pid {cli.holder_pid}" in lines[0]
    assert run.stdout == ""
    assert snapshot(cli.stores["locked"]).count == 0  # nothing was written
