"""Single-relevant ranking metrics: hand-computed cases, pessimistic ties, agreement with ranx."""

from __future__ import annotations

import math

import numpy as np
import pytest

from thread_embed_pipeline.evaluation.metrics import (
    METRIC_NAMES,
    mean_metrics,
    metrics_from_rank,
    per_query_metrics,
    pessimistic_rank,
    ranks_from_score_matrix,
)


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
    got = metrics_from_rank(rank)
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        assert got[k] == pytest.approx(v)
    vec = per_query_metrics([rank])
    for k, v in expected.items():
        assert vec[k][0] == pytest.approx(v)


def test_pessimistic_rank_ties_never_favour_positive():
    assert pessimistic_rank([0.9, 0.1, 0.5]) == 1
    assert pessimistic_rank([0.5, 0.9, 0.1]) == 2
    assert pessimistic_rank([0.0, 0.0, 0.0, 0.0]) == 4  # BM25 all-zero: positive ranks last
    assert pessimistic_rank([0.5, 0.5, 0.1]) == 2
    assert pessimistic_rank([0.1, 0.5, 0.1, 0.5], positive_index=2) == 4
    assert pessimistic_rank([0.3]) == 1
    assert pessimistic_rank([float("nan"), 0.1, 0.2]) == 3


def test_ranks_from_score_matrix_matches_scalar():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 4, size=(50, 8)).astype(float)  # many ties
    expected = [pessimistic_rank(row) for row in s]
    assert ranks_from_score_matrix(s).tolist() == expected


def test_mean_metrics_hand_computed():
    m = mean_metrics([1, 2, 20])
    assert m["mrr@10"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["recall@1"] == pytest.approx(1 / 3)
    assert m["recall@10"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert all(math.isnan(v) for v in mean_metrics([]).values())
    with pytest.raises(ValueError):
        metrics_from_rank(0)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_agrees_with_ranx_on_tie_free_scores():
    ranx = pytest.importorskip("ranx")
    rng = np.random.default_rng(42)
    n_queries, pool = 60, 25
    scores = rng.random((n_queries, pool))
    pos_index = rng.integers(0, pool, size=n_queries)
    qrels, run = {}, {}
    for q in range(n_queries):
        qrels[f"q{q}"] = {f"d{q}_{pos_index[q]}": 1}
        run[f"q{q}"] = {f"d{q}_{j}": float(scores[q, j]) for j in range(pool)}
    ours = mean_metrics([pessimistic_rank(scores[q], int(pos_index[q])) for q in range(n_queries)])
    theirs = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), list(METRIC_NAMES))
    for name in METRIC_NAMES:
        assert ours[name] == pytest.approx(float(theirs[name]), abs=1e-9), name
