"""Training a cross-encoder reranker (rag.search.rerank) from relevance judgements.

The data: for each training query, every judged-relevant passage (label 1) and, per positive,
`negatives` hard negatives (label 0): passages the first-stage retriever ranks high for the query
that are not judged relevant, sampled from its top `depth`. These are the mistakes a reranker
must fix (the hard-negative recipe of sentence-transformers' `mine_hard_negatives` and of the
MS MARCO cross-encoders). Mining needs a retriever; the caller gives one as a function, so the
core stays free of any store.

The loop is the encoder trainer's (rag.training.trainer): AdamW without decay on biases and
LayerNorm, linear warm-up then decay, gradient clipping, a seed, the dev set evaluated after
each epoch and the best epoch kept. The loss is binary cross-entropy on the logit
(sentence-transformers' `BinaryCrossEntropyLoss`). The dev score is nDCG@10 of the dev queries'
first-stage candidates reordered by the model; the report gives the first stage's own nDCG@10
on those candidates beside it, so an epoch that does not beat it is visible.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from rag.errors import ConfigError
from rag.search.rerank import CrossEncoderReranker, rerank_order
from rag.training.trainer import EpochResult, TrainReport, TrainSettings, run_epochs

Search = Callable[[list[str]], list[list[str]]]  # queries -> ranked passage ids, best first


class LabelledPair(BaseModel):
    query: str
    passage: str
    label: float = Field(ge=0, le=1)


def mine_pairs(queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, float]],
               corpus: Mapping[str, str], search: Search, negatives: int = 4, depth: int = 30,
               batch: int = 64, seed: int = 42, progress: Callable[[int], None] | None = None) -> list[LabelledPair]:
    """(query, passage, label) pairs: the judged positives, and per positive `negatives` passages
    drawn without replacement from the unjudged ones among the retriever's top `depth`."""
    if negatives < 0 or depth < 1:
        raise ConfigError("negatives must be >= 0 and depth >= 1")
    rng = random.Random(seed)
    qids = [q for q in queries if any(r > 0 for r in qrels.get(q, {}).values())]
    pairs: list[LabelledPair] = []
    for start in range(0, len(qids), batch):
        ids = qids[start:start + batch]
        for q, ranked in zip(ids, search([queries[q] for q in ids])):
            positive = [d for d, r in qrels[q].items() if r > 0 and d in corpus]
            judged = set(qrels[q])
            pool = [d for d in ranked[:depth] if d not in judged and d in corpus]
            for d in positive:
                pairs.append(LabelledPair(query=queries[q], passage=corpus[d], label=1.0))
            take = min(len(pool), negatives * len(positive))
            for d in rng.sample(pool, take):
                pairs.append(LabelledPair(query=queries[q], passage=corpus[d], label=0.0))
        if progress is not None:
            progress(len(ids))
    return pairs


class RerankDev:
    """nDCG@10 of dev queries' first-stage candidates reordered by a reranker."""

    metric = "ndcg@10"

    def __init__(self, queries: Mapping[str, str], candidates: Mapping[str, Sequence[str]],
                 corpus: Mapping[str, str], qrels: Mapping[str, Mapping[str, float]]):
        self.queries, self.candidates, self.corpus, self.qrels = queries, candidates, corpus, qrels

    @classmethod
    def from_search(cls, queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, float]],
                    corpus: Mapping[str, str], search: Search, depth: int = 20) -> RerankDev:
        ids = list(queries)
        ranked = search([queries[q] for q in ids])
        return cls(queries, {q: [d for d in r if d in corpus][:depth] for q, r in zip(ids, ranked)}, corpus,
                   {q: qrels.get(q, {}) for q in ids})

    def first_stage(self) -> float:
        from rag.evaluation.metrics import evaluate

        return evaluate({q: list(c) for q, c in self.candidates.items()}, self.qrels)["ndcg@10"]

    def __call__(self, reranker: CrossEncoderReranker) -> float:
        from rag.evaluation.metrics import evaluate

        ids = list(self.candidates)
        pairs = [(self.queries[q], self.corpus[d]) for q in ids for d in self.candidates[q]]
        scores = reranker.score(pairs)
        run, at = {}, 0
        for q in ids:
            c = list(self.candidates[q])
            s = [float(x) for x in scores[at:at + len(c)]]
            at += len(c)
            run[q] = [c[i] for i in rerank_order(s)]
        return evaluate(run, self.qrels)["ndcg@10"]


class CrossEncoderReport(TrainReport):
    first_stage_dev_score: float | None = Field(None, description="the dev candidates' nDCG@10 before reranking")


def train_cross_encoder(
    model: str,
    pairs: Sequence[LabelledPair],
    output: str | Path,
    settings: TrainSettings | None = None,
    dev: RerankDev | None = None,
    device: str | None = None,
    max_length: int = 256,
    on_step: Callable[[int, int, float], None] | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> CrossEncoderReport:
    """Train a cross-encoder from `model` (a cross-encoder folder, or any encoder checkpoint,
    which gets a fresh one-label head) on labelled pairs with binary cross-entropy; keep the best
    epoch by `dev` (the last without one) in `output`, a folder that CrossEncoderReranker and
    sentence-transformers' CrossEncoder load."""
    import torch

    if not pairs:
        raise ConfigError("no training pairs: the training queries have no judged passage in the corpus")
    settings = settings or TrainSettings(epochs=1, batch_size=16)
    started = time.perf_counter()
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    reranker = CrossEncoderReranker(model, device=device, max_length=max_length, batch_size=64,
                                    head_init=not _is_cross_encoder(model))
    reranker.warm_up()
    net = reranker._net
    if reranker.runtime_device.startswith("cuda"):
        net.float()  # train in fp32
    plan = []
    for _ in range(settings.epochs):
        order = list(range(len(pairs)))
        rng.shuffle(order)
        plan.append([order[i:i + settings.batch_size] for i in range(0, len(order), settings.batch_size)])
    bce = torch.nn.BCEWithLogitsLoss()

    def batch_loss(idx: list[int]):
        logits = reranker.logits([pairs[i].query for i in idx], [pairs[i].passage for i in idx], grad=True)
        target = torch.tensor([pairs[i].label for i in idx], dtype=logits.dtype, device=logits.device)
        return bce(logits, target)

    first = dev.first_stage() if dev is not None else None
    output = Path(output)
    history, best_epoch = run_epochs(plan, batch_loss, [net], settings,
                                     (lambda: dev(reranker)) if dev is not None else None,
                                     lambda: reranker.save(output), on_step, on_epoch)
    return CrossEncoderReport(output=str(output), loss="bce", examples=len(pairs), best_epoch=best_epoch,
                              dev_metric=dev.metric if dev is not None else None,
                              best_dev_score=history[best_epoch - 1].dev_score, epochs=history,
                              seconds=time.perf_counter() - started, first_stage_dev_score=first)


def _is_cross_encoder(model: str) -> bool:
    """Whether `model` already has a sequence-classification head (then training continues it)."""
    from transformers import AutoConfig

    from rag.embed.encoder import resolve_model

    try:
        archs = getattr(AutoConfig.from_pretrained(str(resolve_model(model))), "architectures", None) or []
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read model '{model}': {e}") from e
    return any(a.endswith("ForSequenceClassification") for a in archs)
