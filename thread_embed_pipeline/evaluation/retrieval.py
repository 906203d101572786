"""Score eval sets with dense embedders (Matryoshka dims), BM25 and BM25+dense fusions (RRF, convex).

Pipeline: :func:`rank_retrieval` -> per-query metrics (one row per eval_set x model x source x
task x dim x query; ``PER_QUERY_COLUMNS``); :func:`summarize` -> long table of means with
bootstrap CIs over queries (``RESULT_COLUMNS``); :func:`evaluate_retrieval` does both.

A set is one (eval_set, source, task) group of ``EVAL_SET_COLUMNS`` rows. Each query is
scored against its own candidate pool (``candidate_ids``); its relevant documents are
``relevant_ids`` (several allowed, e.g. BEIR qrels; an empty list falls back to
``[positive_id]``). Metrics and the pessimistic tie rule are in :mod:`.metrics`.

* Dense (any :class:`~.embedders.Embedder`): for every dim, the embedder is asked ONCE for all
  unique texts of all sets (``embed(texts, dim)``, L2-normalised rows; a local
  sentence-transformers model encodes each text once and truncates per dim); score = cosine.
  A dim above the embedder's ``max_dim`` is skipped with a log line.
* BM25 (``bm25s``, lowercase, English stop words, no stemming; one index per set over all its
  documents): no dimension, so it is computed once per set and its rows repeated at every
  requested dim (tables and plots stay rectangular). A query without indexable tokens scores
  0 everywhere (so, pessimistically, its relevant documents rank last).
* RRF ``"rrf:<name>"``: reciprocal-rank fusion (Cormack, Clarke & Buettcher, SIGIR 2009)
  of the BM25 and the dense model's rankings of each query's pool,
  ``score(d) = sum_s 1 / (rrf_k + rank_s(d))``, with competition ("min") ranks so tied
  candidates get equal credit. RRF has no weights to tune (``rrf_k`` = 60, the paper's value),
  so nothing is fitted on the test queries.
* Hybrid ``"hybrid:<name>"``: convex mix of per-pool z-scored BM25 and dense scores
  (:func:`.fusion.convex_fuse`) with the weight of a :class:`.fusion.FusionChoice` tuned on DEV
  sets (``fusion={(name, dim): choice}``); without a choice for (name, dim) no hybrid row.

:func:`pool_scores` computes the BM25 and dense pool scores once (one embed call per model and
dim); :func:`rank_retrieval` turns them into metrics, and the same scores of dev sets feed
:func:`.fusion.tune_fusion`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from thread_embed_pipeline.schemas import Log
from thread_embed_pipeline.evaluation.embedders import Embedder, encode_texts, truncate_and_normalize
from thread_embed_pipeline.evaluation.fusion import FusionByEvalSet, FusionChoice, convex_fuse
from thread_embed_pipeline.evaluation.pools import GROUP_KEYS, RetrievalSet, prepare_sets
from thread_embed_pipeline.evaluation.precision import FLOAT_PRECISION, check_precisions, quantized_pool_scores, split_variant, variant_name
from thread_embed_pipeline.evaluation.maxsim import AGGREGATIONS, aggregate, check_aggregation, flatten_messages, maxsim_name, top_message_scores
from thread_embed_pipeline.evaluation.metrics import METRIC_NAMES, query_metrics
from thread_embed_pipeline.evaluation.statistics import bootstrap_ci

__all__ = [
    "BM25_MODEL_NAME",
    "HYBRID_PREFIX",
    "RRF_PREFIX",
    "GROUP_KEYS",
    "RESULT_COLUMNS",
    "PER_QUERY_COLUMNS",
    "RetrievalSet",
    "encode_texts",
    "truncate_and_normalize",
    "prepare_sets",
    "dense_pool_scores",
    "bm25_pool_scores",
    "PoolScores",
    "pool_scores",
    "add_maxsim",
    "maxsim_dev_table",
    "rrf_fuse",
    "pool_metrics",
    "metrics_from_pool_scores",
    "rank_retrieval",
    "summarize",
    "evaluate_retrieval",
]

BM25_MODEL_NAME = "bm25"
HYBRID_PREFIX = "hybrid:"
RRF_PREFIX = "rrf:"
RESERVED_PREFIXES: tuple[str, ...] = (HYBRID_PREFIX, RRF_PREFIX)
RESULT_COLUMNS: tuple[str, ...] = ("eval_set", "model", "source", "task", "dim", "metric", "value", "ci_low", "ci_high", "n")
PER_QUERY_COLUMNS: tuple[str, ...] = (
    "eval_set",
    "model",
    "source",
    "task",
    "dim",
    "record_id",
    "n_relevant",
    "first_relevant_rank",
    *METRIC_NAMES,
)



def dense_pool_scores(rset: RetrievalSet, query_emb: np.ndarray, doc_emb: np.ndarray) -> list[np.ndarray]:
    """Per query: dot products (cosine for L2-normalised rows) of its pool's documents with the query."""
    return [doc_emb[pool] @ query_emb[i] for i, pool in enumerate(rset.pools)]


# The one BM25 tokenisation, used by the eval and by the released hybrid retriever (search.py).
BM25_TOKENIZE_KWARGS: dict = dict(lower=True, stopwords="en", stemmer=None, show_progress=False)


def bm25_index(doc_texts: Sequence[str]):
    """A ``bm25s.BM25`` index over ``doc_texts`` with :data:`BM25_TOKENIZE_KWARGS`."""
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(list(doc_texts), return_ids=True, **BM25_TOKENIZE_KWARGS), show_progress=False)
    return retriever


def bm25_query_tokens(query_texts: Sequence[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(list(query_texts), return_ids=False, **BM25_TOKENIZE_KWARGS)


def bm25_scores(retriever, tokens: Sequence[str], n_docs: int) -> np.ndarray:
    """BM25 scores of every indexed document for one tokenised query; a query without indexed
    tokens scores 0 everywhere (so, pessimistically, its relevant documents rank last)."""
    tokens = [t for t in tokens if t and t in retriever.vocab_dict]
    if not tokens:
        return np.zeros(n_docs, dtype=np.float32)
    full = np.asarray(retriever.get_scores(tokens))
    if len(full) != n_docs:
        raise RuntimeError(f"bm25s returned {len(full)} scores for {n_docs} documents")
    return full


def bm25_pool_scores(rset: RetrievalSet) -> list[np.ndarray]:
    """Per query: BM25 scores of its pool's documents (index over all documents of the set)."""
    retriever = bm25_index(rset.doc_texts)
    return [bm25_scores(retriever, toks, len(rset.doc_ids))[pool] for toks, pool in zip(bm25_query_tokens(rset.query_texts), rset.pools)]


def rrf_fuse(rankings_scores: Sequence[np.ndarray], k: int = 60) -> np.ndarray:
    """Reciprocal-rank fusion of several score vectors over the same candidates: sum_s 1 / (k + rank_s).

    ``rank_s`` is the 1-based competition ("min") rank under score vector s (higher score =
    better; NaN ranks last), so tied candidates receive identical credit.
    """
    if not rankings_scores:
        raise ValueError("nothing to fuse")
    if k < 0:
        raise ValueError(f"rrf_k must be >= 0, got {k}")
    fused = np.zeros(len(rankings_scores[0]), dtype=np.float64)
    for s in rankings_scores:
        s = np.asarray(s, dtype=np.float64)
        if s.shape != fused.shape:
            raise ValueError("score vectors to fuse differ in length")
        ranks = rankdata(np.where(np.isnan(s), np.inf, -s), method="min")
        fused += 1.0 / (k + ranks)
    return fused


def pool_metrics(rset: RetrievalSet, scores: Sequence[np.ndarray], *, model: str, dim: int) -> pd.DataFrame:
    """``PER_QUERY_COLUMNS`` rows for one set scored by one model at one dim."""
    rows = []
    for qid, s, rel, n_rel in zip(rset.query_ids, scores, rset.relevant, rset.n_relevant):
        m = query_metrics(s, rel, n_rel)
        rows.append((qid, n_rel, m["first_relevant_rank"], *(m[name] for name in METRIC_NAMES)))
    frame = pd.DataFrame(rows, columns=["record_id", "n_relevant", "first_relevant_rank", *METRIC_NAMES])
    for col, val in (("eval_set", rset.eval_set), ("model", model), ("source", rset.source), ("task", rset.task), ("dim", int(dim))):
        frame[col] = val
    frame["n_relevant"] = frame["n_relevant"].astype(np.int64)
    frame["first_relevant_rank"] = frame["first_relevant_rank"].astype(np.int64)
    frame["dim"] = frame["dim"].astype(np.int64)
    return frame[list(PER_QUERY_COLUMNS)]


def _empty_per_query() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in PER_QUERY_COLUMNS})


@dataclass
class PoolScores:
    """Pool scores of some sets, computed once: ``bm25[set key]`` and ``dense[(model, dim)][set key]``
    are per-query score vectors aligned with each set's pools (``dense`` lacks (model, dim)
    pairs skipped because dim > max_dim). ``message_top[(model, dim)][set key]``: per query, its pool's
    documents' best message cosines (``(pool, maxsim.TOP_K)``), for the sets whose documents are messages;
    :func:`add_maxsim` turns them into ``dense`` rows of ``<model>·maxsim``."""

    sets: list[RetrievalSet]
    dims: list[int]
    bm25: dict[tuple[str, str, str], list[np.ndarray]]
    dense: dict[tuple[str, int], dict[tuple[str, str, str], list[np.ndarray]]]
    message_top: dict[tuple[str, int], dict[tuple[str, str, str], list[np.ndarray]]] = field(default_factory=dict)


def _check_dims(dims: Sequence[int]) -> list[int]:
    dims = [int(d) for d in dims]
    if not dims or any(d < 1 for d in dims) or len(set(dims)) != len(dims):
        raise ValueError(f"dims must be distinct positive ints, got {dims}")
    return dims


def _check_model_names(names) -> None:
    if BM25_MODEL_NAME in names:
        raise ValueError(f"model name {BM25_MODEL_NAME!r} is reserved for the BM25 baseline")
    bad = [n for n in names if str(n).startswith(RESERVED_PREFIXES)]
    if bad:
        raise ValueError(f"model names starting with {RESERVED_PREFIXES} are reserved for hybrids: {bad}")
    clash = [n for n in names if split_variant(n)[1] != FLOAT_PRECISION]
    if clash:
        raise ValueError(f"model names ending in @<precision> are reserved for quantised variants: {clash}")


def _check_precision_map(precisions: Mapping[str, Sequence[str]] | None, embedders: Mapping[str, Embedder]) -> dict[str, list[str]]:
    precisions = {name: check_precisions(p) for name, p in (precisions or {}).items()}
    unknown = [name for name in precisions if name not in embedders]
    if unknown:
        raise ValueError(f"precisions name models {unknown} that are not among the embedders {list(embedders)}")
    return precisions


def _model_rows(embedders: Mapping[str, Embedder], precisions: Mapping[str, Sequence[str]] | None) -> list[str]:
    """The result rows' model names: each embedder, then its quantised variants."""
    return [row for name in embedders for row in (name, *(variant_name(name, p) for p in (precisions or {}).get(name, ())))]


def pool_scores(
    sets: Sequence[RetrievalSet],
    embedders: Mapping[str, Embedder],
    dims: Sequence[int],
    *,
    bm25: bool = True,
    precisions: Mapping[str, Sequence[str]] | None = None,
    maxsim: bool | Collection[str] = False,
    maxsim_tasks: Collection[str] | None = None,
    log: Log = None,
) -> PoolScores:
    """BM25 (when ``bm25``) and dense pool scores of ``sets`` for every embedder at every dim.

    Each embedder is called once per dim with every unique text of all sets; dims above its
    ``max_dim`` are skipped (logged). ``precisions`` (model name -> quantised precisions of
    :mod:`.precision`) adds the scores of those models' quantised indexes, under the names
    ``<model>@<precision>``, from the same embeddings. ``maxsim`` (True: every embedder; or the names
    of some): the messages of every set whose documents have them are embedded too (each unique message
    once, in the same call) and each pool document's best message cosines kept (``message_top``; :mod:`.maxsim`);
    ``maxsim_tasks`` (None: every task) limits that to the sets of those tasks.
    """
    dims = _check_dims(dims)
    _check_model_names(list(embedders))
    precisions = _check_precision_map(precisions, embedders)
    sets = list(sets)
    bm25_scores: dict[tuple[str, str, str], list[np.ndarray]] = {}
    if bm25 and sets:
        bm25_scores = {rs.key: bm25_pool_scores(rs) for rs in sets}
        if log is not None:
            log(f"[{BM25_MODEL_NAME}] scored {len(sets)} (eval_set, source, task) sets")
    dense: dict[tuple[str, int], dict[tuple[str, str, str], list[np.ndarray]]] = {}
    if not sets:
        return PoolScores(sets=sets, dims=dims, bm25=bm25_scores, dense=dense)
    with_messages = set(embedders) if maxsim is True else set(maxsim or ())
    message_sets = [rs for rs in sets if rs.has_messages and (maxsim_tasks is None or rs.key[2] in maxsim_tasks)] if with_messages else []
    flat = {rs.key: flatten_messages(rs.doc_messages) for rs in message_sets}
    texts = list(dict.fromkeys(t for rs in sets for t in (*rs.query_texts, *rs.doc_texts)))
    n_documents = len(texts)  # the queries' and documents' texts come first; messages only for the max-sim models
    texts = list(dict.fromkeys([*texts, *(m for messages, _ in flat.values() for m in messages)]))
    row_of = {t: i for i, t in enumerate(texts)}
    rows_by_set = {
        rs.key: (np.array([row_of[t] for t in rs.query_texts]), np.array([row_of[t] for t in rs.doc_texts]))
        for rs in sets
    }
    message_rows = {key: (np.array([row_of[t] for t in messages], dtype=np.int64), starts) for key, (messages, starts) in flat.items()}
    message_top: dict[tuple[str, int], dict[tuple[str, str, str], list[np.ndarray]]] = {}
    for name, embedder in embedders.items():
        max_dim = int(embedder.max_dim)
        for dim in dims:
            if dim > max_dim:
                if log is not None:
                    log(f"[{name}] skipping dim={dim} > max_dim={max_dim}")
                continue
            wanted = texts if name in with_messages else texts[:n_documents]
            emb = np.asarray(embedder.embed(wanted, dim), dtype=np.float32)
            if emb.shape != (len(wanted), dim):
                raise ValueError(f"embedder {name!r} returned shape {emb.shape}, expected {(len(wanted), dim)}")
            per_set = {}
            for rs in sets:
                q_rows, d_rows = rows_by_set[rs.key]
                per_set[rs.key] = dense_pool_scores(rs, emb[q_rows], emb[d_rows])
            dense[(name, dim)] = per_set
            if message_sets and name in with_messages:
                message_top[(name, dim)] = {
                    rs.key: _pool_top(rs, top_message_scores(emb[rows_by_set[rs.key][0]], emb[message_rows[rs.key][0]], message_rows[rs.key][1])) for rs in message_sets
                }
            for precision in precisions.get(name, ()):
                dense[(variant_name(name, precision), dim)] = {
                    rs.key: quantized_pool_scores(rs.pools, emb[rows_by_set[rs.key][0]], emb[rows_by_set[rs.key][1]], precision) for rs in sets
                }
            if log is not None:
                extra = f", and as {', '.join(precisions[name])}" if precisions.get(name) else ""
                log(f"[{name}] scored dim={dim} on {len(sets)} sets ({len(wanted)} unique texts{extra}{', messages one by one' if name in with_messages and message_sets else ''})")
    return PoolScores(sets=sets, dims=dims, bm25=bm25_scores, dense=dense, message_top=message_top)


def _pool_top(rs: RetrievalSet, top: np.ndarray) -> list[np.ndarray]:
    """Per query, the ``(pool, TOP_K)`` rows of ``top`` (``(queries, documents, TOP_K)``) for its pool."""
    return [top[i, pool] for i, pool in enumerate(rs.pools)]


def add_maxsim(scores: PoolScores, aggregation: str, models: Sequence[str] | None = None) -> PoolScores:
    """``scores`` with ``dense[(<model>·maxsim, dim)]`` for every model with message scores (or ``models``):
    each pool document scored by ``aggregation`` (:func:`.maxsim.aggregate`) of its best messages and its
    own cosine. Only the sets whose documents are messages get rows."""
    check_aggregation(aggregation)
    dense = dict(scores.dense)
    for (name, dim), by_set in scores.message_top.items():
        if models is not None and name not in models:
            continue
        dense[(maxsim_name(name), dim)] = {key: [aggregate(top, doc, aggregation) for top, doc in zip(tops, scores.dense[(name, dim)][key])] for key, tops in by_set.items()}
    return PoolScores(sets=scores.sets, dims=scores.dims, bm25=scores.bm25, dense=dense, message_top=scores.message_top)


def maxsim_dev_table(scores: PoolScores, model: str) -> pd.DataFrame:
    """Dev MRR@10 of ``model``'s max-sim under every aggregation, and of its truncated encoding, at its
    largest dim: ``aggregation, task, mrr@10, n`` (task ``all``: every query with message boundaries pooled,
    each counted once), what :func:`.maxsim.choose_aggregation` reads."""
    dims = [dim for name, dim in scores.message_top if name == model]
    if not dims:
        return pd.DataFrame(columns=["aggregation", "task", "mrr@10", "n"])
    dim = max(dims)
    keys = set(scores.message_top[(model, dim)])
    frames = []
    for aggregation in ("truncated", *AGGREGATIONS):
        by_set = add_maxsim(scores, aggregation, [model]).dense[(maxsim_name(model), dim)] if aggregation != "truncated" else scores.dense[(model, dim)]
        for rs in scores.sets:
            if rs.key in keys:
                frames.append(pool_metrics(rs, by_set[rs.key], model=aggregation, dim=dim))
    per_query = pd.concat(frames, ignore_index=True)
    rows = [(a, t, float(g["mrr@10"].mean()), len(g)) for (a, t), g in per_query.groupby(["model", "task"], sort=False)]
    rows += [(a, "all", float(g["mrr@10"].mean()), len(g)) for a, g in per_query.groupby("model", sort=False)]
    return pd.DataFrame(rows, columns=["aggregation", "task", "mrr@10", "n"])


def maxsim_models(scores: PoolScores) -> list[str]:
    """The ``<model>·maxsim`` rows :func:`add_maxsim` added, in the order of their models."""
    return list(dict.fromkeys(maxsim_name(name) for name, _ in scores.message_top))


def metrics_from_pool_scores(
    scores: PoolScores,
    models: Sequence[str],
    *,
    include_bm25: bool = True,
    hybrids: Sequence[str] = (),
    fusion: Mapping[tuple[str, int], FusionChoice | FusionByEvalSet] | None = None,
    rrf_k: int = 60,
) -> pd.DataFrame:
    """``PER_QUERY_COLUMNS`` rows from precomputed :class:`PoolScores` (see :func:`rank_retrieval`)."""
    fusion = dict(fusion or {})
    frames: list[pd.DataFrame] = []
    for name in models:
        for dim in scores.dims:
            dense_by_set = scores.dense.get((name, dim))
            if dense_by_set is None:
                continue
            choice = fusion.get((name, dim)) if name in hybrids else None
            for rs in scores.sets:
                dense = dense_by_set.get(rs.key)
                if dense is None:  # a max-sim model on a set without message boundaries
                    continue
                frames.append(pool_metrics(rs, dense, model=name, dim=dim))
                if name in hybrids:
                    bm = scores.bm25[rs.key]
                    fused = [rrf_fuse([b, d], k=rrf_k) for b, d in zip(bm, dense)]
                    frames.append(pool_metrics(rs, fused, model=f"{RRF_PREFIX}{name}", dim=dim))
                    if choice is not None:
                        w = choice.weight_for(rs.eval_set, rs.source, rs.task)
                        mixed = [convex_fuse(b, d, w) for b, d in zip(bm, dense)]
                        frames.append(pool_metrics(rs, mixed, model=f"{HYBRID_PREFIX}{name}", dim=dim))
    if include_bm25:
        for rs in scores.sets:
            base = pool_metrics(rs, scores.bm25[rs.key], model=BM25_MODEL_NAME, dim=scores.dims[0])
            frames.extend(base.assign(dim=np.int64(d)) for d in scores.dims)
    return pd.concat(frames, ignore_index=True)[list(PER_QUERY_COLUMNS)] if frames else _empty_per_query()


def rank_retrieval(
    eval_sets: pd.DataFrame,
    embedders: Mapping[str, Embedder],
    *,
    dims: Sequence[int],
    include_bm25: bool = True,
    hybrids: Sequence[str] = (),
    fusion: Mapping[tuple[str, int], FusionChoice | FusionByEvalSet] | None = None,
    rrf_k: int = 60,
    precisions: Mapping[str, Sequence[str]] | None = None,
    maxsim_aggregation: str | None = None,
    maxsim_tasks: Collection[str] | None = None,
    log: Log = None,
) -> pd.DataFrame:
    """Per-query metrics of every model on every (eval_set, source, task) at every dim (``PER_QUERY_COLUMNS``).

    ``embedders`` maps model name -> :class:`Embedder`; for each name in ``hybrids`` two BM25
    fusions are added: ``"rrf:<name>"`` (reciprocal-rank fusion, always) and ``"hybrid:<name>"``
    (convex mix of z-scored scores, only at dims with a choice ``fusion[(name, dim)]``, tuned on
    dev sets beforehand; each set uses ``choice.weight_for(eval_set, source, task)``). The BM25 run itself
    is only reported when ``include_bm25``. Each embedder is called once per dim with every
    unique text of all sets (:func:`pool_scores`); dims above its ``max_dim`` are skipped
    (logged), and so are the matching fusion rows. BM25 rows repeat identical values at every
    dim. ``precisions`` adds quantised-index rows ``<model>@<precision>`` (:mod:`.precision`).
    ``maxsim_aggregation`` (None: none) adds ``<model>·maxsim`` rows on every set whose documents are
    messages (:mod:`.maxsim`; ``maxsim_tasks``: only on the sets of those tasks), and their fusions when the
    model is in ``hybrids`` (``fusion`` keyed by ``(<model>·maxsim, dim)``). Pure: the inputs are not modified.
    """
    dims = _check_dims(dims)
    _check_model_names(list(embedders))
    unknown = [h for h in hybrids if h not in embedders]
    if unknown:
        raise ValueError(f"hybrids {unknown} are not among the embedders {list(embedders)}")
    if rrf_k < 0:
        raise ValueError(f"rrf_k must be >= 0, got {rrf_k}")
    for key, choice in (fusion or {}).items():
        if not isinstance(choice, (FusionChoice, FusionByEvalSet)):
            raise TypeError(f"fusion[{key!r}] is not a FusionChoice or FusionByEvalSet")

    sets = prepare_sets(eval_sets)
    if not sets:
        return _empty_per_query()
    scores = pool_scores(sets, embedders, dims, bm25=bool(include_bm25 or hybrids), precisions=precisions, maxsim=maxsim_aggregation is not None, maxsim_tasks=maxsim_tasks, log=log)
    models = _model_rows(embedders, precisions)
    if maxsim_aggregation is not None:
        scores = add_maxsim(scores, maxsim_aggregation)
        models += maxsim_models(scores)
        hybrids = [*hybrids, *(maxsim_name(h) for h in hybrids)]
    return metrics_from_pool_scores(scores, models, include_bm25=include_bm25, hybrids=hybrids, fusion=fusion, rrf_k=rrf_k)


def summarize(
    per_query: pd.DataFrame,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Long table (``RESULT_COLUMNS``): per eval_set x model x source x task x dim x metric, the mean over
    queries (``value``), its percentile-bootstrap CI (``ci_low``, ``ci_high``) and ``n`` = #queries."""
    rows = []
    if not per_query.empty:
        keys = ["eval_set", "model", "source", "task", "dim"]
        metrics = [m for m in METRIC_NAMES if m in per_query.columns]
        for key, g in per_query.groupby(keys, sort=False):
            for metric in metrics:
                vals = g[metric].to_numpy(dtype=np.float64)
                low, high = bootstrap_ci(vals, confidence=confidence, n_resamples=n_resamples, seed=seed)
                rows.append((*key, metric, float(vals.mean()), low, high, len(g)))
    out = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    if not out.empty:
        out["dim"] = out["dim"].astype(int)
        out["n"] = out["n"].astype(int)
    return out


def evaluate_retrieval(
    eval_sets: pd.DataFrame,
    embedders: Mapping[str, Embedder],
    *,
    dims: Sequence[int],
    include_bm25: bool = True,
    hybrids: Sequence[str] = (),
    fusion: Mapping[tuple[str, int], FusionChoice | FusionByEvalSet] | None = None,
    rrf_k: int = 60,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    precisions: Mapping[str, Sequence[str]] | None = None,
    maxsim_aggregation: str | None = None,
    maxsim_tasks: Collection[str] | None = None,
    log: Log = None,
) -> pd.DataFrame:
    """``summarize(rank_retrieval(...))``; call the two yourself to keep the per-query rows."""
    per_query = rank_retrieval(
        eval_sets, embedders, dims=dims, include_bm25=include_bm25, hybrids=hybrids, fusion=fusion, rrf_k=rrf_k, precisions=precisions,
        maxsim_aggregation=maxsim_aggregation, log=log,
    )
    return summarize(per_query, n_resamples=n_resamples, confidence=confidence, seed=seed)
