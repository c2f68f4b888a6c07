"""Text clean-up: Unicode folding, accent recomposition, de-hyphenation, whitespace, garble check."""

from __future__ import annotations

import pytest

from rag.text.clean import (
    clean_pages,
    dehyphenate,
    document_vocabulary,
    looks_garbled,
    normalize_unicode,
    normalize_whitespace,
)

ENGLISH = (
    "Retrieval systems split each document into passages that are small enough for the encoder. "
    "The passages are embedded and stored in a vector index, and at query time the question is "
    "embedded with the same model. The closest passages are then given to a language model, which "
    "writes an answer and cites the pages it used. If the text layer of a file is damaged, none of "
    "this works, so the loader checks that the text it extracted is made of real words."
)
GERMAN = (
    "Die Verwaltung der Universität hat im letzten Jahr ein neues System für die Suche in den "
    "Archiven eingeführt. Es ist nicht nur schneller als das alte, sondern findet auch Dokumente, "
    "die mit einer anderen Schreibweise erfasst wurden. Die Mitarbeiter der Bibliothek sind mit dem "
    "Ergebnis zufrieden und wollen das Verfahren auf weitere Sammlungen ausdehnen, sobald die Mittel "
    "dafür bewilligt sind."
)
FRENCH = (
    "La bibliothèque de la ville a ouvert une nouvelle salle de lecture pour les étudiants qui "
    "préparent leurs examens. Les horaires sont plus longs que dans les autres salles, et le "
    "personnel est disponible pour aider les lecteurs dans leurs recherches. Le projet a été financé "
    "par la région, qui souhaite que les jeunes aient accès à des ressources de qualité pendant toute "
    "l'année, y compris pendant les vacances."
)


def caesar(text: str, shift: int = 3) -> str:
    out = []
    for ch in text:
        if "a" <= ch <= "z":
            out.append(chr((ord(ch) - ord("a") + shift) % 26 + ord("a")))
        elif "A" <= ch <= "Z":
            out.append(chr((ord(ch) - ord("A") + shift) % 26 + ord("A")))
        else:
            out.append(ch)
    return "".join(out)


# ------------------------------------------------------------------ Unicode


def test_nfkc_folds_ligatures():
    assert normalize_unicode("\ufb01ne-tune") == "fine-tune"  # "ﬁne-tune"
    assert normalize_unicode("e\ufb03cient \ufb02ow") == "efficient flow"  # ﬃ, ﬂ
    assert normalize_unicode("ＡＢＣ１２３") == "ABC123"  # full-width forms


def test_control_characters_soft_hyphen_and_bom_removed():
    assert normalize_unicode("\ufeffa\u00adb\u200bc\x00d") == "abcd"
    # tabs and newlines are whitespace, not junk: they survive for the whitespace pass
    assert normalize_unicode("a\tb\nc") == "a\tb\nc"


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Universit\u00a8at", "Universität"),
        ("Universit\u00a8 at", "Universität"),  # extractor put a space after the accent
        ("M\u00a8uller", "Müller"),
        ("caf\u00b4e", "café"),
        ("Fran\u00b8cois", "François"),
        ("r\u02c6ole", "rôle"),
        ("Sch\u00a8onheit", "Schönheit"),
        ("na\u00a8\u0131ve", "naïve"),  # TeX puts the diaeresis on a dotless i
    ],
)
def test_spacing_accents_recomposed(raw, expected):
    assert normalize_unicode(raw) == expected


def test_backtick_inside_word_is_a_grave_accent():
    assert normalize_unicode("deuxi`eme") == "deuxième"


@pytest.mark.parametrize("code", ["run `x` now", "call `echo` and `ls -a` or `unzip`", "`a`b"])
def test_backticks_of_inline_code_kept(code):
    # Markdown/code backticks are not accents, even before a letter that has a grave form
    assert normalize_unicode(code) == code


# ------------------------------------------------------------------ hyphenation


def test_line_break_hyphen_rejoined():
    assert clean_pages(["The com-\nputational cost is low."]) == ["The computational cost is low."]


def test_compound_used_elsewhere_keeps_hyphen():
    page = "We fine-tune the encoder. The fine-\ntuned model is better than the com-\nputational baseline."
    (out,) = clean_pages([page])
    assert "fine-tuned model" in out
    assert "finetuned" not in out
    assert "computational baseline" in out


def test_exact_compound_used_elsewhere_keeps_hyphen():
    page = "A state-of-the-art model. Another state-of-the-\nart model. A well-\nknown well-known fact."
    (out,) = clean_pages([page])
    assert out == "A state-of-the-art model. Another state-of-the-art model. A well-known well-known fact."


def test_closed_form_used_elsewhere_wins():
    page = "Use the database. The data-\nbase is fast. A data-driven design."
    (out,) = clean_pages([page])
    assert "The database is fast" in out


def test_hyphenation_vocabulary_spans_pages():
    pages = ["We fine-tune it on page one.", "Here the fine-\ntuned weights and the com-\nputer."]
    assert clean_pages(pages)[1] == "Here the fine-tuned weights and the computer."


def test_dehyphenate_plain_syllable_break_joined():
    vocab = document_vocabulary(["nothing relevant here"])
    assert dehyphenate("re-\nsearch and inter-  \n  national", vocab) == "research and international"


def test_unrelated_compound_with_same_first_part_does_not_keep_hyphen():
    # "re-use" elsewhere must not turn the syllable break "re-\nsearch" into "re-search"
    page = "We re-use the index. The re-\nsearch team agreed."
    (out,) = clean_pages([page])
    assert "research team" in out


# ------------------------------------------------------------------ whitespace


def test_whitespace_collapses_and_keeps_paragraphs():
    raw = "  First   line\nsame\tparagraph.\r\n\r\n\n  Second \n paragraph.  \n \n\nThird."
    assert normalize_whitespace(raw) == "First line same paragraph.\n\nSecond paragraph.\n\nThird."


def test_whitespace_only_is_empty():
    assert normalize_whitespace(" \n\t\n \r\n ") == ""


def test_clean_pages_full_pipeline():
    raw = ("The \ufb01rst   model was trained at the Universit\u00a8at.\nIt is e\ufb03-\ncient."
           "\n\n\nNew paragraph.")
    assert clean_pages([raw]) == [
        "The first model was trained at the Universität. It is efficient.\n\nNew paragraph."
    ]


# ------------------------------------------------------------------ garble check


def test_normal_english_not_garbled():
    assert len(ENGLISH.split()) >= 40
    assert not looks_garbled(ENGLISH)


@pytest.mark.parametrize("shift", [1, 3, 7, 13, 20])
def test_caesar_shifted_english_is_garbled(shift):
    shifted = caesar(ENGLISH, shift)
    assert shifted != ENGLISH
    assert looks_garbled(shifted)


@pytest.mark.parametrize("text", [GERMAN, FRENCH], ids=["german", "french"])
def test_other_languages_not_garbled(text):
    assert len(text.split()) >= 40
    assert not looks_garbled(text)


def test_short_text_is_never_called_garbled():
    assert not looks_garbled(caesar("The model is small and it is fast."))
    assert not looks_garbled("")


def test_replacement_characters_and_cids_are_garbled():
    assert looks_garbled("\ufffd" * 30 + " ok")
    assert looks_garbled(" ".join(f"(cid:{i})" for i in range(40)))
