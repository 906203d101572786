"""The ``concurrent_thread`` task: which of the threads live in the channel right now does this message belong
to? (:func:`build_concurrent_thread_eval_set`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from thread_embed_pipeline.evaluation.tasks.common import _clean_author, _clean_text, _document_row, _empty_eval_set, _messages, _query_row, _sample_indices, _source_split, eval_frame
from thread_embed_pipeline.schemas import format_message, timeline_of


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
