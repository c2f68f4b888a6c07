"""Fine-tuning: a tiny real run; the output folder loads in our encoder and in sentence-transformers."""

from __future__ import annotations

import numpy as np

from rag.encoder import SentenceEncoder
from rag.train import TrainSettings, train_sts

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
