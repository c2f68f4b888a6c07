"""Fine-tuning the sentence encoder (Sentence-BERT style: one encoder, shared weights for every
column of an example — a siamese network for pairs, a triplet network for triplets).

`train()` is the loop a practitioner expects: AdamW (no weight decay on biases and LayerNorm),
linear warm-up over 10% of the steps then linear decay, gradient clipping, a seed, evaluation
on a dev set after each epoch (STS Spearman, or nDCG@10 of dev queries against a dev corpus
embedded in memory), and the best epoch kept. Objectives are in `rag.training.losses`: multiple
negatives ranking with in-batch (and optional hard) negatives, cosine-similarity regression,
softmax classification over (u, v, |u - v|), and the triplet loss. For in-batch negatives, no
text appears twice in a batch (a repeated passage would be its own false negative).

The output is an ordinary Hugging Face model folder with sentence-transformers' module files,
loadable by SentenceEncoder, by sentence-transformers and by `rag ingest --model`.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from rag.embed.encoder import SentenceEncoder
from rag.errors import ConfigError
from rag.training.losses import LOSSES, MNR_SCALE
from rag.evaluation.sts import evaluate_sts
from rag.training.data import TrainData, read_training_data, sts_training_data


class TrainSettings(BaseModel):
    epochs: int = Field(4, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 42
    max_seq_length: int | None = Field(None, ge=8, description="truncate training (and dev) texts to this "
                                       "many tokens; the saved model keeps its own limit. None: the model's")
    max_score: float | None = Field(None, gt=0, description="cosine loss: gold scores are divided by "
                                    "this; None: 5 when any score exceeds 1, else 1")
    mnr_scale: float = Field(MNR_SCALE, gt=0)
    triplet_metric: str = Field("euclidean", pattern="^(euclidean|cosine)$")
    triplet_margin: float | None = Field(None, description="None: 5 (euclidean) or 0.5 (cosine)")


class EpochResult(BaseModel):
    epoch: int
    train_loss: float
    dev_score: float | None = None
    seconds: float = 0.0

    @property
    def dev_spearman(self) -> float | None:  # the STS name, kept for callers of train_sts
        return self.dev_score


class TrainReport(BaseModel):
    output: str
    loss: str
    examples: int
    best_epoch: int
    dev_metric: str | None = None
    best_dev_score: float | None = None
    epochs: list[EpochResult]
    seconds: float

    @property
    def best_dev_spearman(self) -> float | None:
        return self.best_dev_score


# ---------------------------------------------------------------------------------- evaluators


class StsEvaluator:
    """Spearman of cosine similarity against the gold scores of an STS-B format file."""

    metric = "spearman"

    def __init__(self, path: str | Path):
        self.path = path

    def __call__(self, encoder: SentenceEncoder) -> float:
        return evaluate_sts(encoder, self.path).spearman


class IrEvaluator:
    """nDCG@10 of queries against a small corpus, both embedded in memory (exact search; no
    store). Passages are cut at the encoder's max_seq_length, unlike the chunked collection."""

    metric = "ndcg@10"

    def __init__(self, queries: dict[str, str], corpus: dict[str, str], qrels: dict[str, dict[str, float]]):
        self.queries, self.corpus, self.qrels = queries, corpus, qrels

    @classmethod
    def from_beir(cls, root: str | Path, split: str = "dev", query_ids: set[str] | None = None,
                  corpus_size: int | None = 1000, seed: int = 42) -> IrEvaluator:
        """The judged queries of `split` (or only `query_ids`); the corpus is every judged
        document plus random others up to `corpus_size` (None: the whole corpus)."""
        from rag.evaluation.beir import corpus_passages, load_beir

        data = load_beir(root, split)
        qids = [q for q in data.queries if query_ids is None or q in query_ids]
        qrels = {q: data.qrels[q] for q in qids}
        corpus = corpus_passages(root)
        judged = [d for q in qids for d in qrels[q] if d in corpus]
        keep = list(dict.fromkeys(judged))
        if corpus_size is None:
            keep = list(corpus)
        else:
            others = sorted(set(corpus) - set(keep))
            random.Random(seed).shuffle(others)
            keep += others[:max(0, corpus_size - len(keep))]
        return cls({q: data.queries[q] for q in qids}, {d: corpus[d] for d in keep}, qrels)

    def __call__(self, encoder: SentenceEncoder) -> float:
        from rag.evaluation.metrics import evaluate

        ids = list(self.corpus)
        d = encoder.encode([self.corpus[i] for i in ids])
        q = encoder.encode(list(self.queries.values()))
        sims = q @ d.T
        k = min(10, len(ids))
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        run = {}
        for row, qid in enumerate(self.queries):
            best = top[row][np.argsort(-sims[row, top[row]])]
            run[qid] = [ids[j] for j in best]
        return evaluate(run, self.qrels)["ndcg@10"]


def beir_holdout(root: str | Path, split: str, n: int, seed: int = 42) -> set[str]:
    """`n` random judged query ids of `split`, to hold out of training as a dev set."""
    from rag.evaluation.beir import load_beir

    qids = sorted(load_beir(root, split).queries)
    if not 0 < n < len(qids):
        raise ConfigError(f"holdout {n} must be between 1 and {len(qids) - 1} (the split has {len(qids)} queries)")
    random.Random(seed).shuffle(qids)
    return set(qids[:n])


def make_evaluator(dev: str | Path | None, split: str = "dev", corpus_size: int | None = 1000,
                   seed: int = 42):
    """An STS file -> StsEvaluator; a BEIR folder -> IrEvaluator on `split`; None -> None."""
    if dev is None:
        return None
    p = Path(dev)
    if p.is_dir():
        return IrEvaluator.from_beir(p, split, corpus_size=corpus_size, seed=seed)
    return StsEvaluator(p)


def no_duplicate_batches(texts: Sequence[tuple[str, ...]], order: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches of example indexes, in `order` as far as possible, with no text twice in a batch
    (sentence-transformers' NoDuplicatesDataLoader): an example that would repeat a text waits
    for the next batch."""
    pending, batches = deque(order), []
    while pending:
        batch, seen, skipped = [], set(), []
        # Bounded look-ahead: with many repeats (one passage for many queries) a batch comes out
        # smaller rather than the scan turning quadratic.
        while pending and len(batch) < batch_size and len(skipped) < 50 * batch_size:
            i = pending.popleft()
            keys = set(texts[i])
            if batch and keys & seen:
                skipped.append(i)
            else:
                batch.append(i)
                seen |= keys
        pending.extendleft(reversed(skipped))
        batches.append(batch)
    return batches


def optimizer_and_schedule(named: list, settings: TrainSettings, total: int):
    """AdamW with no weight decay on biases and LayerNorm weights, and a linear warm-up over
    `warmup_ratio` of the `total` steps then linear decay to 0 (the schedule of BERT and of
    sentence-transformers' fit). `named`: (name, parameter) pairs."""
    import torch

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = [
        {"params": [p for n, p in named if not any(k in n for k in no_decay)], "weight_decay": settings.weight_decay},
        {"params": [p for n, p in named if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=settings.lr)
    warmup = int(total * settings.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    return optimizer, scheduler


def run_epochs(plan: list[list[list[int]]], batch_loss: Callable, modules: list, settings: TrainSettings,
               evaluate: Callable[[], float] | None, save: Callable[[], object],
               on_step: Callable[[int, int, float], None] | None = None,
               on_epoch: Callable[[EpochResult], None] | None = None) -> tuple[list[EpochResult], int]:
    """The loop every trainer here shares: for each epoch's batches, the loss of a batch of
    example indexes, backward, clipping, AdamW and schedule steps (optimizer_and_schedule over
    the modules' parameters); then the dev score, and `save()` when the epoch is the best so far
    (the last, without a dev set). Returns the epochs and the best one's number."""
    import torch

    named = [(f"{i}.{n}", p) for i, m in enumerate(modules) for n, p in m.named_parameters()]
    total = sum(len(b) for b in plan)
    optimizer, scheduler = optimizer_and_schedule(named, settings, total)
    params = [p for _, p in named]
    history: list[EpochResult] = []
    best: tuple[float, int] | None = None
    step = 0
    for epoch, batches in enumerate(plan, start=1):
        t_epoch = time.perf_counter()
        for m in modules:
            m.train()
        losses = []
        for idx in batches:
            value = batch_loss(idx)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(value.item())
            if on_step:
                on_step(step, total, losses[-1])
        for m in modules:
            m.eval()
        result = EpochResult(epoch=epoch, train_loss=sum(losses) / len(losses))
        if evaluate is not None:
            result.dev_score = float(evaluate())
        result.seconds = time.perf_counter() - t_epoch
        history.append(result)
        if on_epoch:
            on_epoch(result)
        score = result.dev_score if result.dev_score is not None else float(epoch)
        if best is None or score > best[0]:
            best = (score, epoch)
            save()
    return history, best[1]


def _check_objective(loss: str, data: TrainData) -> None:
    if loss not in LOSSES:
        raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, not '{loss}'")
    need = {"mnr": ("pairs", "triplets"), "triplet": ("triplets",), "cosine": ("labelled",),
            "softmax": ("labelled",)}[loss]
    if data.kind not in need:
        raise ConfigError(f"{data.source}: the {loss} loss needs {' or '.join(need)}, but the file holds "
                          f"{data.kind} (columns {data.columns}); pick another --loss or give --columns")
    if loss == "cosine" and not data.numeric:
        raise ConfigError(f"{data.source}: the cosine loss needs numeric scores, found labels like "
                          f"'{data.labels[0]}' (use --loss softmax for class labels)")


def train(
    model: str,
    data: TrainData,
    output: str | Path,
    loss: str = "mnr",
    settings: TrainSettings | None = None,
    evaluator: Callable[[SentenceEncoder], float] | None = None,
    device: str | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
) -> TrainReport:
    """Fine-tune `model` on `data` with `loss`; keep the best epoch by the evaluator's score
    (the last epoch without one) in `output`."""
    import torch

    from rag.training import losses as L

    settings = settings or TrainSettings()
    _check_objective(loss, data)
    started = time.perf_counter()
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    encoder = SentenceEncoder(model, device=device)
    encoder.warm_up()
    model_max_len = encoder.max_seq_length  # what the saved model records
    if settings.max_seq_length:
        encoder.max_seq_length = settings.max_seq_length  # training and dev texts only
    net, dev = encoder.transformer, encoder.runtime_device
    if dev.startswith("cuda"):
        net.float()  # train in fp32; the encoder loads fp16 for inference on CUDA

    head, targets = None, None
    if loss == "softmax":
        names = data.label_names()
        if len(names) < 2:
            raise ConfigError(f"{data.source}: the softmax loss needs at least 2 label classes, found {names}")
        index = {n: i for i, n in enumerate(names)}
        targets = torch.tensor([index[str(x)] for x in data.labels], device=dev)
        head = torch.nn.Linear(3 * encoder.dimension, len(names)).to(dev)
    elif loss == "cosine":
        top = settings.max_score or (5.0 if max(data.labels) > 1 else 1.0)
        targets = torch.tensor([x / top for x in data.labels], dtype=torch.float32, device=dev)

    # All epochs' batches up front: the step count (and so the schedule) is exact.
    plan = []
    for _ in range(settings.epochs):
        order = list(range(len(data)))
        rng.shuffle(order)
        if loss == "mnr":
            plan.append(no_duplicate_batches(data.texts, order, settings.batch_size))
        else:
            plan.append([order[i:i + settings.batch_size] for i in range(0, len(order), settings.batch_size)])

    def batch_loss(idx: list[int]):
        cols = [encoder.embed([data.texts[i][c] for i in idx]) for c in range(len(data.texts[idx[0]]))]
        if loss == "mnr":
            return L.mnr_loss(cols[0], cols[1], cols[2:] or None, scale=settings.mnr_scale)
        if loss == "triplet":
            return L.triplet_loss(cols[0], cols[1], cols[2], margin=settings.triplet_margin,
                                  metric=settings.triplet_metric)
        if loss == "cosine":
            return L.cosine_mse_loss(cols[0], cols[1], targets[idx])
        return L.softmax_loss(cols[0], cols[1], targets[idx], head)

    output = Path(output)
    modules = [net] + ([head] if head is not None else [])
    history, best_epoch = run_epochs(
        plan, batch_loss, modules, settings, (lambda: evaluator(encoder)) if evaluator is not None else None,
        lambda: encoder.save(output, max_seq_length=model_max_len), on_step, on_epoch)
    return TrainReport(output=str(output), loss=loss, examples=len(data), best_epoch=best_epoch,
                       dev_metric=getattr(evaluator, "metric", None) if evaluator is not None else None,
                       best_dev_score=history[best_epoch - 1].dev_score,
                       epochs=history, seconds=time.perf_counter() - started)


def train_sts(
    model: str,
    train_file: str | Path,
    output: str | Path,
    dev_file: str | Path | None = None,
    settings: TrainSettings | None = None,
    device: str | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
) -> TrainReport:
    """Cosine-similarity regression on STS-B pairs (scores / 5), best epoch by dev Spearman."""
    data = sts_training_data(train_file)
    settings = (settings or TrainSettings()).model_copy()
    if settings.max_score is None:
        settings.max_score = 5.0
    return train(model, data, output, loss="cosine", settings=settings,
                 evaluator=StsEvaluator(dev_file) if dev_file is not None else None,
                 device=device, on_step=on_step)


__all__ = ["TrainSettings", "TrainReport", "EpochResult", "train", "train_sts",
           "StsEvaluator", "IrEvaluator", "make_evaluator", "beir_holdout", "no_duplicate_batches",
           "read_training_data"]
