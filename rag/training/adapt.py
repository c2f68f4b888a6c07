"""Unsupervised domain adaptation (`rag adapt`): fine-tune the encoder on the user's own chunks
with no labels and no LLM.

Inverse cloze task (Lee et al., 2019): from each chunk, one sentence (at least `min_words`
words; split by the chunker's rule in rag.text.sentences, so a title or heading paragraph
counts as one) is the query and the rest of the chunk, with that sentence removed, is its
positive. Trained with multiple negatives ranking: the other chunks of the batch are the
negatives. One pair per chunk, chunks sampled at random up to `max_pairs`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from rag.errors import ConfigError
from rag.text.sentences import split_sentences
from rag.training.data import TrainData


def inverse_cloze_pairs(texts: Sequence[str], max_pairs: int = 5000, min_words: int = 5,
                        seed: int = 42) -> TrainData:
    """(sentence, rest of its chunk) pairs, at most one per chunk."""
    rng = random.Random(seed)
    order = list(range(len(texts)))
    rng.shuffle(order)
    pairs: list[tuple[str, str]] = []
    for i in order:
        sents = split_sentences(texts[i])
        if len(sents) < 2:
            continue
        cands = [k for k, s in enumerate(sents) if len(s.split()) >= min_words]
        if not cands:
            continue
        k = rng.choice(cands)
        rest = " ".join(sents[:k] + sents[k + 1:])
        if len(rest.split()) < min_words:
            continue
        pairs.append((sents[k], rest))
        if len(pairs) >= max_pairs:
            break
    if not pairs:
        raise ConfigError(f"no inverse-cloze pairs from {len(texts)} chunks: none has two sentences of "
                          f"at least {min_words} words")
    return TrainData(kind="pairs", texts=pairs, source=f"inverse cloze over {len(texts)} chunks",
                     columns=["sentence", "rest of chunk"])


def adapt_texts_from_files(source: str | Path, model: str) -> list[str]:
    """Chunk texts, chunked as `rag ingest` would with `model`'s tokenizer: a BEIR folder's
    corpus.jsonl, or the files under a folder (or one file)."""
    from rag.evaluation.beir import corpus_documents
    from rag.ingest.chunking import Chunker
    from rag.embed.encoder import SentenceEncoder
    from rag.errors import LoadError
    from rag.ingest.loaders import DEFAULT_INCLUDE, find_files, load

    source = Path(source)
    encoder = SentenceEncoder(model, device="cpu")
    chunker = Chunker()
    if (source / "corpus.jsonl").is_file():
        docs = corpus_documents(source)
    else:
        if not source.exists():
            raise ConfigError(f"{source}: no such file or folder")

        def gen():
            for p in find_files([source], DEFAULT_INCLUDE, ()):
                try:
                    yield load(p)
                except LoadError:
                    continue

        docs = gen()
    return [c.text for d in docs for c in chunker.split(d, encoder)]
