"""`rag cluster`: community detection equal to sentence-transformers' on the same vectors, whatever
the tile size or memory budget; labels by BM25 weight; the command over a file and a collection."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rag.embed.clustering import cluster, community_detection, describe
from rag.text.keywords import top_terms, words


def blobs(seed: int = 0, dim: int = 32) -> np.ndarray:
    """Groups of unequal size and spread around random directions, plus scattered points."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, dim))
    spread = (0.3, 0.4, 0.5, 0.6, 0.3, 0.7, 0.5, 0.4)
    sizes = (60, 40, 30, 25, 15, 12, 8, 50)
    x = np.concatenate([c + rng.normal(scale=s, size=(k, dim)) for c, s, k in zip(centres, spread, sizes)]
                       + [rng.normal(size=(200, dim))]).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


CASES = [(0.75, 10), (0.6, 5), (0.5, 3), (0.9, 2)]


@pytest.mark.parametrize("threshold,min_size", CASES)
def test_same_communities_as_sentence_transformers(threshold, min_size):
    torch = pytest.importorskip("torch")
    from sentence_transformers import util

    x = blobs()
    sims = x @ x.T
    assert np.min(np.abs(sims - threshold)) > 1e-5  # no pair so close that rounding could decide it
    reference = util.community_detection(torch.tensor(x), threshold=threshold, min_community_size=min_size)
    assert len(reference) >= 2
    # tile sizes across boundaries; a budget of 50 or 0 kept members forces the recompute path
    for block, budget in [(1024, 10**9), (7, 10**9), (13, 50), (5, 0)]:
        got = community_detection(x, threshold, min_size, block=block, max_neighbors=budget)
        assert [c.tolist() for c in got] == reference, (block, budget)


def test_communities_are_disjoint_large_enough_and_around_their_centre():
    x = blobs(seed=3)
    got = community_detection(x, 0.6, 5)
    seen = np.concatenate(got)
    assert len(seen) == len(set(seen.tolist()))
    assert [len(c) for c in got] == sorted((len(c) for c in got), reverse=True)
    for c in got:
        assert len(c) >= 5
        assert np.all(x[c] @ x[c[0]] >= 0.6 - 1e-6)  # every member within the threshold of the centre


def test_small_empty_unnormalised_and_bad_input():
    x = blobs()
    assert community_detection(x[:3], 0.5, min_size=4) == []
    assert community_detection(np.zeros((0, 4), dtype=np.float32), 0.5) == []
    scaled = community_detection(x * 7.0, 0.6, 5, normalized=False)
    assert [c.tolist() for c in scaled] == [c.tolist() for c in community_detection(x, 0.6, 5)]
    singletons = community_detection(x[:20], 0.999, min_size=1)  # every text its own community
    assert sorted(int(c[0]) for c in singletons) == list(range(20))
    for bad in (dict(threshold=1.5), dict(min_size=0), dict(block=0)):
        with pytest.raises(ValueError):
            community_detection(x, **{"threshold": 0.5, **bad})


def test_progress_counts_every_row_once():
    x = blobs()
    done = []
    community_detection(x, 0.7, 5, block=64, on_rows=done.append)
    assert sum(done) == len(x) and len(done) == -(-len(x) // 64)


def test_words_drop_stop_words_numbers_and_possessives():
    assert words("The company's revenue in 2023 grew by 12 % and the iPhone's sales, too.") == \
        ["company", "revenue", "grew", "iphone", "sales"]


def test_top_terms_prefer_what_sets_the_group_apart():
    texts = ["the guitar player tuned his guitar", "a guitar and a drum", "guitars on stage tonight",
             "the market fell today", "market shares dropped", "the weather is fine today"]
    labels = top_terms(texts, [[0, 1, 2], [3, 4]], k=3)
    assert labels[0][0][0] == "guitar"  # in all three (the plural counted with it), nowhere else
    assert labels[1][0][0] == "market"
    assert "today" not in [t for t, _ in labels[1][:1]]  # also in a text outside the group
    assert all(w > 0 for ts in labels for _, w in ts)
    assert top_terms(texts, [[0]], k=0) == [[]]


def test_describe_picks_the_member_nearest_the_mean():
    x = np.array([[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1]], dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    c = describe(["a", "b", "c", "d"], x, [np.array([0, 1, 2, 3])], terms=0)[0]
    assert (c.id, c.size, c.members) == (1, 4, [0, 1, 2, 3])
    assert c.central in (1, 2)  # the two middle directions, not an end


def test_cluster_sentences_with_the_real_encoder(encoder):
    texts = ["A man is playing a guitar.", "A man plays the guitar.", "Someone is playing guitar.",
             "The stock market fell today.", "Stocks dropped sharply on Wall Street.", "The stock market declined.",
             "I had pizza for dinner."]
    found = cluster(texts, encoder.encode(texts), threshold=0.5, min_size=3)
    groups = sorted(sorted(c.members) for c in found)
    assert groups == [[0, 1, 2], [3, 4, 5]]
    by_first = {min(c.members): c for c in found}
    assert "guitar" in [t for t, _ in by_first[0].terms[:2]]
    assert "stock" in [t for t, _ in by_first[3].terms[:2]]
    with pytest.raises(ValueError, match="texts but"):
        cluster(texts[:2], encoder.encode(texts))


def test_cli_cluster_a_file_and_a_collection(tmp_path, capsys, encoder):
    from helpers_ingest import edge_settings, small_chunker
    from pipelines.cli import main
    from pipelines.ingest import ingest

    f = tmp_path / "s.txt"
    f.write_text("A man is playing a guitar.\nThe stock market fell today.\nA man plays the guitar.\n"
                 "Someone is playing guitar.\nI had pizza for dinner.\n")
    assert main(["cluster", str(f), "--threshold", "0.5", "--min-size", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["texts"], out["clustered"], out["unclustered"]) == (5, 3, 2)
    (c,) = out["clusters"]
    assert sorted(m["index"] for m in c["members"]) == [0, 2, 3] and "guitar" in c["central"]["text"]
    tsv = tmp_path / "c.tsv"
    assert main(["cluster", str(f), "--threshold", "0.5", "--min-size", "3", "--out", str(tsv)]) == 0
    table = capsys.readouterr().out
    assert "1 clusters" in table and "guitar" in table
    assert len(tsv.read_text().splitlines()) == 1 + 3

    docs = tmp_path / "docs"
    docs.mkdir()
    for k in range(4):
        (docs / f"g{k}.txt").write_text(f"Guitar lesson {k}: a man is playing the guitar on stage.")
    (docs / "m.txt").write_text("The stock market fell sharply today on Wall Street.")
    settings = edge_settings(tmp_path / "store")
    ingest([docs], encoder=encoder, store=settings, chunker=small_chunker(), progress=False)
    assert main(["cluster", "--collection", settings.collection, "--store", settings.store_dir,
                 "--threshold", "0.6", "--min-size", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (c,) = out["clusters"]
    assert c["size"] == 4 and {m["source"].rsplit("/", 1)[-1] for m in c["members"]} == \
        {f"g{k}.txt" for k in range(4)}
    assert all(m["id"] for m in c["members"])
    assert main(["cluster", "--threshold", "0.9"]) == 2  # neither a file nor a collection
    assert main(["cluster", str(f), "--threshold", "2"]) == 2
