"""The grounding check: figures, dates and names of answer sentences looked up in the passages
they cite, number forms normalised; sentences without citations; odd text."""

from __future__ import annotations

import random
import time

import pytest

from rag.answer.extractive import HEADER
from rag.answer.grounding import GroundingSummary, answer_sentences, check_grounding, grounding_note, summarize
from rag.answer.terms import extract_terms
from rag.models import Passage, SentenceSupport


def passage(number: int, text: str) -> Passage:
    return Passage(number=number, text=text, source=f"/d/doc{number}.pdf", page_start=1, page_end=1,
                   score=1.0 / number, rank=number)


def one(answer: str, *texts: str) -> SentenceSupport:
    """The check of a one-sentence answer against passages [1], [2], ... holding `texts`."""
    result = check_grounding(answer, [passage(i, t) for i, t in enumerate(texts, 1)])
    assert len(result) == 1, [s.text for s in result]
    return result[0]


TABLE = ("CONDENSED CONSOLIDATED STATEMENTS OF OPERATIONS (In millions)\n"
         "Three Months Ended July 1, 2023 June 25, 2022\n"
         "Total net sales $ 81,797 $ 82,959\n"
         "Gross margin percentage 44.5 % 43.3 %\n"
         "Other income/(expense), net (265) (10)")


# ---------------------------------------------------------------- figures


def test_10q_table_in_millions_against_billions_in_the_answer():
    ok = one("Total net sales were $81.8 billion [1].", TABLE)
    assert ok.supported and ok.terms == ["$81.8 billion"] and ok.missing == []
    bad = one("Total net sales were $90.1 billion [1].", TABLE)
    assert not bad.supported and bad.missing == ["$90.1 billion"] and bad.checked_against == [1]


@pytest.mark.parametrize("figure", ["$82.9 billion", "$83.0 billion", "$82.96 billion", "$82,959 million",
                                    "82,959", "82959", "$82.9bn", "$83B", "USD 82.9 billion"])
def test_forms_of_the_same_figure_match_the_table_cell(figure):
    s = one(f"A year earlier net sales were {figure} [1].", TABLE)
    assert s.supported, (figure, s.missing)


@pytest.mark.parametrize("figure", ["$82.8 billion", "$82.97 billion", "$82,958 million", "82,960", "$8.3 billion",
                                    "$829.6 billion"])
def test_near_misses_and_wrong_scales_are_flagged(figure):
    s = one(f"A year earlier net sales were {figure} [1].", TABLE)
    assert not s.supported and s.missing == [figure]


def test_thousands_separators_either_side():
    assert one("Headcount was 164,000 [1].", "The company had 164000 full-time employees.").supported
    assert one("Headcount was 164000 [1].", "The company had 164,000 full-time employees.").supported
    assert not one("Headcount was 165,000 [1].", "The company had 164,000 full-time employees.").supported


def test_scale_words_against_tables_in_thousands():
    text = "(in thousands) Research and development 3,412 Marketing 1,200"
    assert one("R&D spending was 3.4 million [1].", text).supported
    assert one("Marketing cost $1.2M [1].", text).supported
    assert not one("Marketing cost $1.3M [1].", text).supported


def test_percent_forms():
    for form in ("44.5%", "44.5 %", "44.5 percent", "44.5 per cent"):
        assert one(f"Gross margin was {form} [1].", TABLE).supported, form
    assert one("Gross margin was 12.5 % [1].", "The margin reached 12.5%.").supported
    s = one("Gross margin was 45.5% [1].", TABLE)
    assert not s.supported and s.missing == ["45.5%"]
    assert one("Margin was 12.5% [1].", "Margin 12.5 11.9").supported  # a table may leave out the % sign
    # a percentage is not scaled like money: 43.3% is neither 0.0433 (in thousands) nor 43.3 million
    assert not one("Margin was 43.3% [1].", "Ratio 0.0433").supported
    assert not one("Margin was 43.3% [1].", "Revenue was $43.3 million.").supported


def test_negative_in_parentheses():
    assert [(t.surface, t.value) for t in extract_terms("Other expense was (265) [1].")] == [("(265)", -265.0)]
    assert one("Other income/(expense), net was (265) [1].", TABLE).supported
    # prose states a loss as a positive amount: the sign is not checked
    assert one("Other expense was $265 million [1].", TABLE).supported
    assert not one("Other expense was $266 million [1].", TABLE).supported


def test_citation_markers_are_not_figures():
    passages = [passage(i, "No figures here.") for i in range(1, 13)]
    [s] = check_grounding("Net sales rose [12][3, 4][5-6].", passages)
    assert s.terms == [] and s.supported and s.cited == [12, 3, 4, 5, 6]


def test_identifiers_and_years_are_not_amounts():
    terms = {(t.surface, t.kind) for t in extract_terms("The Form 10-Q for 2023 covers H200 sales of 3M Company.")}
    assert terms == {("2023", "date")}


def test_figure_only_in_an_uncited_passage_is_flagged_and_named():
    passages = [passage(1, "Operating expenses rose because of research costs."),
                passage(2, "Operating income was $4.1 billion in fiscal 2023.")]
    [s] = check_grounding("Operating income was $4.1 billion [1].", passages)
    assert not s.supported
    assert s.missing == ["$4.1 billion"] and s.cited == [1] and s.checked_against == [1]
    assert s.found_in == [2]
    assert "held by [2], which it does not cite" in grounding_note([s])


def test_uncited_sentence_is_checked_against_all_passages():
    passages = [passage(1, "Services revenue was $21.2 billion."), passage(2, "Operating income was $4.1 billion.")]
    [held] = check_grounding("Operating income was $4.1 billion.", passages)
    assert held.supported and held.cited == [] and held.checked_against == [1, 2] and held.found_in == [2]
    [not_held] = check_grounding("Operating income was $7.7 billion.", passages)
    assert not not_held.supported and not_held.missing == ["$7.7 billion"] and not_held.checked_against == [1, 2]
    assert "cites nothing" in grounding_note([not_held])


def test_uncited_sentence_needs_one_passage_holding_all_its_terms():
    passages = [passage(1, "Services revenue was $21.2 billion."), passage(2, "Operating income was $4.1 billion.")]
    [s] = check_grounding("Services made $21.2 billion and operating income $4.1 billion.", passages)
    assert not s.supported and s.found_in == []
    assert len(s.missing) == 1 and s.missing[0] in ("$21.2 billion", "$4.1 billion")
    # cited, the two passages may support it together
    [cited] = check_grounding("Services made $21.2 billion and operating income $4.1 billion [1][2].", passages)
    assert cited.supported


def test_citation_of_a_passage_not_given_counts_as_no_citation():
    passages = [passage(1, "Operating income was $4.1 billion.")]
    [s] = check_grounding("Operating income was $4.1 billion [7].", passages)
    assert s.cited == [] and s.checked_against == [1] and s.supported


@pytest.mark.parametrize("marks", ["[1][2]", "[1, 2]", "[1-2]", "[2][1]"])
def test_multi_citation_sentence_with_the_figure_in_one_of_them(marks):
    passages = [passage(1, "Services grew strongly."), passage(2, "Services revenue was $21.2 billion.")]
    [s] = check_grounding(f"Services revenue was $21.2 billion {marks}.", passages)
    assert s.supported and sorted(s.cited) == [1, 2]
    [bad] = check_grounding(f"Services revenue was $22.2 billion {marks}.", passages)
    assert not bad.supported and bad.missing == ["$22.2 billion"]


def test_citation_after_the_full_stop_belongs_to_the_sentence_before():
    sentences = answer_sentences("Revenue was $5 billion. [2] Costs were $2 billion [1].")
    assert sentences == ["Revenue was $5 billion. [2]", "Costs were $2 billion [1]."]
    result = check_grounding("Revenue was $5 billion. [2] Costs were $2 billion [1].",
                             [passage(1, "Costs 2,000"), passage(2, "Revenue 5,000")])
    assert [s.cited for s in result] == [[2], [1]] and all(s.supported for s in result)


def test_abbreviations_do_not_cut_a_date_or_a_name():
    assert answer_sentences("It ended Jun. 24, 2023 [1]. Mr. Cook spoke. Sales rose in Mar. The end.") == [
        "It ended Jun. 24, 2023 [1].", "Mr. Cook spoke.", "Sales rose in Mar.", "The end."]
    assert one("Mr. Cook said so [1].", "Tim Cook said so.").supported
    assert not one("Mr. Nadella said so [1].", "Tim Cook said so.").supported


# ---------------------------------------------------------------- dates and names


def test_dates_match_in_any_form_and_a_year_must_occur():
    text = "For the quarter ended June 24, 2023, in fiscal 2023. Three Months Ended June 24, 2023."
    for date in ("June 24, 2023", "24 June 2023", "2023-06-24", "Jun. 24, 2023", "June 2023", "fiscal 2023",
                 "FY23", "2023", "Q3 2023", "the third quarter of 2023"):
        s = one(f"The period ended {date} [1].", text)
        assert s.supported and s.terms, date
    for date in ("June 25, 2023", "July 2023", "2022", "fiscal 2022", "Q3 2022"):
        s = one(f"The period ended {date} [1].", text)
        assert not s.supported and s.missing == [date], date


def test_names_are_checked_and_common_words_are_not():
    text = "Tim Cook is the Chief Executive Officer of Apple Inc. Sales in Greater China fell."
    assert one("The company is led by Tim Cook [1].", text).supported
    assert one("Apple's sales in Greater China fell [1].", text).supported
    assert one("Tim Cook's company reported results [1].", text).supported  # sentence-initial, two words: checked
    s = one("The company is led by Satya Nadella [1].", text)
    assert not s.supported and s.missing == ["Satya Nadella"]
    assert not one("Revenue in Japan fell [1].", text).supported
    # a capitalised sentence start, and capitalised statement words, are not names
    assert one("Revenue fell [1].", text).terms == []
    assert one("Total Net Sales and Gross Margin fell [1].", text).terms == []
    assert {t.surface for t in extract_terms("In Q3, Bank of America and Procter & Gamble met.")} >= {
        "Bank of America", "Procter & Gamble"}


def test_name_match_ignores_case_accents_and_corporate_suffix():
    text = "NESTLÉ S.A. reported results. The Coca-Cola Company grew."
    assert one("Results came from Nestle [1].", text).supported
    assert one("Shares of Coca-Cola Inc rose [1].", text).supported


# ---------------------------------------------------------------- other scripts, odd text


def test_non_english_digits():
    arabic = "صافي المبيعات ٨٢٬٩٥٩ مليون"  # 82,959 in Arabic-Indic digits and separator
    assert one("Net sales were $82,959 million [1].", arabic).supported
    assert one("Net sales were $82.9 billion [1].", arabic).supported
    assert not one("Net sales were $81.9 billion [1].", arabic).supported
    s = one("Net sales were ٨٢٩٥٩ [1].", TABLE)
    assert s.supported and s.terms == ["٨٢٩٥٩"]  # quoted as written
    assert one("Net sales were ８２,９５９ [1].", TABLE).supported  # full-width
    assert not one("Net sales were ８２,９５８ [1].", TABLE).supported


def test_sentence_with_nothing_to_check():
    result = check_grounding("The documents do not say. [1]", [passage(1, "Revenue 5,000")])
    assert [(s.supported, s.terms, s.missing, s.checked_against) for s in result] == [(True, [], [], [])]
    assert summarize(result) == GroundingSummary(sentences=1, checked=0, unsupported=0, unsupported_sentences=[])
    assert grounding_note(result) is None


def test_extract_style_numbered_lines():
    answer = "\n".join([HEADER, "",
                        '1. "Total net sales were $81.8 billion. Services grew to a record." [1]',
                        '2. "Tim Cook said growth continued." [2]',
                        '3. "Net sales were $99.9 billion." [1]'])
    passages = [passage(1, TABLE), passage(2, "Tim Cook said growth continued in Services.")]
    result = check_grounding(answer, passages)
    assert [s.text for s in result] == ['"Total net sales were $81.8 billion. Services grew to a record." [1]',
                                        '"Tim Cook said growth continued." [2]', '"Net sales were $99.9 billion." [1]']
    assert [s.cited for s in result] == [[1], [2], [1]]
    assert [s.supported for s in result] == [True, True, False]
    assert result[0].terms == ["$81.8 billion"]  # the list number "1." is no figure
    assert result[2].missing == ["$99.9 billion"]


def test_markdown_answers_split_into_blocks():
    answer = ("## Results\n\n**Summary**\n\nNet sales were $81.8\nbillion [1].\n\n- Gross margin was 44.5% [1]\n"
              "- Other expense was $9 million [1]\n\n| Item | Value |\n|---|---|\n| Net sales | $81.8 billion [1] |")
    result = check_grounding(answer, [passage(1, TABLE)])
    assert [s.text for s in result][:3] == ["Net sales were $81.8 billion [1].", "Gross margin was 44.5% [1]",
                                            "Other expense was $9 million [1]"]
    assert [s.supported for s in result] == [True, True, False, True, True, True]


def test_summary_and_note():
    passages = [passage(1, TABLE), passage(2, "Operating income was $4.1 billion.")]
    answer = ("Total net sales were $81.8 billion [1]. The documents say little else. "
              "Operating income was $4.1 billion [1]. Gross margin was 44.5% [1]. Services made $7.7 billion.")
    result = check_grounding(answer, passages)
    assert [s.index for s in result] == [1, 2, 3, 4, 5]
    summary = summarize(result)
    assert summary == GroundingSummary(sentences=5, checked=4, unsupported=2, unsupported_sentences=[3, 5])
    note = grounding_note(result)
    assert note.startswith("2 of 5 sentences state figures or names that no cited passage holds: sentence 3 ")
    assert "missing '$4.1 billion'" in note and "sentence 5 " in note and "'$7.7 billion'" in note
    assert grounding_note(result[:2]) is None


def test_note_lists_a_few_and_counts_the_rest():
    result = check_grounding(" ".join(f"Sales were ${n}.5 billion [1]." for n in range(10, 16)), [passage(1, TABLE)])
    note = grounding_note(result, max_listed=2)
    assert note.startswith("6 of 6 sentences state") and note.endswith("; and 4 more")
    assert note.count("sentence ") == 2  # two listed


FRAGMENTS = ["", " ", "\n", "\n\n", "[", "]", "[1]", "[2, 3]", "[0]", "[999]", "[1-", "[[1]]", "[-]", "(", ")", "$",
             "%", ",", ".", "-", "−", "1", "12", "2023", "1,234", "(1,234)", "$82.9 billion", "82,959", "1.2.3",
             "9" * 400, "1" * 5000 + "." + "2" * 3000, "0.000000000000000000001", "1e999", "٨٢٬٩٥٩", "８２", "²",
             "June", "June 31, 2023", "2023-13-45", "99/99/9999", "Q5", "Q3'", "FY", "fiscal", "Tim", "Cook",
             "Tim Cook", "iPhone", "U.S.", "Mr.", "&", "of", "😀", "👩‍👩‍👧", "\u202e", "\u200f", "مرحبا", "שלום",
             "\x00", "\x07", "\x1b[31m", "\u2028", "\ud800", "\ufeff", "**", "#", "|", '"', "“", "1.", "- ", "3M",
             "$3M", "5bn", "(1)", "10-Q", "per cent", "basis points", "million", "x" * 300, "A" * 50]


def test_odd_strings_never_raise():
    rng = random.Random(20240601)
    passages = [passage(1, TABLE), passage(2, "Tim Cook met ٨٢٬٩٥٩ people on June 24, 2023 😀 [3]"),
                passage(3, "".join(rng.choice(FRAGMENTS) for _ in range(200)))]
    cases = ["", "[1]", "[1][2][3]", "]]]][[[[", "[1", "1]", "\n\n\n", "😀" * 1000, "١٢٣ שלום مرحبا \u202e 456",
             "\x00\x01\x02 $5 \x7f", "Sales " + "9" * 10000 + " [1].", "word " * 2000 + "[1]", "A " * 5000,
             "$" * 10000, "1," * 5000, "(" * 3000 + "1" + ")" * 3000, "June " * 2000, "Q3 " * 3000]
    cases += [" ".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 40))) for _ in range(300)]
    cases += ["".join(chr(rng.randint(0, 0x2FFFF)) for _ in range(rng.randint(0, 200))) for _ in range(50)]
    for text in cases:
        result = check_grounding(text, passages)
        assert all(isinstance(s, SentenceSupport) for s in result)
        assert [s.index for s in result] == list(range(1, len(result) + 1))
        for s in result:
            assert s.supported == (not s.missing)
            assert set(s.cited) <= {1, 2, 3} and set(s.missing) <= set(s.terms)
        summary = summarize(result)
        assert summary.unsupported == len(summary.unsupported_sentences) <= summary.checked <= summary.sentences
        note = grounding_note(result)
        assert (note is None) == (summary.unsupported == 0)
        extract_terms(text)
    # passages as odd as the answers
    for text in cases[:60]:
        check_grounding("Net sales were $81.8 billion [1]. Tim Cook said so [2].",
                        [passage(1, text), passage(2, text[::-1])])


def test_fast_enough_for_an_answer_against_sixteen_passages():
    rng = random.Random(7)
    words = ("the company reported net sales revenue growth in Greater China and Europe while Tim Cook said "
             "margins improved during the quarter").split()

    def prose(n: int) -> str:
        out = []
        for _ in range(n):
            r = rng.random()
            out.append(f"${rng.randint(1, 99)}.{rng.randint(0, 9)} billion" if r < 0.05 else
                       f"{rng.randint(1000, 99999):,}" if r < 0.12 else f"{rng.randint(1, 60)}.{rng.randint(0, 9)}%"
                       if r < 0.15 else "June 24, 2023" if r < 0.17 else rng.choice(words))
            if rng.random() < 0.07:
                out[-1] += "."
        return " ".join(out)

    passages = [passage(i, prose(230)) for i in range(1, 17)]  # about 300 tokens each
    answer = " ".join(f"Apple {prose(15)} [{rng.randint(1, 16)}]." for _ in range(31))  # about 500 words
    check_grounding(answer, passages)
    best = min(_seconds(lambda: check_grounding(answer, passages)) for _ in range(5))
    assert best < 0.25  # a few milliseconds when the machine is idle; the bound only catches a blow-up


def _seconds(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t
