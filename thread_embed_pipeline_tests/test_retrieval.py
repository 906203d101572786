"""Retrieval scoring: encoding/dedup, Matryoshka truncation, dense + BM25 ranks, the long results table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from thread_embed_pipeline.evaluation.eval_sets import build_eval_sets
from thread_embed_pipeline.evaluation.metrics import METRIC_NAMES
from thread_embed_pipeline.evaluation.retrieval import (
    BM25_MODEL_NAME,
    PER_QUERY_COLUMNS,
    RESULT_COLUMNS,
    encode_texts,
    evaluate_retrieval,
    rank_retrieval,
    score_bm25,
    score_dense,
    summarize_ranks,
    truncate_and_normalize,
)
from thread_embed_pipeline.schemas import EVAL_SET_COLUMNS
from thread_embed_pipeline_tests.test_eval_sets import make_corpus


class CountingModel:
    """Stand-in for a SentenceTransformer: deterministic hash embeddings, records what it encoded."""

    def __init__(self, dim: int = 8):
        self.dim = dim
        self.seen: list[str] = []

    def get_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, texts, batch_size=32, show_progress_bar=None, convert_to_numpy=True, **_):
        self.seen.extend(texts)
        out = np.stack([np.random.default_rng(abs(hash(t)) % 2**32).normal(size=self.dim) for t in texts])
        return (out * 3.0).astype(np.float32)  # deliberately not normalised


def _hand_eval_set(queries: list[tuple[str, str, list[str]]], docs: dict[str, str]) -> pd.DataFrame:
    """queries: (record_id, text, candidate_ids positive-first); docs: record_id -> text."""
    rows = [
        {"source": "s", "task": "thread", "record_type": "query", "record_id": rid, "conversation_id": rid,
         "text": text, "positive_id": cands[0], "candidate_ids": cands}
        for rid, text, cands in queries
    ] + [
        {"source": "s", "task": "thread", "record_type": "document", "record_id": rid, "conversation_id": rid,
         "text": text, "positive_id": None, "candidate_ids": []}
        for rid, text in docs.items()
    ]
    return pd.DataFrame(rows, columns=list(EVAL_SET_COLUMNS))


def test_encode_texts_dedupes_normalises_and_logs():
    model = CountingModel(dim=8)
    texts = ["b", "a", "b", "ccc", "a", "dd"] * 3
    logs: list[str] = []
    emb = encode_texts(model, texts, batch_size=2, log=logs.append, log_every=1)
    assert emb.shape == (len(texts), 8) and emb.dtype == np.float32
    assert sorted(model.seen) == ["a", "b", "ccc", "dd"]  # each unique text once
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(emb[0], emb[2])
    direct = model.encode(["ccc"])[0]
    np.testing.assert_allclose(emb[3], direct / np.linalg.norm(direct), rtol=1e-5)
    assert len(logs) == 2 and "4/4" in logs[-1]


def test_truncate_and_normalize():
    emb = np.array([[3.0, 4.0, 12.0], [1.0, 0.0, 5.0]], dtype=np.float32)
    out = truncate_and_normalize(emb, 2)
    np.testing.assert_allclose(out, [[0.6, 0.8], [1.0, 0.0]], rtol=1e-6)
    assert out.dtype == np.float32
    with pytest.raises(ValueError):
        truncate_and_normalize(emb, 4)


def test_score_dense_hand_embeddings_and_pessimistic_ties():
    es = _hand_eval_set(
        [("q1", "Q1", ["d1", "d2", "d3"]), ("q2", "Q2", ["d2", "d1", "d3"]), ("q3", "Q3", ["d3", "d4"])],
        {"d1": "D1", "d2": "D2", "d3": "D3", "d4": "D4"},
    )
    emb = {
        "Q1": np.array([1.0, 0.0, 0.0]), "D1": np.array([1.0, 0.1, 0.0]), "D2": np.array([0.0, 1.0, 0.0]),
        "Q2": np.array([1.0, 0.0, 5.0]), "D3": np.array([0.0, 0.0, 1.0]),
        "Q3": np.array([0.0, 1.0, 0.0]), "D4": np.array([0.0, 1.0, 0.0]),
    }
    ranks = score_dense(es, emb, dim=3)
    assert ranks.to_dict() == {"q1": 1, "q2": 3, "q3": 2}
    # at dim 2 (Matryoshka prefix), Q2 = (1, 0): D1 scores ~1, positive D2 = (0, 1) scores 0 and
    # ties with D3, whose prefix is the zero vector -> pessimistic rank 3
    assert score_dense(es, emb, dim=2).to_dict() == {"q1": 1, "q2": 3, "q3": 2}
    # identical doc embeddings tie -> the positive does not win the tie
    emb_tie = dict(emb, D4=emb["D3"])
    assert score_dense(es, emb_tie, dim=3)["q3"] == 2


def test_bm25_ranks_lexically_identical_document_first():
    docs = {
        "d1": "alice: how do i mount an ntfs partition with fstab",
        "d2": "bob: the weather is lovely today",
        "d3": "carol: racket macros use syntax rules",
        "d4": "dave: python packaging with pyproject toml",
    }
    es = _hand_eval_set(
        [
            ("q1", docs["d1"], ["d1", "d2", "d3", "d4"]),  # positive listed first
            ("q3", docs["d3"], ["d3", "d1", "d2", "d4"]),
            ("q4", docs["d4"], ["d2", "d4", "d1", "d3"]),  # positive d2 shares no term: never first
            ("q0", "zzz qqq", ["d1", "d2", "d3", "d4"]),  # no overlap at all: all-zero tie -> last
        ],
        docs,
    )
    ranks = score_bm25(es)
    assert ranks["q1"] == 1 and ranks["q3"] == 1
    assert ranks["q4"] > 1
    assert ranks["q0"] == 4


def test_score_rejects_mixed_sets():
    es = _hand_eval_set([("q1", "x", ["d1"])], {"d1": "x"})
    mixed = pd.concat([es, es.assign(task="response")], ignore_index=True)
    with pytest.raises(ValueError):
        score_bm25(mixed)


@pytest.fixture(scope="module")
def small_eval_sets() -> pd.DataFrame:
    corpus = {
        "src_a": make_corpus("src_a", lengths_by_split={"test": [8 + i % 6 for i in range(14)]}),
        "src_b": make_corpus("src_b", lengths_by_split={"test": [12 + i % 3 for i in range(9)]}),
    }
    es, notes = build_eval_sets(corpus, pool_size=6, seed=0)
    assert notes == []
    return es


def test_evaluate_retrieval_with_tiny_model(tiny_model_dir, small_eval_sets):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    dims = [32, 16, 8]
    logs: list[str] = []
    per_query = rank_retrieval(
        small_eval_sets, {"base": model, "fine_tuned": model}, dims=dims, batch_size=16, log=logs.append
    )
    assert list(per_query.columns) == list(PER_QUERY_COLUMNS)
    results = summarize_ranks(per_query)
    assert list(results.columns) == list(RESULT_COLUMNS)
    assert logs

    expected = {
        (m, s, t, d, metric)
        for m in ("base", "fine_tuned", BM25_MODEL_NAME)
        for s, t in [("src_a", "thread"), ("src_a", "response"), ("src_b", "thread"), ("src_b", "response")]
        for d in dims
        for metric in METRIC_NAMES
    }
    got = set(zip(results["model"], results["source"], results["task"], results["dim"], results["metric"]))
    assert got == expected
    assert len(results) == len(expected)
    assert results["value"].between(0.0, 1.0).all()

    n_queries = small_eval_sets[small_eval_sets["record_type"] == "query"].groupby(["source", "task"]).size()
    for (s, t), n in n_queries.items():
        assert (results[(results["source"] == s) & (results["task"] == t)]["n"] == n).all()
    pool = small_eval_sets.loc[small_eval_sets["record_type"] == "query", "candidate_ids"].map(len).max()
    assert per_query["rank"].between(1, pool).all()

    # the same model under two names gives identical numbers; BM25 repeats across dims
    wide = results.pivot_table(index=["source", "task", "dim", "metric"], columns="model", values="value")
    np.testing.assert_allclose(wide["base"], wide["fine_tuned"])
    bm = results[results["model"] == BM25_MODEL_NAME]
    assert (bm.groupby(["source", "task", "metric"])["value"].nunique() == 1).all()

    # evaluate_retrieval == summarize(rank_retrieval)
    direct = evaluate_retrieval(small_eval_sets, {"base": model}, dims=[8], include_bm25=False)
    ref = results[(results["model"] == "base") & (results["dim"] == 8)].reset_index(drop=True)
    pd.testing.assert_frame_equal(direct.reset_index(drop=True), ref)


def test_evaluate_retrieval_encodes_each_unique_text_once(small_eval_sets):
    model = CountingModel(dim=16)
    evaluate_retrieval(small_eval_sets, {"m": model}, dims=[16, 4], include_bm25=False)
    assert sorted(model.seen) == sorted(set(small_eval_sets["text"]))


def test_evaluate_retrieval_rejects_bad_dims(small_eval_sets):
    with pytest.raises(ValueError):
        evaluate_retrieval(small_eval_sets, {"m": CountingModel(dim=8)}, dims=[16])
    with pytest.raises(ValueError):
        evaluate_retrieval(small_eval_sets, {"bm25": CountingModel(dim=8)}, dims=[8])
