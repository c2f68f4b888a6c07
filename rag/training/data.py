"""Training examples from files and BEIR folders.

Shapes (what `read_training_data` returns, `TrainData.kind`):
- "pairs":    (anchor, positive)             -> multiple negatives ranking
- "triplets": (anchor, positive, negative)   -> triplet loss, or MNR with a hard negative
- "labelled": (sentence 1, sentence 2) + label: a number (cosine regression) or a class name
              (softmax classification, NLI style)

Files: .jsonl (one object a line), .csv (comma), .tsv / .txt (tab). Columns are found from a
header (`anchor`/`query`/`sentence1`/`premise`..., `positive`/`sentence2`/`hypothesis`...,
`negative`..., `label`/`score`...) or given explicitly; without a header, 2 columns are pairs,
3 are labelled pairs when the third is a number on every line, else triplets. STS-B files
(tab-separated, score in column 5, sentences in 6 and 7) are recognised as labelled pairs.
A BEIR folder gives (query, passage) pairs for the qrels of a split with score > 0, the passage
text as evaluation ingests it (rag.evaluation.beir.passage_text).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rag.errors import ConfigError

Kind = Literal["pairs", "triplets", "labelled"]

ANCHOR = ("anchor", "query", "question", "sentence1", "sentence_1", "s1", "premise", "text1", "text_a", "sent1")
POSITIVE = ("positive", "pos", "sentence2", "sentence_2", "s2", "hypothesis", "text2", "text_b", "sent2",
            "passage", "document", "answer", "response")
NEGATIVE = ("negative", "neg", "hard_negative", "hard_neg", "negative_1")
LABEL = ("label", "score", "gold", "gold_label", "similarity", "relatedness_score", "target")


@dataclass
class TrainData:
    kind: Kind
    texts: list[tuple[str, ...]]  # 2 or 3 texts per example
    labels: list[float] | list[str] | None = None
    source: str = ""
    columns: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def numeric(self) -> bool:
        return bool(self.labels) and all(isinstance(x, float) for x in self.labels)

    def label_names(self) -> list[str]:
        """Class names in a stable order (for softmax)."""
        return sorted({str(x) for x in self.labels or []})


def _as_number(x: str) -> float | None:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _pick(header: list[str], names: tuple[str, ...]) -> int | None:
    low = [h.strip().lower() for h in header]
    for n in names:
        if n in low:
            return low.index(n)
    return None


def _columns_from_header(header: list[str], path: Path) -> list[int] | None:
    """[anchor, positive, (negative), (label)] indexes when the header names them."""
    a, p, n, lab = (_pick(header, names) for names in (ANCHOR, POSITIVE, NEGATIVE, LABEL))
    if a is None or p is None:
        return None
    if n is not None and lab is not None:
        raise ConfigError(f"{path}: header has both a negative ('{header[n]}') and a label ('{header[lab]}') "
                          "column; give --columns")
    return [a, p] + ([n] if n is not None else []) + ([lab] if lab is not None else [])


def iter_jsonl(path: str | Path):
    """(line number, parsed value) for each non-blank line; a ConfigError names the bad line."""
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}:{n}: not valid JSON ({e.msg})") from None


def _rows(path: Path) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """(header or None, [(line number, fields)]) of a CSV/TSV/JSONL file."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows, keys = [], None
        for n, obj in iter_jsonl(path):
            if isinstance(obj, list):
                rows.append((n, [str(x) for x in obj]))
                continue
            if not isinstance(obj, dict):
                raise ConfigError(f"{path}:{n}: expected a JSON object or array")
            if keys is None:
                keys = list(obj)
            missing = [k for k in keys if k not in obj]
            if missing:
                raise ConfigError(f"{path}:{n}: missing key '{missing[0]}' (first line has {keys})")
            rows.append((n, ["" if obj[k] is None else str(obj[k]) for k in keys]))
        return keys, rows
    delimiter = "," if suffix == ".csv" else "\t"
    with open(path, encoding="utf-8", newline="") as fh:
        rows = [(n, r) for n, r in enumerate(csv.reader(fh, delimiter=delimiter), start=1) if any(r)]
    if not rows:
        return None, []
    first = rows[0][1]
    looks_like_header = _columns_from_header(first, path) is not None or (
        len(first) >= 2 and all(_as_number(x) is None for x in first)
        and all(len(x) < 30 and " " not in x.strip() for x in first))
    return (first, rows[1:]) if looks_like_header else (None, rows)


def sts_training_data(path: str | Path) -> TrainData:
    """An STS-B file as labelled pairs (sentence 1, sentence 2, gold score 0-5): the one path from
    STS-B to training data, for `rag train sts` and for STS files given to `rag train pairs`."""
    from rag.evaluation.sts import load_sts

    pairs = load_sts(path)
    return TrainData(kind="labelled", texts=[(p.sentence1, p.sentence2) for p in pairs],
                     labels=[p.score for p in pairs], source=str(path),
                     columns=["sentence1", "sentence2", "score"])


def read_training_file(path: str | Path, columns: list[str] | None = None,
                       kind: Kind | None = None) -> TrainData:
    """Read pairs, triplets or labelled pairs from a file (see the module doc).

    columns: names (with a header) or 0-based indexes, in the order anchor, positive,
    [negative | label]; kind: force "triplets" or "labelled" for a 3-column file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    if columns is None and path.suffix.lower() in (".csv", ".tsv", ".txt"):
        from rag.evaluation.sts import is_sts_file

        if is_sts_file(path):
            return sts_training_data(path)
    header, rows = _rows(path)
    if not rows:
        raise ConfigError(f"{path}: no examples found")
    if columns:
        idx = []
        for c in columns:
            if c.isdigit():
                idx.append(int(c))
            elif header is not None and c in header:
                idx.append(header.index(c))
            else:
                raise ConfigError(f"{path}: no column '{c}'" + (f" (header: {header})" if header else " (no header)"))
    elif header is not None and (found := _columns_from_header(header, path)) is not None:
        idx = found
    else:
        width = len(rows[0][1])
        if width < 2:
            raise ConfigError(f"{path}:{rows[0][0]}: need at least 2 columns (anchor, positive), found {width}")
        idx = list(range(min(width, 3)))
    if not 2 <= len(idx) <= 3:
        raise ConfigError(f"{path}: give 2 or 3 columns (anchor, positive, negative or label), not {len(idx)}")
    names = [header[i] if header is not None and i < len(header) else str(i) for i in idx]
    texts: list[tuple[str, ...]] = []
    thirds: list[str] = []
    for n, r in rows:
        if len(r) <= max(idx):
            raise ConfigError(f"{path}:{n}: expected at least {max(idx) + 1} columns, found {len(r)}")
        vals = [r[i].strip() for i in idx]
        for name, v in zip(names[:2], vals[:2]):
            if not v:
                raise ConfigError(f"{path}:{n}: empty '{name}' text")
        texts.append((vals[0], vals[1]))
        if len(vals) == 3:
            thirds.append(vals[2])
    if len(idx) == 2:
        return TrainData(kind="pairs", texts=texts, source=str(path), columns=names)
    numbers = [_as_number(x) for x in thirds]
    label_named = header is not None and _pick([names[2]], LABEL) is not None
    if kind is None:
        kind = "labelled" if label_named or all(x is not None for x in numbers) else "triplets"
    if kind == "triplets":
        for (n, _), neg in zip(rows, thirds):
            if not neg:
                raise ConfigError(f"{path}:{n}: empty '{names[2]}' text")
        return TrainData(kind="triplets", texts=[t + (neg,) for t, neg in zip(texts, thirds)],
                         source=str(path), columns=names)
    if kind != "labelled":
        raise ConfigError(f"kind must be pairs, triplets or labelled, not {kind!r}")
    if all(x is not None for x in numbers):
        labels: list = [float(x) for x in numbers]
    else:
        for (n, _), lab in zip(rows, thirds):
            if not lab:
                raise ConfigError(f"{path}:{n}: empty label")
        labels = list(thirds)
    return TrainData(kind="labelled", texts=texts, labels=labels, source=str(path), columns=names)


def read_beir_pairs(root: str | Path, split: str = "train",
                    exclude_queries: set[str] | None = None) -> TrainData:
    """(query, passage) pairs for the judgements of `split` with score > 0."""
    from rag.evaluation.beir import corpus_passages, load_beir

    data = load_beir(root, split)
    wanted = {(q, d) for q, rel in data.qrels.items() if q not in (exclude_queries or set())
              for d, s in rel.items() if s > 0}
    corpus = corpus_passages(root, {d for _, d in wanted})
    missing = sorted({d for _, d in wanted if d not in corpus})
    if missing:
        raise ConfigError(f"{root}: {len(missing)} judged documents are not in corpus.jsonl (e.g. {missing[0]})")
    texts = [(data.queries[q], corpus[d]) for q, d in sorted(wanted)]
    if not texts:
        raise ConfigError(f"{root}: qrels/{split}.tsv has no positive judgements")
    return TrainData(kind="pairs", texts=texts, source=f"{root} ({split})", columns=["query", "passage"])


def read_training_data(path: str | Path, columns: list[str] | None = None, kind: Kind | None = None,
                       split: str = "train") -> TrainData:
    """A file (CSV/TSV/JSONL/STS-B) or a BEIR folder."""
    p = Path(path)
    if p.is_dir():
        return read_beir_pairs(p, split)
    return read_training_file(p, columns, kind)
