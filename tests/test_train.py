"""Fine-tuning: a tiny real run; the output folder loads in our encoder and in sentence-transformers."""

from __future__ import annotations

import numpy as np

from rag.embed.encoder import SentenceEncoder
from rag.training.trainer import TrainSettings, train_sts

PAIRS = [(5.0, "A man is playing a guitar.", "A man plays the guitar."),
         (0.0, "A man is playing a guitar.", "The stock market fell today."),
         (4.5, "A woman slices an onion.", "Someone is cutting an onion."),
         (0.5, "A woman slices an onion.", "A plane is taking off."),
         (4.0, "Kids play football in the park.", "Children are playing soccer outside."),
         (1.0, "Kids play football in the park.", "An old man reads a newspaper."),
         (5.0, "The cat sleeps on the sofa.", "A cat is sleeping on the couch."),
         (0.0, "The cat sleeps on the sofa.", "Interest rates rose again.")]


def write_sts(path, rows):
    path.write_text("".join(f"g\tf\ty\t{i}\t{s}\t{a}\t{b}\n" for i, (s, a, b) in enumerate(rows)))
    return path


def test_regression_fine_tune_saves_a_loadable_model(tmp_path):
    train = write_sts(tmp_path / "train.csv", PAIRS)
    dev = write_sts(tmp_path / "dev.csv", PAIRS)
    steps = []
    report = train_sts("sentence-transformers/all-MiniLM-L6-v2", train, tmp_path / "out", dev_file=dev,
                       settings=TrainSettings(epochs=2, batch_size=4, lr=5e-5), device="cpu",
                       on_step=lambda s, total, loss: steps.append((s, total, loss)))
    assert [s for s, _, _ in steps] == [1, 2, 3, 4] and steps[0][1] == 4
    assert len(report.epochs) == 2 and report.best_dev_spearman is not None
    assert report.epochs[-1].train_loss < report.epochs[0].train_loss  # it learns on its own data
    ours = SentenceEncoder(str(tmp_path / "out"), device="cpu")
    texts = [p[1] for p in PAIRS]
    a = ours.encode(texts)
    from sentence_transformers import SentenceTransformer

    b = SentenceTransformer(str(tmp_path / "out"), device="cpu").encode(texts, normalize_embeddings=True)
    assert np.min((a * b).sum(axis=1)) > 0.9999
    base = SentenceEncoder(device="cpu").encode(texts)
    assert np.min((a * base).sum(axis=1)) < 0.9999  # the weights did change


QA = [("how do I brew espresso", "Espresso is brewed by forcing hot water through fine coffee at high pressure."),
      ("when to oil a bike chain", "Oil the bicycle chain every few hundred kilometres or after rain."),
      ("what carves valleys", "Glaciers are slow rivers of ice that carve deep valleys."),
      ("where does lava come from", "Volcanoes erupt molten rock called lava from the mantle."),
      ("how long to steep green tea", "Green tea is steeped at eighty degrees for about three minutes."),
      ("why do leaves change colour", "In autumn chlorophyll breaks down and leaves turn red and yellow."),
      ("how fast does sound travel", "Sound travels about 343 metres per second in air."),
      ("what do bees make", "Honey bees make honey from the nectar of flowers.")]


def _st_agrees(folder, texts):
    from sentence_transformers import SentenceTransformer

    a = SentenceEncoder(str(folder), device="cpu").encode(texts)
    b = SentenceTransformer(str(folder), device="cpu").encode(texts, normalize_embeddings=True)
    return float(np.min((a * b).sum(axis=1)))


def test_mnr_learns_and_the_folder_loads_everywhere(tmp_path):
    from rag.training.trainer import IrEvaluator, train
    from rag.training.data import TrainData

    data = TrainData(kind="pairs", texts=QA)
    ev = IrEvaluator({f"q{i}": q for i, (q, _) in enumerate(QA)}, {f"d{i}": p for i, (_, p) in enumerate(QA)},
                     {f"q{i}": {f"d{i}": 1} for i in range(len(QA))})
    report = train("sentence-transformers/all-MiniLM-L6-v2", data, tmp_path / "mnr", loss="mnr",
                   settings=TrainSettings(epochs=2, batch_size=4, lr=1e-4, max_seq_length=64), evaluator=ev,
                   device="cpu")
    assert report.dev_metric == "ndcg@10" and 0.8 < report.best_dev_score <= 1.0
    assert report.epochs[-1].train_loss < report.epochs[0].train_loss
    texts = [p for _, p in QA]
    assert _st_agrees(tmp_path / "mnr", texts) > 0.9999
    import json

    # trained on 64-token texts; the model keeps its own limit (chunking in ingest depends on it)
    assert json.loads((tmp_path / "mnr" / "sentence_bert_config.json").read_text())["max_seq_length"] == 256


def test_triplet_and_softmax_move_the_model(tmp_path):
    from rag.training.trainer import train
    from rag.training.data import TrainData

    base = SentenceEncoder(device="cpu").encode([q for q, _ in QA])
    trip = TrainData(kind="triplets", texts=[(q, p, QA[(i + 1) % len(QA)][1]) for i, (q, p) in enumerate(QA)])
    r = train("sentence-transformers/all-MiniLM-L6-v2", trip, tmp_path / "trip", loss="triplet",
              settings=TrainSettings(epochs=1, batch_size=4, lr=1e-4, triplet_metric="cosine"), device="cpu")
    assert r.best_epoch == 1 and r.best_dev_score is None
    moved = SentenceEncoder(str(tmp_path / "trip"), device="cpu").encode([q for q, _ in QA])
    assert np.min((moved * base).sum(axis=1)) < 0.9999
    nli = TrainData(kind="labelled", texts=[(a, b) for _, a, b in PAIRS],
                    labels=["similar" if s >= 3 else "different" for s, _, _ in PAIRS])
    r = train("sentence-transformers/all-MiniLM-L6-v2", nli, tmp_path / "nli", loss="softmax",
              settings=TrainSettings(epochs=2, batch_size=4, lr=1e-4), device="cpu")
    assert r.epochs[-1].train_loss < r.epochs[0].train_loss
    assert not (tmp_path / "nli" / "head.bin").exists()  # the classifier head is not part of the model


def test_objective_must_fit_the_data(tmp_path):
    import pytest

    from rag.errors import ConfigError
    from rag.training.trainer import train
    from rag.training.data import TrainData

    with pytest.raises(ConfigError, match="the triplet loss needs triplets"):
        train("x", TrainData(kind="pairs", texts=QA, source="qa.csv"), tmp_path / "o", loss="triplet")
    with pytest.raises(ConfigError, match="numeric scores"):
        train("x", TrainData(kind="labelled", texts=QA, labels=["a"] * len(QA)), tmp_path / "o", loss="cosine")


def test_cli_train_pairs_beir_holdout_and_adapt(tmp_path, capsys):
    import json

    from pipelines.cli import main

    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": p}) + "\n"
                                               for i, (_, p) in enumerate(QA)))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": q}) + "\n"
                                                for i, (q, _) in enumerate(QA)))
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                              "".join(f"q{i}\td{i}\t1\n" for i in range(len(QA))))
    assert main(["train", "pairs", str(root), "--holdout", "2", "--out", str(tmp_path / "m"), "--epochs", "1",
                 "--batch-size", "3", "--device", "cpu", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["loss"] == "mnr" and rep["examples"] == 6 and rep["dev_metric"] == "ndcg@10"
    assert (tmp_path / "m" / "model.safetensors").is_file()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("\n\n".join(
        f"{p} This sentence is here to make a second one in the paragraph." for _, p in QA))
    assert main(["adapt", str(docs), "--out", str(tmp_path / "ad"), "--epochs", "1", "--batch-size", "4",
                 "--max-pairs", "8", "--min-words", "3", "--device", "cpu", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["loss"] == "mnr" and rep["examples"] >= 1
    assert main(["adapt", "--out", str(tmp_path / "x")]) == 2
    assert "one of them" in capsys.readouterr().err


def test_cli_train_sts_and_files(tmp_path, capsys):
    import json

    from pipelines.cli import main

    train = write_sts(tmp_path / "train.csv", PAIRS)
    assert main(["train", "sts", str(train), "--dev", str(train), "--out", str(tmp_path / "sts"), "--epochs", "1",
                 "--batch-size", "8", "--device", "cpu", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["loss"] == "cosine" and rep["dev_metric"] == "spearman" and rep["best_dev_score"] is not None
    trip = tmp_path / "trip.csv"
    trip.write_text("anchor,positive,negative\n" + "".join(
        f'"{q}","{p}","{QA[(i + 1) % len(QA)][1]}"\n' for i, (q, p) in enumerate(QA)))
    assert main(["train", "pairs", str(trip), "--loss", "triplet", "--out", str(tmp_path / "t"), "--epochs", "1",
                 "--batch-size", "4", "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == "triplet"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "a", "positive": "b"}\n{"query": "c"\n')
    assert main(["train", "pairs", str(bad), "--out", str(tmp_path / "b")]) == 2
    assert "bad.jsonl:2: not valid JSON" in capsys.readouterr().err
