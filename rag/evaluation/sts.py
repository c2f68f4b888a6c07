"""Semantic textual similarity evaluation: correlation between cosine similarity and gold scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel

from rag.embed.protocol import Encoder
from rag.errors import ConfigError


class StsPair(BaseModel):
    sentence1: str
    sentence2: str
    score: float


class StsResult(BaseModel):
    file: str
    pairs: int
    spearman: float
    pearson: float


def load_sts(path: str | Path) -> list[StsPair]:
    """STS-B format: tab-separated, no quoting; columns 4, 5, 6 are score, sentence 1, sentence 2
    (lines may carry extra columns after them)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split("\t")
        if len(parts) < 7:
            continue
        try:
            score = float(parts[4])
        except ValueError:
            if n == 1:
                continue  # a header line
            raise ConfigError(f"{path}:{n}: score '{parts[4]}' is not a number") from None
        pairs.append(StsPair(sentence1=parts[5], sentence2=parts[6], score=score))
    if not pairs:
        raise ConfigError(f"{path}: no STS pairs found (tab-separated, score in column 5)")
    return pairs


def is_sts_file(path: str | Path) -> bool:
    """Whether a file looks like STS-B (tab-separated, >= 7 fields, column 5 a number; the first
    line may be a header), judged from its first lines: how training and mining tell an STS-B file
    from other tab-separated data."""
    with open(path, encoding="utf-8") as fh:
        lines = [fh.readline() for _ in range(3)]
    rows = [ln.rstrip("\n").split("\t") for ln in lines if ln.strip()]
    if not rows or not all(len(r) >= 7 for r in rows):
        return False
    try:
        float(rows[-1][4])
    except ValueError:
        return False
    return True


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return pearson(rankdata(a), rankdata(b))


def evaluate_sts(encoder: Encoder, path: str | Path) -> StsResult:
    pairs = load_sts(path)
    sentences = list(dict.fromkeys([p.sentence1 for p in pairs] + [p.sentence2 for p in pairs]))
    index = {s: i for i, s in enumerate(sentences)}
    emb = encoder.encode(sentences)
    u = emb[[index[p.sentence1] for p in pairs]]
    v = emb[[index[p.sentence2] for p in pairs]]
    cos = (u * v).sum(axis=1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))
    gold = np.array([p.score for p in pairs])
    return StsResult(file=str(path), pairs=len(pairs), spearman=spearman(cos, gold), pearson=pearson(cos, gold))
