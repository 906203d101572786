"""The ``response`` task: query, the first ``prefix_messages`` messages of a conversation; document, the
next ``continuation_messages`` messages; distractors, other conversations' continuation windows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from thread_embed_pipeline.evaluation.tasks.common import _assemble, _conversations, _messages, _sample_conversations
from thread_embed_pipeline.schemas import format_window


def build_response_eval_set(
    corpus: pd.DataFrame,
    *,
    source: str,
    split: str = "test",
    prefix_messages: int = 5,
    continuation_messages: int = 5,
    min_messages: int = 12,
    pool_size: int = 100,
    max_queries: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Conversation continuation retrieval: first ``prefix_messages`` -> the next ``continuation_messages``.

    Distractors are other (sampled) conversations' continuation windows.
    """
    if prefix_messages < 1 or continuation_messages < 1:
        raise ValueError("prefix_messages and continuation_messages must be >= 1")
    min_messages = max(min_messages, prefix_messages + continuation_messages)
    rng = np.random.default_rng(seed)
    convs = _sample_conversations(
        _conversations(corpus, source=source, split=split, min_messages=min_messages), max_queries, rng
    )
    end = prefix_messages + continuation_messages
    cids, queries, docs = [], [], []
    for cid, authors, texts in convs:
        cids.append(cid)
        queries.append(format_window(authors[:prefix_messages], texts[:prefix_messages]))
        docs.append(_messages(authors[prefix_messages:end], texts[prefix_messages:end]))
    return _assemble(
        source=source,
        task="response",
        conversation_ids=cids,
        query_texts=queries,
        document_messages=docs,
        pool_size=pool_size,
        rng=rng,
    )
