"""Hard negatives for training pairs: concurrent threads of the same chat timeline.

:func:`add_chat_hard_negatives` adds a ``negative`` column to a pairs table (``schemas.PAIR_COLUMNS``):
*structural* negatives, text from the **same timeline** (channel / file) at the **same time** but
from a **different conversation**. That is exactly the confusable case the ``concurrent_thread``
eval task tests (which of the threads live in the channel right now does this message continue?),
so training on it teaches the model the distinction the eval measures. No model needed;
deterministic; a few seconds on ~70k pairs. (Model-mined negatives are one call away in
sentence-transformers: ``sentence_transformers.util.mine_hard_negatives``.)

Finding a pair's messages (:func:`add_chat_hard_negatives`)
----------------------------------------------------------
Each pair carries the ``message_idx`` spans of its sides (``schemas.PAIR_SPAN_COLUMNS``), so the
anchor's messages, hence its timestamps, are read straight from the corpus rows of its own
conversation. The anchor's text is checked against ``format_window`` of those rows: a pair whose
span is not in the corpus, or holds other text (the pairs were built from another corpus), gets no
negative (reason ``anchor_not_found``). The positive's span gives its number of messages (the size
of the negative window).

Timelines and time windows
--------------------------
A timeline is ``(part of conversation_id before the last "/", channel, split)``: the same file /
channel as the ``concurrent_thread`` eval, further restricted to the pair's **split**, so that a
train pair never carries text of a dev/test conversation (hash-split sources such as Slack mix
splits inside one channel). Messages with a NaT timestamp are never anchors' times nor evidence
of activity (one Discord file has none: its pairs get reason ``no_timestamp``). With
``W = window_minutes`` and the anchor's message times ``[t0, t1]``:

* ``thread``: candidate threads are the other conversations of the timeline with a message in
  ``[t0 - W, t1 + W]``. One is drawn; one of its messages inside that range is drawn as the pivot;
  the negative is a window of that thread's consecutive messages containing the pivot (random
  offset), of the positive's length (``negative_messages`` overrides; capped by the thread length).
* ``query_response``: candidate threads have a message in ``[t0 - W, t0 + W]``. One is drawn and
  one of its messages in that range, preferring those at or after the question's time (where a
  reply would be), is the negative: a plausible wrong reply.
* ``adjacency``: candidate threads have a message in ``[t1, t1 + W]`` -- they continue while the
  anchor's own thread continues. The negative is that thread's window starting at its first such
  message, of the positive's length (if fewer messages are left, the window is shifted back so
  that it still ends with the thread's last message and keeps the requested length).

Timestamps may have minute resolution (IRC): bounds are inclusive, so other threads' messages in
the anchor's own minute count as concurrent.

For ``thread`` and ``adjacency`` the candidate threads with at least as many messages as the
window are tried first, so that a shorter window is no length shortcut; a shorter window is
used only when no concurrent thread is long enough.

A negative never comes from the pair's own conversation and never equals (after stripping) the
pair's anchor or positive; when the drawn candidate does, the next candidate thread (in
conversation-id order, cyclically) is tried. Pairs with no candidate get ``None`` (reason
``no_concurrent_thread``; ``no_valid_window`` if every candidate's text equals a side).

Determinism: every random choice of a pair comes from ``sha256(f"{seed}\\x1f{conversation_id}
\\x1f{anchor}")`` (different 8-byte slices for the thread, pivot and offset draws), so the result
does not depend on the row order of the pairs or the corpus, nor on other pairs, and adding a
source reshuffles nothing elsewhere.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from thread_embed_pipeline.schemas import NEGATIVE_COLUMN, PAIR_STRATEGIES, format_message, format_window, is_missing, missing_columns, timeline_of

__all__ = ["NEGATIVE_COLUMN", "add_chat_hard_negatives"]

WITHOUT_REASONS: tuple[str, ...] = ("anchor_not_found", "no_timestamp", "no_concurrent_thread", "no_valid_window")
_NAT = np.iinfo(np.int64).min  # what NaT becomes in an int64 view of datetime64[ns]
_CORPUS_NEED = ("conversation_id", "channel", "split", "message_idx", "timestamp", "author", "text")
_PAIR_NEED = ("anchor", "positive", "strategy", "conversation_id", "anchor_start", "anchor_end", "positive_start", "positive_end")


def _plain(value):
    """pd.NA / NaN-free value for the formatter: ``format_message`` must not see pd.NA (ambiguous truth)."""
    return None if is_missing(value) else value


def _channel_key(value) -> str:
    value = _plain(value)
    return "" if value is None else str(value)


def _pair_hashes(seed: int, conversation_id: str, anchor: str) -> tuple[int, int, int, int]:
    digest = hashlib.sha256(f"{int(seed)}\x1f{conversation_id}\x1f{anchor}".encode("utf-8")).digest()
    return tuple(int.from_bytes(digest[i : i + 8], "little") for i in range(0, 32, 8))  # type: ignore[return-value]


class _ChatIndex:
    """The corpus as flat arrays: messages in (conversation, message_idx) order, plus a (timeline, time) order."""

    def __init__(self, corpus: pd.DataFrame):
        missing = missing_columns(corpus.columns, _CORPUS_NEED)
        if missing:
            raise ValueError(f"corpus is missing columns {missing}")
        c = corpus[list(_CORPUS_NEED)].copy()
        c["conversation_id"] = c["conversation_id"].astype(str)
        c = c.sort_values(["conversation_id", "message_idx"], kind="stable").reset_index(drop=True)
        cids = c["conversation_id"].to_numpy(dtype=object)
        codes, uniques = pd.factorize(cids, sort=True)
        n_conv = len(uniques)
        self.conv_ids: list[str] = [str(u) for u in uniques]
        self.code_of: dict[str, int] = {cid: k for k, cid in enumerate(self.conv_ids)}
        self.msg_conv = codes.astype(np.int64)
        self.message_idx = c["message_idx"].to_numpy(dtype=np.int64)
        self.conv_start = np.searchsorted(self.msg_conv, np.arange(n_conv), side="left")
        self.conv_len = np.searchsorted(self.msg_conv, np.arange(n_conv), side="right") - self.conv_start
        # the same author/text values build_pairs formats (only pd.NA / NaN authors made None)
        self.authors = [_plain(a) for a in c["author"].tolist()]
        self.texts = c["text"].tolist()
        self.formatted = [format_message(a, t) for a, t in zip(self.authors, self.texts)]
        ts = pd.to_datetime(c["timestamp"], errors="coerce")
        if getattr(ts.dt, "tz", None) is not None:
            ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
        self.ts = ts.to_numpy(dtype="datetime64[ns]").view(np.int64)

        # timeline code per conversation: (file part of the id, channel, split)
        first = c.iloc[self.conv_start] if n_conv else c.iloc[0:0]
        keys = [
            (timeline_of(cid), _channel_key(ch), _channel_key(sp))
            for cid, ch, sp in zip(self.conv_ids, first["channel"].tolist(), first["split"].tolist())
        ]
        tl_codes, _ = pd.factorize(pd.Series(keys, dtype=object), sort=False)
        self.conv_timeline = np.asarray(tl_codes, dtype=np.int64)

        # messages with a timestamp, ordered by (timeline, time, row): one contiguous block per timeline
        rows = np.flatnonzero(self.ts != _NAT)
        msg_tl = self.conv_timeline[self.msg_conv[rows]]
        order = np.lexsort((rows, self.ts[rows], msg_tl))
        self.by_time_row = rows[order]
        self.by_time_ts = self.ts[self.by_time_row]
        self.by_time_conv = self.msg_conv[self.by_time_row]
        sorted_tl = msg_tl[order]
        n_tl = int(self.conv_timeline.max()) + 1 if n_conv else 0
        self.tl_start = np.searchsorted(sorted_tl, np.arange(n_tl), side="left")
        self.tl_end = np.searchsorted(sorted_tl, np.arange(n_tl), side="right")
        self._lookup: dict[int, dict[str, list[int]]] = {}

    def span_rows(self, k: int, start: int, end: int) -> tuple[int, int] | None:
        """Rows ``[r0, r1)`` of conversation ``k`` holding its messages ``message_idx`` in ``[start, end)``, if all are there."""
        s = int(self.conv_start[k])
        idx = self.message_idx[s : s + int(self.conv_len[k])]
        r0 = s + int(np.searchsorted(idx, start, side="left"))
        r1 = s + int(np.searchsorted(idx, end, side="left"))
        return (r0, r1) if end > start and r1 - r0 == end - start else None

    def window(self, r0: int, r1: int) -> str:
        return format_window(self.authors[r0:r1], self.texts[r0:r1])

    # -- concurrent activity --------------------------------------------------------------------
    def active(self, k: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, conv codes) of the timestamped messages of ``k``'s timeline with time in ``[lo, hi]``, other conversations only."""
        tl = int(self.conv_timeline[k])
        a, b = int(self.tl_start[tl]), int(self.tl_end[tl])
        ts = self.by_time_ts[a:b]
        i = a + int(np.searchsorted(ts, lo, side="left"))
        j = a + int(np.searchsorted(ts, hi, side="right"))
        conv = self.by_time_conv[i:j]
        keep = conv != k
        return self.by_time_row[i:j][keep], conv[keep]


def add_chat_hard_negatives(
    pairs: pd.DataFrame,
    corpus: pd.DataFrame,
    *,
    seed: int,
    window_minutes: int = 30,
    negative_messages: int | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Add a ``negative`` column: text of a *concurrent other thread* of the pair's timeline (see module doc).

    ``pairs`` has at least ``anchor``, ``positive``, ``strategy``, ``conversation_id`` and the
    side spans (``schemas.PAIR_SPAN_COLUMNS``; extra columns, row order and index are kept); ``corpus`` is the corpus table the pairs were built
    from (``schemas.CORPUS_COLUMNS``; several sources may be mixed). ``negative_messages``
    fixes the number of messages of ``thread`` / ``adjacency`` negatives (None: as many as the
    positive). Returns ``(pairs with "negative" -- str or None, counts)`` with counts
    ``{strategy: {"with_negative": n, "without": n, "without_by_reason": {reason: n}}}`` for the
    strategies present (``with_negative + without`` = that strategy's pairs).
    """
    if window_minutes <= 0:
        raise ValueError(f"window_minutes must be > 0, got {window_minutes}")
    if negative_messages is not None and negative_messages < 1:
        raise ValueError(f"negative_messages must be >= 1 or None, got {negative_messages}")
    missing = missing_columns(pairs.columns, _PAIR_NEED)
    if missing:
        raise ValueError(f"pairs are missing columns {missing}")
    unknown = set(pairs["strategy"].unique()) - set(PAIR_STRATEGIES)
    if unknown:
        raise ValueError(f"unknown pair strategies {sorted(unknown)}; known: {list(PAIR_STRATEGIES)}")

    index = _ChatIndex(corpus)
    window = int(window_minutes) * 60 * 10**9
    present = [s for s in PAIR_STRATEGIES if (pairs["strategy"] == s).any()]
    counts = {s: {"with_negative": 0, "without": 0, "without_by_reason": {}} for s in present}
    negatives: list[str | None] = []

    def miss(strategy: str, reason: str) -> None:
        negatives.append(None)
        entry = counts[strategy]
        entry["without"] += 1
        entry["without_by_reason"][reason] = entry["without_by_reason"].get(reason, 0) + 1

    for cid, anchor, positive, strategy, a0, a1, p0, p1 in zip(
        pairs["conversation_id"].astype(str).tolist(),
        pairs["anchor"].tolist(),
        pairs["positive"].tolist(),
        pairs["strategy"].tolist(),
        *(pairs[c].astype("int64").tolist() for c in ("anchor_start", "anchor_end", "positive_start", "positive_end")),
    ):
        k = index.code_of.get(cid)
        span = index.span_rows(k, a0, a1) if k is not None else None
        if span is None or index.window(*span) != anchor:
            miss(strategy, "anchor_not_found")
            continue
        t = index.ts[span[0] : span[1]]
        t = t[t != _NAT]
        if not len(t):
            miss(strategy, "no_timestamp")
            continue
        t0, t1 = int(t.min()), int(t.max())
        if strategy == "thread":
            lo, hi = t0 - window, t1 + window
        elif strategy == "query_response":
            lo, hi = t0 - window, t0 + window
        else:  # adjacency: threads that go on while the anchor's thread goes on
            lo, hi = t1, t1 + window
        rows, conv = index.active(k, lo, hi)
        if not len(rows):
            miss(strategy, "no_concurrent_thread")
            continue
        candidates = np.unique(conv)  # sorted codes = conversation-id order
        h_thread, h_pivot, h_offset, _ = _pair_hashes(seed, cid, anchor)
        if strategy != "query_response":
            size = negative_messages or (p1 - p0)
        sides = {anchor.strip(), positive.strip()}
        if strategy != "query_response":
            # threads long enough for a full-size window first, so length is no shortcut
            long_enough = index.conv_len[candidates] >= size
            if long_enough.any() and not long_enough.all():
                candidates = np.concatenate([candidates[long_enough], candidates[~long_enough]])
                n_first = int(long_enough.sum())
            else:
                n_first = len(candidates)
        else:
            n_first = len(candidates)
        chosen = None
        first = h_thread % n_first
        order = np.concatenate([np.roll(candidates[:n_first], -first), candidates[n_first:]])
        for u in order.tolist():
            own_rows = rows[conv == u]  # ascending time (then row)
            u_start, u_len = int(index.conv_start[u]), int(index.conv_len[u])
            if strategy == "thread":
                pos = int(own_rows[h_pivot % len(own_rows)]) - u_start
                m = min(size, u_len)
                p0 = min(max(pos - int(h_offset % m), 0), u_len - m)
                text = index.window(u_start + p0, u_start + p0 + m)
            elif strategy == "query_response":
                later = own_rows[index.ts[own_rows] >= t0]
                pool = later if len(later) else own_rows
                r = int(pool[h_pivot % len(pool)])
                text = index.formatted[r]
            else:
                p = int(own_rows.min()) - u_start  # the first (file order) of its messages in [t1, t1 + W]
                m = min(size, u_len)
                p0 = max(min(p, u_len - m), 0)
                text = index.window(u_start + p0, u_start + p0 + m)
            if text.strip() and text.strip() not in sides:
                chosen = text
                break
        if chosen is None:
            miss(strategy, "no_valid_window")
            continue
        negatives.append(chosen)
        counts[strategy]["with_negative"] += 1

    out = pairs.copy()
    out[NEGATIVE_COLUMN] = pd.Series(negatives, index=pairs.index, dtype=object)
    for entry in counts.values():
        entry["without_by_reason"] = dict(sorted(entry["without_by_reason"].items()))
    return out, counts
