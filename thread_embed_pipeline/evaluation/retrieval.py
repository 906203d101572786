"""Score eval sets with dense (Matryoshka-truncated) embedding models and a BM25 baseline.

Pipeline: :func:`rank_retrieval` -> per-query pessimistic ranks (one row per
model x source x task x dim x query); :func:`summarize_ranks` -> long metric table;
:func:`evaluate_retrieval` does both.

Dense models: every unique text of all eval sets is encoded ONCE per model at full
dimension (:func:`encode_texts`), then, for each requested dim, truncated to the first
``dim`` components and re-L2-normalised (:func:`truncate_and_normalize`); score = cosine.
Texts are encoded with plain ``model.encode`` (no query/document prompts), so one
embedding per unique text serves both roles.

BM25 (``bm25s``, lowercase, English stop words, no stemming) has no dimension: its ranks
are computed once per (source, task) and emitted once per requested dim with identical
values, so every model x source x task x dim has rows and tables/plots stay rectangular.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from thread_embed_pipeline.evaluation.metrics import METRIC_NAMES, mean_metrics, pessimistic_rank
from thread_embed_pipeline.schemas import EVAL_SET_COLUMNS, missing_columns

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

__all__ = [
    "BM25_MODEL_NAME",
    "RESULT_COLUMNS",
    "PER_QUERY_COLUMNS",
    "encode_texts",
    "truncate_and_normalize",
    "score_dense",
    "score_bm25",
    "rank_retrieval",
    "summarize_ranks",
    "evaluate_retrieval",
]

BM25_MODEL_NAME = "bm25"
RESULT_COLUMNS: tuple[str, ...] = ("model", "source", "task", "dim", "metric", "value", "n")
PER_QUERY_COLUMNS: tuple[str, ...] = ("model", "source", "task", "dim", "record_id", "rank")

Log = Callable[[str], None] | None


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32, copy=False)


def encode_texts(
    model: SentenceTransformer,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    log: Log = None,
    log_every: int = 20,
) -> np.ndarray:
    """Full-dimension, L2-normalised float32 embeddings, one row per input text (input order).

    Each unique text is encoded once (longest first, for efficient padding) and mapped
    back. ``log(msg)`` is called every ``log_every`` batches and at the end.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    texts = list(texts)
    unique: list[str] = list(dict.fromkeys(texts))
    if not unique:
        dim = model.get_embedding_dimension() or 0
        return np.zeros((0, dim), dtype=np.float32)
    order = sorted(range(len(unique)), key=lambda i: -len(unique[i]))
    n_batches = -(-len(unique) // batch_size)
    chunk = batch_size * max(1, log_every)
    parts: list[np.ndarray] = []
    for start in range(0, len(order), chunk):
        batch_texts = [unique[i] for i in order[start : start + chunk]]
        emb = model.encode(
            batch_texts,
            batch_size=batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        parts.append(np.asarray(emb, dtype=np.float32))
        if log is not None:
            done = min(start + chunk, len(order))
            log(f"encoded {done}/{len(unique)} unique texts ({-(-done // batch_size)}/{n_batches} batches)")
    sorted_emb = np.concatenate(parts, axis=0)
    unique_emb = np.empty_like(sorted_emb)
    unique_emb[np.asarray(order)] = sorted_emb
    row_of = {t: i for i, t in enumerate(unique)}
    return _l2_normalize(unique_emb[[row_of[t] for t in texts]])


def truncate_and_normalize(emb: np.ndarray, dim: int) -> np.ndarray:
    """First ``dim`` components of each row (Matryoshka truncation), re-L2-normalised, float32."""
    emb = np.asarray(emb, dtype=np.float32)
    if not 1 <= dim <= emb.shape[-1]:
        raise ValueError(f"dim {dim} out of range for embeddings of width {emb.shape[-1]}")
    return _l2_normalize(emb[..., :dim])


def _split_one_task(eval_set: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    missing = missing_columns(eval_set.columns, EVAL_SET_COLUMNS)
    if missing:
        raise ValueError(f"eval set is missing columns {missing}")
    keys = eval_set[["source", "task"]].drop_duplicates()
    if len(keys) > 1:
        raise ValueError(f"expected one (source, task), got {keys.to_records(index=False).tolist()}")
    queries = eval_set[eval_set["record_type"] == "query"]
    docs = eval_set[eval_set["record_type"] == "document"]
    if docs["record_id"].duplicated().any():
        raise ValueError("duplicate document record_ids within one (source, task)")
    return queries, docs


def _ranks_from_doc_scores(queries: pd.DataFrame, doc_row: dict[str, int], score_fn) -> pd.Series:
    """Rank each query's positive within its pool, given ``score_fn(i, pool_rows) -> scores``."""
    ranks = []
    for i, (cands, pos) in enumerate(zip(queries["candidate_ids"], queries["positive_id"])):
        cands = list(cands)
        try:
            pool = np.fromiter((doc_row[c] for c in cands), dtype=np.int64, count=len(cands))
        except KeyError as exc:
            raise ValueError(f"candidate {exc} of query {queries['record_id'].iloc[i]} is not a document") from None
        ranks.append(pessimistic_rank(score_fn(i, pool), cands.index(pos)))
    return pd.Series(np.asarray(ranks, dtype=np.int64), index=pd.Index(queries["record_id"].tolist(), name="record_id"), name="rank")


def score_dense(eval_set_one_task: pd.DataFrame, embeddings_by_text: Mapping[str, np.ndarray], dim: int) -> pd.Series:
    """Pessimistic rank of each query's positive (Series indexed by query record_id) by cosine at ``dim``."""
    queries, docs = _split_one_task(eval_set_one_task)
    if queries.empty:
        return pd.Series([], dtype=np.int64, index=pd.Index([], name="record_id"), name="rank")
    q = truncate_and_normalize(np.stack([embeddings_by_text[t] for t in queries["text"]]), dim)
    d = truncate_and_normalize(np.stack([embeddings_by_text[t] for t in docs["text"]]), dim)
    doc_row = {rid: j for j, rid in enumerate(docs["record_id"])}
    return _ranks_from_doc_scores(queries, doc_row, lambda i, pool: d[pool] @ q[i])


def score_bm25(eval_set_one_task: pd.DataFrame) -> pd.Series:
    """Pessimistic rank of each query's positive by BM25 over all documents of the (source, task).

    One index per (source, task); per query, scores for the whole index are computed and
    the candidate pool picked out. A query with no indexable tokens scores 0 everywhere
    (so, pessimistically, ranks last).
    """
    import bm25s

    queries, docs = _split_one_task(eval_set_one_task)
    if queries.empty:
        return pd.Series([], dtype=np.int64, index=pd.Index([], name="record_id"), name="rank")
    tok_kwargs = dict(lower=True, stopwords="en", stemmer=None, show_progress=False)
    corpus_tokens = bm25s.tokenize(docs["text"].tolist(), return_ids=True, **tok_kwargs)
    retriever = bm25s.BM25()
    retriever.index(corpus_tokens, show_progress=False)
    query_tokens = bm25s.tokenize(queries["text"].tolist(), return_ids=False, **tok_kwargs)
    n_docs = len(docs)

    def scores(i: int, pool: np.ndarray) -> np.ndarray:
        toks = [t for t in query_tokens[i] if t and t in retriever.vocab_dict]
        if not toks:
            return np.zeros(len(pool), dtype=np.float32)
        full = retriever.get_scores(toks)
        assert len(full) == n_docs
        return full[pool]

    doc_row = {rid: j for j, rid in enumerate(docs["record_id"])}
    return _ranks_from_doc_scores(queries, doc_row, scores)


def _groups(eval_sets: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    if eval_sets.empty:
        return []
    return [(str(s), str(t), g) for (s, t), g in eval_sets.groupby(["source", "task"], sort=True)]


def _rank_frame(model: str, source: str, task: str, dim: int, ranks: pd.Series) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": model,
            "source": source,
            "task": task,
            "dim": int(dim),
            "record_id": ranks.index.astype(str),
            "rank": ranks.to_numpy(dtype=np.int64),
        }
    )


def rank_retrieval(
    eval_sets: pd.DataFrame,
    models: Mapping[str, SentenceTransformer],
    *,
    dims: Sequence[int],
    include_bm25: bool = True,
    batch_size: int = 64,
    log: Log = None,
) -> pd.DataFrame:
    """Per-query pessimistic ranks, columns ``PER_QUERY_COLUMNS`` (for metrics and bootstrap CIs).

    One encoding per model (all unique texts of all sets at once), then truncation per dim.
    BM25 rows (model ``"bm25"``) repeat identical ranks for every dim.
    """
    dims = [int(d) for d in dims]
    if not dims or any(d < 1 for d in dims) or len(set(dims)) != len(dims):
        raise ValueError(f"dims must be distinct positive ints, got {dims}")
    if include_bm25 and BM25_MODEL_NAME in models:
        raise ValueError(f"model name {BM25_MODEL_NAME!r} is reserved for the BM25 baseline")
    groups = _groups(eval_sets)
    frames: list[pd.DataFrame] = []
    all_texts = list(dict.fromkeys(eval_sets["text"].tolist())) if groups else []
    for name, model in models.items():
        full_dim = model.get_embedding_dimension()
        if full_dim is not None and max(dims) > full_dim:
            raise ValueError(f"model {name!r} has dimension {full_dim} < requested dims {dims}")
        if not groups:
            continue
        if log is not None:
            log(f"[{name}] encoding {len(all_texts)} unique texts")
        emb = encode_texts(model, all_texts, batch_size=batch_size, log=log)
        by_text = dict(zip(all_texts, emb))
        for dim in dims:
            for source, task, g in groups:
                frames.append(_rank_frame(name, source, task, dim, score_dense(g, by_text, dim)))
            if log is not None:
                log(f"[{name}] scored dim={dim}")
    if include_bm25:
        for source, task, g in groups:
            ranks = score_bm25(g)
            frames.extend(_rank_frame(BM25_MODEL_NAME, source, task, dim, ranks) for dim in dims)
        if log is not None and groups:
            log(f"[{BM25_MODEL_NAME}] scored {len(groups)} (source, task) sets")
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in PER_QUERY_COLUMNS})
    return pd.concat(frames, ignore_index=True)[list(PER_QUERY_COLUMNS)]


def summarize_ranks(per_query: pd.DataFrame) -> pd.DataFrame:
    """Long metric table (``RESULT_COLUMNS``): mean of each metric per model x source x task x dim; n = #queries."""
    rows = []
    if not per_query.empty:
        for (model, source, task, dim), g in per_query.groupby(["model", "source", "task", "dim"], sort=False):
            means = mean_metrics(g["rank"].to_numpy())
            rows.extend(
                {
                    "model": model,
                    "source": source,
                    "task": task,
                    "dim": int(dim),
                    "metric": m,
                    "value": means[m],
                    "n": len(g),
                }
                for m in METRIC_NAMES
            )
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def evaluate_retrieval(
    eval_sets: pd.DataFrame,
    models: Mapping[str, SentenceTransformer],
    *,
    dims: Sequence[int],
    include_bm25: bool = True,
    batch_size: int = 64,
    log: Log = None,
) -> pd.DataFrame:
    """``summarize_ranks(rank_retrieval(...))``: long table with columns model, source, task, dim, metric, value, n.

    Call :func:`rank_retrieval` + :func:`summarize_ranks` yourself to keep the per-query ranks.
    """
    return summarize_ranks(
        rank_retrieval(eval_sets, models, dims=dims, include_bm25=include_bm25, batch_size=batch_size, log=log)
    )
