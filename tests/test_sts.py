"""STS evaluation: rank correlation by hand, file parsing, and a real run."""

from __future__ import annotations

import numpy as np
import pytest

from rag.errors import ConfigError
from rag.evaluation.sts import evaluate_sts, is_sts_file, load_sts, pearson, rankdata, spearman


def test_rankdata_averages_ties():
    assert rankdata(np.array([10.0, 20.0, 10.0, 5.0])).tolist() == [2.5, 4.0, 2.5, 1.0]


def test_correlations_by_hand():
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0])
    assert pearson(a, b) == pytest.approx(0.8)
    assert spearman(a, b) == pytest.approx(0.8)  # 1 - 6*2/(4*15)
    assert spearman(a, b ** 3) == pytest.approx(0.8)  # monotone transform: same ranks
    assert spearman(a, -a) == pytest.approx(-1.0)


def test_load_sts_format(tmp_path):
    f = tmp_path / "sts.csv"
    f.write_text("main-captions\tMSRvid\t2012test\t0001\t5.000\tA man plays.\tA man is playing.\n"
                 "main-news\tx\t2012\t0002\t0.5\tCats sleep.\tStocks fell.\textra\tcols\n"
                 "short\tline\n")
    pairs = load_sts(f)
    assert [(p.score, p.sentence2) for p in pairs] == [(5.0, "A man is playing."), (0.5, "Stocks fell.")]
    with pytest.raises(ConfigError, match="no such file"):
        load_sts(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("a\tb\tc\td\tfive\tx\ty\n" * 2)
    with pytest.raises(ConfigError, match="not a number"):
        load_sts(tmp_path / "bad.csv")


def test_real_encoder_orders_similarity(tmp_path, encoder):
    rows = [(5.0, "A man is playing a guitar.", "A man plays the guitar."),
            (4.0, "A woman is slicing an onion.", "Someone is cutting an onion."),
            (2.0, "A dog runs in the park.", "A cat sleeps on the sofa."),
            (0.0, "The stock market fell sharply today.", "A child is eating an ice cream.")]
    f = tmp_path / "sts.csv"
    f.write_text("".join(f"g\tf\ty\t{i}\t{s}\t{a}\t{b}\n" for i, (s, a, b) in enumerate(rows)))
    result = evaluate_sts(encoder, f)
    assert result.pairs == 4
    assert result.spearman == pytest.approx(1.0)
    assert 0.8 < result.pearson <= 1.0


def test_is_sts_file(tmp_path):
    sts = tmp_path / "sts.csv"
    sts.write_text("genre\tfile\tyear\tsid\tscore\tsentence1\tsentence2\n"
                   "main\tx\t2012\t1\t3.8\tA plane takes off.\tAn air plane is taking off.\n")
    assert is_sts_file(sts)
    other = tmp_path / "pairs.tsv"
    other.write_text("a\tb\tc\td\tnot a score\tf\tg\n")
    assert not is_sts_file(other)
    short = tmp_path / "short.tsv"
    short.write_text("query\tpositive\n")
    assert not is_sts_file(short)
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    assert not is_sts_file(empty)
