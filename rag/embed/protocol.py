"""What the rest of the code uses of an encoder, declared: the chunker's tokenizer (Tokenizes)
and the whole encoder (Encoder) that ingest, retrieval, extractive answers and the vector cache
are given.

The implementations declare them (SentenceEncoder, TokenCounter, the server's EncoderGate), so
a member added here is a member each of them must define: the server's gate, which runs every
model call on one thread, cannot let a new method through unserialised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class Tokenizes(Protocol):
    """What the chunker needs from an encoder: its tokenizer's counts and offsets, and the
    longest sequence the model reads."""

    #: Tokens the model reads at most, special tokens included (None until a model is loaded).
    max_seq_length: int | None

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts, special tokens included, never truncated."""
        ...

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of each token of `text` (no special tokens, never truncated)."""
        ...


class Encoder(Tokenizes, Protocol):
    """A sentence encoder: texts in, unit vectors out, in input order."""

    #: The model as given (hub name or folder): what a loader process loads again.
    model: str

    @property
    def model_id(self) -> str:
        """What a collection records: the name given, or the resolved folder of a local model."""
        ...

    @property
    def dimension(self) -> int:
        """Length of a vector."""
        ...

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Embed `texts` (float32, shape (n, dimension)), in input order."""
        ...

    def warm_up(self) -> None:
        """Load the model now rather than on first use."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """The settings that make this encoder again (a pipeline's serialised form)."""
        ...
