"""What a model echoes of the prompt is not part of its answer.

Small models (the offline SmolLM2-135M) often repeat the prompt's scaffolding, for example

    [1]

    Question: Which pooling strategy does SBERT use by default?
    Answer: The pooling strategy used by SBERT is ...

The clean-up, the same for streamed and whole answers (`clean_answer` is the stream cleaner run
over the whole text), removes:
- lines before any answer text that hold nothing but citations ("[1]", "[1][2]"): the passage
  label copied, not a citation of a statement;
- echoed labels: a line "Question: ..." / "Context: ..." / "Passages: ..." before any answer text
  is dropped; an "Answer:" prefix is removed and what follows it kept;
- a "Question:" line after answer text: the model inventing the next turn; it and everything
  after it are dropped.
A citation that follows answer text, anywhere, is kept.
"""

from __future__ import annotations

import re

from rag.answer.citations import may_become_only_citations, only_citations

_LABELS = ("question", "answer", "context", "passages", "passage")
# A label line: optional markdown emphasis or heading marks, the word, a colon.
_LABEL = re.compile(r"^[ \t>#*_]*(question|answer|context|passages?)[*_]*[ \t]*:[*_]*[ \t]*", re.I)


def _could_become_label(text: str) -> bool:
    """Whether `text` (a line so far) may still turn into a label line as more text arrives."""
    head = re.sub(r"^[ \t>#*_]*", "", text).lower()
    if not head:
        return True
    return any(label.startswith(head[:len(label)]) and (len(head) <= len(label) or head[len(label):].lstrip("*_ \t")[:1] in ("", ":"))
               for label in _LABELS)


class StreamCleaner:
    """Feed the answer's pieces as they come; `feed` returns the text safe to show now, `finish`
    the rest. Holds back at most the start of a line until it is known not to be scaffolding."""

    def __init__(self) -> None:
        self._line = ""  # the current line, not yet decided
        self._decided = False  # the current line is answer text: pass it through
        self._content = False  # answer text has been emitted
        self._pending_breaks = ""  # line breaks before the next answer text (dropped at the start)
        self._done = False  # an invented next turn began: drop everything from here
        self.changed = False
        self.raw: list[str] = []  # every piece fed, as the model gave it
        self.shown = ""  # everything returned so far: the answer the user saw

    def feed(self, piece: str) -> str:
        self.raw.append(piece)
        out: list[str] = []
        for ch in piece:
            if self._done:
                self.changed = True
                break
            if ch == "\n":
                out.append(self._end_line())
                continue
            if self._decided:
                out.append(self._emit(ch))
                continue
            self._line += ch
            out.append(self._decide(final=False))
        text = "".join(out)
        self.shown += text
        return text

    def finish(self) -> str:
        if self._done or (not self._decided and not self._line):
            return ""
        text = self._end_line(final=True)
        self.shown += text
        return text

    # ------------------------------------------------------------------ decisions
    def _emit(self, text: str) -> str:
        if not text:
            return ""
        out = (self._pending_breaks if self._content else "") + text
        self._pending_breaks = ""
        self._content = True
        return out

    def _decide(self, final: bool) -> str:
        """Look at the undecided line; emit it when it is answer text, hold it while it may
        still be scaffolding."""
        line = self._line
        m = _LABEL.match(line)
        if m and m.end() == len(line) and not final:
            return ""  # the label may go on ("**Answer:**"): wait for the next character
        if m:
            label = m.group(1).lower()
            if label == "answer":
                self.changed = True
                self._line, self._decided = "", True  # what follows the label is the answer
                return self._emit(line[m.end():])
            if label == "question" and self._content:
                self._done, self.changed = True, True
                return ""
            return ""  # an echoed question/context line: dropped at its end
        if not final and _could_become_label(line):
            return ""
        if not self._content and may_become_only_citations(line):
            if not final:
                return ""
            if only_citations(line):
                self.changed = True
                self._line = ""
                return ""
        self._line, self._decided = "", True
        return self._emit(line)

    def _end_line(self, final: bool = False) -> str:
        out = ""
        if not self._decided:
            m = _LABEL.match(self._line)
            if m and m.group(1).lower() != "answer":
                if m.group(1).lower() == "question" and self._content:
                    self._done = True
                self._line, self.changed = "", True
                return ""
            out = self._decide(final=True)
            if not self._decided:  # dropped (citations only) or empty
                self._line = ""
                if not final and self._content:
                    self._pending_breaks += "\n"
                return out
        if not final:
            if self._content:
                self._pending_breaks += "\n"
            self._decided = False
        return out


def clean_answer(text: str) -> tuple[str, bool]:
    """(the answer without echoed scaffolding, whether anything was removed)."""
    cleaner = StreamCleaner()
    out = cleaner.feed(text) + cleaner.finish()
    return out.strip(), cleaner.changed or out.strip() != text.strip()
