"""Cross-encoder reranking: the model format (scores equal sentence-transformers' CrossEncoder),
the second stage in the retriever (order, depth, explain), training one from a BEIR folder's
qrels with mined hard negatives, and the CLI (`rag train cross-encoder`, `--rerank`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.cli import main
from rag.errors import ConfigError
from rag.search.rerank import CrossEncoderReranker, rerank_order

CORPUS = [
    ("d1", "Espresso", "Espresso is coffee brewed with hot water under nine bars of pressure."),
    ("d2", "Green tea", "Green tea is steeped at eighty degrees for three minutes."),
    ("d3", "Bicycle chains", "A bicycle chain needs oil every few hundred kilometres."),
    ("d4", "Glaciers", "Glaciers are slow rivers of ice that carve deep valleys."),
    ("d5", "Volcanoes", "Volcanoes erupt molten rock called lava from the mantle."),
    ("d6", "Sourdough", "Sourdough bread rises with a starter of wild yeast and bacteria."),
    ("d7", "Tides", "Tides rise and fall twice a day, pulled by the moon."),
    ("d8", "Tyres", "Bicycle tyres need pumping to the pressure printed on their side."),
]
TRAIN = {"t1": ("how is espresso made", "d1"), "t2": ("steeping green tea", "d2"),
         "t3": ("oil for a bike chain", "d3"), "t4": ("how glaciers shape valleys", "d4"),
         "t5": ("what comes out of a volcano", "d5"), "t6": ("baking bread with wild yeast", "d6"),
         "t7": ("why the sea rises twice daily", "d7"), "t8": ("inflating bike tyres", "d8")}
TEST = {"q1": ("coffee under pressure", "d1"), "q2": ("moon and the sea", "d7")}


@pytest.fixture()
def beir(tmp_path):
    root = tmp_path / "tiny"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n"
                                               for i, t, x in CORPUS))
    queries = {**TRAIN, **TEST}
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n"
                                                for q, (t, _) in queries.items()))
    for split, qs in (("train", TRAIN), ("test", TEST)):
        (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                                     "".join(f"{q}\t{d}\t1\n" for q, (_, d) in qs.items()))
    return root


@pytest.fixture(scope="module")
def random_head(tmp_path_factory):
    """A cross-encoder with an untrained head on the default MiniLM weights, saved."""
    import torch

    torch.manual_seed(0)
    r = CrossEncoderReranker("sentence-transformers/all-MiniLM-L6-v2", device="cpu", head_init=True, max_length=128)
    return r.save(tmp_path_factory.mktemp("ce") / "random-head")


def test_scores_equal_sentence_transformers_cross_encoder(random_head):
    from sentence_transformers import CrossEncoder

    pairs = [("how is espresso made", CORPUS[0][2]), ("how is espresso made", CORPUS[1][2]),
             ("glaciers", CORPUS[3][2]), ("a much longer question about volcanoes and lava flows", CORPUS[4][2])]
    ours = CrossEncoderReranker(str(random_head), device="cpu", batch_size=3).score(pairs)
    theirs = CrossEncoder(str(random_head), device="cpu").predict(pairs)
    assert ours.shape == (4,) and np.all((ours > 0) & (ours < 1))  # sigmoid, as predict applies
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert rerank_order([0.2, 0.9, 0.2, 0.5]) == [1, 3, 0, 2]  # ties keep the first stage's order


def test_a_sentence_encoder_is_refused_as_a_reranker(tmp_path):
    with pytest.raises(ConfigError, match="not a cross-encoder"):
        CrossEncoderReranker("sentence-transformers/all-MiniLM-L6-v2").warm_up()
    with pytest.raises(ConfigError, match="not a model folder"):
        CrossEncoderReranker(str(tmp_path)).warm_up()


def test_retriever_reranks_the_first_candidates_and_explains(beir, tmp_path, encoder, random_head):
    from pipelines.evaluate import corpus_collection
    from pipelines.stores import StoreSettings, open_store
    from rag.ingest.chunking import Chunker
    from rag.search.retrieval import Retriever

    store = StoreSettings(store_dir=str(tmp_path / "store"), collection="tiny")
    corpus_collection(str(beir), encoder, store, Chunker(), progress=False)
    reranker = CrossEncoderReranker(str(random_head), device="cpu")
    vs = open_store(store)
    try:
        plain = Retriever(vs, encoder, top_k=8).search("bicycle pressure", explain=True).results
        rr = Retriever(vs, encoder, top_k=8, reranker=reranker, rerank_depth=4)
        resp = rr.search("bicycle pressure", explain=True)
        res = resp.results
        # The first 4 fused candidates, rescored by the cross-encoder on their indexed text, in its order ...
        head = plain[:4]
        scores = reranker.score([("bicycle pressure", vs.retrieve([h.id])[0].payload["index_text"]) for h in head])
        assert [r.id for r in res[:4]] == [head[i].id for i in rerank_order(list(scores))]
        np.testing.assert_allclose([r.score for r in res[:4]], sorted(scores, reverse=True), atol=1e-5)
        # ... the rest in fused order with fused scores, and explain shows both stages.
        assert [(r.id, r.score) for r in res[4:]] == [(p.id, p.score) for p in plain[4:]]
        assert all({"dense", "fused"} <= set(r.legs) for r in res) and any("bm25" in r.legs for r in res)
        assert [r.legs["rerank"].rank for r in res[:4]] == [1, 2, 3, 4] and "rerank" not in res[5].legs
        assert any("reranked the first 4" in n for n in resp.notes)
        # Same ranking through the engine's fused path (no explain), and from to_dict.
        again = Retriever.from_dict(rr.to_dict(), vs, encoder).search("bicycle pressure")
        assert [r.id for r in again.results] == [r.id for r in res]
    finally:
        vs.close()


def test_train_cross_encoder_then_rerank_from_the_cli(beir, tmp_path, capsys):
    store, out = str(tmp_path / "store"), tmp_path / "ce"
    assert main(["train", "cross-encoder", str(beir), "--store", store, "--out", str(out), "--holdout", "2",
                 "--epochs", "3", "--lr", "1e-4", "--batch-size", "4", "--max-length", "64", "--negatives", "2",
                 "--mine-depth", "8", "--dev-depth", "8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["loss"] == "bce" and len(report["epochs"]) == 3 and report["dev_metric"] == "ndcg@10"
    assert report["first_stage_dev_score"] is not None and report["best_dev_score"] is not None
    # 6 training queries (2 held out): 6 positives and 2 mined negatives each.
    assert report["examples"] == 6 * 3
    assert report["epochs"][-1]["train_loss"] < report["epochs"][0]["train_loss"]

    ce = CrossEncoderReranker(str(out), device="cpu")
    ce.warm_up()
    assert ce.max_length == 64  # recorded with the model
    pos = ce.score([(q, dict((i, t + "\n\n" + x) for i, t, x in CORPUS)[d]) for q, d in TRAIN.values()])
    neg = ce.score([(q, CORPUS[(int(d[1:]) % 8)][1] + "\n\n" + CORPUS[(int(d[1:]) % 8)][2])
                    for q, d in TRAIN.values()])
    assert pos.mean() > neg.mean()  # it learnt which passage answers which query

    rep = tmp_path / "eval.json"
    assert main(["eval", "retrieval", str(beir), "--store", store, "--modes", "hybrid", "--rerank", str(out),
                 "--rerank-depth", "3", "--no-progress", "--out", str(rep)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(rep.read_text())
    assert [r["mode"] for r in data["results"]] == ["hybrid", "hybrid+rerank@3"]
    assert data["results"][1]["settings"]["rerank_depth"] == 3 and "rerank ce top 3" in printed

    assert main(["search", "coffee under pressure", "--store", store, "--collection", "beir-tiny", "--rerank",
                 str(out), "--rerank-depth", "3", "--explain"]) == 0
    assert "rerank rank/score" in capsys.readouterr().out
    assert main(["search", "coffee", "--store", store, "--collection", "beir-tiny", "--rerank",
                 str(tmp_path / "missing")]) == 2
    assert "not a model folder" in capsys.readouterr().err
