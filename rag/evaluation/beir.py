"""BEIR-format data sets: corpus.jsonl, queries.jsonl, qrels/<split>.tsv."""

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


def corpus_documents(root: str | Path) -> Iterator[Document]:
    """One Document per corpus entry: title and text as two paragraphs, source = the doc id."""
    with open(Path(root) / "corpus.jsonl") as fh:
        for line in fh:
            if not line.strip():
                continue
            d = json.loads(line)
            title, text = (d.get("title") or "").strip(), (d.get("text") or "").strip()
            body = f"{title}\n\n{text}" if title else text
            if not body:
                continue
            yield Document(source=str(d["_id"]), file_hash=hashlib.sha256(body.encode()).hexdigest(),
                           pages=[Page(number=1, text=body)])


def count_corpus(root: str | Path) -> int:
    with open(Path(root) / "corpus.jsonl") as fh:
        return sum(1 for line in fh if line.strip())
