"""The ingest job is idempotent: unchanged files are skipped, a changed file replaces its old
chunks, deleted files are pruned on request, and a file that fails is reported and writes
nothing (an earlier good version of it stays)."""

from __future__ import annotations

import os

import pytest

from helpers_ingest import (edge_settings, local_settings, sentences, sha256, small_chunker, snapshot,
                            src, text_index_for, write)
from pipelines.ingest import ingest
from pipelines.stores import open_store

BINARY = bytes(range(256)) * 8

def run(paths, settings, encoder, **kw):
    return ingest(paths, encoder=encoder, store=settings, chunker=small_chunker(),
                  text_index=text_index_for(settings), batch_size=4, progress=False, **kw)


def statuses(report) -> dict[str, str]:
    out = {o.source: o.status for o in report.outcomes}
    assert len(out) == len(report.outcomes), "a source was reported twice"
    return out


def chunk_counts(report) -> dict[str, int]:
    return {o.source: o.chunks for o in report.outcomes}


def beta_md(version: int) -> str:
    return f"# Beta\n\n{sentences('beta', 3)}\n\n## Details v{version}\n\n{sentences('beta', 2, 10)}\n"


@pytest.mark.parametrize("backend", ["edge", "local"])
def test_rerun_change_delete_and_prune(backend, tmp_path, encoder):
    settings = (edge_settings if backend == "edge" else local_settings)(tmp_path / "store")
    docs = tmp_path / "docs"
    f = write(docs, {"alpha.txt": sentences("alpha", 4), "beta.md": beta_md(1),
                     "gamma.txt": sentences("gamma", 6), "notes.rst": sentences("rst", 2)})
    a, b, g = src(f["alpha.txt"]), src(f["beta.md"]), src(f["gamma.txt"])

    # 1. First run: every supported file is ingested (.rst is not picked by the default globs).
    r1 = run([docs], settings, encoder)
    assert statuses(r1) == {a: "ingested", b: "ingested", g: "ingested"}
    assert r1.counts() == {"ingested": 3, "replaced": 0, "unchanged": 0, "failed": 0, "pruned": 0}
    n1 = chunk_counts(r1)
    assert n1[a] == 2 and n1[g] == 3 and n1[b] >= 2
    assert r1.chunks_written == r1.total_points == sum(n1.values())
    s1 = snapshot(settings)
    assert s1.count == len(s1.ids) == r1.total_points
    for name, source in (("alpha.txt", a), ("beta.md", b), ("gamma.txt", g)):
        assert s1.versions(source) == {sha256(f[name]): (n1[source], n1[source])}

    # 2. Same files again: nothing is encoded or written.
    r2 = run([docs], settings, encoder)
    assert statuses(r2) == {a: "unchanged", b: "unchanged", g: "unchanged"}
    assert chunk_counts(r2) == n1
    assert r2.chunks_written == 0
    assert r2.total_points == r1.total_points
    assert snapshot(settings).points == s1.points

    # 3. gamma rewritten (longer, every chunk different), beta deleted, no prune.
    f["gamma.txt"].write_text(sentences("gamma", 9, 50))
    f["beta.md"].unlink()
    r3 = run([docs], settings, encoder)
    assert statuses(r3) == {a: "unchanged", g: "replaced"}  # beta is not mentioned without prune
    assert chunk_counts(r3)[g] == 5
    assert r3.chunks_written == 5
    s3 = snapshot(settings)
    assert s3.versions(g) == {sha256(f["gamma.txt"]): (5, 5)}  # only the new version
    with open_store(settings) as store:  # as the store itself reports it
        assert [(v.file_hash, v.points, v.expected) for v in store.file_versions(g)] == [
            (sha256(f["gamma.txt"]), 5, 5)]
    assert not s3.ids_of(g) & s1.ids_of(g)  # old chunks gone
    assert s3.ids_of(a) == s1.ids_of(a)
    assert s3.ids_of(b) == s1.ids_of(b)  # deleted file's chunks stay without prune
    assert s3.count == len(s3.ids) == r3.total_points == n1[a] + n1[b] + 5

    # 4. With prune: the deleted file's chunks go, nothing else is touched.
    r4 = run([docs], settings, encoder, prune=True)
    assert statuses(r4) == {a: "unchanged", g: "unchanged", b: "pruned"}
    assert r4.chunks_written == 0
    s4 = snapshot(settings)
    assert s4.sources == {a, g}
    assert s4.points == {i: p for i, p in s3.points.items() if p[0] != b}
    assert s4.count == r4.total_points == n1[a] + 5

    # 5. Pruning again finds nothing to do.
    r5 = run([docs], settings, encoder, prune=True)
    assert statuses(r5) == {a: "unchanged", g: "unchanged"}
    assert snapshot(settings).points == s4.points


def test_failed_files_are_reported_and_write_nothing(tmp_path, encoder):
    settings = edge_settings(tmp_path / "store")
    docs = tmp_path / "docs"
    f = write(docs, {"good.txt": sentences("good", 4), "empty.txt": b"", "blob.txt": BINARY,
                     "spaces.md": "   \n\n  \t \n"})
    missing = tmp_path / "missing.txt"
    good, empty, blob, spaces = (src(f[n]) for n in ("good.txt", "empty.txt", "blob.txt", "spaces.md"))

    r1 = run([docs, missing, f["good.txt"]], settings, encoder)  # good.txt named twice: once
    assert statuses(r1) == {str(missing): "failed", good: "ingested", empty: "failed", blob: "failed",
                            spaces: "failed"}
    reasons = {o.source: o.reason for o in r1.failed}
    assert "no such file" in reasons[str(missing)]
    assert "empty file (0 bytes)" in reasons[empty]
    assert "binary" in reasons[blob]
    assert "no text" in reasons[spaces]
    assert all(o.chunks == 0 for o in r1.failed)
    s1 = snapshot(settings)
    assert s1.sources == {good}  # nothing of the failed files
    assert s1.count == r1.total_points == r1.chunks_written == 2

    # good.txt turns into a binary file: it fails, and its last good version stays searchable.
    old_hash = sha256(f["good.txt"])
    f["good.txt"].write_bytes(BINARY + b"changed")
    r2 = run([docs], settings, encoder)
    assert statuses(r2) == {good: "failed", empty: "failed", blob: "failed", spaces: "failed"}
    assert "binary" in {o.source: o.reason for o in r2.failed}[good]
    assert r2.chunks_written == 0
    s2 = snapshot(settings)
    assert s2.points == s1.points
    assert s2.versions(good) == {old_hash: (2, 2)}
    assert r2.total_points == 2


def test_include_and_exclude_globs(tmp_path, encoder):
    settings = edge_settings(tmp_path / "store")
    docs = tmp_path / "docs"
    f = write(docs, {"a.txt": sentences("a", 2), "b.md": f"# B\n\n{sentences('b', 2)}",
                     "sub/c.txt": sentences("c", 2), "sub/skip_d.txt": sentences("d", 2),
                     ".hidden/e.txt": sentences("e", 2)})
    a, b, c = src(f["a.txt"]), src(f["b.md"]), src(f["sub/c.txt"])

    r1 = run([docs], settings, encoder, include=["*.txt"], exclude=["skip_*"])
    assert statuses(r1) == {a: "ingested", c: "ingested"}
    assert snapshot(settings).sources == {a, c}

    # Globs also match the path relative to the walked folder. With prune, a file under that
    # folder that the globs no longer select is removed although it still exists.
    r2 = run([docs], settings, encoder, include=["*.md", "*.txt"], exclude=["sub/*"], prune=True)
    assert statuses(r2) == {a: "unchanged", b: "ingested", c: "pruned"}
    assert snapshot(settings).sources == {a, b}
    assert os.path.exists(c)
