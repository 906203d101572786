"""Eval-set frames parsed into retrieval pools: one :class:`RetrievalSet` per (eval_set, source, task).

The shared input of the dense, BM25 and fused scorers (``retrieval``) and of the weight search
(``fusion``); it depends on neither.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from thread_embed_pipeline.schemas import EVAL_SET_COLUMNS, missing_columns

GROUP_KEYS: tuple[str, ...] = ("eval_set", "source", "task")


@dataclass(frozen=True)
class RetrievalSet:
    """One (eval_set, source, task) group, parsed: texts, per-query pools and relevance masks."""

    eval_set: str
    source: str
    task: str
    query_ids: tuple[str, ...]
    query_texts: tuple[str, ...]
    doc_ids: tuple[str, ...]
    doc_texts: tuple[str, ...]
    pools: tuple[np.ndarray, ...]  # per query: row indices into doc_ids, candidate order
    relevant: tuple[np.ndarray, ...]  # per query: bool mask aligned with its pool
    n_relevant: tuple[int, ...]  # per query: |relevant_ids| (recall denominator)
    doc_messages: tuple[tuple[str, ...], ...] = ()  # per document its messages (max-sim); () when the set has no boundaries

    @property
    def has_messages(self) -> bool:
        """Whether every document of the set comes with its messages (so it can be scored by max-sim)."""
        return bool(self.doc_messages) and all(self.doc_messages)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.eval_set, self.source, self.task)


def _id_list(value) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [str(v) for v in value]


def _messages(value) -> tuple[str, ...]:
    """A document's ``messages`` cell (a list, an array, or missing) as a tuple of strings."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ()
    return tuple(str(m) for m in value)


def _parse_set(key: tuple[str, str, str], g: pd.DataFrame) -> RetrievalSet:
    queries = g[g["record_type"] == "query"]
    docs = g[g["record_type"] == "document"]
    if docs["record_id"].duplicated().any():
        raise ValueError(f"duplicate document record_ids in {key}")
    if queries["record_id"].duplicated().any():
        raise ValueError(f"duplicate query record_ids in {key}")
    doc_ids = [str(r) for r in docs["record_id"]]
    doc_row = {rid: j for j, rid in enumerate(doc_ids)}
    pools, relevant, n_relevant = [], [], []
    for qid, cands, rel_ids, pos in zip(
        queries["record_id"], queries["candidate_ids"], queries["relevant_ids"], queries["positive_id"]
    ):
        cands = _id_list(cands)
        rel = set(_id_list(rel_ids)) or ({str(pos)} if isinstance(pos, str) and pos else set())
        if not cands:
            raise ValueError(f"query {qid} of {key} has no candidates")
        if not rel:
            raise ValueError(f"query {qid} of {key} has no relevant document")
        unknown = [c for c in [*cands, *sorted(rel)] if c not in doc_row]
        if unknown:
            raise ValueError(f"query {qid} of {key} names {unknown[:3]} which are not documents of the set")
        pools.append(np.fromiter((doc_row[c] for c in cands), dtype=np.int64, count=len(cands)))
        relevant.append(np.fromiter((c in rel for c in cands), dtype=bool, count=len(cands)))
        n_relevant.append(len(rel))
    messages = tuple(_messages(m) for m in docs["messages"]) if "messages" in docs.columns else ()
    return RetrievalSet(
        doc_messages=messages if messages and all(messages) else (),
        eval_set=key[0],
        source=key[1],
        task=key[2],
        query_ids=tuple(str(q) for q in queries["record_id"]),
        query_texts=tuple(str(t) for t in queries["text"]),
        doc_ids=tuple(doc_ids),
        doc_texts=tuple(str(t) for t in docs["text"]),
        pools=tuple(pools),
        relevant=tuple(relevant),
        n_relevant=tuple(n_relevant),
    )


def prepare_sets(eval_sets: pd.DataFrame) -> list[RetrievalSet]:
    """Validate ``EVAL_SET_COLUMNS`` and parse each (eval_set, source, task) group with queries, sorted by key."""
    missing = missing_columns(eval_sets.columns, EVAL_SET_COLUMNS)
    if missing:
        raise ValueError(f"eval sets are missing columns {missing}")
    if eval_sets.empty:
        return []
    out = []
    for key, g in eval_sets.groupby(list(GROUP_KEYS), sort=True):
        parsed = _parse_set(tuple(str(k) for k in key), g)
        if parsed.query_ids:
            out.append(parsed)
    return out
