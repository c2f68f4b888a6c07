"""`rag eval answers QA.csv`: the figure and glob checks on their own, the CSV reader's errors, and
the command on a tiny CSV over a collection the test builds (extracts, no LLM), its per-question
and overall figures worked out by hand, and `--fail-under` as a gate."""

from __future__ import annotations

import json

import pytest

from helpers_ingest import edge_settings, write
from pipelines.cli import main
from pipelines.evaluate_answers import load_qa, parse_bars
from rag.errors import ConfigError, LoadError
from rag.evaluation.figures import context_numbers, figures, source_globs, source_matches

DOCS = {
    "2023 Q3 apple.md": "# Revenue\n\nApple reported total net sales of $81.8 billion for the quarter. "
                        "iPhone net sales were $39.7 billion in the third quarter.",
    "garden.txt": "Tomatoes need full sun and regular watering. Basil grows well next to tomatoes.",
}
CSV = '''Question,Source Docs,Question Type,Answer
What were iPhone net sales?,*Q3 apple*,Single-Doc,"iPhone net sales were $39.7 billion."
How do tomatoes grow?,*garden*,Single-Doc,Tomatoes need full sun.
How far away is the moon?,*moon*,Single-Doc,"The moon is 384,400 km away."
'''


def test_figures_numbers_and_globs():
    assert figures("Net sales were $82,959 million in 2023, up 12.5% (3 segments); 1,024 stores.") == {
        "82959", "12.5%", "1024"}
    assert figures("In Q3 2023, on July 1, 2023, see [1].") == set()  # dates, years, citations: no figures
    assert {"82959", "12.5", "12.5%"} <= context_numbers("$82,959.0 million and 12.50%")
    assert source_globs("*AAPL*; *2023 Q3 NVDA* | *x*\n") == ["*AAPL*", "*2023 Q3 NVDA*", "*x*"]
    assert source_matches("/data/docs/2023 Q3 AAPL.pdf", ["*AMZN*", "*2023 Q3 AAPL*"])
    assert not source_matches("/data/docs/2023 Q3 AAPL.pdf", ["*2023 Q2 AAPL*"])
    assert not source_matches("/data/docs/2023 Q3 AAPL.pdf", ["*aapl*"])  # file names are case-sensitive
    assert source_matches("notes/a.txt", ["notes/*"])  # or the whole source


def test_the_csv_reader_names_the_file_and_the_problem(tmp_path):
    ok = tmp_path / "ok.csv"
    ok.write_text("\ufeffquestion,Reference answer\nWhat?,It is 42 percent.\n", encoding="utf-8")
    assert [i.model_dump() for i in load_qa(ok)] == [{"question": "What?", "reference": "It is 42 percent.",
                                                      "globs": []}]
    bad = tmp_path / "bad.csv"
    bad.write_text("q,a\nx,y\n")
    with pytest.raises(LoadError, match="bad.csv.*question and a reference-answer column.*found: q, a"):
        load_qa(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("Question,Answer\nfine,yes\n ,no\n")
    with pytest.raises(LoadError, match="empty.csv.*line 3: empty question"):
        load_qa(empty)
    with pytest.raises(LoadError, match="missing.csv.*cannot read"):
        load_qa(tmp_path / "missing.csv")
    with pytest.raises(ConfigError, match="METRIC one of"):
        parse_bars(["latency=1"])
    with pytest.raises(ConfigError, match="not a number"):
        parse_bars(["hit_rate=high"])
    assert parse_bars(["hit_rate=0.5", "grounded_rate=0.9"]) == {"hit_rate": 0.5, "grounded_rate": 0.9}


@pytest.fixture(scope="module")
def collection(tmp_path_factory, encoder):
    from pipelines.ingest import ingest

    root = tmp_path_factory.mktemp("eval_answers")
    write(root / "docs", DOCS)
    settings = edge_settings(root / "store")
    assert not ingest([root / "docs"], encoder=encoder, store=settings, progress=False).failed
    (root / "qa.csv").write_text(CSV, encoding="utf-8")
    return root


def test_eval_answers_reports_per_question_and_overall_and_gates(collection, capsys):
    args = ["eval", "answers", str(collection / "qa.csv"), "--store", str(collection / "store"),
            "--collection", "docs", "--llm", "none", "--top-k", "2", "--no-progress"]
    assert main([*args, "--json", "--fail-under", "hit_rate=0.6"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["questions"] == 3 and report["backend"] == "no LLM (--llm none): extracts"
    q1, q2, q3 = report["per_question"]
    assert (q1["hit"], q2["hit"], q3["hit"]) == (True, True, False)  # no document is about the moon
    assert q3["on_target"] == 0.0 and 0 < q1["on_target"] <= 1
    assert q1["figures"] == ["39.7"] and q1["figures_in_passages"] == ["39.7"]
    assert q2["figures"] == [] and q3["figures"] == ["384400"] and q3["figures_in_passages"] == []
    assert all(q["kind"] == "extractive" and q["passages"] == 2 and q["seconds"] > 0 for q in (q1, q2, q3))
    o = report["overall"]
    assert o["hit_rate"] == pytest.approx(2 / 3)
    assert o["figures"] == 2 and o["figure_recall_passages"] == 0.5 and o["all_figures_passages_rate"] == 0.5
    assert o["figure_recall_answer"] == (len(q1["figures_in_answer"]) + len(q3["figures_in_answer"])) / 2
    assert o["citation_valid_rate"] == sum(q["citations_valid"] for q in (q1, q2, q3)) / 3
    sentences = sum(q["sentences"] for q in (q1, q2, q3))
    assert o["sentences"] == sentences > 0
    assert o["unsupported_rate"] == pytest.approx(sum(q["unsupported"] for q in (q1, q2, q3)) / sentences)
    assert o["grounded_rate"] == pytest.approx(1 - o["unsupported_rate"])

    out = collection / "report.json"
    assert main([*args, "--out", str(out), "--fail-under", "hit_rate=0.9",
                 "--fail-under", "figure_recall_passages=0.5"]) == 1
    captured = capsys.readouterr()
    assert "hit_rate 0.667 < 0.9" in captured.err and "figure_recall_passages" not in captured.err
    assert "What were iPhone net sales?" in captured.out and "Overall" in captured.out
    again = json.loads(out.read_text())["overall"]
    assert {k: v for k, v in again.items() if not k.startswith("latency")} == {
        k: v for k, v in o.items() if not k.startswith("latency")}  # the same answers, checked alike

    assert main([*args, "--fail-under", "speed=1"]) == 2  # stopped before any question is asked
    assert "METRIC one of" in capsys.readouterr().err
