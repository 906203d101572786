"""Retrieval evaluation sets built from the held-out corpus split.

Four tasks (``schemas.EVAL_TASKS``), all with one relevant document per query:

* ``thread``   -- query: the middle message of a conversation (``len // 2``, 0-based);
  document: the rest of that conversation, in order, with the query message removed
  (so the query never leaks into its target). Pool: the positive first, then seeded
  random distractors from *other* conversations of the same (source, task) set.
* ``response`` -- query: the first ``prefix_messages`` messages of a conversation;
  document: the next ``continuation_messages`` messages. Distractors are the
  continuation windows of other conversations.
* ``concurrent_thread`` -- the real disentanglement problem: which of the threads that
  are live in the channel *right now* does this message belong to? See
  :func:`build_concurrent_thread_eval_set`.
* ``thread_full_corpus`` -- the ``thread`` queries and documents, but every query is
  ranked against every document of the set (all eligible conversations of the source).

Texts are always built with :func:`schemas.format_message` / :func:`schemas.format_window`,
the one formatter shared with pair building.

Output rows follow ``EVAL_SET_COLUMNS`` (``eval_set`` is ``OWN_EVAL_SET``; ``relevant_ids``
is ``[positive_id]`` on query rows and ``[]`` on document rows). For ``thread``/``response``/
``thread_full_corpus``: one ``query`` row (``record_id`` ``"q:<conversation_id>"``,
``positive_id`` ``"d:<conversation_id>"``, ``candidate_ids`` positive-first) and one
``document`` row (``record_id`` ``"d:<conversation_id>"``) per conversation. For
``concurrent_thread`` documents are query-specific (see that builder).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from thread_embed_pipeline.schemas import (
    is_missing,
    timeline_of,
    CORPUS_COLUMNS,
    DEFAULT_EVAL_TASKS,
    EVAL_SET_COLUMNS,
    EVAL_TASKS,
    OWN_EVAL_SET,
    format_message,
    format_window,
    missing_columns,
)
from thread_embed_pipeline.text import TextSettings, prepare_text

__all__ = [
    "DEFAULT_EVAL_PROTOCOLS",
    "EVAL_PROTOCOLS",
    "build_protocol_eval_sets",
    "protocol_eval_set",
    "protocol_of",
    "eval_message_lines",
    "build_thread_eval_set",
    "build_thread_full_corpus_eval_set",
    "build_response_eval_set",
    "build_concurrent_thread_eval_set",
    "build_eval_sets",
    "concurrent_query_id",
    "concurrent_document_id",
    "eval_frame",
    "eval_texts",
    "query_id",
    "document_id",
    "timeline_of",
]


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


# --------------------------------------------------------------------------------------------
# thread / thread_full_corpus


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


# --------------------------------------------------------------------------------------------
# response


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


# --------------------------------------------------------------------------------------------
# concurrent_thread


@dataclass
class _Thread:
    cid: str
    idx: np.ndarray  # message_idx, ascending
    ts: np.ndarray  # datetime64[ns] in message_idx order (NaT allowed)
    ts_sorted: np.ndarray  # the non-NaT timestamps, ascending (for the activity test)
    authors: list
    texts: list


def concurrent_query_id(conversation_id: str, message_idx: int) -> str:
    return f"q:{conversation_id}:{message_idx}"


def concurrent_document_id(query_record_id: str, conversation_id: str) -> str:
    return f"d:{query_record_id}:{conversation_id}"


def _timelines(sub: pd.DataFrame) -> dict[tuple[str, str], list[_Thread]]:
    """Threads grouped by timeline = (file part of conversation_id, channel), each sorted by conversation_id."""
    out: dict[tuple[str, str], list[_Thread]] = {}
    for cid, g in sub.groupby("conversation_id", sort=True):
        cid = str(cid)
        channel = g["channel"].iloc[0]
        channel = "" if channel is None or channel is pd.NA or (isinstance(channel, float) and np.isnan(channel)) else str(channel)
        ts = pd.to_datetime(g["timestamp"]).to_numpy(dtype="datetime64[ns]")
        thread = _Thread(
            cid=cid,
            idx=g["message_idx"].to_numpy(dtype=np.int64),
            ts=ts,
            ts_sorted=np.sort(ts[~np.isnat(ts)]),
            authors=[_clean_author(a) for a in g["author"].tolist()],
            texts=[_clean_text(t) for t in g["text"].tolist()],
        )
        out.setdefault((timeline_of(cid), channel), []).append(thread)
    return out


def _own_prior(thread: _Thread, pos: int, t: np.datetime64) -> np.ndarray:
    """Positions of the query's own thread that precede it: smaller message_idx and not later in time."""
    before = np.arange(pos)
    ts = thread.ts[:pos]
    return before[np.isnat(ts) | (ts <= t)]


def _active(thread: _Thread, lo: np.datetime64, t: np.datetime64) -> bool:
    """Whether ``thread`` has a message with timestamp in ``[lo, t)``."""
    i = np.searchsorted(thread.ts_sorted, lo, side="left")
    return i < len(thread.ts_sorted) and thread.ts_sorted[i] < t


def build_concurrent_thread_eval_set(
    corpus: pd.DataFrame,
    *,
    source: str,
    split: str = "test",
    window_minutes: float = 30,
    max_context_messages: int = 10,
    min_prior_messages: int = 2,
    min_candidates: int = 2,
    pool_size: int | None = None,
    max_queries: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Concurrent-thread retrieval: which thread that is live in the channel right now does this message continue?

    A *timeline* is one file/channel: the part of ``conversation_id`` before its last ``/``,
    plus ``channel``. For a query message ``m`` (time ``t``, thread ``T``, timestamp not NaT)
    with at least ``min_prior_messages`` earlier messages in ``T``:

    * candidates: ``T`` itself, plus every other thread of the same timeline with a message
      whose timestamp lies in ``[t - window_minutes, t)``;
    * each candidate document is :func:`format_window` of that thread's last
      ``<= max_context_messages`` messages strictly *before* the query: for ``T``, the messages
      with a smaller ``message_idx`` (the query itself excluded); for other threads, the
      messages with ``timestamp < t``. Timestamps may have only minute resolution (IRC), which
      cannot order same-minute messages of *different* threads, so another thread's
      same-minute messages are left out; within ``T`` the ``message_idx`` order is known.
      No document ever contains the query or anything after it.
    * documents are query-specific: ``record_id`` ``"d:<query record_id>:<conversation_id>"``,
      query ``record_id`` ``"q:<conversation_id>:<message_idx>"``; the positive is the
      own-thread document, listed first in ``candidate_ids``, then the others in
      conversation_id order.

    Queries with fewer than ``min_candidates`` candidates are dropped. Of the remaining
    messages, one per thread is picked at random (seeded), then ``max_queries`` threads are
    sampled (seeded). ``pool_size`` (None: no cap) keeps the positive plus a seeded random
    ``pool_size - 1`` of the other candidates. Rows with NaT timestamps are never queries nor
    evidence of activity; a source without timestamps yields an empty frame.
    Deterministic for a given seed and independent of the corpus row order.
    """
    if window_minutes <= 0:
        raise ValueError(f"window_minutes must be > 0, got {window_minutes}")
    if max_context_messages < 1:
        raise ValueError(f"max_context_messages must be >= 1, got {max_context_messages}")
    if min_prior_messages < 1:
        raise ValueError(f"min_prior_messages must be >= 1 (the positive needs a message), got {min_prior_messages}")
    if min_candidates < 1:
        raise ValueError(f"min_candidates must be >= 1, got {min_candidates}")
    if pool_size is not None and pool_size < 1:
        raise ValueError(f"pool_size must be >= 1, got {pool_size}")
    sub = _source_split(corpus, source=source, split=split, extra=("timestamp", "channel"))
    if sub.empty or sub["timestamp"].isna().all():
        return _empty_eval_set()
    window = np.timedelta64(int(round(window_minutes * 60 * 1e9)), "ns")
    rng = np.random.default_rng(seed)

    # every eligible (thread, message) with its candidate threads; one random message per thread
    picked: list[tuple[list[_Thread], int, int, list[int]]] = []  # (threads of timeline, own index, pos, candidate indices)
    timelines = _timelines(sub)
    for key in sorted(timelines):
        threads = timelines[key]
        for k, thread in enumerate(threads):
            eligible: list[tuple[int, list[int]]] = []
            for pos in range(min_prior_messages, len(thread.idx)):
                t = thread.ts[pos]
                if np.isnat(t) or len(_own_prior(thread, pos, t)) < min_prior_messages:
                    continue
                lo = t - window
                others = [j for j, u in enumerate(threads) if j != k and _active(u, lo, t)]
                if 1 + len(others) >= min_candidates:
                    eligible.append((pos, others))
            if eligible:
                pos, others = eligible[int(rng.integers(len(eligible)))]
                picked.append((threads, k, pos, others))
    picked = [picked[i] for i in _sample_indices(len(picked), max_queries, rng)]

    rows_q, rows_d = [], []
    for threads, k, pos, others in picked:
        own = threads[k]
        t = own.ts[pos]
        if pool_size is not None and len(others) > pool_size - 1:
            keep = np.sort(rng.choice(len(others), size=pool_size - 1, replace=False))
            others = [others[i] for i in keep]
        qid = concurrent_query_id(own.cid, int(own.idx[pos]))
        cand_ids = []
        for j in [k, *others]:
            u = threads[j]
            if j == k:
                prior = _own_prior(u, pos, t)
            else:
                prior = np.flatnonzero(~np.isnat(u.ts) & (u.ts < t))
            prior = prior[-max_context_messages:]
            did = concurrent_document_id(qid, u.cid)
            cand_ids.append(did)
            messages = _messages([u.authors[i] for i in prior], [u.texts[i] for i in prior])
            rows_d.append(_document_row(source=source, task="concurrent_thread", record_id=did, conversation_id=u.cid, messages=messages))
        rows_q.append(
            _query_row(
                source=source,
                task="concurrent_thread",
                record_id=qid,
                conversation_id=own.cid,
                text=format_message(own.authors[pos], own.texts[pos]),
                positive_id=cand_ids[0],
                candidate_ids=cand_ids,
            )
        )
    if not rows_q:
        return _empty_eval_set()
    return eval_frame(rows_q + rows_d)


def _concurrent_timestamp_note(corpus: pd.DataFrame, *, source: str, split: str) -> tuple[bool, str | None]:
    """(usable, note): whether ``source``/``split`` has any timestamps, and a note on conversations without them."""
    if "timestamp" not in corpus.columns:
        return False, f"skipped {source}/concurrent_thread: the corpus has no timestamp column"
    sub = corpus[(corpus["source"] == source) & (corpus["split"] == split)]
    if sub.empty:
        return True, None
    has_ts = sub["timestamp"].notna().groupby(sub["conversation_id"]).any()
    n_without = int((~has_ts).sum())
    if n_without == len(has_ts):
        return False, (
            f"skipped {source}/concurrent_thread: no {split} message has a timestamp "
            "(concurrency needs message times)"
        )
    if n_without:
        return True, (
            f"{source}/concurrent_thread: {n_without} of {len(has_ts)} {split} conversation(s) have no timestamps "
            "and are left out (neither queries nor candidates)"
        )
    return True, None


# --------------------------------------------------------------------------------------------
# all tasks


def build_eval_sets(
    corpus_by_source: Mapping[str, pd.DataFrame],
    *,
    tasks: Iterable[str] = DEFAULT_EVAL_TASKS,
    split: str = "test",
    thread_min_messages: int = 8,
    prefix_messages: int = 5,
    continuation_messages: int = 5,
    response_min_messages: int = 12,
    pool_size: int = 100,
    concurrent_window_minutes: float = 30,
    concurrent_max_context_messages: int = 10,
    concurrent_min_prior_messages: int = 2,
    concurrent_min_candidates: int = 2,
    concurrent_pool_size: int | None = None,
    max_queries: int | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, list[str]]:
    """All (source, task) eval sets concatenated, plus human-readable notes on what was skipped.

    Returns ``(eval_sets, notes)``. A (source, task) with fewer than 2 queries (after
    ``max_queries`` sampling) is skipped -- one query has no distractors -- and a note
    says so; ``concurrent_thread`` is skipped with a note for a source without timestamps
    (and a note counts conversations left out for lack of timestamps). ``pool_size``
    applies to ``thread``/``response``; ``concurrent_pool_size`` (None: every concurrent
    thread) to ``concurrent_thread``; ``thread_full_corpus`` has no pool. Columns are exactly
    ``EVAL_SET_COLUMNS``.
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
                need = f"conversation(s) with >= {thread_min_messages} messages"
            elif task == "thread_full_corpus":
                df = build_thread_full_corpus_eval_set(
                    corpus,
                    source=source,
                    split=split,
                    min_messages=thread_min_messages,
                    max_queries=max_queries,
                    seed=seed,
                )
                need = f"conversation(s) with >= {thread_min_messages} messages"
            elif task == "response":
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
                need = f"conversation(s) with >= {max(response_min_messages, prefix_messages + continuation_messages)} messages"
            else:  # concurrent_thread
                usable, note = _concurrent_timestamp_note(corpus, source=source, split=split)
                if note:
                    notes.append(note)
                if not usable:
                    continue
                df = build_concurrent_thread_eval_set(
                    corpus,
                    source=source,
                    split=split,
                    window_minutes=concurrent_window_minutes,
                    max_context_messages=concurrent_max_context_messages,
                    min_prior_messages=concurrent_min_prior_messages,
                    min_candidates=concurrent_min_candidates,
                    pool_size=concurrent_pool_size,
                    max_queries=max_queries,
                    seed=seed,
                )
                need = (
                    f"thread(s) with a message that has >= {concurrent_min_prior_messages} earlier messages in its thread "
                    f"and >= {concurrent_min_candidates} candidate threads (its own plus those active in the "
                    f"{concurrent_window_minutes:g} min before it)"
                )
            n_queries = int((df["record_type"] == "query").sum())
            if n_queries < 2:
                notes.append(f"skipped {source}/{task}: {n_queries} eligible {split} {need} (need >= 2)")
                continue
            frames.append(df)
    if not frames:
        return _empty_eval_set(), notes
    out = pd.concat(frames, ignore_index=True)
    return out[list(EVAL_SET_COLUMNS)], notes


def eval_texts(eval_sets: pd.DataFrame) -> set[str]:
    """Every query text and every relevant-document text (for train/eval leakage checks)."""
    if eval_sets.empty:
        return set()
    keys = [k for k in ("eval_set", "source", "task") if k in eval_sets.columns]
    queries = eval_sets[eval_sets["record_type"] == "query"]
    docs = eval_sets[eval_sets["record_type"] == "document"]
    if "relevant_ids" in queries.columns:
        rel = queries[keys + ["relevant_ids"]].explode("relevant_ids").rename(columns={"relevant_ids": "record_id"})
        rel = pd.concat([rel, queries[keys + ["positive_id"]].rename(columns={"positive_id": "record_id"})])
    else:
        rel = queries[keys + ["positive_id"]].rename(columns={"positive_id": "record_id"})
    rel = rel.dropna(subset=["record_id"]).astype(object).drop_duplicates()
    pos_docs = docs[keys + ["record_id", "text"]].astype(object).merge(rel, on=keys + ["record_id"], how="inner")
    return set(queries["text"].tolist()) | set(pos_docs["text"].tolist())


def eval_message_lines(eval_sets: pd.DataFrame, *, min_chars: int = 20) -> set[str]:
    """Every message line (``author: text``) of every eval text with at least ``min_chars``
    characters: what a training pair from a re-publishing dump must not contain."""
    if eval_sets.empty:
        return set()
    out: set[str] = set()
    for text in eval_sets["text"].dropna().unique():
        out.update(line for line in str(text).split("\n") if len(line.strip()) >= min_chars)
    return out


# --------------------------------------------------------------------------------------------
# protocols: the same queries and pools, with the speakers written by one scheme each

# protocol -> the text stage's speaker scheme. ``pseudonymised`` is what the model trains on and
# the only form that is exported; ``names_visible`` keeps the upstream names (internal, like the
# corpus); ``per_conversation`` is the reference project's scheme, for comparing with its numbers.
EVAL_PROTOCOLS: dict[str, str] = {"pseudonymised": "per_timeline", "names_visible": "original", "per_conversation": "per_conversation", "speaker_free": "per_timeline"}
# the main job's: what the model trains on, and what is exported. names_visible is one config away (configs/names_visible.yaml)
DEFAULT_EVAL_PROTOCOLS: tuple[str, ...] = ("pseudonymised",)
DEFAULT_PROTOCOL = "pseudonymised"
# protocols whose queries are typed the way a user searches: no "speaker_<k>: " prefix (documents keep theirs)
SPEAKER_FREE_PROTOCOLS: frozenset[str] = frozenset({"speaker_free"})
_SPEAKER_PREFIX = re.compile(r"^speaker_\d+: ", re.MULTILINE)


def without_speakers(text: str) -> str:
    """A query without the ``speaker_<k>: `` prefix of each of its lines (a user's search has no speaker)."""
    return _SPEAKER_PREFIX.sub("", text)


def protocol_eval_set(protocol: str) -> str:
    """The ``eval_set`` name of the own sets under ``protocol`` (the default protocol keeps ``OWN_EVAL_SET``)."""
    if protocol not in EVAL_PROTOCOLS:
        raise ValueError(f"unknown eval protocol {protocol!r}; expected one of {sorted(EVAL_PROTOCOLS)}")
    return OWN_EVAL_SET if protocol == DEFAULT_PROTOCOL else f"{OWN_EVAL_SET}-{protocol}"


def protocol_of(eval_set: str) -> str | None:
    """The protocol of an own eval set name; None for external sets."""
    for protocol in EVAL_PROTOCOLS:
        if eval_set == protocol_eval_set(protocol):
            return protocol
    return None


def build_protocol_eval_sets(
    corpus_by_source: Mapping[str, pd.DataFrame],
    *,
    protocols: Sequence[str] = DEFAULT_EVAL_PROTOCOLS,
    **kwargs,
) -> tuple[pd.DataFrame, list[str], dict[str, dict]]:
    """``build_eval_sets`` once per protocol on the corpus prepared by the text stage with that
    protocol's speaker scheme (everything else at the text stage's defaults, so the benchmark does
    not move when the *training* text is configured differently).

    Bots and too-short conversations are dropped and URLs, e-mails and secrets redacted in every
    protocol, so all protocols hold the same queries and pools and differ only in how speakers are
    written. Returns the concatenated sets (``eval_set`` = :func:`protocol_eval_set`), notes, and
    the text stage's accounting per protocol and source.
    """
    protocols = list(dict.fromkeys(protocols))
    if not protocols:
        raise ValueError("protocols is empty")
    for protocol in protocols:
        protocol_eval_set(protocol)  # validates the name
    frames, notes, accounting = [], [], {}
    for protocol in protocols:
        settings = TextSettings(speakers=EVAL_PROTOCOLS[protocol])
        prepared = {}
        for source, corpus in corpus_by_source.items():
            prepared[source], accounting[f"{protocol}/{source}"] = prepare_text(corpus, settings)
        sets, set_notes = build_eval_sets(prepared, **kwargs)
        sets["eval_set"] = protocol_eval_set(protocol)
        if protocol in SPEAKER_FREE_PROTOCOLS:
            queries = sets["record_type"] == "query"
            sets.loc[queries, "text"] = sets.loc[queries, "text"].map(without_speakers)
        frames.append(sets)
        if protocol == protocols[0]:
            notes.extend(set_notes)  # the same in every protocol
    return pd.concat(frames, ignore_index=True)[list(EVAL_SET_COLUMNS)], notes, accounting
