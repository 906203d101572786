"""Ranking metrics: hand-computed cases (single and several relevant docs), pessimistic ties, agreement with ranx."""

from __future__ import annotations

import math

import numpy as np
import pytest

from thread_embed_pipeline.evaluation.metrics import (
    METRIC_NAMES,
    metrics_from_relevant_ranks,
    query_metrics,
    relevant_ranks,
)


def pessimistic_rank(scores, positive_index: int = 0) -> int:
    """The rank of one positive: every other candidate scoring >= it ranks above (relevant_ranks' ties)."""
    mask = np.zeros(len(scores), dtype=bool)
    mask[positive_index] = True
    return int(relevant_ranks(scores, mask)[0])


def test_metric_names():
    assert METRIC_NAMES == ("mrr@10", "ndcg@10", "recall@1", "recall@5", "recall@10")


@pytest.mark.parametrize(
    ("rank", "expected"),
    [
        (1, {"mrr@10": 1.0, "ndcg@10": 1.0, "recall@1": 1.0, "recall@5": 1.0, "recall@10": 1.0}),
        (2, {"mrr@10": 0.5, "ndcg@10": 1 / math.log2(3), "recall@1": 0.0, "recall@5": 1.0, "recall@10": 1.0}),
        (5, {"mrr@10": 0.2, "ndcg@10": 1 / math.log2(6), "recall@1": 0.0, "recall@5": 1.0, "recall@10": 1.0}),
        (6, {"mrr@10": 1 / 6, "ndcg@10": 1 / math.log2(7), "recall@1": 0.0, "recall@5": 0.0, "recall@10": 1.0}),
        (10, {"mrr@10": 0.1, "ndcg@10": 1 / math.log2(11), "recall@1": 0.0, "recall@5": 0.0, "recall@10": 1.0}),
        (11, {"mrr@10": 0.0, "ndcg@10": 0.0, "recall@1": 0.0, "recall@5": 0.0, "recall@10": 0.0}),
    ],
)
def test_metrics_from_rank_hand_computed(rank, expected):
    got = metrics_from_relevant_ranks([rank], 1)
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        assert got[k] == pytest.approx(v)
    # the general path with a single relevant document at that rank gives the same numbers
    scores = np.linspace(1.0, 0.0, 20)
    mask = np.zeros(20, dtype=bool)
    mask[rank - 1] = True
    general = query_metrics(scores, mask)
    assert general["first_relevant_rank"] == rank
    for k, v in expected.items():
        assert general[k] == pytest.approx(v)


def test_pessimistic_rank_ties_never_favour_positive():
    assert pessimistic_rank([0.9, 0.1, 0.5]) == 1
    assert pessimistic_rank([0.5, 0.9, 0.1]) == 2
    assert pessimistic_rank([0.0, 0.0, 0.0, 0.0]) == 4  # BM25 all-zero: positive ranks last
    assert pessimistic_rank([0.5, 0.5, 0.1]) == 2
    assert pessimistic_rank([0.1, 0.5, 0.1, 0.5], positive_index=2) == 4
    assert pessimistic_rank([0.3]) == 1
    assert pessimistic_rank([float("nan"), 0.1, 0.2]) == 3


def test_relevant_ranks_multi_relevant_ties():
    # scores:           d0   d1   d2   d3   d4
    scores = np.array([0.5, 0.5, 0.9, 0.5, 0.1])
    rel = np.array([True, False, False, True, True])
    # order: d2 (0.9), then the 0.5-tie with non-relevant d1 first, then d0/d3, then d4
    assert relevant_ranks(scores, rel).tolist() == [3, 4, 5]
    # two tied relevant docs and no non-relevant in the tie: ranks 1 and 2 (either order)
    assert relevant_ranks([0.7, 0.7, 0.1], [True, True, False]).tolist() == [1, 2]
    # NaN ranks last, even below a non-relevant -inf-like score
    assert relevant_ranks([np.nan, 0.0, -5.0], [True, False, False]).tolist() == [3]
    assert relevant_ranks([0.3, 0.2], [False, False]).tolist() == []
    with pytest.raises(ValueError):
        relevant_ranks([0.1, 0.2], [True])


def test_metrics_from_relevant_ranks_hand_computed():
    m = metrics_from_relevant_ranks([2, 4, 12], n_relevant=3)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["mrr@10"] == pytest.approx(0.5)
    assert m["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / idcg)
    assert m["recall@1"] == 0.0
    assert m["recall@5"] == pytest.approx(2 / 3)
    assert m["recall@10"] == pytest.approx(2 / 3)
    # a judged-relevant document outside the pool still counts in the denominators
    m = metrics_from_relevant_ranks([1], n_relevant=2)
    assert m["recall@1"] == pytest.approx(0.5)
    assert m["ndcg@10"] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    # more than 10 relevant: ideal DCG is over 10 positions, so a perfect top-10 gives 1
    m = metrics_from_relevant_ranks(list(range(1, 16)), n_relevant=15)
    assert m["ndcg@10"] == pytest.approx(1.0)
    assert m["recall@10"] == pytest.approx(10 / 15)
    with pytest.raises(ValueError):
        metrics_from_relevant_ranks([], n_relevant=0)
    with pytest.raises(ValueError):
        metrics_from_relevant_ranks([1, 2], n_relevant=1)


def test_query_metrics_no_relevant_in_pool():
    m = query_metrics([0.3, 0.2, 0.1], [False, False, False], n_relevant=1)
    assert m["first_relevant_rank"] == 4
    assert all(m[k] == 0.0 for k in METRIC_NAMES)


def test_mean_metrics_hand_computed():
    per_query = [metrics_from_relevant_ranks([rank], 1) for rank in (1, 2, 20)]
    m = {name: float(np.mean([q[name] for q in per_query])) for name in METRIC_NAMES}
    assert m["mrr@10"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["recall@1"] == pytest.approx(1 / 3)
    assert m["recall@10"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    with pytest.raises(ValueError):
        metrics_from_relevant_ranks([0], 1)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("max_relevant", [1, 14])
def test_agrees_with_ranx_on_tie_free_scores(max_relevant):
    ranx = pytest.importorskip("ranx")
    rng = np.random.default_rng(42 + max_relevant)
    n_queries, pool = 60, 25
    scores = rng.random((n_queries, pool))
    qrels, run, ours = {}, {}, []
    for q in range(n_queries):
        n_rel = int(rng.integers(1, max_relevant + 1))
        rel_idx = rng.choice(pool, size=n_rel, replace=False)
        mask = np.zeros(pool, dtype=bool)
        mask[rel_idx] = True
        qrels[f"q{q}"] = {f"d{q}_{j}": 1 for j in rel_idx}
        run[f"q{q}"] = {f"d{q}_{j}": float(scores[q, j]) for j in range(pool)}
        ours.append(query_metrics(scores[q], mask, n_rel))
    theirs = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), list(METRIC_NAMES))
    for name in METRIC_NAMES:
        assert np.mean([o[name] for o in ours]) == pytest.approx(float(theirs[name]), abs=1e-9), name
