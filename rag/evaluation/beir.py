"""BEIR-format data sets: corpus.jsonl, queries.jsonl, qrels/<split>.tsv. The package's one
reader of them: evaluation ingests the corpus as documents, training reads it as passages, both
with the same passage text."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from rag.errors import ConfigError
from rag.models import Document, Page


class BeirDataset(BaseModel):
    root: str
    queries: dict[str, str]
    qrels: dict[str, dict[str, float]]
    split: str

    @property
    def name(self) -> str:
        return Path(self.root).name


def load_beir(root: str | Path, split: str = "test") -> BeirDataset:
    root = Path(root)
    corpus, queries, qrels_file = root / "corpus.jsonl", root / "queries.jsonl", root / "qrels" / f"{split}.tsv"
    for f in (corpus, queries, qrels_file):
        if not f.is_file():
            raise ConfigError(f"{root} is not a BEIR folder: {f} is missing")
    qrels: dict[str, dict[str, float]] = {}
    with open(qrels_file, newline="") as fh:
        for row in csv.reader(fh, delimiter="\t"):
            if len(row) < 3 or row[0] == "query-id":
                continue
            qrels.setdefault(row[0], {})[row[1]] = float(row[2])
    all_queries = {}
    with open(queries) as fh:
        for line in fh:
            if line.strip():
                q = json.loads(line)
                all_queries[str(q["_id"])] = q["text"]
    missing = [q for q in qrels if q not in all_queries]
    if missing:
        raise ConfigError(f"{qrels_file}: {len(missing)} judged queries are not in queries.jsonl (e.g. {missing[0]})")
    return BeirDataset(root=str(root), queries={q: all_queries[q] for q in qrels}, qrels=qrels, split=split)


def passage_text(doc: dict) -> str:
    """A corpus entry's passage: title and text as two paragraphs (the text alone without a
    title). The one rule for evaluation and training alike, so that a model is trained on the
    passages it is evaluated on; the blank line lets the chunker keep the title a sentence of its
    own, and BERT-style tokenizers see only whitespace either way."""
    title, text = (doc.get("title") or "").strip(), (doc.get("text") or "").strip()
    return f"{title}\n\n{text}" if title else text


def corpus_entries(root: str | Path) -> Iterator[tuple[str, dict]]:
    """(doc id, entry) for each line of corpus.jsonl: the one reader of the file. A bad line is
    a ConfigError naming it."""
    path = Path(root) / "corpus.jsonl"
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(d, dict) or "_id" not in d:
                raise ConfigError(f"{path}:{n}: expected an object with an '_id'")
            yield str(d["_id"]), d


def corpus_passages(root: str | Path, ids: set[str] | None = None) -> dict[str, str]:
    """doc id -> passage text (only `ids` when given), for training and in-memory evaluation."""
    return {did: passage_text(d) for did, d in corpus_entries(root) if ids is None or did in ids}


def corpus_documents(root: str | Path) -> Iterator[Document]:
    """One Document per corpus entry with a passage, source = the doc id, title = the entry's
    title (its chunks' document context; the passage's first chunk, which begins with it, does
    not get it twice)."""
    for did, d in corpus_entries(root):
        body = passage_text(d)
        if not body:
            continue
        yield Document(source=did, file_hash=hashlib.sha256(body.encode()).hexdigest(),
                       pages=[Page(number=1, text=body)], title=(d.get("title") or "").strip() or None)


def count_corpus(root: str | Path) -> int:
    with open(Path(root) / "corpus.jsonl") as fh:
        return sum(1 for line in fh if line.strip())
