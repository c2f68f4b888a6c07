"""The sentence encoder matches sentence-transformers, keeps input order, and is batch-invariant."""

from __future__ import annotations

import random

import numpy as np
import pytest

from rag.embed.device import pick_device
from rag.embed.encoder import DEFAULT_MODEL, SentenceEncoder, mean_pool, resolve_model

WORDS = ("the a model encoder retrieval passage query index vector search answer page document "
         "token budget chunk overlap section store ranking context window sentence").split()


def varied_sentences() -> list[str]:
    rnd = random.Random(1234)
    fixed = [
        "",
        " ",
        "a",
        "Hello, world!",
        "What is the capital of France?",
        "The quick brown fox jumps over the lazy dog.",
        "Die Universität München liegt in Bayern.",
        "Le modèle est entraîné sur des données publiques, n'est-ce pas ?",
        "El rápido zorro marrón salta sobre el perro perezoso.",
        "東京は日本の首都です。",
        "Москва — столица России.",
        "مرحبا بالعالم",
        "Εὐχαριστῶ πολύ",
        "I ❤️ embeddings 😀🚀🔥",
        "3.14159 2.71828 1.41421 — 42, 1e-9, -7, 100%, $19.99, 2024-05-01",
        "!!! ??? ... ;;; --- ((( ))) [[[ ]]] {{{ }}}",
        "https://example.com/path?query=1&x=y#frag",
        "def f(x):\n    return x ** 2  # squares",
        "    leading and trailing whitespace    ",
        "Line one.\nLine two.\n\nParagraph two.",
        "ALL CAPS SENTENCE WITH NO LOWER CASE",
        "co-operate, re-use, state-of-the-art, e-mail",
        "Ünïcödé ñ ß ø å æ œ",
        "ﬁne-tuning with ligatures",
    ]
    out = list(fixed)
    for i in range(240):
        kind = i % 10
        if kind < 3:  # short
            n = rnd.randint(1, 6)
        elif kind < 6:  # medium
            n = rnd.randint(10, 40)
        elif kind == 6 and i % 20 == 6:  # long: over 256 tokens, so truncation applies
            n = rnd.randint(280, 400)
        elif kind == 6:  # just under the limit
            n = rnd.randint(200, 240)
        else:  # mixed with numbers and punctuation
            n = rnd.randint(5, 40)
        words = [rnd.choice(WORDS) for _ in range(n)]
        if kind > 6:
            words = [w if rnd.random() < 0.7 else f"{rnd.randint(0, 10**6)}{rnd.choice(',.;:!?')}"
                     for w in words]
        sentence = " ".join(words)
        out.append(sentence[0].upper() + sentence[1:] + "." if sentence else sentence)
    return out


SENTENCES = varied_sentences()


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


@pytest.fixture(scope="module")
def ours(encoder) -> np.ndarray:
    return encoder.encode(SENTENCES)


def test_sentences_include_truncated_ones(encoder):
    counts = encoder.count_tokens(SENTENCES)
    assert len(SENTENCES) >= 200
    assert sum(n > encoder.max_seq_length for n in counts) >= 10
    assert encoder.max_seq_length == 256


def test_matches_sentence_transformers(encoder, ours):
    st = pytest.importorskip("sentence_transformers")
    reference_model = st.SentenceTransformer(str(resolve_model(DEFAULT_MODEL)), device="cpu")
    assert reference_model.max_seq_length == encoder.max_seq_length
    reference = reference_model.encode(SENTENCES, batch_size=32, normalize_embeddings=True,
                                       convert_to_numpy=True, show_progress_bar=False)
    assert ours.shape == reference.shape == (len(SENTENCES), encoder.dimension)
    cos = cosine_rows(ours, reference)
    worst = int(np.argmin(cos))
    assert cos.min() >= 0.9999, f"cosine {cos.min():.6f} for sentence {worst}: {SENTENCES[worst][:80]!r}"


def test_unit_norm_and_dtype(encoder, ours):
    assert ours.dtype == np.float32
    assert ours.shape == (len(SENTENCES), 384) and encoder.dimension == 384
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(ours).all()


# a sample of every kind: the 24 fixed ones, then generated short, medium, long and mixed ones
SAMPLE = list(range(64))


def test_output_follows_input_order(encoder, ours):
    texts = [SENTENCES[i] for i in SAMPLE]
    reversed_out = encoder.encode(texts[::-1], batch_size=8)
    np.testing.assert_allclose(reversed_out[::-1], ours[SAMPLE], atol=1e-5)
    perm = np.random.default_rng(0).permutation(SAMPLE)[:16]
    shuffled = encoder.encode([SENTENCES[i] for i in perm], batch_size=8)
    np.testing.assert_allclose(shuffled, ours[perm], atol=1e-5)
    # distinct sentences really give distinct vectors (the order check means something)
    assert cosine_rows(ours[5:6], ours[9:10])[0] < 0.9


def test_batch_size_does_not_change_results(encoder, ours):
    subset = [SENTENCES[i] for i in SAMPLE[::2]]
    expected = ours[SAMPLE[::2]]
    for bs in (1, 6):
        got = encoder.encode(subset, batch_size=bs)
        assert got.shape == expected.shape
        assert cosine_rows(got, expected).min() >= 0.99999, f"batch_size={bs}"


def test_duplicates_and_single(encoder, ours):
    np.testing.assert_allclose(encoder.encode([SENTENCES[3]])[0], ours[3], atol=1e-5)
    twice = encoder.encode([SENTENCES[6], SENTENCES[6]])
    np.testing.assert_allclose(twice[0], twice[1], atol=1e-6)


def test_empty_input(encoder):
    out = encoder.encode([])
    assert out.shape == (0, encoder.dimension) and out.dtype == np.float32


def test_count_tokens_includes_special_tokens_and_never_truncates(encoder):
    assert encoder.count_tokens([]) == []
    assert encoder.count_tokens([""]) == [2]  # [CLS] [SEP]
    long = " ".join(["token"] * 1000)
    assert encoder.count_tokens([long]) == [1002]


def test_mean_pool_ignores_padding():
    import torch

    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    np.testing.assert_allclose(mean_pool(hidden, mask).numpy(), [[2.0, 3.0]])


def test_pick_device():
    assert pick_device("cpu") == "cpu"
    assert pick_device("cuda:1") == "cuda:1"  # an explicit choice wins, unchecked
    assert pick_device() in {"cpu", "cuda", "mps"}


def test_to_dict_from_dict_round_trip():
    enc = SentenceEncoder(model="some/model", device="cpu", batch_size=8, max_seq_length=128,
                          normalize=False)
    data = enc.to_dict()
    assert data == {"type": "SentenceEncoder", "init_parameters": {
        "model": "some/model", "device": "cpu", "batch_size": 8, "max_seq_length": 128,
        "normalize": False}}
    again = SentenceEncoder.from_dict(data)
    assert again.to_dict() == data
    assert again._model is None  # light constructor: nothing loaded


def test_default_model_is_bundled():
    location = resolve_model(DEFAULT_MODEL)
    assert not isinstance(location, str), "the default model should ship with a package"
    assert (location / "config.json").is_file()


def test_unnormalised_output(ours):
    raw = SentenceEncoder(device="cpu", normalize=False)
    out = raw.encode(SENTENCES[:20])
    norms = np.linalg.norm(out, axis=1)
    assert not np.allclose(norms, 1.0)
    np.testing.assert_allclose(out / norms[:, None], ours[:20], atol=1e-5)


def test_token_counter_matches_the_encoder_tokenizer(encoder):
    """The loader process counts with the `tokenizers` library alone; its counts and offsets
    must be the encoder's own, or chunks could overflow max_seq_length."""
    from rag.embed.encoder import TokenCounter

    counter = TokenCounter(encoder.model, encoder.max_seq_length)
    assert counter._fast is not None  # the bundled model has a tokenizer.json
    texts = ["", "Hello world", "Ünïcödé naïve café", "fine-tuning BERT/RoBERTa (Devlin et al., 2018)",
             "数学 и математика", "x" * 3000, "a " * 700, "https://example.org/" + "ab12" * 400,
             "Tabs\tand\nnew lines  and   spaces", "emoji 🚀🔥 end"]
    assert counter.count_tokens(texts) == encoder.count_tokens(texts)
    for t in texts:
        assert counter.token_offsets(t) == encoder.token_offsets(t)


def test_token_counter_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from rag.embed.encoder import TokenCounter, DEFAULT_MODEL; "
            "c = TokenCounter(DEFAULT_MODEL, 256); assert c.count_tokens(['a b'])[0] == 4; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_embed_is_the_differentiable_forward_of_encode(encoder, ours):
    """embed(): what training runs (autograd on, not normalised); encode() normalises the same."""
    import torch

    texts = SENTENCES[:8]
    emb = encoder.embed(texts)
    assert isinstance(emb, torch.Tensor)
    norms = torch.linalg.vector_norm(emb.detach().float(), dim=1)
    assert not torch.allclose(norms, torch.ones_like(norms))
    unit = torch.nn.functional.normalize(emb.detach().float(), dim=1).cpu().numpy()
    np.testing.assert_allclose(unit, ours[:8], atol=1e-5)
    assert emb.requires_grad  # gradients reach the transformer's weights
    params = list(encoder.transformer.parameters())
    assert params and all(p.requires_grad for p in params)
    short = encoder.embed(["word " * 300], max_length=16)
    assert short.shape == (1, encoder.dimension)


def test_save_writes_a_folder_both_loaders_read(encoder, tmp_path):
    import json

    out = encoder.save(tmp_path / "copy", max_seq_length=128)
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == 128
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and pooling["word_embedding_dimension"] == encoder.dimension
    texts = SENTENCES[:10]
    again = SentenceEncoder(str(out), device="cpu")
    again.warm_up()
    assert again.max_seq_length == 128  # read back from the saved sentence_bert_config.json
    np.testing.assert_allclose(again.encode(texts), encoder.encode(texts), atol=1e-5)
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(out), device="cpu").encode(texts, normalize_embeddings=True)
    assert float(np.min((st * again.encode(texts)).sum(axis=1))) > 0.9999


def test_save_without_normalize_and_without_source_module_files(tmp_path):
    """A model with no sentence-transformers files of its own gets modules.json written; the
    Normalize module only when the encoder normalises."""
    import json

    import shutil

    src = tmp_path / "plain"
    shutil.copytree(resolve_model(DEFAULT_MODEL), src)
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        (src / name).unlink()
    shutil.rmtree(src / "1_Pooling")
    raw = SentenceEncoder(str(src), device="cpu", normalize=False)
    out = raw.save(tmp_path / "raw")
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["Transformer", "Pooling"]
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == raw.max_seq_length
