"""Paraphrase / near-duplicate mining: all pairs of texts whose embeddings are at least
`threshold` cosine-similar, computed tile by tile so that memory stays bounded (one
block x block similarity tile at a time, from rag.embed.similarity, plus the pairs found)."""

from __future__ import annotations

import numpy as np

from rag.embed.similarity import similarity_tiles


def mine_pairs(embeddings: np.ndarray, threshold: float, block: int = 2048,
               normalized: bool = True) -> list[tuple[int, int, float]]:
    """Pairs (i, j, cosine) with i < j and cosine >= threshold, best first.

    embeddings: (n, dim); rows are L2-normalised unless `normalized` is False.
    block: tile edge; peak extra memory is about block * block * 4 bytes.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError("threshold must be a cosine, within [-1, 1]")
    rows, cols, sims = [], [], []
    for a, b, tile in similarity_tiles(embeddings, block, upper_only=True, normalized=normalized):
        i, j = np.nonzero(tile >= threshold)
        if len(i):
            rows.append(i + a)
            cols.append(j + b)
            sims.append(tile[i, j])
    if not rows:
        return []
    r, c, s = np.concatenate(rows), np.concatenate(cols), np.concatenate(sims)
    order = np.lexsort((c, r, -s))
    return [(int(r[k]), int(c[k]), float(s[k])) for k in order]


def read_texts(path, column: str | None = None) -> list[str]:
    """Texts to mine from a file: .txt one a line; .jsonl the key `column` (default "text");
    .csv/.tsv the column `column` (default "text", "sentence", else the first); an STS-B file
    gives its unique sentences (both columns), in order of first appearance."""
    import csv
    from pathlib import Path

    from rag.errors import ConfigError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv") and column is None:
        from rag.evaluation.sts import is_sts_file, load_sts

        if is_sts_file(path):
            pairs = load_sts(path)
            return list(dict.fromkeys([s for p in pairs for s in (p.sentence1, p.sentence2)]))
    texts: list[str] = []
    if suffix == ".jsonl":
        from rag.training.data import iter_jsonl

        key = column or "text"
        for n, obj in iter_jsonl(path):
            if not isinstance(obj, dict) or key not in obj:
                raise ConfigError(f"{path}:{n}: no key '{key}' (give --column)")
            texts.append(str(obj[key]))
    elif suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8", newline="") as fh:
            rows = [r for r in csv.reader(fh, delimiter="," if suffix == ".csv" else "\t") if any(r)]
        if not rows:
            raise ConfigError(f"{path}: empty file")
        header = [h.strip().lower() for h in rows[0]]
        wanted = [column.lower()] if column else ["text", "sentence"]
        found = next((header.index(w) for w in wanted if w in header), None)
        if column is not None and found is None and not column.isdigit():
            raise ConfigError(f"{path}: no column '{column}' (header: {rows[0]})")
        idx = int(column) if column is not None and column.isdigit() else (found or 0)
        for n, r in enumerate(rows[1:] if found is not None else rows, start=2 if found is not None else 1):
            if len(r) <= idx:
                raise ConfigError(f"{path}:{n}: no column {idx + 1}")
            texts.append(r[idx])
    else:
        texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise ConfigError(f"{path}: no texts found")
    return texts
