"""Single-relevant-document ranking metrics.

Every eval query has exactly one relevant document, so each metric is a function of the
1-based rank of that document within the query's candidate pool. Ranks are PESSIMISTIC
on ties: ``rank = 1 + #(distractors with score >= positive score)``, so a tie never
favours the positive (BM25 produces many all-zero ties, and the positive is listed first).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "METRIC_NAMES",
    "pessimistic_rank",
    "ranks_from_score_matrix",
    "metrics_from_rank",
    "per_query_metrics",
    "mean_metrics",
]

METRIC_NAMES: tuple[str, ...] = ("mrr@10", "ndcg@10", "recall@1", "recall@5", "recall@10")


def pessimistic_rank(scores: Sequence[float] | np.ndarray, positive_index: int = 0) -> int:
    """1-based rank of ``scores[positive_index]``; every other candidate scoring >= it ranks above."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError("empty score vector")
    if not 0 <= positive_index < s.size:
        raise IndexError(f"positive_index {positive_index} out of range for {s.size} candidates")
    pos = s[positive_index]
    if np.isnan(pos):
        return int(s.size)  # an undefined score ranks last
    others = np.delete(s, positive_index)
    return 1 + int(np.count_nonzero(others >= pos))


def ranks_from_score_matrix(scores: np.ndarray, positive_index: int = 0) -> np.ndarray:
    """Pessimistic ranks for a (n_queries, n_candidates) matrix whose column ``positive_index`` is the positive."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"expected a 2-d score matrix, got shape {s.shape}")
    pos = s[:, positive_index : positive_index + 1]
    ge = s >= pos
    ge[:, positive_index] = False
    return 1 + ge.sum(axis=1).astype(np.int64)


def metrics_from_rank(rank: int) -> dict[str, float]:
    """All of ``METRIC_NAMES`` for one query whose single relevant document has 1-based ``rank``."""
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    in10 = rank <= 10
    return {
        "mrr@10": 1.0 / rank if in10 else 0.0,
        # one relevant document => ideal DCG = 1
        "ndcg@10": 1.0 / float(np.log2(rank + 1)) if in10 else 0.0,
        "recall@1": float(rank <= 1),
        "recall@5": float(rank <= 5),
        "recall@10": float(in10),
    }


def per_query_metrics(ranks: Iterable[int] | np.ndarray) -> dict[str, np.ndarray]:
    """Vectorised :func:`metrics_from_rank`: metric name -> array over queries."""
    r = np.asarray(list(ranks) if not isinstance(ranks, np.ndarray) else ranks, dtype=np.float64)
    if r.size and r.min() < 1:
        raise ValueError("ranks must be >= 1")
    in10 = r <= 10
    return {
        "mrr@10": np.where(in10, 1.0 / np.maximum(r, 1), 0.0),
        "ndcg@10": np.where(in10, 1.0 / np.log2(r + 1), 0.0),
        "recall@1": (r <= 1).astype(np.float64),
        "recall@5": (r <= 5).astype(np.float64),
        "recall@10": in10.astype(np.float64),
    }


def mean_metrics(ranks: Iterable[int] | np.ndarray) -> dict[str, float]:
    """Mean of each metric over queries (NaN for no queries)."""
    per_q = per_query_metrics(ranks)
    return {k: (float(v.mean()) if v.size else float("nan")) for k, v in per_q.items()}
