"""Training pairs from a chat corpus: thread, query-response and temporal-adjacency builders.

Three ways to say "these two texts belong together", after the reference recipe:

* ``thread``: an anchor of 1-2 consecutive messages and a *different*, non-overlapping window of
  the same conversation (the shape of the thread-retrieval eval: a message vs. its thread).
* ``query_response``: a question message (one containing ``?``) and its reply: the gold
  reply-to child where links exist (IRC), else the next message by another author.
* ``adjacency``: a window of messages and the window that follows it (the shape of the
  response-retrieval eval).

Sampling is seeded per conversation (``numpy`` generator seeded with the run seed and a stable
hash of the conversation id), so the same corpus and seed give byte-identical pairs, and adding
one conversation or source does not reshuffle the pairs of any other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from thread_embed_pipeline.schemas import NEGATIVE_COLUMN, PAIR_COLUMNS, PAIR_SORT_KEY, PAIR_SPAN_COLUMNS, PAIR_STRATEGIES, format_message, format_window


@dataclass(frozen=True)
class PairBuilderSettings:
    """How many pairs of which shape to draw from each conversation."""

    thread_anchor_messages: tuple[int, int] = (1, 2)  # inclusive range of anchor window sizes
    thread_positive_messages: int = 8  # max size of the positive window
    thread_pairs_per_conversation: int = 4
    query_response_pairs_per_conversation: int = 3
    adjacency_window_messages: int = 5
    adjacency_pairs_per_conversation: int = 2
    min_conversation_messages: int = 2
    # query_response: only a message containing "?" is a query; False takes every linked reply
    # (Q&A-pair sources whose questions are often statements of a problem)
    require_question_mark: bool = True


def _stable_seed(seed: int, key: str) -> list[int]:
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return [int(seed), int.from_bytes(digest[:8], "little")]


def _thread_pairs(authors: list, texts: list[str], rng: np.random.Generator, s: PairBuilderSettings):
    n = len(texts)
    lo, hi = s.thread_anchor_messages
    out = []
    if n < 2:
        return out
    starts = rng.permutation(n)[: s.thread_pairs_per_conversation]
    for start in starts:
        size = int(rng.integers(lo, hi + 1))
        size = max(1, min(size, n - 1))
        a0 = int(min(start, n - size))
        a1 = a0 + size
        # the positive is a window of the remaining messages on one side of the anchor
        before, after = a0, n - a1
        if before == 0 and after == 0:
            continue
        side = "after" if before == 0 else "before" if after == 0 else ("after" if rng.random() < 0.5 else "before")
        if side == "after":
            length = min(s.thread_positive_messages, after)
            gap = int(rng.integers(0, after - length + 1))
            p0 = a1 + gap
        else:
            length = min(s.thread_positive_messages, before)
            gap = int(rng.integers(0, before - length + 1))
            p0 = a0 - gap - length
        p1 = p0 + length
        out.append((format_window(authors[a0:a1], texts[a0:a1]), format_window(authors[p0:p1], texts[p0:p1]), (a0, a1, p0, p1)))
    return out


def _query_response_pairs(authors: list, texts: list[str], reply_to: list, rng: np.random.Generator, s: PairBuilderSettings):
    n = len(texts)
    children: dict[int, list[int]] = {}
    for idx, parent in enumerate(reply_to):
        if parent is not None and not pd.isna(parent) and int(parent) != idx:
            children.setdefault(int(parent), []).append(idx)
    candidates = []
    for q in range(n):
        if s.require_question_mark and "?" not in texts[q]:
            continue
        reply = None
        for child in children.get(q, []):
            if authors[child] != authors[q]:
                reply = child
                break
        if reply is None and not children:
            # no gold links in this conversation: the next message by another author
            reply = next((j for j in range(q + 1, n) if authors[j] != authors[q]), None)
        if reply is not None:
            candidates.append((q, reply))
    if not candidates:
        return []
    chosen = rng.permutation(len(candidates))[: s.query_response_pairs_per_conversation]
    out = []
    for c in sorted(int(i) for i in chosen):
        q, r = candidates[c]
        out.append((format_message(authors[q], texts[q]), format_message(authors[r], texts[r]), (q, q + 1, r, r + 1)))
    return out


def _adjacency_pairs(authors: list, texts: list[str], rng: np.random.Generator, s: PairBuilderSettings):
    w = s.adjacency_window_messages
    n = len(texts)
    if n < 2:
        return []
    if n < 2 * w:
        w = n // 2  # short conversation: two halves
    starts = list(range(0, n - 2 * w + 1))
    chosen = sorted(int(i) for i in rng.permutation(len(starts))[: s.adjacency_pairs_per_conversation])
    out = []
    for c in chosen:
        a0 = starts[c]
        out.append(
            (
                format_window(authors[a0 : a0 + w], texts[a0 : a0 + w]),
                format_window(authors[a0 + w : a0 + 2 * w], texts[a0 + w : a0 + 2 * w]),
                (a0, a0 + w, a0 + w, a0 + 2 * w),
            )
        )
    return out


def build_pairs(
    corpus: pd.DataFrame,
    *,
    seed: int,
    settings: PairBuilderSettings | None = None,
    strategies: Iterable[str] = PAIR_STRATEGIES,
) -> tuple[pd.DataFrame, dict]:
    """All pairs of every split of one source's corpus (the split column travels with each pair).

    Returns the pairs (columns ``PAIR_COLUMNS``, in conversation order; each side's messages are
    the ``message_idx`` span ``[<side>_start, <side>_end)`` of its conversation) and counts
    ``{"conversations": n, "skipped_short_conversations": n, "pairs": {strategy: n}}``.
    """
    settings = settings or PairBuilderSettings()
    strategies = list(strategies)
    unknown = set(strategies) - set(PAIR_STRATEGIES)
    if unknown:
        raise ValueError(f"unknown pair strategies {sorted(unknown)}; known: {list(PAIR_STRATEGIES)}")
    rows: list[tuple] = []
    counts = {s: 0 for s in strategies}
    skipped = 0
    identical = 0
    ordered = corpus.sort_values(["conversation_id", "message_idx"], kind="stable")
    n_conversations = 0
    for conversation_id, conv in ordered.groupby("conversation_id", sort=True):
        n_conversations += 1
        if len(conv) < settings.min_conversation_messages:
            skipped += 1
            continue
        authors = conv["author"].tolist()
        texts = conv["text"].tolist()
        reply_to = conv["reply_to"].tolist()
        message_idx = conv["message_idx"].to_numpy(dtype=np.int64)
        source = conv["source"].iat[0]
        split = conv["split"].iat[0]
        rng = np.random.default_rng(_stable_seed(seed, str(conversation_id)))
        built = {
            "thread": lambda: _thread_pairs(authors, texts, rng, settings),
            "query_response": lambda: _query_response_pairs(authors, texts, reply_to, rng, settings),
            "adjacency": lambda: _adjacency_pairs(authors, texts, rng, settings),
        }
        for strategy in strategies:
            for anchor, positive, (a0, a1, p0, p1) in built[strategy]():
                if anchor.strip() == positive.strip():  # a repeated message is no signal
                    identical += 1
                    continue
                spans = (int(message_idx[a0]), int(message_idx[a1 - 1]) + 1, int(message_idx[p0]), int(message_idx[p1 - 1]) + 1)
                rows.append((anchor, positive, strategy, source, conversation_id, split, *spans))
                counts[strategy] += 1
    pairs = pd.DataFrame(rows, columns=list(PAIR_COLUMNS)).astype({c: "int64" for c in PAIR_SPAN_COLUMNS})
    stats = {"conversations": n_conversations, "skipped_short_conversations": skipped, "skipped_identical_sides": identical, "pairs": counts}
    return pairs, stats


@dataclass
class TrainingPairStats:
    """Accounting for ``select_training_pairs``: input = kept + dropped by reason."""

    read: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    available_by_strategy: dict[str, int] = field(default_factory=dict)
    kept_by_strategy: dict[str, int] = field(default_factory=dict)
    kept_by_source: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "read": self.read,
            "kept": self.kept,
            "dropped": dict(self.dropped),
            "available_by_strategy": dict(self.available_by_strategy),
            "kept_by_strategy": dict(self.kept_by_strategy),
            "kept_by_source": dict(self.kept_by_source),
        }


def _split_quota(total: int, shares: Mapping[str, float], available: Mapping[str, int]) -> dict[str, int]:
    """``total`` split by ``shares`` (largest remainders), capped by ``available``; a capped key's
    shortfall goes to the others in proportion to their shares."""
    take = {k: 0 for k in shares}
    open_keys = [k for k in shares if shares[k] > 0 and available.get(k, 0) > 0]
    left = min(total, sum(available.get(k, 0) for k in open_keys))
    while left > 0 and open_keys:
        weight = sum(shares[k] for k in open_keys)
        exact = {k: left * shares[k] / weight for k in open_keys}
        part = {k: int(exact[k]) for k in open_keys}
        for k in sorted(open_keys, key=lambda k: (-(exact[k] - part[k]), k))[: left - sum(part.values())]:
            part[k] += 1
        for k in open_keys:
            add = min(part[k], available[k] - take[k])
            take[k] += add
            left -= add
        open_keys = [k for k in open_keys if take[k] < available[k]]
    return take


def _take_by_source(frame: pd.DataFrame, n: int, source_shares: Mapping[str, float], rng: np.random.Generator) -> pd.DataFrame:
    sources = sorted(frame["source"].unique())
    named = {s: float(source_shares[s]) for s in sources if s in source_shares}
    rest = 1.0 - sum(named.values())
    unnamed = [s for s in sources if s not in source_shares]
    shares = {**named, **{s: max(rest, 0.0) / len(unnamed) for s in unnamed}} if unnamed else named
    available = frame["source"].value_counts().to_dict()
    take = _split_quota(n, shares, available)
    parts = []
    for s in sources:
        rows = np.flatnonzero((frame["source"] == s).to_numpy())
        parts.append(rows[rng.permutation(len(rows))[: take.get(s, 0)]])
    return frame.iloc[np.sort(np.concatenate(parts))] if parts else frame.iloc[0:0]


def select_training_pairs(
    pairs: pd.DataFrame,
    *,
    budget: int,
    strategy_shares: Mapping[str, float],
    seed: int,
    eval_texts: set[str] | frozenset[str] = frozenset(),
    eval_conversation_ids: set[str] | frozenset[str] = frozenset(),
    exclude_sources: set[str] | frozenset[str] = frozenset(),
    eval_lines: set[str] | frozenset[str] = frozenset(),
    line_checked_sources: set[str] | frozenset[str] = frozenset(),
    source_shares: Mapping[str, float] | None = None,
) -> tuple[pd.DataFrame, TrainingPairStats]:
    """Merge all sources' pairs into the training set.

    Keeps train-split pairs only, drops any pair from an eval conversation or with a side equal to an
    eval query/positive text (decontamination), removes duplicates, then samples ``budget`` pairs with
    ``strategy_shares`` (normalised; a strategy short of its share gives the rest to the others).
    ``exclude_sources`` leaves whole sources out (cross-platform transfer runs).
    ``eval_lines`` (see ``eval_sets.eval_message_lines``) drops pairs of ``line_checked_sources``
    with any message line equal to one in an eval text: sources that may re-publish the eval data
    (the ``ubuntu_irc`` dump holds the #ubuntu days the IRC eval sets come from).
    ``source_shares`` (source -> share; sources not named split what is left equally) divides each
    strategy's quota across sources, e.g. to give the small, hard sources more of a small budget; a
    source short of its part gives the rest to the others. ``None`` or empty: rows are sampled
    uniformly within a strategy, so sources come in proportion to their size.
    The output is shuffled with ``seed``; same inputs and seed give the same rows in the same order.
    """
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    unknown = set(strategy_shares) - set(PAIR_STRATEGIES)
    if unknown:
        raise ValueError(f"unknown strategies in strategy_shares: {sorted(unknown)}")
    stats = TrainingPairStats(read=len(pairs))

    def drop(mask: pd.Series, reason: str, frame: pd.DataFrame) -> pd.DataFrame:
        n = int(mask.sum())
        if n:
            stats.dropped[reason] = stats.dropped.get(reason, 0) + n
        return frame[~mask]

    frame = pairs.sort_values(list(PAIR_SORT_KEY), kind="stable").reset_index(drop=True)
    frame = drop(frame["split"] != "train", "not_train_split", frame)
    frame = drop(frame["source"].isin(exclude_sources), "excluded_source", frame)
    frame = drop(frame["conversation_id"].isin(eval_conversation_ids), "eval_conversation", frame)
    if eval_texts:
        texts = set(eval_texts)
        frame = drop(frame["anchor"].isin(texts) | frame["positive"].isin(texts), "equals_eval_text", frame)
    if eval_lines and line_checked_sources:
        lines = set(eval_lines)
        checked = frame["source"].isin(line_checked_sources)

        def shares_line(text) -> bool:
            return isinstance(text, str) and any(line in lines for line in text.split("\n"))

        overlap = pd.Series(False, index=frame.index)
        sub = frame.loc[checked]
        if len(sub):
            overlap.loc[sub.index] = sub["anchor"].map(shares_line) | sub["positive"].map(shares_line)
        frame = drop(overlap, "shares_eval_message", frame)
    frame = drop(frame["anchor"].str.strip() == frame["positive"].str.strip(), "anchor_equals_positive", frame)
    frame = drop(frame.duplicated(subset=["anchor", "positive"], keep="first"), "duplicate", frame)
    if NEGATIVE_COLUMN in frame.columns and eval_texts:
        # a negative equal to an eval text would leak it too; keep the pair, lose the negative
        leaked_negative = frame[NEGATIVE_COLUMN].isin(set(eval_texts))
        frame = frame.assign(**{NEGATIVE_COLUMN: frame[NEGATIVE_COLUMN].where(~leaked_negative, None)})

    stats.available_by_strategy = frame["strategy"].value_counts().sort_index().to_dict()
    shares = {s: float(v) for s, v in strategy_shares.items() if v > 0}
    total_share = sum(shares.values())
    if total_share <= 0:
        raise ValueError("strategy_shares must give at least one strategy a positive share")
    frame = drop(~frame["strategy"].isin(list(shares)), "strategy_not_selected", frame)

    rng = np.random.default_rng(seed)
    order = {s: rng.permutation(int((frame["strategy"] == s).sum())) for s in sorted(shares)}
    by_strategy = {s: frame[frame["strategy"] == s].reset_index(drop=True) for s in sorted(shares)}
    quota = {s: int(round(budget * shares[s] / total_share)) for s in sorted(shares)}
    take = {s: min(quota[s], len(by_strategy[s])) for s in quota}
    # hand the shortfall of small strategies to those with pairs left, in share order
    spare = budget - sum(take.values())
    for s in sorted(shares, key=lambda k: -shares[k]):
        if spare <= 0:
            break
        extra = min(spare, len(by_strategy[s]) - take[s])
        take[s] += extra
        spare -= extra
    if source_shares:
        chosen = [_take_by_source(by_strategy[s], take[s], source_shares, rng) for s in sorted(shares)]
    else:
        chosen = [by_strategy[s].iloc[np.sort(order[s][: take[s]])] for s in sorted(shares)]
    selected = pd.concat(chosen, ignore_index=True) if chosen else frame.iloc[0:0]
    not_sampled = len(frame) - len(selected)
    if not_sampled:
        stats.dropped["over_budget"] = stats.dropped.get("over_budget", 0) + not_sampled
    selected = selected.iloc[rng.permutation(len(selected))].reset_index(drop=True)
    stats.kept = len(selected)
    stats.kept_by_strategy = selected["strategy"].value_counts().sort_index().to_dict()
    stats.kept_by_source = selected["source"].value_counts().sort_index().to_dict()
    columns = list(PAIR_COLUMNS) + ([NEGATIVE_COLUMN] if NEGATIVE_COLUMN in selected.columns else [])
    return selected[columns], stats
