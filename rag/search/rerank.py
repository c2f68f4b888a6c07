"""Second-stage reranking: a cross-encoder reads each (query, passage) pair together and scores
it, which a bi-encoder's independent embeddings cannot (Nogueira & Cho 2019, "Passage
Re-ranking with BERT"; sentence-transformers' CrossEncoder).

The model is any Hugging Face sequence-classification folder in sentence-transformers'
CrossEncoder layout (a user's downloaded cross-encoder works as is; `rag train cross-encoder`
writes one). Scores follow `CrossEncoder.predict`: the logit through the activation the model's
config names (`config.sentence_transformers.activation_fn`), else a sigmoid for one label;
with several labels the last label's logit after that activation (the "relevant" class of a
binary classifier).

Pairs are tokenised with only the passage side truncated (`only_second`), so a long passage
never pushes the query out, and run in batches sorted by length, on the encoder's device (CUDA
in fp16, MPS, or CPU).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.embed.device import available_cpus, pick_device
from rag.embed.encoder import resolve_model
from rag.errors import ConfigError

DEFAULT_RERANK_DEPTH = 20
SIGMOID = "torch.nn.modules.activation.Sigmoid"
IDENTITY = "torch.nn.modules.linear.Identity"


def _activation(config, num_labels: int) -> str:
    """The activation CrossEncoder.predict would apply: the saved one, else sigmoid for one label."""
    st = getattr(config, "sentence_transformers", None) or {}
    path = st.get("activation_fn") if isinstance(st, dict) else None
    path = path or getattr(config, "sbert_ce_default_activation_function", None)
    if path:
        return SIGMOID if path.endswith("Sigmoid") else IDENTITY if path.endswith("Identity") else path
    return SIGMOID if num_labels == 1 else IDENTITY


class CrossEncoderReranker:
    """Scores (query, passage) pairs with a cross-encoder. Light constructor; `warm_up()` (or the
    first call) loads the model.

    model: a local model folder (or a name a package ships). device: None picks CUDA (fp16), MPS
    or CPU. max_length: tokens per pair (None: the tokenizer's limit, at most 512).
    head_init: start from a checkpoint without a classification head (a sentence encoder) with a
    freshly initialised one-label head: only for training; otherwise such a folder is refused.
    """

    def __init__(self, model: str, device: str | None = None, batch_size: int = 32,
                 max_length: int | None = None, head_init: bool = False):
        self.model, self.device, self.batch_size, self.max_length = str(model), device, batch_size, max_length
        self.head_init = head_init  # load any encoder checkpoint with a new one-label head (training)
        self._tokenizer = self._net = self._device = None
        self._activation = SIGMOID

    def to_dict(self) -> dict[str, Any]:
        return {"type": "CrossEncoderReranker", "init_parameters": {
            "model": self.model, "device": self.device, "batch_size": self.batch_size,
            "max_length": self.max_length}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CrossEncoderReranker:
        return cls(**data.get("init_parameters", {}))

    def warm_up(self) -> None:
        if self._net is not None:
            return
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        path = resolve_model(self.model)
        if not isinstance(path, Path) or not (path / "config.json").is_file():
            raise ConfigError(f"reranker '{self.model}' is not a model folder (no config.json): give the "
                              "folder of a cross-encoder (sentence-transformers CrossEncoder layout), e.g. "
                              "one written by `rag train cross-encoder`")
        device = pick_device(self.device)
        if device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(available_cpus())
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path))
            dtype = torch.float16 if device.startswith("cuda") else torch.float32
            if self.head_init:  # training: a fresh one-label head on any encoder checkpoint
                level = hf_logging.get_verbosity()
                hf_logging.set_verbosity_error()  # its "classifier MISSING" report is the point here
                try:
                    net = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=dtype, num_labels=1)
                finally:
                    hf_logging.set_verbosity(level)
            else:
                archs = getattr(AutoConfig.from_pretrained(str(path)), "architectures", None) or []
                if not any(a.endswith("ForSequenceClassification") for a in archs):
                    raise ConfigError(
                        f"'{self.model}' is not a cross-encoder (its config names {archs or 'no'} "
                        "architecture, not a ...ForSequenceClassification): its scores would come "
                        "from an untrained head. Train one with `rag train cross-encoder`.")
                net = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=dtype)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load reranker '{self.model}': {e}") from e
        net.eval().to(device)
        self._activation = _activation(net.config, net.config.num_labels)
        self._tokenizer, self._net, self._device = tokenizer, net, device
        if self.max_length is None:
            self.max_length = min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512)

    @property
    def runtime_device(self) -> str:
        self.warm_up()
        return self._device

    def logits(self, queries: Sequence[str], passages: Sequence[str], grad: bool = False):
        """Raw logits of one batch of pairs as a torch tensor (n,) on the model's device: the
        last label's logit. With `grad`, the differentiable forward pass training runs."""
        import torch

        self.warm_up()
        batch = self._tokenizer(list(queries), list(passages), padding=True, truncation="only_second",
                                max_length=self.max_length, return_tensors="pt")
        batch = {k: v.to(self._device) for k, v in batch.items()}
        with torch.set_grad_enabled(grad):
            return self._net(**batch).logits[:, -1]

    def score(self, pairs: Sequence[tuple[str, str]], batch_size: int | None = None) -> np.ndarray:
        """Relevance of each (query, passage) pair, in input order (float32): as
        CrossEncoder.predict, the activation applied (a sigmoid unless the model says otherwise)."""
        import torch

        self.warm_up()
        pairs = list(pairs)
        out = np.empty(len(pairs), dtype=np.float32)
        if not pairs:
            return out
        bs = batch_size or self.batch_size
        order = np.argsort([-(len(q) + len(p)) for q, p in pairs], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(pairs), bs):
                idx = order[start:start + bs]
                z = self.logits([pairs[i][0] for i in idx], [pairs[i][1] for i in idx]).float()
                if self._activation == SIGMOID:
                    z = torch.sigmoid(z)
                elif self._activation != IDENTITY:
                    raise ConfigError(f"reranker '{self.model}': activation {self._activation} is not "
                                      "supported (Sigmoid or Identity)")
                out[idx] = z.cpu().numpy()
        return out

    def save(self, path: str | Path) -> Path:
        """The model as a Hugging Face folder that sentence-transformers' CrossEncoder, and this
        class, load with the same scores (the activation recorded in config.json)."""
        self.warm_up()
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        self._net.config.sentence_transformers = {"activation_fn": self._activation}
        self._tokenizer.model_max_length = self.max_length  # what a loader then cuts pairs at
        self._net.save_pretrained(out)
        self._tokenizer.save_pretrained(out)
        return out


def rerank_order(scores: Sequence[float]) -> list[int]:
    """Candidate indices by descending rerank score; ties keep the first stage's order."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))
