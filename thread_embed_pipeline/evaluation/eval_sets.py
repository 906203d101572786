"""Retrieval evaluation sets built from the held-out corpus split.

Two tasks, both one relevant document per query, scored over a fixed candidate pool
(the positive first, then seeded random distractors from *other* conversations of the
same (source, task) set):

* ``thread``   -- query: the middle message of a conversation (``len // 2``, 0-based);
  document: the rest of that conversation, in order, with the query message removed
  (so the query never leaks into its target).
* ``response`` -- query: the first ``prefix_messages`` messages of a conversation;
  document: the next ``continuation_messages`` messages. Distractors are the
  continuation windows of other conversations.

Texts are always built with :func:`schemas.format_message` / :func:`schemas.format_window`,
the one formatter shared with pair building.

Output rows follow ``EVAL_SET_COLUMNS``: one ``query`` row (``record_id`` ``"q:<conversation_id>"``,
``positive_id`` ``"d:<conversation_id>"``, ``candidate_ids`` positive-first) and one
``document`` row (``record_id`` ``"d:<conversation_id>"``, ``positive_id`` None,
``candidate_ids`` ``[]``) per eligible conversation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from thread_embed_pipeline.schemas import (
    CORPUS_COLUMNS,
    EVAL_SET_COLUMNS,
    EVAL_TASKS,
    format_message,
    format_window,
    missing_columns,
)

__all__ = [
    "build_thread_eval_set",
    "build_response_eval_set",
    "build_eval_sets",
    "eval_texts",
    "query_id",
    "document_id",
]


def query_id(conversation_id: str) -> str:
    return f"q:{conversation_id}"


def document_id(conversation_id: str) -> str:
    return f"d:{conversation_id}"


def _empty_eval_set() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in EVAL_SET_COLUMNS})


def _clean_author(author) -> str | None:
    if author is None or (isinstance(author, float) and np.isnan(author)) or author is pd.NA:
        return None
    author = str(author)
    return author or None


def _clean_text(text) -> str:
    if text is None or text is pd.NA or (isinstance(text, float) and np.isnan(text)):
        return ""
    return str(text)


def _conversations(
    corpus: pd.DataFrame, *, source: str, split: str, min_messages: int
) -> list[tuple[str, list[str | None], list[str]]]:
    """Eligible conversations of ``source`` in ``split``, sorted by conversation_id.

    Each item is ``(conversation_id, authors, texts)`` in message_idx order.
    """
    missing = missing_columns(corpus.columns, ("conversation_id", "source", "message_idx", "author", "text", "split"))
    if missing:
        raise ValueError(f"corpus is missing columns {missing} (expected {list(CORPUS_COLUMNS)})")
    sub = corpus[(corpus["source"] == source) & (corpus["split"] == split)]
    if sub.empty:
        return []
    sub = sub.sort_values(["conversation_id", "message_idx"], kind="stable")
    out: list[tuple[str, list[str | None], list[str]]] = []
    for cid, group in sub.groupby("conversation_id", sort=True):
        if len(group) < min_messages:
            continue
        authors = [_clean_author(a) for a in group["author"].tolist()]
        texts = [_clean_text(t) for t in group["text"].tolist()]
        out.append((str(cid), authors, texts))
    return out


def _sample_conversations(items: list, max_queries: int | None, rng: np.random.Generator) -> list:
    if max_queries is None or max_queries >= len(items):
        return items
    if max_queries < 0:
        raise ValueError(f"max_queries must be >= 0, got {max_queries}")
    keep = np.sort(rng.choice(len(items), size=max_queries, replace=False))
    return [items[i] for i in keep]


def _assemble(
    *,
    source: str,
    task: str,
    conversation_ids: Sequence[str],
    query_texts: Sequence[str],
    document_texts: Sequence[str],
    pool_size: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Query + document rows with positive-first candidate pools of distractors from other conversations."""
    if pool_size < 1:
        raise ValueError(f"pool_size must be >= 1, got {pool_size}")
    n = len(conversation_ids)
    if n == 0:
        return _empty_eval_set()
    doc_ids = [document_id(c) for c in conversation_ids]
    n_distractors = min(pool_size - 1, n - 1)
    query_rows = []
    for i, cid in enumerate(conversation_ids):
        if n_distractors > 0:
            # sample from the n-1 other conversations: index j >= i maps to j + 1 (skips self)
            picks = rng.choice(n - 1, size=n_distractors, replace=False)
            picks = np.where(picks >= i, picks + 1, picks)
            distractors = [doc_ids[j] for j in picks]
        else:
            distractors = []
        query_rows.append(
            {
                "source": source,
                "task": task,
                "record_type": "query",
                "record_id": query_id(cid),
                "conversation_id": cid,
                "text": query_texts[i],
                "positive_id": doc_ids[i],
                "candidate_ids": [doc_ids[i], *distractors],
            }
        )
    doc_rows = [
        {
            "source": source,
            "task": task,
            "record_type": "document",
            "record_id": doc_ids[i],
            "conversation_id": cid,
            "text": document_texts[i],
            "positive_id": None,
            "candidate_ids": [],
        }
        for i, cid in enumerate(conversation_ids)
    ]
    df = pd.DataFrame(query_rows + doc_rows, columns=list(EVAL_SET_COLUMNS))
    df["positive_id"] = df["positive_id"].astype(object).where(df["record_type"] == "query", None)
    return df.reset_index(drop=True)


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
    if min_messages < 2:
        raise ValueError("min_messages must be >= 2 (the document needs at least one message)")
    rng = np.random.default_rng(seed)
    convs = _sample_conversations(
        _conversations(corpus, source=source, split=split, min_messages=min_messages), max_queries, rng
    )
    cids, queries, docs = [], [], []
    for cid, authors, texts in convs:
        mid = len(texts) // 2
        cids.append(cid)
        queries.append(format_message(authors[mid], texts[mid]))
        docs.append(format_window(authors[:mid] + authors[mid + 1 :], texts[:mid] + texts[mid + 1 :]))
    return _assemble(
        source=source,
        task="thread",
        conversation_ids=cids,
        query_texts=queries,
        document_texts=docs,
        pool_size=pool_size,
        rng=rng,
    )


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
        docs.append(format_window(authors[prefix_messages:end], texts[prefix_messages:end]))
    return _assemble(
        source=source,
        task="response",
        conversation_ids=cids,
        query_texts=queries,
        document_texts=docs,
        pool_size=pool_size,
        rng=rng,
    )


def build_eval_sets(
    corpus_by_source: Mapping[str, pd.DataFrame],
    *,
    tasks: Iterable[str] = EVAL_TASKS,
    split: str = "test",
    thread_min_messages: int = 8,
    prefix_messages: int = 5,
    continuation_messages: int = 5,
    response_min_messages: int = 12,
    pool_size: int = 100,
    max_queries: int | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, list[str]]:
    """All (source, task) eval sets concatenated, plus human-readable notes on what was skipped.

    Returns ``(eval_sets, notes)``. A (source, task) with fewer than 2 queries (after
    ``max_queries`` sampling) is skipped -- one query has no distractors -- and a note
    says so. Columns are exactly ``EVAL_SET_COLUMNS``.
    """
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in EVAL_TASKS]
    if unknown:
        raise ValueError(f"unknown eval tasks {unknown}; expected a subset of {EVAL_TASKS}")
    frames: list[pd.DataFrame] = []
    notes: list[str] = []
    for source in sorted(corpus_by_source):
        corpus = corpus_by_source[source]
        for task in tasks:
            if task == "thread":
                df = build_thread_eval_set(
                    corpus,
                    source=source,
                    split=split,
                    min_messages=thread_min_messages,
                    pool_size=pool_size,
                    max_queries=max_queries,
                    seed=seed,
                )
                need = f">= {thread_min_messages} messages"
            else:
                df = build_response_eval_set(
                    corpus,
                    source=source,
                    split=split,
                    prefix_messages=prefix_messages,
                    continuation_messages=continuation_messages,
                    min_messages=response_min_messages,
                    pool_size=pool_size,
                    max_queries=max_queries,
                    seed=seed,
                )
                need = f">= {max(response_min_messages, prefix_messages + continuation_messages)} messages"
            n_queries = int((df["record_type"] == "query").sum())
            if n_queries < 2:
                notes.append(
                    f"skipped {source}/{task}: {n_queries} eligible {split} conversation(s) with {need} (need >= 2)"
                )
                continue
            frames.append(df)
    if not frames:
        return _empty_eval_set(), notes
    out = pd.concat(frames, ignore_index=True)
    return out[list(EVAL_SET_COLUMNS)], notes


def eval_texts(eval_sets: pd.DataFrame) -> set[str]:
    """Every query text and every positive-document text (for train/eval leakage checks)."""
    if eval_sets.empty:
        return set()
    queries = eval_sets[eval_sets["record_type"] == "query"]
    docs = eval_sets[eval_sets["record_type"] == "document"]
    positives = queries[["source", "task", "positive_id"]].rename(columns={"positive_id": "record_id"})
    pos_docs = docs.merge(positives.drop_duplicates(), on=["source", "task", "record_id"], how="inner")
    return set(queries["text"].tolist()) | set(pos_docs["text"].tolist())
