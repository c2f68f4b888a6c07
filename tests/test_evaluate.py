"""`rag eval retrieval` on a tiny BEIR folder, and `rag search` from the command line."""

from __future__ import annotations

import json

import pytest

from pipelines.cli import main
from pipelines.evaluate import collapse, eval_retrieval
from pipelines.stores import StoreSettings
from rag.evaluation.beir import load_beir
from rag.errors import ConfigError

CORPUS = [
    ("d1", "Espresso", "Espresso is coffee brewed with hot water under nine bars of pressure."),
    ("d2", "Green tea", "Green tea is steeped at eighty degrees for three minutes."),
    ("d3", "Bicycle chains", "A bicycle chain needs oil every few hundred kilometres."),
    ("d4", "Glaciers", "Glaciers are slow rivers of ice that carve deep valleys."),
    ("d5", "Volcanoes", "Volcanoes erupt molten rock called lava from the mantle."),
]
QUERIES = {"q1": "how is espresso brewed", "q2": "oiling a bike chain", "q3": "ice carving valleys",
           "q4": "unjudged query"}
QRELS = [("q1", "d1", 1), ("q2", "d3", 1), ("q3", "d4", 1)]


@pytest.fixture()
def beir(tmp_path):
    root = tmp_path / "tiny"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n"
                                               for i, t, x in CORPUS))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                             "".join(f"{q}\t{d}\t{s}\n" for q, d, s in QRELS))
    return root


def test_eval_reports_each_mode_and_reuses_the_collection(beir, tmp_path, encoder):
    store = StoreSettings(store_dir=str(tmp_path / "store"), collection="tiny")
    report = eval_retrieval(str(beir), encoder=encoder, store=store, progress=False)
    assert report.queries == 3  # only judged queries
    assert [r.mode for r in report.results] == ["dense", "bm25", "hybrid"]
    for r in report.results:
        assert r.metrics["recall@100"] == 1.0  # five documents: everything is retrieved
        assert r.metrics["ndcg@10"] > 0.9, r  # each query has one obvious answer
    assert report.ingest["ingested"] == 5
    again = eval_retrieval(str(beir), encoder=encoder, store=store, modes=["bm25"], progress=False)
    assert again.ingest["unchanged"] == 5 and again.ingest["ingested"] == 0
    assert again.results[0].metrics == report.results[1].metrics


def test_beir_folder_errors(tmp_path):
    with pytest.raises(ConfigError, match="not a BEIR folder"):
        load_beir(tmp_path)


def test_collapse_keeps_best_rank_per_document():
    assert collapse(["a", "b", "a", "c", "b"], depth=2) == ["a", "b"]


def test_cli_eval_and_search(beir, tmp_path, capsys):
    store = str(tmp_path / "store")
    out = tmp_path / "report.json"
    assert main(["eval", "retrieval", str(beir), "--store", store, "--no-progress", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert {r["mode"] for r in data["results"]} == {"dense", "bm25", "hybrid"}
    capsys.readouterr()
    assert main(["search", "espresso pressure", "--store", store, "--collection", "beir-tiny", "--json",
                 "--explain", "-k", "2"]) == 0
    resp = json.loads(capsys.readouterr().out)
    assert resp["results"][0]["source"] == "d1" and resp["results"][0]["legs"]["bm25"]["rank"] == 1
    assert main(["search", "espresso", "--store", store, "--collection", "beir-tiny"]) == 0
    assert "d1" in capsys.readouterr().out
    assert main(["search", "espresso", "--store", store, "--collection", "missing"]) == 2
    err = capsys.readouterr().err
    assert "rag: error: collection 'missing' does not exist" in err and "Traceback" not in err
    assert main(["search", "espresso", "--store", store, "--collection", "beir-tiny", "--weights", "x"]) == 2


def test_default_collection_depends_on_the_model(tmp_path):
    from pipelines.evaluate import default_collection, model_slug

    assert default_collection(str(tmp_path / "scifact")) == "beir-scifact"
    assert default_collection(str(tmp_path / "scifact"), "/tmp/models/SciFact MNR/") == "beir-scifact-scifact-mnr"
    assert model_slug("BAAI/bge-small-en-v1.5") == "bge-small-en-v1-5"


def test_cli_eval_with_another_model_uses_its_own_collection(beir, tmp_path, capsys, encoder):
    from pipelines.stores import open_store
    model = tmp_path / "my-model"
    encoder.save(model)  # same weights, another id
    store = str(tmp_path / "store")
    assert main(["eval", "retrieval", str(beir), "--store", store, "--no-progress", "--modes", "bm25"]) == 0
    assert main(["eval", "retrieval", str(beir), "--store", store, "--no-progress", "--modes", "dense",
                 "--model", str(model), "--out", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["collection"].endswith("beir-tiny-my-model")
    for name, recorded in (("beir-tiny", "sentence-transformers/all-MiniLM-L6-v2"),
                           ("beir-tiny-my-model", model.resolve().as_posix())):
        vs = open_store(StoreSettings(store_dir=store, collection=name))
        try:
            assert vs.info.model == recorded and vs.count() == 5
        finally:
            vs.close()
