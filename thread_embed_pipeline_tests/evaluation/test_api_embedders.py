"""OpenAI / Voyage embedders against a local fake server: batching, dims, retries, validation, cache, key hygiene."""

from __future__ import annotations

import logging
import traceback

import numpy as np
import pytest

from thread_embed_pipeline.evaluation.api_embedders import (
    ApiEmbeddingError,
    OpenAIEmbedder,
    VoyageEmbedder,
    build_embedder,
    parse_model_spec,
)
from thread_embed_pipeline.evaluation.embedders import Embedder
from thread_embed_pipeline.evaluation.embedding_cache import EmbeddingCache, text_sha256
from thread_embed_pipeline_tests.fake_embedding_server import MALFORMATIONS, FakeEmbeddingServer, fake_vector

pytestmark = pytest.mark.timeout(60)

FAKE_KEY = "sk-test-DO-NOT-LEAK-7f3a9c"
TEXTS = [f"message number {i} about apt and grub" for i in range(7)]


@pytest.fixture
def server():
    with FakeEmbeddingServer(required_key=FAKE_KEY) as srv:
        yield srv


@pytest.fixture
def sleeps() -> list[float]:
    return []


def openai_embedder(server, sleeps, model="text-embedding-3-small", **kw) -> OpenAIEmbedder:
    kw.setdefault("backoff_s", 1.0)
    return OpenAIEmbedder(model, api_key=FAKE_KEY, base_url=server.openai_base_url, sleep=sleeps.append, **kw)


def voyage_embedder(server, sleeps, model="voyage-3-large", **kw) -> VoyageEmbedder:
    kw.setdefault("backoff_s", 1.0)
    return VoyageEmbedder(model, api_key=FAKE_KEY, base_url=server.voyage_base_url, sleep=sleeps.append, **kw)


MAKERS = {"openai": openai_embedder, "voyage": voyage_embedder}


# -- model specs ---------------------------------------------------------------------------------
def test_parse_model_spec():
    assert parse_model_spec("openai:text-embedding-3-small") == ("openai", "text-embedding-3-small")
    assert parse_model_spec("voyage:voyage-3-large") == ("voyage", "voyage-3-large")
    assert parse_model_spec("sentence-transformers/all-MiniLM-L6-v2") == ("local", "sentence-transformers/all-MiniLM-L6-v2")
    assert parse_model_spec("/models/ckpt:v2") == ("local", "/models/ckpt:v2")
    with pytest.raises(ValueError):
        parse_model_spec("openai:")


def test_max_dims():
    srv_url = "http://127.0.0.1:9/v1"
    assert OpenAIEmbedder("text-embedding-3-small", api_key=FAKE_KEY, base_url=srv_url).max_dim == 1536
    assert OpenAIEmbedder("text-embedding-3-large", api_key=FAKE_KEY, base_url=srv_url).max_dim == 3072
    assert OpenAIEmbedder("text-embedding-ada-002", api_key=FAKE_KEY, base_url=srv_url).max_dim == 1536
    assert VoyageEmbedder("voyage-3-large", api_key=FAKE_KEY, base_url=srv_url).max_dim == 2048
    assert VoyageEmbedder("voyage-3", api_key=FAKE_KEY, base_url=srv_url).max_dim == 1024
    with pytest.raises(ValueError, match="max_dim"):
        OpenAIEmbedder("some-new-model", api_key=FAKE_KEY, base_url=srv_url)


# -- happy paths ------------------------------------------------------------------------------------
def test_openai_dimensions_passed_through_and_vectors_correct(server, sleeps):
    emb = openai_embedder(server, sleeps)
    assert isinstance(emb, Embedder)
    out = emb.embed(TEXTS + TEXTS[:2], 256)
    assert out.shape == (9, 256) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    for row, t in zip(out, TEXTS + TEXTS[:2]):
        np.testing.assert_allclose(row, fake_vector("text-embedding-3-small", t, 256), atol=1e-6)
    assert server.request_count == 1  # 7 unique texts, one batch
    req = server.requests[0]
    assert req.path == "/v1/embeddings"
    assert req.body["dimensions"] == 256 and req.body["model"] == "text-embedding-3-small"
    assert req.body["input"] == TEXTS  # each unique text once
    assert req.headers["authorization"] == f"Bearer {FAKE_KEY}"


def test_openai_non_matryoshka_model_truncates_full_vectors(server, sleeps):
    emb = openai_embedder(server, sleeps, model="text-embedding-ada-002")
    out = emb.embed(TEXTS[:3], 100)
    assert "dimensions" not in server.requests[0].body
    full = np.stack([fake_vector("text-embedding-ada-002", t) for t in TEXTS[:3]])
    expected = full[:, :100] / np.linalg.norm(full[:, :100], axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    emb.embed(TEXTS[:3], 512)  # another dim: derived from the cached full vectors, no request
    assert server.request_count == 1


def test_voyage_output_dimension_passed_through(server, sleeps):
    emb = voyage_embedder(server, sleeps)
    out = emb.embed(TEXTS, 256)
    req = server.requests[0]
    assert req.path == "/voyage/v1/embeddings"
    assert req.body["output_dimension"] == 256 and req.body["model"] == "voyage-3-large"
    assert req.headers["authorization"] == f"Bearer {FAKE_KEY}"
    for row, t in zip(out, TEXTS):
        np.testing.assert_allclose(row, fake_vector("voyage-3-large", t, 256), atol=1e-6)
    # an unsupported size asks for the next supported one and truncates
    out = emb.embed(TEXTS[:2], 300)
    assert server.requests[-1].body["output_dimension"] == 512
    for row, t in zip(out, TEXTS[:2]):
        np.testing.assert_allclose(row, fake_vector("voyage-3-large", t, 300), atol=1e-5)


def test_voyage_fixed_dim_model_gets_no_output_dimension(server, sleeps):
    emb = voyage_embedder(server, sleeps, model="voyage-3")
    out = emb.embed(TEXTS[:2], 64)
    assert server.requests[0].body.get("output_dimension") is None
    assert out.shape == (2, 64)
    np.testing.assert_allclose(out[0], fake_vector("voyage-3", TEXTS[0], 64), atol=1e-6)


@pytest.mark.parametrize("provider", ["openai", "voyage"])
def test_batching_request_count(server, sleeps, provider):
    emb = MAKERS[provider](server, sleeps, batch_size=3)
    texts = [f"text {i}" for i in range(10)]
    out = emb.embed(texts + texts, 256)
    assert out.shape == (20, 256)
    assert server.request_count == 4  # ceil(10 / 3)
    assert [len(r.body["input"]) for r in server.requests] == [3, 3, 3, 1]


@pytest.mark.parametrize("provider", ["openai", "voyage"])
def test_rerun_with_persistent_cache_makes_no_requests(server, sleeps, provider, tmp_path):
    path = tmp_path / "emb.duckdb"
    with EmbeddingCache(path) as cache:
        first = MAKERS[provider](server, sleeps, cache=cache, batch_size=4).embed(TEXTS, 256)
    assert server.request_count == 2
    server.reset_requests()
    with EmbeddingCache(path) as cache:  # a new run: new cache object, new embedder
        emb = MAKERS[provider](server, sleeps, cache=cache)
        again = emb.embed(list(reversed(TEXTS)), 256)
        model_name = emb.name
        assert cache.count(model_name, 256) == len(TEXTS)
        assert set(cache.get_many(model_name, 256, TEXTS)) == set(TEXTS)
    assert server.request_count == 0
    np.testing.assert_allclose(again, first[::-1], atol=1e-7)
    assert model_name == f"{provider}:{'text-embedding-3-small' if provider == 'openai' else 'voyage-3-large'}"
    # only hashes are stored, never the texts
    raw = path.read_bytes()
    assert TEXTS[0].encode() not in raw
    assert text_sha256(TEXTS[0]) == __import__("hashlib").sha256(TEXTS[0].encode()).hexdigest()


# -- retries ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("provider", ["openai", "voyage"])
@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_error_then_success(server, sleeps, provider, status):
    logs: list[str] = []
    emb = MAKERS[provider](server, sleeps, log=logs.append)
    server.fail_next(1, status)
    out = emb.embed(TEXTS[:2], 256)
    assert out.shape == (2, 256)
    assert server.request_count == 2
    assert sleeps == [1.0]
    assert any(f"HTTP {status}" in m and "retrying" in m for m in logs)


@pytest.mark.parametrize("provider", ["openai", "voyage"])
def test_exponential_backoff_then_give_up(server, sleeps, provider):
    emb = MAKERS[provider](server, sleeps, max_retries=3, backoff_s=0.5)
    server.fail_next(10, 429)
    with pytest.raises(ApiEmbeddingError, match="giving up after 4 attempt") as info:
        emb.embed(TEXTS[:2], 256)
    assert emb.name in str(info.value) and info.value.status == 429
    assert server.request_count == 4  # the clients' own retries are off: ours are the only ones
    assert sleeps == [0.5, 1.0, 2.0]
    server.clear_faults()


def test_retry_after_header_is_honoured(server, sleeps):
    emb = openai_embedder(server, sleeps, backoff_s=0.25)
    server.fail_next(1, 429, retry_after="3")
    emb.embed(TEXTS[:1], 64)
    assert sleeps == [3.0]


@pytest.mark.parametrize("provider", ["openai", "voyage"])
def test_client_error_is_not_retried(server, sleeps, provider):
    emb = MAKERS[provider](server, sleeps)
    server.fail_next(1, 400)
    with pytest.raises(ApiEmbeddingError, match="HTTP 400"):
        emb.embed(TEXTS[:2], 256)
    assert server.request_count == 1 and sleeps == []


# -- malformed responses ----------------------------------------------------------------------------
@pytest.mark.parametrize("provider", ["openai", "voyage"])
@pytest.mark.parametrize("kind", MALFORMATIONS)
def test_malformed_response_raises_and_caches_nothing(server, sleeps, provider, kind):
    cache = EmbeddingCache(None)
    emb = MAKERS[provider](server, sleeps, cache=cache)
    server.malform_next(kind)
    with pytest.raises(ApiEmbeddingError, match="malformed") as info:
        emb.embed(TEXTS[:3], 256)
    assert emb.model in str(info.value)
    assert len(cache) == 0
    assert server.request_count == 1 and sleeps == []  # not retried


# -- keys ---------------------------------------------------------------------------------------------
def test_missing_key_returns_none_with_message():
    logs: list[str] = []
    assert build_embedder("openai:text-embedding-3-small", log=logs.append) is None
    assert build_embedder("voyage:voyage-3-large", openai_api_key=FAKE_KEY, log=logs.append) is None
    assert logs == [
        "skipping openai:text-embedding-3-small: OPENAI_API_KEY is not set",
        "skipping voyage:voyage-3-large: VOYAGE_API_KEY is not set",
    ]


def test_build_embedder_with_keys(server, sleeps):
    emb = build_embedder(
        "openai:text-embedding-3-large", openai_api_key=FAKE_KEY, openai_base_url=server.openai_base_url, sleep=sleeps.append
    )
    assert isinstance(emb, OpenAIEmbedder) and emb.max_dim == 3072
    assert emb.embed(["hi"], 1024).shape == (1, 1024)
    emb = build_embedder("voyage:voyage-3.5", voyage_api_key=FAKE_KEY, voyage_base_url=server.voyage_base_url)
    assert isinstance(emb, VoyageEmbedder) and emb.name == "voyage:voyage-3.5"
    assert emb.embed(["hi"], 2048).shape == (1, 2048)

    class Dummy:
        name, max_dim = "dummy", 4

        def embed(self, texts, dim):  # pragma: no cover - not called
            return np.zeros((len(texts), dim), np.float32)

    assert isinstance(build_embedder("my/local-model", load_local=lambda spec: Dummy()), Dummy)


def test_api_key_never_leaks(server, sleeps, caplog):
    caplog.set_level(logging.DEBUG)  # include the clients' (and httpx's) own debug logging
    logs: list[str] = []
    texts_seen: list[str] = []
    for provider in ("openai", "voyage"):
        emb = MAKERS[provider](server, sleeps, log=logs.append, max_retries=1)
        texts_seen += [repr(emb), str(emb)]
        emb.embed(TEXTS[:2], 256)
        server.fail_next(1, 500)
        emb.embed(TEXTS[2:4], 256)  # a logged retry
        for setup in (lambda: server.fail_next(5, 429), lambda: server.malform_next("wrong_length"), lambda: server.fail_next(1, 401)):
            setup()
            with pytest.raises(ApiEmbeddingError) as info:
                emb.embed([f"{provider} fresh {len(texts_seen)}"], 256)
            server.clear_faults()
            texts_seen += [str(info.value), repr(info.value), "".join(traceback.format_exception(info.value))]
        # a server that rejects the key and echoes it back: the embedder must redact it
        with FakeEmbeddingServer(required_key="sk-some-other-key") as strict:
            bad = MAKERS[provider](strict, sleeps)
            with pytest.raises(ApiEmbeddingError, match="HTTP 401") as info:
                bad.embed(["x"], 256)
            assert strict.request_count == 1
        assert "***" in str(info.value)
        texts_seen += [str(info.value), repr(info.value), "".join(traceback.format_exception(info.value))]
    texts_seen += logs + [r.getMessage() for r in caplog.records] + [caplog.text]
    assert logs, "expected progress/retry log lines"
    for text in texts_seen:
        assert FAKE_KEY not in text
        assert FAKE_KEY[8:] not in text
