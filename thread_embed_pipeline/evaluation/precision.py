"""Quantised embeddings in the eval: int8 and binary vectors, with and without rescoring.

The eval's dense rows score float32 cosine at each Matryoshka dim. A deployment can store its
vectors smaller. This module scores the same pools the way such an index would, with
sentence-transformers' own quantiser (``sentence_transformers.util.quantization.quantize_embeddings``)
and the rescoring of its ``semantic_search_usearch`` / ``semantic_search_faiss``:

* ``int8``: the documents' and the query's vectors quantised to int8 with per-dim ranges calibrated
  on the set's document vectors (the corpus you would index; no labels are used); score = cosine of
  the int8 vectors (usearch's ``metric="cos", dtype="i8"`` index, which sentence-transformers uses).
* ``binary``: one bit per dim (``precision="ubinary"``, bit = value > 0); score = −Hamming distance,
  computed as the dot product of ±1 vectors (``dim − 2·Hamming``, the same order).
* ``int8+rescore`` / ``binary+rescore``: the quantised search shortlists the top
  ``k × rescore_multiplier`` of the pool (sentence-transformers' default: 4 × 10), and those are
  re-scored with the float32 query against the *quantised* documents (int8 values or ±1), as
  sentence-transformers does: the index never holds float vectors. Shortlisted documents rank above
  the rest; the rest keep their quantised order.

Memory per vector: ``4·dim`` bytes in float32, ``dim`` in int8, ``dim / 8`` in binary; rescoring adds none.

A variant is a model row named ``<model>@<precision>`` (``fine_tuned@binary+rescore``) in the
results, so every table, CI and paired test of the eval applies to it; :func:`precision_table` turns
the rows into the dims × precision table of the report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from thread_embed_pipeline.evaluation.embedders import truncate_and_normalize

PRECISIONS: tuple[str, ...] = ("int8", "int8+rescore", "binary", "binary+rescore")
FLOAT_PRECISION = "float32"
VARIANT_SEPARATOR = "@"
RESCORE_K = 10  # the metrics' cut-off (MRR@10, NDCG@10, Recall@10)
RESCORE_MULTIPLIER = 4  # sentence-transformers' default for semantic_search_usearch / _faiss

__all__ = [
    "PRECISIONS",
    "bytes_per_vector",
    "check_precisions",
    "precision_table",
    "quantize",
    "quantized_pool_scores",
    "split_variant",
    "variant_name",
]


def check_precisions(precisions: Sequence[str]) -> list[str]:
    precisions = list(precisions)
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise ValueError(f"unknown embedding precisions {unknown}: choose among {list(PRECISIONS)}")
    if len(set(precisions)) != len(precisions):
        raise ValueError(f"embedding precisions repeat: {precisions}")
    return precisions


def variant_name(model: str, precision: str) -> str:
    return f"{model}{VARIANT_SEPARATOR}{precision}"


def split_variant(name: str) -> tuple[str, str]:
    """``"fine_tuned@int8"`` → ``("fine_tuned", "int8")``; a plain model name → ``(name, "float32")``."""
    model, sep, precision = str(name).rpartition(VARIANT_SEPARATOR)
    return (model, precision) if sep and precision in PRECISIONS else (str(name), FLOAT_PRECISION)


def bytes_per_vector(dim: int, precision: str) -> int:
    base = precision.split("+")[0]
    if base == FLOAT_PRECISION:
        return 4 * int(dim)
    if base == "int8":
        return int(dim)
    if base == "binary":
        return -(-int(dim) // 8)
    raise ValueError(f"unknown precision {precision!r}")


def quantize(docs: np.ndarray, queries: np.ndarray, precision: str) -> tuple[np.ndarray, np.ndarray]:
    """The documents' and queries' vectors as the index holds them, as float32 arrays whose dot
    product is the index's score (int8 values; ±1 for binary)."""
    from sentence_transformers.util.quantization import quantize_embeddings

    base = precision.split("+")[0]
    if base == "int8":
        ranges = np.vstack([docs.min(axis=0), docs.max(axis=0)])  # calibrated on the indexed documents
        return (
            quantize_embeddings(docs, precision="int8", ranges=ranges).astype(np.float32),
            quantize_embeddings(queries, precision="int8", ranges=ranges).astype(np.float32),
        )
    if base == "binary":
        dim = docs.shape[1]
        signs = lambda x: np.unpackbits(quantize_embeddings(x, precision="ubinary"), axis=1)[:, :dim].astype(np.float32) * 2 - 1  # noqa: E731
        return signs(docs), signs(queries)
    raise ValueError(f"unknown precision {precision!r}")


def quantized_pool_scores(
    pools: Sequence[np.ndarray],
    query_emb: np.ndarray,
    doc_emb: np.ndarray,
    precision: str,
    *,
    k: int = RESCORE_K,
    rescore_multiplier: int = RESCORE_MULTIPLIER,
) -> list[np.ndarray]:
    """Per query, the score of each document of its pool (row indices into ``doc_emb``) in the
    quantised index ``precision``; ``query_emb`` / ``doc_emb`` are the float32 vectors at one dim."""
    check_precisions([precision])
    doc_q, query_q = quantize(doc_emb, query_emb, precision)
    if precision.startswith("int8"):  # cosine search over the int8 vectors
        doc_s, query_s = truncate_and_normalize(doc_q, doc_q.shape[1]), truncate_and_normalize(query_q, query_q.shape[1])
    else:  # +-1 dot product = dim - 2 * Hamming distance
        doc_s, query_s = doc_q, query_q
    rescore = precision.endswith("+rescore")
    out = []
    for i, pool in enumerate(pools):
        scores = doc_s[pool] @ query_s[i]
        if rescore:
            n = min(len(pool), int(k) * int(rescore_multiplier))
            short = np.argpartition(-scores, n - 1)[:n] if n < len(pool) else np.arange(len(pool))
            rescored = doc_q[pool[short]] @ query_emb[i]
            # shortlisted documents above the rest, in their rescored order; ties stay ties
            lift = float(np.abs(scores).max() + np.abs(rescored).max() + 1.0)
            scores = scores.astype(np.float64) - lift
            scores[short] = rescored + lift
        out.append(np.asarray(scores, dtype=np.float64))
    return out


def precision_table(results: pd.DataFrame, metric: str = "mrr@10") -> pd.DataFrame:
    """Dims × precision: per (model, eval_set, source, task), one row per dim and precision with the
    metric, its CI and the bytes per vector. Only models that have a quantised variant are kept."""
    rows = results[results["metric"] == metric].copy()
    if rows.empty:
        return pd.DataFrame(columns=["model", "precision", "dim", "bytes_per_vector", "eval_set", "source", "task", "value", "ci_low", "ci_high", "n"])
    split = rows["model"].map(split_variant)
    rows["model"], rows["precision"] = split.str[0], split.str[1]
    quantised = set(rows.loc[rows["precision"] != FLOAT_PRECISION, "model"])
    rows = rows[rows["model"].isin(quantised)]
    rows["bytes_per_vector"] = [bytes_per_vector(d, p) for d, p in zip(rows["dim"], rows["precision"])]
    order = {p: i for i, p in enumerate((FLOAT_PRECISION, *PRECISIONS))}
    rows = rows.assign(_p=rows["precision"].map(order)).sort_values(["model", "eval_set", "source", "task", "dim", "_p"], ascending=[True, True, True, True, False, True])
    return rows[["model", "precision", "dim", "bytes_per_vector", "eval_set", "source", "task", "value", "ci_low", "ci_high", "n"]].reset_index(drop=True)
