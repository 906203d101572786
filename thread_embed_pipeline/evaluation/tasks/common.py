"""What every task builder shares: query and document ids and rows, a split's conversations, seeded
sampling, and assembling a set's rows (``schemas.EVAL_SET_COLUMNS``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from thread_embed_pipeline.schemas import CORPUS_COLUMNS, EVAL_SET_COLUMNS, OWN_EVAL_SET, format_message, is_missing, missing_columns


def query_id(conversation_id: str) -> str:
    return f"q:{conversation_id}"

def document_id(conversation_id: str) -> str:
    return f"d:{conversation_id}"

def eval_frame(rows: Sequence[Mapping]) -> pd.DataFrame:
    """Rows -> a frame with exactly ``EVAL_SET_COLUMNS``, every column object dtype (None stays None)."""
    return pd.DataFrame({c: pd.Series([r[c] for r in rows], dtype=object) for c in EVAL_SET_COLUMNS})

def _empty_eval_set() -> pd.DataFrame:
    return eval_frame([])

def _query_row(*, source, task, record_id, conversation_id, text, positive_id, candidate_ids) -> dict:
    return {
        "messages": [],
        "eval_set": OWN_EVAL_SET,
        "source": source,
        "task": task,
        "record_type": "query",
        "record_id": record_id,
        "conversation_id": conversation_id,
        "text": text,
        "positive_id": positive_id,
        "candidate_ids": list(candidate_ids),
        "relevant_ids": [positive_id],
    }

def _document_row(*, source, task, record_id, conversation_id, messages: Sequence[str]) -> dict:
    """A document row; its ``text`` is its ``messages`` joined by newlines (``format_window``)."""
    return {
        "messages": list(messages),
        "eval_set": OWN_EVAL_SET,
        "source": source,
        "task": task,
        "record_type": "document",
        "record_id": record_id,
        "conversation_id": conversation_id,
        "text": "\n".join(messages),
        "positive_id": None,
        "candidate_ids": [],
        "relevant_ids": [],
    }

def _clean_author(author) -> str | None:
    return None if is_missing(author) else (str(author) or None)

def _clean_text(text) -> str:
    return "" if is_missing(text) else str(text)

def _source_split(corpus: pd.DataFrame, *, source: str, split: str, extra: Sequence[str] = ()) -> pd.DataFrame:
    need = ("conversation_id", "source", "message_idx", "author", "text", "split", *extra)
    missing = missing_columns(corpus.columns, need)
    if missing:
        raise ValueError(f"corpus is missing columns {missing} (expected {list(CORPUS_COLUMNS)})")
    sub = corpus[(corpus["source"] == source) & (corpus["split"] == split)]
    return sub.sort_values(["conversation_id", "message_idx"], kind="stable")

def _conversations(
    corpus: pd.DataFrame, *, source: str, split: str, min_messages: int
) -> list[tuple[str, list[str | None], list[str]]]:
    """Eligible conversations of ``source`` in ``split``, sorted by conversation_id.

    Each item is ``(conversation_id, authors, texts)`` in message_idx order.
    """
    sub = _source_split(corpus, source=source, split=split)
    if sub.empty:
        return []
    out: list[tuple[str, list[str | None], list[str]]] = []
    for cid, group in sub.groupby("conversation_id", sort=True):
        if len(group) < min_messages:
            continue
        authors = [_clean_author(a) for a in group["author"].tolist()]
        texts = [_clean_text(t) for t in group["text"].tolist()]
        out.append((str(cid), authors, texts))
    return out

def _sample_indices(n: int, max_queries: int | None, rng: np.random.Generator) -> list[int]:
    """Sorted indices of ``max_queries`` items sampled (seeded) from ``n``; all of them if ``max_queries`` is None or >= n."""
    if max_queries is not None and max_queries < 0:
        raise ValueError(f"max_queries must be >= 0, got {max_queries}")
    if max_queries is None or max_queries >= n:
        return list(range(n))
    return np.sort(rng.choice(n, size=max_queries, replace=False)).tolist()

def _sample_conversations(items: list, max_queries: int | None, rng: np.random.Generator) -> list:
    return [items[i] for i in _sample_indices(len(items), max_queries, rng)]

def _assemble(
    *,
    source: str,
    task: str,
    conversation_ids: Sequence[str],
    query_texts: Sequence[str],
    document_messages: Sequence[Sequence[str]],
    pool_size: int | None,
    rng: np.random.Generator,
    query_indices: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Query + document rows, one document per conversation.

    Queries are made for ``query_indices`` (default: every conversation). Pools are the
    positive first, then ``pool_size - 1`` seeded random distractors from the other
    conversations -- or, with ``pool_size=None``, every other document in conversation order
    (full-corpus retrieval).
    """
    if pool_size is not None and pool_size < 1:
        raise ValueError(f"pool_size must be >= 1, got {pool_size}")
    n = len(conversation_ids)
    if n == 0:
        return _empty_eval_set()
    query_indices = range(n) if query_indices is None else query_indices
    doc_ids = [document_id(c) for c in conversation_ids]
    n_distractors = n - 1 if pool_size is None else min(pool_size - 1, n - 1)
    query_rows = []
    for i in query_indices:
        cid = conversation_ids[i]
        if pool_size is None:
            distractors = doc_ids[:i] + doc_ids[i + 1 :]
        elif n_distractors > 0:
            # sample from the n-1 other conversations: index j >= i maps to j + 1 (skips self)
            picks = rng.choice(n - 1, size=n_distractors, replace=False)
            picks = np.where(picks >= i, picks + 1, picks)
            distractors = [doc_ids[j] for j in picks]
        else:
            distractors = []
        query_rows.append(
            _query_row(
                source=source,
                task=task,
                record_id=query_id(cid),
                conversation_id=cid,
                text=query_texts[i],
                positive_id=doc_ids[i],
                candidate_ids=[doc_ids[i], *distractors],
            )
        )
    doc_rows = [
        _document_row(source=source, task=task, record_id=doc_ids[i], conversation_id=cid, messages=document_messages[i])
        for i, cid in enumerate(conversation_ids)
    ]
    return eval_frame(query_rows + doc_rows)

def _messages(authors: Sequence[str | None], texts: Sequence[str]) -> list[str]:
    """A window's messages, one ``format_message`` each (``format_window`` joins them by newlines)."""
    return [format_message(a, t) for a, t in zip(authors, texts, strict=True)]

def _thread_texts(convs) -> tuple[list[str], list[str], list[list[str]]]:
    """(conversation_ids, query texts, document messages): middle message vs. the rest of its thread."""
    cids, queries, docs = [], [], []
    for cid, authors, texts in convs:
        mid = len(texts) // 2
        cids.append(cid)
        queries.append(format_message(authors[mid], texts[mid]))
        docs.append(_messages(authors[:mid] + authors[mid + 1 :], texts[:mid] + texts[mid + 1 :]))
    return cids, queries, docs

def _thread_conversations(corpus, *, source, split, min_messages):
    if min_messages < 2:
        raise ValueError("min_messages must be >= 2 (the document needs at least one message)")
    return _conversations(corpus, source=source, split=split, min_messages=min_messages)
