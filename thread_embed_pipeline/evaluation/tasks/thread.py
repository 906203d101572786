"""The ``thread`` task (query: a conversation's middle message; document: the rest of it, the query removed;
a seeded pool of other conversations) and ``thread_full_corpus`` (the same, ranked against every document).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from thread_embed_pipeline.evaluation.tasks.common import _assemble, _sample_conversations, _sample_indices, _thread_conversations, _thread_texts


def build_thread_eval_set(
    corpus: pd.DataFrame,
    *,
    source: str,
    split: str = "test",
    min_messages: int = 8,
    pool_size: int = 100,
    max_queries: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Thread-membership retrieval: middle message -> rest of its own thread (query message removed).

    Conversations of ``source`` in ``split`` with at least ``min_messages`` messages are
    eligible; if ``max_queries`` is set, that many are sampled (seeded) *before* pools are
    built, so distractors come from the sampled set only. Deterministic for a given seed.
    """
    convs = _thread_conversations(corpus, source=source, split=split, min_messages=min_messages)
    rng = np.random.default_rng(seed)
    cids, queries, docs = _thread_texts(_sample_conversations(convs, max_queries, rng))
    return _assemble(
        source=source,
        task="thread",
        conversation_ids=cids,
        query_texts=queries,
        document_messages=docs,
        pool_size=pool_size,
        rng=rng,
    )

def build_thread_full_corpus_eval_set(
    corpus: pd.DataFrame,
    *,
    source: str,
    split: str = "test",
    min_messages: int = 8,
    max_queries: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """``thread`` retrieval ranked against the whole set (task ``thread_full_corpus``).

    Same query and document texts as :func:`build_thread_eval_set`, and -- for the same
    ``seed`` and ``max_queries`` -- the same sampled queries. But there is one document per
    *eligible* conversation (even those not sampled as queries), and each query's
    ``candidate_ids`` is every document of the set: its positive first, then the rest in
    conversation_id order.
    """
    convs = _thread_conversations(corpus, source=source, split=split, min_messages=min_messages)
    rng = np.random.default_rng(seed)
    picked = _sample_indices(len(convs), max_queries, rng)  # same rng draw as build_thread_eval_set
    cids, queries, docs = _thread_texts(convs)
    return _assemble(
        source=source,
        task="thread_full_corpus",
        conversation_ids=cids,
        query_texts=queries,
        document_messages=docs,
        pool_size=None,
        rng=rng,
        query_indices=picked,
    )
