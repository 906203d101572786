"""Quantised embeddings in the eval: int8 / binary indexes, rescoring, the dims x precision table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sentence_transformers.util.quantization import quantize_embeddings

from thread_embed_pipeline.evaluation.embedders import truncate_and_normalize
from thread_embed_pipeline.evaluation.precision import (
    PRECISIONS,
    bytes_per_vector,
    precision_table,
    quantized_pool_scores,
    split_variant,
    variant_name,
)
from thread_embed_pipeline.evaluation.report import headline_frame, precision_markdown, report_markdown
from thread_embed_pipeline.evaluation.retrieval import evaluate_retrieval, rank_retrieval
from thread_embed_pipeline_tests.evaluation.test_retrieval import DictEmbedder, HashEmbedder, random_eval_set


def _unit(rng, n: int, dim: int) -> np.ndarray:
    return truncate_and_normalize(rng.normal(size=(n, dim)).astype(np.float32), dim)


def test_bytes_per_vector_and_names():
    assert [bytes_per_vector(384, p) for p in ("float32", "int8", "int8+rescore", "binary", "binary+rescore")] == [1536, 384, 384, 48, 48]
    assert bytes_per_vector(100, "binary") == 13  # whole bytes: 100 bits -> 13 bytes
    assert split_variant(variant_name("fine_tuned", "binary+rescore")) == ("fine_tuned", "binary+rescore")
    assert split_variant("fine_tuned") == ("fine_tuned", "float32")
    assert split_variant("me@work") == ("me@work", "float32")  # only a known precision makes a variant
    with pytest.raises(ValueError, match="unknown embedding precisions"):
        quantized_pool_scores([np.arange(3)], np.ones((1, 4)), np.ones((3, 4)), "int4")


def test_binary_scores_are_minus_hamming_distance():
    rng = np.random.default_rng(0)
    docs, queries = _unit(rng, 30, 64), _unit(rng, 5, 64)
    pools = [rng.permutation(30)[:20] for _ in range(5)]
    scores = quantized_pool_scores(pools, queries, docs, "binary")
    for i, pool in enumerate(pools):
        hamming = np.array([np.sum((docs[j] > 0) != (queries[i] > 0)) for j in pool])
        np.testing.assert_array_equal(scores[i], 64 - 2 * hamming)


def test_int8_scores_are_the_cosine_of_int8_vectors_with_ranges_from_the_documents():
    rng = np.random.default_rng(1)
    docs, queries = _unit(rng, 40, 32), _unit(rng, 4, 32)
    pools = [np.arange(40)] * 4
    scores = quantized_pool_scores(pools, queries, docs, "int8")
    ranges = np.vstack([docs.min(axis=0), docs.max(axis=0)])
    d8 = quantize_embeddings(docs, precision="int8", ranges=ranges).astype(np.int64)
    q8 = quantize_embeddings(queries, precision="int8", ranges=ranges).astype(np.int64)
    cosine = (q8 @ d8.T) / np.linalg.norm(q8, axis=1)[:, None] / np.linalg.norm(d8, axis=1)[None, :]
    np.testing.assert_allclose(np.stack(scores), cosine, rtol=1e-5)
    # the int8 ranking follows the float one (not exactly: ranges differ per dim)
    assert np.mean([spearmanr(s, f)[0] for s, f in zip(scores, queries @ docs.T)]) > 0.8


def test_rescoring_reorders_the_shortlist_with_the_float_query_and_keeps_the_rest_below():
    rng = np.random.default_rng(2)
    docs, queries = _unit(rng, 200, 16), _unit(rng, 3, 16)
    pools = [np.arange(200)] * 3
    plain = quantized_pool_scores(pools, queries, docs, "binary")
    rescored = quantized_pool_scores(pools, queries, docs, "binary+rescore", k=10, rescore_multiplier=4)
    signs = np.where(docs > 0, 1.0, -1.0)
    for i in range(3):
        order = np.argsort(-rescored[i], kind="stable")
        top40 = order[:40]
        # the shortlist is the top 40 of the binary search (up to ties at its edge) ...
        assert plain[i][top40].min() >= np.sort(plain[i])[::-1][39]
        # ... ordered by the float query against the stored +-1 vectors
        np.testing.assert_allclose(np.sort(signs[top40] @ queries[i])[::-1], (signs @ queries[i])[top40][np.argsort(-rescored[i][top40])], rtol=1e-6)
        assert rescored[i][top40].min() > rescored[i][order[40:]].max()
        # outside the shortlist the binary order stands
        rest = order[40:]
        assert np.all(np.diff(plain[i][rest]) <= 0)


def test_rescoring_recovers_a_relevant_document_that_binary_ties_with_others():
    # every document has the query's sign pattern, so binary ties them all; the float query tells them apart
    query = truncate_and_normalize(np.array([[1.0, 0.5, 0.2, 0.1]], dtype=np.float32), 4)
    docs = truncate_and_normalize(np.array([[0.1, 0.1, 0.1, 1.0]] * 50 + [[1.0, 0.6, 0.2, 0.1]], dtype=np.float32), 4)
    pools = [np.arange(51)]
    assert len(set(quantized_pool_scores(pools, query, docs, "binary")[0])) == 1
    rescored = quantized_pool_scores(pools, query, docs, "int8+rescore", k=10, rescore_multiplier=4)[0]
    assert int(np.argmax(rescored)) == 50


def test_rank_retrieval_adds_one_row_set_per_precision_and_leaves_float_rows_alone():
    sets = random_eval_set(40, 20, seed=3)
    plain = rank_retrieval(sets, {"m": HashEmbedder("m", max_dim=32)}, dims=[32, 8], include_bm25=False)
    with_q = rank_retrieval(sets, {"m": HashEmbedder("m", max_dim=32)}, dims=[32, 8], include_bm25=False, precisions={"m": list(PRECISIONS)})
    assert set(with_q["model"]) == {"m", *(f"m@{p}" for p in PRECISIONS)}
    pd.testing.assert_frame_equal(with_q[with_q["model"] == "m"].reset_index(drop=True), plain.reset_index(drop=True))
    assert (with_q.groupby("model").size() == len(plain)).all()
    with pytest.raises(ValueError, match="not among the embedders"):
        rank_retrieval(sets, {"m": HashEmbedder("m")}, dims=[8], precisions={"other": ["int8"]})
    with pytest.raises(ValueError, match="reserved for quantised variants"):
        rank_retrieval(sets, {"m@int8": HashEmbedder("m")}, dims=[8])


def test_binary_of_sign_vectors_scores_like_float():
    # vectors already +-1/sqrt(d): their binary index holds the same information, so the metrics agree
    sets = random_eval_set(30, 15, seed=4)
    rng = np.random.default_rng(5)
    texts = sets["text"].unique()
    vectors = {t: np.where(rng.normal(size=16) > 0, 1.0, -1.0) for t in texts}
    per_query = rank_retrieval(sets, {"s": DictEmbedder("s", vectors)}, dims=[16], include_bm25=False, precisions={"s": ["binary"]})
    a = per_query[per_query["model"] == "s"].reset_index(drop=True)
    b = per_query[per_query["model"] == "s@binary"].reset_index(drop=True)
    np.testing.assert_allclose(a["mrr@10"], b["mrr@10"])


def test_precision_table_and_report_section():
    sets = random_eval_set(40, 20, seed=6)
    results = evaluate_retrieval(sets, {"m": HashEmbedder("m", max_dim=32)}, dims=[32, 8], include_bm25=True, n_resamples=50, precisions={"m": ["int8", "binary+rescore"]})
    table = precision_table(results)
    assert list(table["precision"].unique()) == ["float32", "int8", "binary+rescore"]
    assert set(zip(table["dim"], table["precision"], table["bytes_per_vector"])) == {
        (32, "float32", 128), (32, "int8", 32), (32, "binary+rescore", 4), (8, "float32", 32), (8, "int8", 8), (8, "binary+rescore", 1)
    }
    assert table["dim"].tolist()[:3] == [32, 32, 32]  # largest dim first
    md = precision_markdown(results)
    float_32 = results[(results["model"] == "m") & (results["dim"] == 32) & (results["metric"] == "mrr@10")]["value"].item()
    int8_32 = results[(results["model"] == "m@int8") & (results["dim"] == 32) & (results["metric"] == "mrr@10")]["value"].item()
    assert f"({int8_32 - float_32:+.3f}) · 32 B" in md
    full = report_markdown(results, pd.DataFrame(), [])
    assert "## Embedding precision (dims × precision)" in full
    # the headline shows float models only; the variants live in their own table
    assert not any("@" in c for c in headline_frame(results).columns)
    assert precision_markdown(results[results["model"] == "m"]) == ""
