"""`rag ask` and `rag chat`: answers with citations from a collection, through an LLM backend."""

from __future__ import annotations


def add_answer_commands(sub) -> None:
    """Register `ask` and `chat` on the `rag` subcommand parser."""
