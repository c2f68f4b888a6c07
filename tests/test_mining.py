"""Paraphrase mining: exact against a brute-force reference, across tile boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from rag.training.mining import mine_pairs


def brute_force(x: np.ndarray, threshold: float):
    sims = x @ x.T
    return sorted(((i, j, float(sims[i, j])) for i in range(len(x)) for j in range(i + 1, len(x))
                   if sims[i, j] >= threshold), key=lambda t: (-t[2], t[0], t[1]))


@pytest.mark.parametrize("block", [1, 3, 7, 64])
def test_matches_brute_force_for_any_tile_size(block):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(20, 16)).astype(np.float32)
    x = np.concatenate([base, base[:6] + 0.05 * rng.normal(size=(6, 16)).astype(np.float32)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    got = mine_pairs(x, 0.9, block=block)
    want = brute_force(x, 0.9)
    assert [(i, j) for i, j, _ in got] == [(i, j) for i, j, _ in want]
    assert [s for *_, s in got] == pytest.approx([s for *_, s in want], abs=1e-6)
    assert {(i, j) for i, j, _ in got} >= {(k, 20 + k) for k in range(6)}  # the planted near-duplicates


def test_edge_cases():
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    assert mine_pairs(x, 0.99, normalized=False) == [(0, 1, pytest.approx(1.0))]
    assert mine_pairs(x[:1], 0.5) == []
    assert mine_pairs(np.zeros((0, 2), dtype=np.float32), 0.5) == []
    with pytest.raises(ValueError):
        mine_pairs(x, 1.5)


def test_real_paraphrases_are_found(encoder):
    texts = ["A man is playing a guitar.", "The stock market fell today.", "A man plays the guitar.",
             "Shares dropped sharply on the exchange today.", "A cat sleeps on the sofa."]
    pairs = mine_pairs(encoder.encode(texts), 0.6)
    found = {(i, j) for i, j, _ in pairs}
    assert (0, 2) in found
    assert all(s >= 0.6 for *_, s in pairs)
    assert (0, 4) not in found


# Long enough that the small test chunker (32 tokens) puts the boilerplate in a chunk of its own.
LONG_A = ("Revenue grew ten percent in the third quarter, driven by strong demand for cloud services in "
          "Europe and Asia, while costs stayed flat.")
LONG_B = ("The board approved a new share buyback programme worth two billion dollars, to be completed "
          "over the next eighteen months.")


def test_read_texts(tmp_path):
    from rag.errors import ConfigError
    from rag.training.mining import read_texts

    (tmp_path / "a.txt").write_text("one\n\ntwo\n")
    assert read_texts(tmp_path / "a.txt") == ["one", "two"]
    (tmp_path / "s.csv").write_text("g\tf\ty\t0\t4.0\tA b.\tC d.\ng\tf\ty\t1\t1.0\tA b.\tE f.\n")
    assert read_texts(tmp_path / "s.csv") == ["A b.", "C d.", "E f."]  # STS-B: unique sentences
    (tmp_path / "t.jsonl").write_text('{"text": "x"}\n{"body": "y"}\n')
    with pytest.raises(ConfigError, match=r"t.jsonl:2: no key 'text'"):
        read_texts(tmp_path / "t.jsonl")


def test_cli_mine_file_and_collection(tmp_path, capsys, encoder):
    import json

    from helpers_ingest import edge_settings, small_chunker
    from pipelines.cli import main
    from pipelines.ingest import ingest

    f = tmp_path / "s.txt"
    f.write_text("A man is playing a guitar.\nThe stock market fell today.\nA man plays the guitar.\n")
    assert main(["mine", str(f), "--threshold", "0.6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["texts"] == 3 and [(p["i"], p["j"]) for p in out["pairs"]] == [(0, 2)]
    docs = tmp_path / "docs"
    docs.mkdir()
    boiler = "This filing contains forward-looking statements that involve risks and uncertainties."
    (docs / "a.txt").write_text(f"{LONG_A}\n\n{boiler}")
    (docs / "b.txt").write_text(f"{LONG_B}\n\n{boiler}")
    settings = edge_settings(tmp_path / "store")
    ingest([docs], encoder=encoder, store=settings, chunker=small_chunker(), progress=False)
    assert main(["mine", "--collection", settings.collection, "--store", settings.store_dir,
                 "--threshold", "0.95"]) == 0
    assert "forward-looking" in capsys.readouterr().out
    assert main(["mine", "--threshold", "0.9"]) == 2


def test_ingest_flags_or_skips_near_duplicates_and_stays_idempotent(tmp_path, encoder):
    from helpers_ingest import edge_settings, small_chunker
    from pipelines.ingest import ingest
    from pipelines.stores import open_store

    docs = tmp_path / "docs"
    docs.mkdir()
    boiler = "This filing contains forward-looking statements that involve risks and uncertainties."
    (docs / "a.txt").write_text(f"{LONG_A}\n\n{boiler}")
    (docs / "b.txt").write_text(f"{LONG_B}\n\n{boiler}")
    (docs / "c.txt").write_text(boiler)

    def run(store, action):
        return ingest([docs], encoder=encoder, store=edge_settings(store), chunker=small_chunker(),
                      progress=False, batch_size=2, near_duplicates=action, dup_threshold=0.95)

    flagged = run(tmp_path / "s1", "flag")
    skipped = run(tmp_path / "s2", "skip")
    assert flagged.near_duplicates == skipped.near_duplicates == 2  # the boilerplate in b and c
    ex = skipped.near_duplicate_examples
    assert {d.source.rsplit("/", 1)[-1] for d in ex} == {"b.txt", "c.txt"}
    # With document context each file's title is embedded with its chunks, so the same sentence
    # under "b" or "c" may score under 0.95 against "a"; a repeated text is a duplicate anyway.
    assert all(d.duplicate_of.endswith("a.txt") and d.text == boiler for d in ex)
    assert skipped.total_points == flagged.total_points - 2
    c_outcome = next(o for o in skipped.outcomes if o.source.endswith("c.txt"))
    assert c_outcome.chunks == 0 and "near-duplicate" in c_outcome.warnings[0]
    again = run(tmp_path / "s2", "skip")  # idempotent: b is complete with its kept chunk
    counts = again.counts()
    assert counts["unchanged"] == 2 and again.chunks_written == 0 and again.total_points == skipped.total_points
    vs = open_store(edge_settings(tmp_path / "s2"))
    try:
        assert vs.count() == skipped.total_points
    finally:
        vs.close()


@pytest.mark.parametrize("block", [1, 4, 7, 64])
def test_similarity_tiles_cover_each_pair_once(block):
    from rag.embed.similarity import similarity_tiles

    rng = np.random.default_rng(1)
    x = rng.normal(size=(23, 8)).astype(np.float32)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    full = unit @ unit.T
    seen = np.zeros((23, 23), dtype=int)
    for a, b, tile in similarity_tiles(x, block, normalized=False):
        assert tile.shape[0] <= block and tile.shape[1] <= block
        r, c = np.nonzero(np.isfinite(tile))
        seen[r + a, c + b] += 1
        np.testing.assert_allclose(tile[r, c], full[r + a, c + b], atol=1e-5)
    assert (seen == np.triu(np.ones((23, 23), dtype=int), k=1)).all()  # i < j, each exactly once
    tiles = list(similarity_tiles(unit, block, upper_only=False))
    assert sum(t.size for _, _, t in tiles) == 23 * 23


@pytest.mark.parametrize("block", [1, 3, 8, 1024])
def test_best_earlier_matches_a_row_by_row_scan(block):
    """The near-duplicate check of an ingest batch: for each row, the most similar earlier row."""
    from rag.embed.similarity import best_earlier

    rng = np.random.default_rng(2)
    base = rng.normal(size=(15, 8)).astype(np.float32)
    x = np.concatenate([base, base[[3, 3, 9]]])  # exact repeats: ties go to the earliest row
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index, score = best_earlier(x, block)
    assert index[0] == -1 and score[0] == -np.inf
    sims = x @ x.T
    for i in range(1, len(x)):
        j = int(np.argmax(sims[i, :i]))
        assert index[i] == j and score[i] == pytest.approx(sims[i, j], abs=1e-6)
    assert index[15:].tolist() == [3, 3, 9]
