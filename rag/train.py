"""Fine-tuning the sentence encoder (Sentence-BERT style, shared weights for both sides).

So far: the cosine-similarity regression objective (MSE between cos(u, v) and the gold score
scaled to [0, 1]) on STS-format pairs, with the loop a practitioner expects: AdamW, linear
warm-up over 10% of the steps then linear decay, gradient clipping, a seed, evaluation on a dev
file after each epoch, and the best epoch kept. The output is an ordinary Hugging Face model
folder with sentence-transformers' module files, loadable by SentenceEncoder and by
sentence-transformers alike.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field

from rag.encoder import SentenceEncoder, mean_pool, resolve_model
from rag.sts import StsPair, evaluate_sts, load_sts

ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


class TrainSettings(BaseModel):
    epochs: int = Field(4, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 42
    max_score: float = Field(5.0, gt=0, description="gold scores are divided by this")


class EpochResult(BaseModel):
    epoch: int
    train_loss: float
    dev_spearman: float | None = None


class TrainReport(BaseModel):
    output: str
    best_epoch: int
    best_dev_spearman: float | None
    epochs: list[EpochResult]
    seconds: float


def save_model(encoder: SentenceEncoder, out: Path, source: Path | str) -> None:
    """A Hugging Face folder plus sentence-transformers' pooling/normalize module files."""
    out.mkdir(parents=True, exist_ok=True)
    encoder._model.save_pretrained(out)
    encoder._tokenizer.save_pretrained(out)
    src = Path(source) if isinstance(source, Path) else None
    for name in ST_FILES:
        if src is not None and (src / name).is_file():
            shutil.copy(src / name, out / name)
    if not (out / "modules.json").is_file():
        (out / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}],
            indent=2))
    (out / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": encoder.max_seq_length, "do_lower_case": False}, indent=2))
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": encoder.dimension, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False}, indent=2))


def train_sts(
    model: str,
    train_file: str | Path,
    output: str | Path,
    dev_file: str | Path | None = None,
    settings: TrainSettings | None = None,
    device: str | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
) -> TrainReport:
    """Fine-tune `model` on STS pairs with cosine-similarity regression; keep the best epoch by
    dev Spearman (the last epoch when there is no dev file) in `output`."""
    import time

    import torch

    settings = settings or TrainSettings()
    started = time.perf_counter()
    random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    pairs: list[StsPair] = load_sts(train_file)
    encoder = SentenceEncoder(model, device=device)
    encoder.warm_up()
    net, tok, dev = encoder._model, encoder._tokenizer, encoder._device
    if dev.startswith("cuda"):
        net.float()  # train in fp32; the encoder loads fp16 for inference on CUDA
    steps_per_epoch = (len(pairs) + settings.batch_size - 1) // settings.batch_size
    total = steps_per_epoch * settings.epochs
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = [
        {"params": [p for n, p in net.named_parameters() if not any(k in n for k in no_decay)],
         "weight_decay": settings.weight_decay},
        {"params": [p for n, p in net.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=settings.lr)
    warmup = int(total * settings.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))

    def embed(texts: list[str]):
        batch = tok(texts, padding=True, truncation=True, max_length=encoder.max_seq_length, return_tensors="pt")
        batch = {k: v.to(dev) for k, v in batch.items()}
        return mean_pool(net(**batch).last_hidden_state, batch["attention_mask"])

    output = Path(output)
    history: list[EpochResult] = []
    best: tuple[float, int] | None = None
    step = 0
    for epoch in range(1, settings.epochs + 1):
        net.train()
        order = list(range(len(pairs)))
        random.shuffle(order)
        losses = []
        for start in range(0, len(order), settings.batch_size):
            chunk = [pairs[i] for i in order[start:start + settings.batch_size]]
            u = embed([p.sentence1 for p in chunk])
            v = embed([p.sentence2 for p in chunk])
            gold = torch.tensor([p.score / settings.max_score for p in chunk], device=dev)
            loss = torch.nn.functional.mse_loss(torch.cosine_similarity(u, v), gold)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(loss.item())
            if on_step:
                on_step(step, total, losses[-1])
        net.eval()
        result = EpochResult(epoch=epoch, train_loss=sum(losses) / len(losses))
        if dev_file is not None:
            result.dev_spearman = evaluate_sts(encoder, dev_file).spearman
        history.append(result)
        score = result.dev_spearman if result.dev_spearman is not None else float(epoch)
        if best is None or score > best[0]:
            best = (score, epoch)
            save_model(encoder, output, resolve_model(model))
    return TrainReport(output=str(output), best_epoch=best[1],
                       best_dev_spearman=best[0] if dev_file is not None else None,
                       epochs=history, seconds=time.perf_counter() - started)
