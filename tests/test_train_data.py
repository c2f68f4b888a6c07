"""Training inputs, batching and losses: small pure checks (no model)."""

from __future__ import annotations

import json

import pytest

from rag.training.adapt import inverse_cloze_pairs, split_sentences
from rag.errors import ConfigError
from rag.training.trainer import no_duplicate_batches
from rag.training.data import read_training_data, read_training_file, sts_training_data


def test_csv_with_header_pairs_and_triplets(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text('query,positive\n"what, exactly?",an answer\nq2,a2\n')
    d = read_training_file(f)
    assert d.kind == "pairs" and d.texts == [("what, exactly?", "an answer"), ("q2", "a2")]
    f = tmp_path / "t.tsv"
    f.write_text("anchor\tpositive\tnegative\na\tp\tn\n")
    d = read_training_file(f)
    assert d.kind == "triplets" and d.texts == [("a", "p", "n")]


def test_headerless_files_are_guessed(tmp_path):
    f = tmp_path / "scores.tsv"
    f.write_text("A man plays.\tA man is playing.\t4.5\nA cat.\tThe stock market.\t0\n")
    d = read_training_file(f)
    assert d.kind == "labelled" and d.labels == [4.5, 0.0] and d.numeric
    f = tmp_path / "trip.tsv"
    f.write_text("a one\tp one\tn one\na two\tp two\tn two\n")
    assert read_training_file(f).kind == "triplets"
    assert read_training_file(f, kind="labelled").labels == ["n one", "n two"]


def test_jsonl_nli_labels_and_explicit_columns(tmp_path):
    f = tmp_path / "nli.jsonl"
    rows = [{"premise": "A dog runs.", "hypothesis": "An animal moves.", "label": "entailment"},
            {"premise": "A dog runs.", "hypothesis": "A cat sleeps.", "label": "contradiction"}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = read_training_file(f)
    assert d.kind == "labelled" and not d.numeric and d.label_names() == ["contradiction", "entailment"]
    d = read_training_file(f, columns=["hypothesis", "premise"])
    assert d.kind == "pairs" and d.texts[0] == ("An animal moves.", "A dog runs.")


def test_sts_format_is_recognised(tmp_path):
    f = tmp_path / "sts.csv"
    f.write_text("main\tx\t2012\t1\t3.8\tA plane takes off.\tAn air plane is taking off.\n")
    d = read_training_file(f)
    assert d.kind == "labelled" and d.texts == [("A plane takes off.", "An air plane is taking off.")]
    assert d.labels == [3.8]


def test_beir_folder_gives_query_passage_pairs(tmp_path):
    root = tmp_path / "b"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "T1", "text": "Body one."}) + "\n"
                                       + json.dumps({"_id": "d2", "title": "", "text": "Body two."}) + "\n")
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "first?"}) + "\n"
                                        + json.dumps({"_id": "q2", "text": "second?"}) + "\n")
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq2\td2\t2\n")
    d = read_training_data(root)
    # the passage as evaluation ingests it: title and text as two paragraphs
    assert d.kind == "pairs" and d.texts == [("first?", "T1\n\nBody one."), ("second?", "Body two.")]


@pytest.mark.parametrize("name,content,match", [
    ("bad.jsonl", '{"query": "a", "positive": "b"}\nnot json\n', r"bad.jsonl:2: not valid JSON"),
    ("short.tsv", "a one\tb one\tc one\nd two\te two\n", r"short.tsv:2: expected at least 3 columns"),
    ("empty.csv", "query,positive\nq,\n", r"empty.csv:2: empty 'positive' text"),
    ("one.tsv", "just one column\n", r"one.tsv:1: need at least 2 columns"),
    ("keys.jsonl", '{"query": "a", "positive": "b"}\n{"query": "c"}\n', r"keys.jsonl:2: missing key 'positive'"),
])
def test_bad_files_name_the_file_and_line(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(ConfigError, match=match):
        read_training_file(tmp_path / name)


def test_missing_file_and_column(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        read_training_file(tmp_path / "nope.csv")
    (tmp_path / "p.csv").write_text("query,positive\na,b\n")
    with pytest.raises(ConfigError, match="no column 'answer'"):
        read_training_file(tmp_path / "p.csv", columns=["query", "answer"])


def test_no_duplicate_batches():
    texts = [("q1", "p1"), ("q2", "p1"), ("q3", "p2"), ("q4", "p1"), ("q5", "p3"), ("q6", "p4")]
    batches = no_duplicate_batches(texts, range(len(texts)), 3)
    assert sorted(i for b in batches for i in b) == list(range(len(texts)))
    for b in batches:
        seen = [t for i in b for t in texts[i]]
        assert len(seen) == len(set(seen)), b
    assert batches[0] == [0, 2, 4]


def test_losses_match_their_definitions():
    import torch

    from rag.training import losses as L

    torch.manual_seed(0)
    a, p, n = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)
    cos = torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(torch.cat([p, n]), dim=1).T
    want = torch.nn.functional.cross_entropy(20 * cos, torch.arange(4))
    assert torch.isclose(L.mnr_loss(a, p, n), want)
    assert L.mnr_loss(a, a * 3).item() < L.mnr_loss(a, p).item()  # own positive, scaled: easy
    # triplet: zero once the negative is farther by the margin
    far = a + 100.0
    assert L.triplet_loss(a, a, far).item() == 0.0
    assert torch.isclose(L.triplet_loss(a, far, a), torch.linalg.vector_norm(far - a, dim=1).mean() + 5)
    assert L.triplet_loss(a, a, -a, metric="cosine").item() == 0.0  # 1 - cos: 0 vs 2, margin 0.5
    head = torch.nn.Linear(24, 3)
    assert L.softmax_features(a, p).shape == (4, 24)
    assert L.softmax_loss(a, p, torch.tensor([0, 1, 2, 0]), head).item() > 0
    assert L.cosine_mse_loss(a, a, torch.ones(4)).item() == pytest.approx(0.0, abs=1e-6)


def test_inverse_cloze_pairs():
    chunks = ["Title of the paper\n\nWe study the effect of sleep on memory. Twenty subjects took part in "
              "the trial. Memory improved after eight hours of sleep.",
              "Too short.", "One sentence only but long enough to count here."]
    assert split_sentences(chunks[0])[0] == "Title of the paper"
    d = inverse_cloze_pairs(chunks, min_words=3, seed=1)
    assert d.kind == "pairs" and len(d) == 1
    query, rest = d.texts[0]
    assert query in chunks[0] and query not in rest and len(rest.split()) >= 3
    assert len(inverse_cloze_pairs(chunks * 5, max_pairs=2, min_words=3)) == 2
    with pytest.raises(ConfigError, match="no inverse-cloze pairs"):
        inverse_cloze_pairs(chunks[1:], min_words=3)


def test_sts_training_data_is_the_one_sts_path(tmp_path):
    f = tmp_path / "sts.csv"
    f.write_text("genre\tfile\tyear\tsid\tscore\tsentence1\tsentence2\n"
                 "main\tx\t2012\t1\t3.8\tA plane takes off.\tAn air plane is taking off.\n"
                 "main\tx\t2012\t2\t0.5\tA man plays.\tThe market fell.\n")
    d = sts_training_data(f)
    assert d.kind == "labelled" and d.numeric and d.labels == [3.8, 0.5]
    assert d.texts[1] == ("A man plays.", "The market fell.")
    assert read_training_file(f) == d  # a file given to `rag train pairs` takes the same path


def test_beir_corpus_is_read_in_one_place(tmp_path):
    from rag.evaluation.beir import corpus_documents, corpus_passages, passage_text

    assert passage_text({"title": " T ", "text": "Body."}) == "T\n\nBody."
    assert passage_text({"title": None, "text": "Body."}) == "Body."
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": 1, "title": "T", "text": "Body."}) + "\n\n"
                                           + json.dumps({"_id": "2", "text": "Two."}) + "\n")
    assert corpus_passages(tmp_path) == {"1": "T\n\nBody.", "2": "Two."}
    assert corpus_passages(tmp_path, {"2"}) == {"2": "Two."}
    docs = list(corpus_documents(tmp_path))
    assert {d.source: d.pages[0].text for d in docs} == corpus_passages(tmp_path)
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "text": "ok"}\nnot json\n')
    with pytest.raises(ConfigError, match=r"corpus.jsonl:2: not valid JSON"):
        corpus_passages(tmp_path)


def test_adapt_uses_the_chunkers_sentence_rule():
    from rag.text import sentences

    assert split_sentences is sentences.split_sentences
    # a single line break no longer ends a sentence; a blank line does
    assert split_sentences("A line\nwrapped here. Next one.\n\nHeading") == [
        "A line\nwrapped here.", "Next one.", "Heading"]
