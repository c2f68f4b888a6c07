"""`rag ingest DIR --watch`: the watcher's decisions on their own (`Debouncer`, `plan`,
`survey`), then a real watcher in a subprocess following real file operations in a temporary
folder (create, modify, delete, rename, a burst of 50 files, a file written slowly): after each
settles, the collection's points are exactly a clean ingest's of the folder. And a watcher
SIGKILLed during a watched change, then restarted, ends in the same state as a clean ingest.

The watcher runs under tests/watch_probe.py, which snapshots the collection after each of its
jobs (the embedded store is locked while the watcher holds it open)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from helpers_ingest import (CLI_CHUNKING, cli_env, edge_settings, sentences, small_chunker, snapshot, src,
                            wait_gone, write)
from pipelines.ingest import ingest
from pipelines.watch import Debouncer, Plan, Root, plan, survey

TESTS = Path(__file__).resolve().parent
MARKER = "RAG_TEST_RUN_MARKER"


# ---------------------------------------------------------------- decisions


def test_debouncer_waits_for_quiet_and_caps_the_wait():
    d = Debouncer(quiet=1.0, max_wait=5.0)
    assert d.due(0.0) == []
    d.add(["/d/a.txt"], 0.0)
    d.add(["/d/b.txt", "/d/a.txt"], 0.5)
    assert d.due(1.4) == []  # 0.9 s since the last change
    assert d.due(1.5) == ["/d/a.txt", "/d/b.txt"]  # one batch, each path once
    assert d.due(10.0) == [] and len(d) == 0
    for t in range(7):  # a folder that never goes quiet: the oldest change waits max_wait
        d.add([f"/d/{t}.txt"], t * 0.9)
        due = d.due(t * 0.9)
    assert due == [f"/d/{t}.txt" for t in range(7)]  # at 5.4 s
    d.add([], 20.0)
    assert d.due(30.0) == []  # no paths, nothing pending


def _stored(held: set[str]):
    asked = []

    def stored(path: str, under: bool) -> set[str]:
        asked.append(path)
        return {s for s in held if s == path or (under and s.startswith(path + "/"))}

    return stored, asked


def test_plan_follows_the_final_state_on_disk():
    roots = [Root("/w/docs", True), Root("/w/one.md", False)]
    held = {"/w/docs/a.txt", "/w/docs/old.txt", "/w/docs/sub/x.txt", "/w/docs/sub/y.txt",
            "/w/docs/keep.txt", "/w/other/z.txt", "/w/one.md"}
    stored, asked = _stored(held)
    state = {
        "/w/docs/a.txt": "file",  # changed: ingest
        "/w/docs/new.md": "file",  # new name of a rename: ingest
        "/w/docs/old.txt": "missing",  # old name of a rename: remove
        "/w/docs/notes.tmp": "file",  # not selected by the globs, never stored: nothing
        "/w/docs/keep.txt~": "missing",  # an editor's backup gone: nothing stored there
        "/w/docs/sub": "missing",  # a folder deleted or renamed away: its stored files go
        "/w/docs/gone.txt": "missing",  # created and deleted within the batch: nothing
        "/w/other/z.txt": "missing",  # outside every root: ignored, though stored
        "/w/one.md": "file",  # a watched file
        "/w/two.md": "file",  # beside it, not watched
    }
    assert plan(state, roots, ["*.txt", "*.md"], [], stored) == Plan(
        ingest=["/w/docs/a.txt", "/w/docs/new.md", "/w/one.md"],
        remove=["/w/docs/old.txt", "/w/docs/sub/x.txt", "/w/docs/sub/y.txt"])
    assert "/w/docs/a.txt" not in asked  # a selected file needs no look at the store


def test_plan_removes_files_no_longer_selected_and_folders_emptied():
    roots = [Root("/w/docs", True)]
    held = {"/w/docs/a.txt", "/w/docs/draft.txt", "/w/docs/d/b.txt", "/w/docs/d/c.txt"}
    stored, _ = _stored(held)
    state = {"/w/docs/draft.txt": "file",  # now excluded
             "/w/docs/d": "dir", "/w/docs/d/b.txt": "file"}  # a changed folder: c.txt is no longer in it
    assert plan(state, roots, ["*.txt"], ["draft*"], stored) == Plan(
        ingest=["/w/docs/d/b.txt"], remove=["/w/docs/d/c.txt", "/w/docs/draft.txt"])
    assert not plan({}, roots, ["*.txt"], [], stored)


def test_survey_lists_a_folder_and_skips_hidden_folders_and_the_store(tmp_path):
    docs = tmp_path / "docs"
    write(docs, {"a.txt": "x", "sub/b.md": "y", "sub/.cache/c.txt": "z", ".git/d.txt": "w", ".e.txt": "v",
                 "store/f.txt": "s"})
    roots = [Root(src(docs), True)]
    paths = [str(docs / "sub"), str(docs / "gone.txt"), str(docs / ".git"), str(docs / ".git" / "d.txt"),
             str(docs / ".e.txt"), str(docs / "store" / "f.txt"), str(tmp_path / "elsewhere.txt")]
    assert survey(paths, roots, ignore=[src(docs / "store")]) == {
        src(docs / "sub"): "dir", src(docs / "sub" / "b.md"): "file", src(docs / "gone.txt"): "missing",
        src(docs / ".e.txt"): "file"}  # a hidden file is a file, as the walk takes it


# ---------------------------------------------------------------- a real watcher


class Watcher:
    """`rag ingest DOCS --watch --json` under tests/watch_probe.py: its report lines and the
    collection's snapshot after each job."""

    def __init__(self, tmp: Path, docs: Path, store: Path, kill_after_writes: int | None = None):
        self.snaps = tmp / f"snaps-{uuid.uuid4().hex[:6]}"
        self.snaps.mkdir()
        self.out, self.err = tmp / f"{self.snaps.name}.out", tmp / f"{self.snaps.name}.err"
        self.marker = uuid.uuid4().hex
        args = ["ingest", str(docs), "--watch", "--json", "--store", str(store), "--collection", "docs",
                "--batch-size", "2", *CLI_CHUNKING]
        if kill_after_writes is None:
            command = [sys.executable, str(TESTS / "watch_probe.py"), str(self.snaps)]
        else:
            command = [sys.executable, str(TESTS / "kill_after_writes.py"), str(kill_after_writes)]
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(command + args, cwd=tmp, stdout=out, stderr=err,
                                         env=cli_env(**{MARKER: self.marker}))

    def reports(self) -> list[dict]:
        lines = self.out.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{") and line.endswith("}")]

    def wait_reports(self, n: int, timeout: float = 240) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.reports()) < n:
            if self.proc.poll() is not None:
                raise AssertionError(f"watcher exited {self.proc.returncode}: {self.err.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no report {n} in {timeout} s: {self.err.read_text()[-3000:]}")
            time.sleep(0.1)
        return self.reports()

    def points(self, job: int) -> dict[str, tuple]:
        data = json.loads((self.snaps / f"{job}.json").read_text())
        return {pid: tuple(p) for pid, p in data["points"].items()}, data["count"]

    def settle_to(self, expected: dict[str, tuple], start: int, timeout: float = 240) -> list[dict]:
        """Wait for jobs after the first `start` (the count before the change: a job may end
        before this is called) until the collection after one of them holds exactly
        `expected`; the reports of the jobs it took."""
        deadline = time.monotonic() + timeout
        n = start
        while True:
            n += 1
            self.wait_reports(n, max(1.0, deadline - time.monotonic()))
            points, count = self.points(n)
            if points == expected:
                assert count == len(expected)
                return self.reports()[start:n]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def clean(tmp_path, encoder):
    """`clean(docs)`: the points of a clean ingest of the folder as it is now, in a new store."""
    runs = iter(range(1000))

    def points(docs: Path) -> dict[str, tuple]:
        settings = edge_settings(tmp_path / f"clean-{next(runs)}")
        report = ingest([docs], encoder=encoder, store=settings, chunker=small_chunker(), batch_size=2,
                        progress=False)
        assert not report.failed, report.failed
        return snapshot(settings).points

    return points


def statuses(reports: list[dict]) -> dict[str, str]:
    """source -> its last status other than unchanged over the reports."""
    out = {}
    for r in reports:
        for o in r["outcomes"]:
            if o["status"] != "unchanged":
                out[o["source"]] = o["status"]
    return out


@pytest.mark.slow
def test_watch_keeps_the_collection_equal_to_the_folder(tmp_path, clean):
    docs = tmp_path / "docs"
    write(docs, {"a.txt": sentences("alpha", 4), "b.md": f"# Beta\n\n{sentences('beta', 3)}\n"})
    w = Watcher(tmp_path, docs, tmp_path / "store")
    try:
        first = w.wait_reports(1)[0]
        assert {o["status"] for o in first["outcomes"]} == {"ingested"}
        assert w.points(1)[0] == clean(docs)

        before = len(w.reports())
        write(docs, {"c.txt": sentences("gamma", 3)})  # create
        assert statuses(w.settle_to(clean(docs), before)) == {src(docs / "c.txt"): "ingested"}

        before = len(w.reports())
        write(docs, {"a.txt": sentences("alpha", 5, 40)})  # modify
        assert statuses(w.settle_to(clean(docs), before)) == {src(docs / "a.txt"): "replaced"}

        before = len(w.reports())
        (docs / "b.md").unlink()  # delete
        assert statuses(w.settle_to(clean(docs), before)) == {src(docs / "b.md"): "pruned"}

        before = len(w.reports())
        (docs / "sub").mkdir()
        (docs / "c.txt").rename(docs / "sub" / "c2.txt")  # rename into a new folder
        assert statuses(w.settle_to(clean(docs), before)) == {src(docs / "c.txt"): "pruned",
                                                       src(docs / "sub" / "c2.txt"): "ingested"}

        before = len(w.reports())
        (docs / "sub").rename(docs / "moved")  # a folder renamed: its files follow
        assert statuses(w.settle_to(clean(docs), before)) == {src(docs / "sub" / "c2.txt"): "pruned",
                                                       src(docs / "moved" / "c2.txt"): "ingested"}

        before = len(w.reports())
        (docs / "a.txt").rename(docs / "a.txt.bak")  # renamed to a name no glob takes: gone
        (docs / ".scratch.tmp").write_text("not a document")  # ignored
        assert statuses(w.settle_to(clean(docs), before)) == {src(docs / "a.txt"): "pruned"}

        before = len(w.reports())
        burst = {f"burst/{i:02d}.txt": f"Burst file {i} mentions the {i} lantern." for i in range(50)}
        write(docs, burst)
        got = statuses(w.settle_to(clean(docs), before))
        assert got == {src(docs / name): "ingested" for name in burst}

        before = len(w.reports())
        slow = docs / "slow.md"
        with open(slow, "w") as f:  # written a sentence at a time, flushed each time
            for i in range(8):
                f.write(sentences("slow", 1, i) + " ")
                f.flush()
                time.sleep(0.25)
        assert statuses(w.settle_to(clean(docs), before))[src(slow)] in ("ingested", "replaced")

        assert w.stop() == 0  # SIGTERM: a clean stop
        assert not wait_gone(w.marker), "the watcher's loader outlived it"
    finally:
        if w.proc.poll() is None:
            w.proc.kill()


@pytest.mark.slow
def test_watcher_killed_during_a_change_then_restarted_repairs(tmp_path, clean, encoder):
    docs = tmp_path / "docs"
    write(docs, {"a.txt": sentences("alpha", 4), "b.txt": sentences("beta", 2)})
    store = tmp_path / "store"
    report = ingest([docs], encoder=encoder, store=edge_settings(store), chunker=small_chunker(), batch_size=2,
                    progress=False)
    assert not report.failed
    # The first pass finds everything unchanged (no writes); the change below is written in
    # batches of 2 chunks and the watcher dies once 2 writes have landed: a.txt's new version
    # half written beside its old one.
    w = Watcher(tmp_path, docs, store, kill_after_writes=2)
    try:
        w.wait_reports(1)
        write(docs, {"a.txt": sentences("alpha", 8, 50)})
        (docs / "b.txt").unlink()
        assert w.proc.wait(timeout=240) == -signal.SIGKILL
        assert not wait_gone(w.marker), "the killed watcher's loader outlived it"
    finally:
        if w.proc.poll() is None:
            w.proc.kill()

    again = Watcher(tmp_path, docs, store)
    try:
        first = again.wait_reports(1)[0]
        got = statuses([first])
        assert got[src(docs / "a.txt")] == "replaced"
        assert got.get(src(docs / "b.txt")) in (None, "pruned")  # None: its delete landed before the kill
        assert again.points(1)[0] == clean(docs)
        assert again.stop() == 0
    finally:
        if again.proc.poll() is None:
            again.proc.kill()


@pytest.mark.slow
def test_serve_watch_follows_a_folder_through_the_servers_writer(tmp_path, encoder):
    import httpx

    from pipelines.config import RagConfig
    from pipelines.server.app import create_app, serve_in_background
    from pipelines.server.options import ServeOptions

    docs = tmp_path / "docs"
    write(docs, {"a.txt": sentences("alpha", 2), "old.md": sentences("omega", 2)})
    store = tmp_path / "store"
    settings = edge_settings(store)
    assert not ingest([docs / "old.md"], encoder=encoder, store=settings, chunker=small_chunker(),
                      progress=False).failed  # the collection's chunking; old.md is stored already
    (docs / "old.md").unlink()  # gone while the server was down: pruned at start
    cfg = RagConfig(store={"dir": str(store), "collection": "docs"}, llm={"backend": "none"})
    app = create_app(cfg, ServeOptions(watch=[str(docs)]), encoder=encoder)

    def sources(c) -> set[str]:
        return {d["source"] for d in c.get("/v1/documents").json()["data"]}

    def until(c, wanted: set[str], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while (got := sources(c)) != wanted:
            assert time.monotonic() < deadline, got
            time.sleep(0.2)

    with serve_in_background(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        until(c, {src(docs / "a.txt")})
        write(docs, {"b.md": sentences("beta", 2)})
        until(c, {src(docs / "a.txt"), src(docs / "b.md")})
        (docs / "a.txt").rename(docs / "c.txt")
        until(c, {src(docs / "c.txt"), src(docs / "b.md")})
        hits = c.post("/v1/search", json={"query": "beta note", "top_k": 1}).json()["results"]
        assert hits[0]["source"] == src(docs / "b.md")
    assert app.state.rag.watching is None  # stopped with the server
