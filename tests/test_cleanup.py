"""The clean-up of echoed prompt scaffolding: one rule for streamed and whole answers, whatever
the pieces a backend streams, and answer text (citations included) left alone."""

from __future__ import annotations

import random

import pytest

from rag.answer.cleanup import StreamCleaner, clean_answer

CASES = [
    # what SmolLM2-135M printed for "Which pooling strategy does SBERT use by default?"
    ("[1]\n\nQuestion: Which pooling strategy does SBERT use by default?\nAnswer: The pooling strategy used "
     "by SBERT is MEAN [1].", "The pooling strategy used by SBERT is MEAN [1].", True),
    ("Answer: MEAN [1]\nQuestion: What else?\nAnswer: nothing", "MEAN [1]", True),  # an invented next turn
    ("**Answer:** MEAN [2]", "MEAN [2]", True),
    ("[1][2]\n[3]\nContext: the passages\nThe answer is yes [1].\n[2]", "The answer is yes [1].\n[2]", True),
    ("The default is MEAN [4].", "The default is MEAN [4].", False),
    ("[1] MEAN pooling is the default.", "[1] MEAN pooling is the default.", False),  # a citation before text
    ("Net sales were $81.8 billion [1].\n\nServices grew 8% [2].",
     "Net sales were $81.8 billion [1].\n\nServices grew 8% [2].", False),
    ("Questions about pooling are answered in [2].", "Questions about pooling are answered in [2].", False),
    ("Answering this: MEAN [1].", "Answering this: MEAN [1].", False),
    ("Ans", "Ans", False),
    ("", "", False),
]


@pytest.mark.parametrize("text,want,changed", CASES)
def test_clean_answer(text, want, changed):
    assert clean_answer(text) == (want, changed)


@pytest.mark.parametrize("text,want,changed", CASES)
def test_streamed_in_any_pieces_gives_the_whole_answer(text, want, changed):
    for seed in range(25):
        rng = random.Random(seed)
        cleaner, out, i = StreamCleaner(), [], 0
        while i < len(text):
            n = rng.randint(1, 6)
            out.append(cleaner.feed(text[i:i + n]))
            i += n
        out.append(cleaner.finish())
        assert "".join(out).strip() == want
        assert cleaner.shown == "".join(out) and "".join(cleaner.raw) == text


def test_answer_text_streams_without_waiting_for_the_line_end():
    cleaner = StreamCleaner()
    assert cleaner.feed("The default") == "The default"  # not held back: cannot be a label
    assert cleaner.feed(" is MEAN") == " is MEAN"
    assert cleaner.feed("\nQuest") == ""  # held: may become 'Question:'
    assert cleaner.feed("ions remain.") == "\nQuestions remain."
