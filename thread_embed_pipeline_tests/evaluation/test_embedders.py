"""Local embedders and the persistent embedding cache (tiny sentence-transformers model, DuckDB)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from thread_embed_pipeline.evaluation.api_embedders import build_embedder
from thread_embed_pipeline.evaluation.embedders import (
    Embedder,
    SentenceTransformerEmbedder,
    load_local_embedder,
    model_fingerprint,
    truncate_and_normalize,
)
from thread_embed_pipeline.evaluation.embedding_cache import EmbeddingCache, text_sha256

pytestmark = pytest.mark.timeout(120)

TEXTS = [
    "alice: hey everyone, anyone know why apt-get update fails?",
    "bob: try sudo apt-key adv --recv-keys",
    "carol: did you check /etc/apt/sources.list for a typo?",
    "dave: how do I mount an ntfs partition on boot?",
]


class CountingModel:
    """Wraps a SentenceTransformer, recording every text passed to ``encode``."""

    def __init__(self, model) -> None:
        self._model = model
        self.encoded: list[str] = []

    def encode(self, texts, **kwargs):
        self.encoded.extend(texts)
        return self._model.encode(texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self._model, name)


def load(model_dir: Path) -> CountingModel:
    from sentence_transformers import SentenceTransformer

    return CountingModel(SentenceTransformer(str(model_dir), device="cpu"))


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory) -> Path:
    """A second tiny model, same architecture, different weights."""
    from thread_embed_pipeline_tests.tiny_model import build_tiny_sentence_transformer

    return build_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny_other") / "model", seed=1)


# -- EmbeddingCache ------------------------------------------------------------------------------
def test_cache_roundtrip_reopen_and_only_hashes_stored(tmp_path):
    path = tmp_path / "sub" / "cache.duckdb"
    vecs = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    with EmbeddingCache(path) as cache:
        assert cache.get_many("m", 8, TEXTS) == {}
        cache.put_many("m", 8, TEXTS[:3], vecs)
        cache.put_many("m", 8, TEXTS[:1], vecs[1:2])  # replace
        cache.put_many("m", 4, TEXTS[:1], vecs[:1, :4])  # another dim: separate entry
    with EmbeddingCache(path) as cache:  # reopen
        got = cache.get_many("m", 8, TEXTS + TEXTS[:1])
        assert set(got) == set(TEXTS[:3])
        np.testing.assert_array_equal(got[TEXTS[0]], vecs[1])
        np.testing.assert_array_equal(got[TEXTS[2]], vecs[2])
        assert got[TEXTS[0]].dtype == np.float32
        assert cache.get_many("other-model", 8, TEXTS) == {}
        assert set(cache.get_many("m", 4, TEXTS)) == {TEXTS[0]}
        assert len(cache) == 4 and cache.count("m", 8) == 3
        rows = cache._connection().execute("SELECT DISTINCT text_sha256 FROM embeddings").fetchall()
        assert {r[0] for r in rows} == {text_sha256(t) for t in TEXTS[:3]}
    assert all(t.encode() not in path.read_bytes() for t in TEXTS)


def test_cache_rejects_bad_input():
    cache = EmbeddingCache(None)
    with pytest.raises(ValueError, match="shape"):
        cache.put_many("m", 8, TEXTS[:2], np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="non-finite"):
        cache.put_many("m", 2, TEXTS[:1], np.array([[np.nan, 1.0]]))
    assert len(cache) == 0
    cache.put_many("m", 2, [TEXTS[0], TEXTS[0]], np.array([[1.0, 0.0], [0.0, 1.0]]))  # duplicates: last wins
    np.testing.assert_array_equal(cache.get_many("m", 2, TEXTS[:1])[TEXTS[0]], [0.0, 1.0])
    cache.close()
    with pytest.raises(RuntimeError, match="closed"):
        cache.get_many("m", 2, TEXTS)


def test_cache_handles_10k_texts_quickly(tmp_path):
    n, dim = 10_000, 256
    texts = [f"text {i}" for i in range(n)]
    vecs = np.random.default_rng(1).standard_normal((n, dim)).astype(np.float32)
    with EmbeddingCache(tmp_path / "big.duckdb") as cache:
        t0 = time.perf_counter()
        cache.put_many("m", dim, texts, vecs)
        got = cache.get_many("m", dim, texts)
        elapsed = time.perf_counter() - t0
    assert len(got) == n
    np.testing.assert_array_equal(np.stack([got[t] for t in texts]), vecs)
    assert elapsed < 10, f"10k put+get took {elapsed:.1f}s"


# -- model_fingerprint -------------------------------------------------------------------------------
def test_model_fingerprint(tiny_model_dir, other_model_dir, tmp_path):
    fp = model_fingerprint(tiny_model_dir)
    assert fp == model_fingerprint(tiny_model_dir) and len(fp) == 64
    assert fp != model_fingerprint(other_model_dir)
    assert model_fingerprint(tiny_model_dir, max_seq_length=64) != model_fingerprint(tiny_model_dir, max_seq_length=128)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    (copy / "README.md").write_text("edited docs")
    assert model_fingerprint(copy) == fp  # location and docs do not matter
    # nor what a release folder adds beside the weights: the retriever settings and the ONNX exports
    (copy / "hybrid_retriever.json").write_text("{}")
    (copy / "onnx").mkdir()
    (copy / "onnx" / "model.onnx").write_bytes(b"onnx")
    assert model_fingerprint(copy) == fp
    (copy / "model.safetensors").write_bytes((copy / "model.safetensors").read_bytes()[:-1] + b"\0")
    assert model_fingerprint(copy) != fp  # the weights do
    with pytest.raises(FileNotFoundError):
        model_fingerprint(tmp_path / "nope")


# -- SentenceTransformerEmbedder ------------------------------------------------------------------
def test_encodes_each_unique_text_once_and_truncates(tiny_model_dir):
    model = load(tiny_model_dir)
    emb = SentenceTransformerEmbedder(model, "tiny")
    assert isinstance(emb, Embedder) and emb.max_dim == 32
    full = emb.embed(TEXTS + TEXTS[:2], 32)
    assert sorted(model.encoded) == sorted(TEXTS)
    for dim in (8, 16, 32):
        out = emb.embed(TEXTS[::-1], dim)
        assert out.shape == (len(TEXTS), dim) and out.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(out, truncate_and_normalize(full[: len(TEXTS)][::-1], dim), atol=1e-6)
    assert sorted(model.encoded) == sorted(TEXTS)  # nothing re-encoded for other dims/orders
    assert emb.embed([], 8).shape == (0, 8)
    with pytest.raises(ValueError):
        emb.embed(TEXTS, 33)


def test_cache_reused_across_instances_with_same_fingerprint(tiny_model_dir, tmp_path):
    path = tmp_path / "cache.duckdb"
    key = model_fingerprint(tiny_model_dir)
    m1 = load(tiny_model_dir)
    with EmbeddingCache(path) as cache:
        first = SentenceTransformerEmbedder(m1, "tiny", cache=cache, cache_key=key).embed(TEXTS[:3], 16)
    assert sorted(m1.encoded) == sorted(TEXTS[:3])

    m2 = load(tiny_model_dir)
    logs: list[str] = []
    with EmbeddingCache(path) as cache:  # a later run
        emb = SentenceTransformerEmbedder(m2, "tiny-renamed", cache=cache, cache_key=key, log=logs.append)
        again = emb.embed(TEXTS, 16)
        assert cache.count(emb.cache_model, 32) == len(TEXTS)  # full-dim vectors, once per text
        assert cache.count(emb.cache_model, 16) == 0  # dims come from truncation
    assert m2.encoded == [TEXTS[3]]  # only the new text was encoded
    np.testing.assert_allclose(again[:3], first, atol=1e-6)
    assert any("found in the embedding cache" in m for m in logs)


def test_cache_not_reused_for_a_different_model(tiny_model_dir, other_model_dir):
    cache = EmbeddingCache(None)
    m1 = load(tiny_model_dir)
    a = SentenceTransformerEmbedder(m1, "tiny", cache=cache, cache_key=model_fingerprint(tiny_model_dir)).embed(TEXTS, 32)
    m2 = load(other_model_dir)
    b = SentenceTransformerEmbedder(m2, "tiny", cache=cache, cache_key=model_fingerprint(other_model_dir)).embed(TEXTS, 32)
    assert sorted(m2.encoded) == sorted(TEXTS)
    assert not np.allclose(a, b)
    # same weights but a different max_seq_length is a different cache entry as well
    m3 = load(tiny_model_dir)
    m3._model.max_seq_length = 8
    SentenceTransformerEmbedder(m3, "tiny", cache=cache, cache_key=model_fingerprint(tiny_model_dir)).embed(TEXTS, 32)
    assert sorted(m3.encoded) == sorted(TEXTS)


def test_cache_without_a_key_is_not_used(tiny_model_dir):
    cache, logs = EmbeddingCache(None), []
    emb = SentenceTransformerEmbedder(load(tiny_model_dir), "tiny", cache=cache, log=logs.append)
    assert emb.embed(TEXTS, 8).shape == (len(TEXTS), 8)
    assert emb.cache is None and len(cache) == 0
    assert any("no cache_key" in m for m in logs)


def test_load_local_embedder_and_build_embedder(tiny_model_dir, tmp_path):
    path = tmp_path / "cache.duckdb"
    with EmbeddingCache(path) as cache:
        emb = build_embedder(str(tiny_model_dir), cache=cache)
        assert isinstance(emb, SentenceTransformerEmbedder) and emb.name == str(tiny_model_dir)
        assert emb.cache_key == model_fingerprint(tiny_model_dir, max_seq_length=emb.model.max_seq_length)
        first = emb.embed(TEXTS, 8)
    with EmbeddingCache(path) as cache:
        emb2 = load_local_embedder(str(tiny_model_dir), cache=cache)
        emb2.model = CountingModel(emb2.model)
        np.testing.assert_allclose(emb2.embed(TEXTS, 8), first, atol=1e-6)
        assert emb2.model.encoded == []


def test_token_budget_batches_put_many_short_texts_and_few_long_ones_in_a_batch():
    from thread_embed_pipeline.evaluation.embedders import MAX_BATCH_TEXTS, token_budget_batches

    lengths = [4000] * 70 + [80] * 600  # longest first: 70 texts past 256 tokens, then 600 chat messages of ~22 tokens
    # at full length batch_size texts (a batch is sized by its first, longest text); messages of ~22 tokens 8192 // 22 = 372 at a time
    assert token_budget_batches(lengths, batch_size=32, max_tokens=256) == [(0, 32), (32, 64), (64, 96), (96, 468), (468, 670)]
    tiny = token_budget_batches([4] * 2000, batch_size=32, max_tokens=256)
    assert tiny[0] == (0, MAX_BATCH_TEXTS) and tiny[-1][1] == 2000  # capped
