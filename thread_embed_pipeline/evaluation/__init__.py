"""Evaluation stage: eval-set construction, ranking metrics, retrieval scoring and reports.

Pure pandas/numpy functions (no dagster). Heavy libraries (sentence-transformers, bm25s,
matplotlib) are imported lazily inside the functions that need them.
"""

from thread_embed_pipeline.evaluation.eval_sets import (
    build_eval_sets,
    build_response_eval_set,
    build_thread_eval_set,
    eval_texts,
)
from thread_embed_pipeline.evaluation.metrics import (
    METRIC_NAMES,
    mean_metrics,
    metrics_from_rank,
    per_query_metrics,
    pessimistic_rank,
    ranks_from_score_matrix,
)
from thread_embed_pipeline.evaluation.report import improvement_summary, markdown_leaderboard, plot_matryoshka
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

__all__ = [
    "BM25_MODEL_NAME",
    "METRIC_NAMES",
    "PER_QUERY_COLUMNS",
    "RESULT_COLUMNS",
    "build_eval_sets",
    "build_response_eval_set",
    "build_thread_eval_set",
    "encode_texts",
    "eval_texts",
    "evaluate_retrieval",
    "improvement_summary",
    "markdown_leaderboard",
    "mean_metrics",
    "metrics_from_rank",
    "per_query_metrics",
    "pessimistic_rank",
    "plot_matryoshka",
    "rank_retrieval",
    "ranks_from_score_matrix",
    "score_bm25",
    "score_dense",
    "summarize_ranks",
    "truncate_and_normalize",
]
