"""Retrieval scoring: embedders per dim, multi-relevant metrics, BM25, RRF fusions, the summarised table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from thread_embed_pipeline.evaluation.embedders import SentenceTransformerEmbedder, truncate_and_normalize
from thread_embed_pipeline.evaluation.metrics import METRIC_NAMES, query_metrics
from thread_embed_pipeline.evaluation.retrieval import (
    BM25_MODEL_NAME,
    PER_QUERY_COLUMNS,
    RESULT_COLUMNS,
    bm25_pool_scores,
    encode_texts,
    evaluate_retrieval,
    prepare_sets,
    rank_retrieval,
    rrf_fuse,
    summarize,
)
from thread_embed_pipeline.schemas import EVAL_SET_COLUMNS


def make_eval_set(
    queries: list[tuple[str, str, list[str], list[str]]],
    docs: dict[str, str],
    *,
    eval_set: str = "threadembed",
    source: str = "s",
    task: str = "thread",
) -> pd.DataFrame:
    """queries: (record_id, text, candidate_ids, relevant_ids); docs: record_id -> text."""
    rows = [
        {"eval_set": eval_set, "source": source, "task": task, "record_type": "query", "record_id": rid,
         "conversation_id": rid, "text": text, "positive_id": rel[0] if rel else None,
         "candidate_ids": cands, "relevant_ids": rel}
        for rid, text, cands, rel in queries
    ] + [
        {"eval_set": eval_set, "source": source, "task": task, "record_type": "document", "record_id": rid,
         "conversation_id": rid, "text": text, "positive_id": None, "candidate_ids": [], "relevant_ids": []}
        for rid, text in docs.items()
    ]
    return pd.DataFrame(rows, columns=list(EVAL_SET_COLUMNS))


def random_eval_set(n: int, pool: int, *, seed: int, **kw) -> pd.DataFrame:
    """n queries over n documents; query i's relevant doc is d{i} (plus d{i+1} for every third query)."""
    rng = np.random.default_rng(seed)
    words = [f"w{j}" for j in range(40)]
    docs = {f"d{i}": " ".join(rng.choice(words, size=12)) for i in range(n)}
    queries = []
    for i in range(n):
        rel = [f"d{i}"] + ([f"d{(i + 1) % n}"] if i % 3 == 0 else [])
        others = [f"d{j}" for j in rng.permutation(n) if f"d{j}" not in rel][: pool - len(rel)]
        queries.append((f"q{i}", " ".join(docs[f"d{i}"].split()[:4]), rel + others, rel))
    return make_eval_set(queries, docs, **kw)


class DictEmbedder:
    """An Embedder over a fixed text -> vector table (Matryoshka: truncate + renormalise); records calls."""

    def __init__(self, name: str, vectors: dict[str, np.ndarray], max_dim: int | None = None):
        self.name = name
        self.vectors = {t: np.asarray(v, dtype=np.float32) for t, v in vectors.items()}
        self.max_dim = max_dim or len(next(iter(self.vectors.values())))
        self.calls: list[tuple[int, int]] = []

    def embed(self, texts, dim):
        self.calls.append((len(texts), dim))
        return truncate_and_normalize(np.stack([self.vectors[t] for t in texts]), dim)


class HashEmbedder(DictEmbedder):
    """Deterministic pseudo-random vectors for any text."""

    def __init__(self, name: str = "hash", max_dim: int = 16):
        self.name, self.max_dim, self.calls = name, max_dim, []
        self.texts_seen: list[list[str]] = []

    def embed(self, texts, dim):
        self.calls.append((len(texts), dim))
        self.texts_seen.append(list(texts))
        out = np.stack([np.random.default_rng(sum(map(ord, t)) * 7919 + len(t)).normal(size=self.max_dim) for t in texts])
        return truncate_and_normalize(out, dim)


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


def test_encode_texts_dedupes_normalises_and_logs():
    model = CountingModel(dim=8)
    model.max_seq_length = 2  # a token budget of 2 texts per batch at this length (encode_texts batches by tokens)
    texts = ["b", "a", "b", "ccc", "a", "dd"] * 3
    logs: list[str] = []
    emb = encode_texts(model, texts, batch_size=2, log=logs.append, log_every=1)
    assert emb.shape == (len(texts), 8) and emb.dtype == np.float32
    assert sorted(model.seen) == ["a", "b", "ccc", "dd"]  # each unique text once
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(emb[0], emb[2])
    assert len(logs) == 2 and "4/4" in logs[-1]


HAND_DOCS = {"d1": "D1", "d2": "D2", "d3": "D3", "d4": "D4"}
HAND_VECTORS = {
    "Q1": [1.0, 0.0, 0.0], "D1": [1.0, 0.1, 0.0], "D2": [0.0, 1.0, 0.0],
    "Q2": [1.0, 0.0, 5.0], "D3": [0.0, 0.0, 1.0],
    "Q3": [0.0, 1.0, 0.0], "D4": [0.0, 1.0, 0.0],
}


def test_dense_hand_embeddings_multi_relevant_and_pessimistic_ties():
    es = make_eval_set(
        [
            ("q1", "Q1", ["d1", "d2", "d3"], ["d1"]),
            ("q2", "Q2", ["d2", "d1", "d3"], ["d2", "d3"]),  # two relevant documents
            ("q3", "Q3", ["d3", "d4"], ["d3"]),
        ],
        HAND_DOCS,
    )
    pq = rank_retrieval(es, {"m": DictEmbedder("m", HAND_VECTORS)}, dims=[3, 2], include_bm25=False)
    assert list(pq.columns) == list(PER_QUERY_COLUMNS)
    at3 = pq[pq["dim"] == 3].set_index("record_id")
    assert at3["first_relevant_rank"].to_dict() == {"q1": 1, "q2": 1, "q3": 2}
    assert at3["n_relevant"].to_dict() == {"q1": 1, "q2": 2, "q3": 1}
    # q2 at dim 3: relevant D3 (cos 0.98) rank 1, non-relevant D1 (0.195) rank 2, relevant D2 (0) rank 3
    assert at3.loc["q2", "recall@1"] == pytest.approx(0.5)
    assert at3.loc["q2", "ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert at3.loc["q1", "mrr@10"] == 1.0 and at3.loc["q3", "mrr@10"] == 0.5
    # dim 2 (Matryoshka prefix): Q2 = (1, 0); relevant D2 = (0, 1) and D3 = (0, 0) both score 0,
    # non-relevant D1 scores ~1 -> relevant ranks 2 and 3
    at2 = pq[pq["dim"] == 2].set_index("record_id")
    assert at2.loc["q2", "first_relevant_rank"] == 2
    assert at2.loc["q2", "recall@1"] == 0.0 and at2.loc["q2", "recall@5"] == 1.0
    # identical doc embeddings tie -> the relevant doc does not win the tie
    tie = dict(HAND_VECTORS, D4=HAND_VECTORS["D3"], Q3=[0.0, 0.0, 1.0])
    pq_tie = rank_retrieval(es, {"m": DictEmbedder("m", tie)}, dims=[3], include_bm25=False)
    assert pq_tie.set_index("record_id").loc["q3", "first_relevant_rank"] == 2


def test_single_relevant_falls_back_to_positive_id():
    es = make_eval_set([("q1", "Q1", ["d2", "d1"], ["d1"])], HAND_DOCS)
    legacy = es.copy()
    legacy["relevant_ids"] = [[] for _ in range(len(legacy))]
    emb = {"m": DictEmbedder("m", HAND_VECTORS)}
    a = rank_retrieval(es, emb, dims=[3], include_bm25=False)
    b = rank_retrieval(legacy, emb, dims=[3], include_bm25=False)
    pd.testing.assert_frame_equal(a, b)


def test_bm25_ranks_lexically_identical_document_first():
    docs = {
        "d1": "alice: how do i mount an ntfs partition with fstab",
        "d2": "bob: the weather is lovely today",
        "d3": "carol: racket macros use syntax rules",
        "d4": "dave: python packaging with pyproject toml",
    }
    es = make_eval_set(
        [
            ("q1", docs["d1"], ["d1", "d2", "d3", "d4"], ["d1"]),
            ("q3", docs["d3"], ["d3", "d1", "d2", "d4"], ["d3"]),
            ("q4", docs["d4"], ["d2", "d4", "d1", "d3"], ["d2"]),  # relevant d2 shares no term
            ("q0", "zzz qqq", ["d1", "d2", "d3", "d4"], ["d1", "d2"]),  # no overlap: all-zero tie -> last
        ],
        docs,
    )
    (rs,) = prepare_sets(es)
    scores = bm25_pool_scores(rs)
    assert scores[3].tolist() == [0.0] * 4
    pq = rank_retrieval(es, {}, dims=[8, 4]).set_index(["dim", "record_id"])
    assert set(pq["model"]) == {BM25_MODEL_NAME}
    first = pq.loc[8, "first_relevant_rank"]
    assert first["q1"] == 1 and first["q3"] == 1 and first["q4"] > 1 and first["q0"] == 3
    assert pq.loc[8, "recall@10"]["q0"] == 1.0 and pq.loc[8, "mrr@10"]["q0"] == pytest.approx(1 / 3)
    # BM25 repeats identical rows at every dim
    pd.testing.assert_frame_equal(pq.loc[8], pq.loc[4])


def test_rrf_fuse_hand_computed():
    bm25 = np.array([3.0, 0.0, 0.0, 1.0])  # competition ranks 1, 3, 3, 2
    dense = np.array([0.1, 0.9, 0.5, 0.2])  # ranks 4, 1, 2, 3
    fused = rrf_fuse([bm25, dense], k=60)
    expected = [1 / 61 + 1 / 64, 1 / 63 + 1 / 61, 1 / 63 + 1 / 62, 1 / 62 + 1 / 63]
    np.testing.assert_allclose(fused, expected)
    np.testing.assert_allclose(rrf_fuse([dense], k=0), [1 / 4, 1, 1 / 2, 1 / 3])
    with pytest.raises(ValueError):
        rrf_fuse([bm25, dense[:2]])


def test_rrf_row_is_rrf_of_bm25_and_dense():
    es = random_eval_set(12, 6, seed=3)
    emb = HashEmbedder("dense", max_dim=8)
    pq = rank_retrieval(es, {"dense": emb}, dims=[8, 4], hybrids=["dense"], rrf_k=60)
    # no FusionChoice -> the RRF row only, no score-fusion "hybrid:" row
    assert set(pq["model"]) == {"dense", "rrf:dense", BM25_MODEL_NAME}
    assert (pq.groupby(["model", "dim"]).size() == 12).all()
    # recompute the fused metrics of one query by hand
    (rs,) = prepare_sets(es)
    bm = bm25_pool_scores(rs)
    texts = list(dict.fromkeys([*rs.query_texts, *rs.doc_texts]))
    vec = dict(zip(texts, emb.embed(texts, 4)))
    for i in (0, 5):
        dense_scores = np.stack([vec[rs.doc_texts[j]] for j in rs.pools[i]]) @ vec[rs.query_texts[i]]
        want = query_metrics(rrf_fuse([bm[i], dense_scores], k=60), rs.relevant[i], rs.n_relevant[i])
        got = pq[(pq["model"] == "rrf:dense") & (pq["dim"] == 4) & (pq["record_id"] == rs.query_ids[i])].iloc[0]
        for name in (*METRIC_NAMES, "first_relevant_rank"):
            assert got[name] == pytest.approx(want[name]), name
    with pytest.raises(ValueError):
        rank_retrieval(es, {"dense": emb}, dims=[4], hybrids=["other"])


def test_one_embed_call_per_dim_with_all_unique_texts_and_dim_skipping():
    es = pd.concat(
        [
            random_eval_set(8, 5, seed=0, eval_set="threadembed", source="a", task="thread"),
            random_eval_set(6, 4, seed=1, eval_set="threadembed", source="a", task="response"),
            random_eval_set(5, 5, seed=2, eval_set="beir_x", source="a", task="thread"),  # same source/task names
        ],
        ignore_index=True,
    )
    small, big = HashEmbedder("small", max_dim=8), HashEmbedder("big", max_dim=16)
    logs: list[str] = []
    pq = rank_retrieval(es, {"small": small, "big": big}, dims=[16, 8, 4], hybrids=["small"], log=logs.append)
    n_unique = es["text"].nunique()
    assert big.calls == [(n_unique, 16), (n_unique, 8), (n_unique, 4)]
    assert small.calls == [(n_unique, 8), (n_unique, 4)]  # dim 16 > max_dim 8 skipped
    assert set(big.texts_seen[0]) == set(es["text"]) and len(big.texts_seen[0]) == n_unique
    assert any("small" in m and "skipping dim=16" in m for m in logs)
    dims_by_model = pq.groupby("model")["dim"].agg(lambda d: sorted(set(d)))
    assert dims_by_model.to_dict() == {"big": [4, 8, 16], "small": [4, 8], "rrf:small": [4, 8], "bm25": [4, 8, 16]}
    sizes = pq[pq["model"] == "big"].groupby(["eval_set", "source", "task", "dim"]).size()
    assert sizes.loc[("beir_x", "a", "thread", 4)] == 5 and sizes.loc[("threadembed", "a", "thread", 4)] == 8
    assert pq[list(METRIC_NAMES)].stack().between(0, 1).all()


def test_rank_retrieval_rejects_bad_input():
    es = random_eval_set(4, 3, seed=0)
    emb = HashEmbedder("m", max_dim=8)
    for bad in ([], [0], [4, 4]):
        with pytest.raises(ValueError):
            rank_retrieval(es, {"m": emb}, dims=bad)
    with pytest.raises(ValueError):
        rank_retrieval(es, {"bm25": emb}, dims=[4])
    with pytest.raises(ValueError):
        rank_retrieval(es, {"hybrid:m": emb}, dims=[4])
    with pytest.raises(ValueError):
        rank_retrieval(es, {"rrf:m": emb}, dims=[4])
    broken = es.copy()
    broken.at[0, "relevant_ids"] = ["nope"]
    with pytest.raises(ValueError, match="not documents"):
        rank_retrieval(broken, {"m": emb}, dims=[4])
    with pytest.raises(ValueError, match="missing columns"):
        rank_retrieval(es.drop(columns=["relevant_ids"]), {"m": emb}, dims=[4])
    empty = rank_retrieval(es.iloc[0:0], {"m": emb}, dims=[4])
    assert empty.empty and list(empty.columns) == list(PER_QUERY_COLUMNS)
    assert summarize(empty).empty and list(summarize(empty).columns) == list(RESULT_COLUMNS)


def test_summarize_means_cis_and_n():
    es = pd.concat([random_eval_set(30, 8, seed=4, source="a"), random_eval_set(20, 8, seed=5, source="b")])
    pq = rank_retrieval(es, {"m": HashEmbedder("m", max_dim=8)}, dims=[8, 4])
    res = summarize(pq, n_resamples=300, seed=0)
    assert list(res.columns) == list(RESULT_COLUMNS)
    assert len(res) == 2 * 2 * 2 * len(METRIC_NAMES)  # models x sources x dims x metrics
    assert set(res.loc[res["source"] == "a", "n"]) == {30} and set(res.loc[res["source"] == "b", "n"]) == {20}
    assert ((res["ci_low"] <= res["value"] + 1e-12) & (res["value"] <= res["ci_high"] + 1e-12)).all()
    g = pq[(pq["model"] == "m") & (pq["source"] == "a") & (pq["dim"] == 4)]
    row = res[(res["model"] == "m") & (res["source"] == "a") & (res["dim"] == 4) & (res["metric"] == "mrr@10")].iloc[0]
    assert row["value"] == pytest.approx(g["mrr@10"].mean())
    pd.testing.assert_frame_equal(res, summarize(pq, n_resamples=300, seed=0))
    bm = res[res["model"] == BM25_MODEL_NAME]
    assert (bm.groupby(["source", "metric"])[["value", "ci_low", "ci_high"]].nunique() == 1).all().all()


def test_sentence_transformer_embedder_encodes_each_text_once():
    es = random_eval_set(10, 5, seed=6)
    model = CountingModel(dim=16)
    emb = SentenceTransformerEmbedder(model, "m")
    res = evaluate_retrieval(es, {"m": emb}, dims=[16, 8, 4], include_bm25=False, n_resamples=100)
    assert sorted(model.seen) == sorted(set(es["text"]))
    assert set(res["dim"]) == {16, 8, 4}


def test_tiny_sentence_transformer_same_model_twice(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    es = pd.concat([random_eval_set(12, 6, seed=8, source="a"), random_eval_set(9, 6, seed=9, task="response")])
    embedders = {"base": SentenceTransformerEmbedder(model, "base"), "fine_tuned": SentenceTransformerEmbedder(model, "fine_tuned")}
    dims = [32, 16, 8]
    pq = rank_retrieval(es, embedders, dims=dims, hybrids=["fine_tuned"])
    res = summarize(pq, n_resamples=200)
    got = set(zip(res["model"], res["source"], res["task"], res["dim"]))
    models = ("base", "fine_tuned", "rrf:fine_tuned", BM25_MODEL_NAME)
    assert got == {(m, s, t, d) for m in models for s, t in [("a", "thread"), ("s", "response")] for d in dims}
    wide = res.pivot_table(index=["source", "task", "dim", "metric"], columns="model", values="value")
    np.testing.assert_allclose(wide["base"], wide["fine_tuned"])
