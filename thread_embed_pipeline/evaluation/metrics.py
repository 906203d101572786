"""Ranking metrics over a query's candidate pool, with one or SEVERAL relevant documents.

Per query, from the candidate scores and a boolean "is relevant" mask:

* ``mrr@10``   -- 1 / rank of the first relevant document if it is in the top 10, else 0;
* ``ndcg@10``  -- binary gains: DCG = sum over relevant docs ranked <= 10 of 1 / log2(rank + 1),
  divided by the ideal DCG over ``min(n_relevant, 10)`` positions;
* ``recall@k`` -- (# relevant in the top k) / n_relevant, for k = 1, 5, 10.

Ranks are PESSIMISTIC on ties: candidates are sorted by score (descending) and, within a
tie, every non-relevant candidate is placed ABOVE every relevant one, so a tie never
favours a relevant document (BM25 produces many all-zero ties, and own eval sets list the
positive first). A NaN score ranks last. With a single relevant document this is
``rank = 1 + #(other candidates with score >= its score)`` (:func:`relevant_ranks`).

``n_relevant`` may exceed the number of relevant documents in the pool (a judged-relevant
document that is not a candidate is never retrieved), which is the usual IR convention.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "METRIC_NAMES",
    "relevant_ranks",
    "metrics_from_relevant_ranks",
    "query_metrics",
]

METRIC_NAMES: tuple[str, ...] = ("mrr@10", "ndcg@10", "recall@1", "recall@5", "recall@10")
_CUTOFF = 10
_RECALL_KS = (1, 5, 10)


def relevant_ranks(scores: Sequence[float] | np.ndarray, relevant: Sequence[bool] | np.ndarray) -> np.ndarray:
    """Sorted 1-based pessimistic ranks of the relevant candidates (int64, possibly empty).

    Sort key: score descending (NaN last), then non-relevant before relevant on ties.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    rel = np.asarray(relevant, dtype=bool).ravel()
    if s.shape != rel.shape:
        raise ValueError(f"scores ({s.size}) and relevant mask ({rel.size}) differ in length")
    if s.size == 0:
        raise ValueError("empty score vector")
    key = np.where(np.isnan(s), np.inf, -s)  # ascending key == descending score, NaN last
    order = np.lexsort((rel, key))  # primary: key; ties: False (non-relevant) first
    return (np.flatnonzero(rel[order]) + 1).astype(np.int64)


def metrics_from_relevant_ranks(ranks: Sequence[int] | np.ndarray, n_relevant: int | None = None) -> dict[str, float]:
    """All of ``METRIC_NAMES`` for one query from the 1-based ranks of its retrieved relevant documents.

    ``n_relevant`` (default ``len(ranks)``) is the number of judged-relevant documents, the
    recall denominator and the size of the ideal ranking.
    """
    r = np.sort(np.asarray(ranks, dtype=np.int64).ravel())
    n_rel = int(r.size if n_relevant is None else n_relevant)
    if n_rel < 1:
        raise ValueError("a query needs at least one relevant document")
    if r.size > n_rel:
        raise ValueError(f"{r.size} relevant ranks but n_relevant={n_rel}")
    if r.size and r[0] < 1:
        raise ValueError(f"ranks must be >= 1, got {r[0]}")
    top = r[r <= _CUTOFF]
    dcg = float(np.sum(1.0 / np.log2(top + 1.0)))
    idcg = float(np.sum(1.0 / np.log2(np.arange(1, min(n_rel, _CUTOFF) + 1) + 1.0)))
    out = {
        "mrr@10": 1.0 / float(top[0]) if top.size else 0.0,
        "ndcg@10": dcg / idcg,
    }
    for k in _RECALL_KS:
        out[f"recall@{k}"] = float(np.count_nonzero(r <= k)) / n_rel
    return out


def query_metrics(
    scores: Sequence[float] | np.ndarray, relevant: Sequence[bool] | np.ndarray, n_relevant: int | None = None
) -> dict[str, float]:
    """``METRIC_NAMES`` plus ``first_relevant_rank`` for one query's pool (pessimistic ties).

    ``first_relevant_rank`` is ``len(pool) + 1`` when no relevant document is in the pool.
    """
    ranks = relevant_ranks(scores, relevant)
    out = metrics_from_relevant_ranks(ranks, n_relevant if n_relevant is not None else max(ranks.size, 1))
    out["first_relevant_rank"] = int(ranks[0]) if ranks.size else int(np.size(scores)) + 1
    return out
