"""Candidates and their features: for each scored message, the messages before it in a window, with the
paper's distance, speaker, mention, BM25 and user-history features and, with an embedding, cosines at each
Matryoshka dim and with the conversation so far.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from thread_embed_pipeline.disentanglement.metrics import clusters_from_links
from thread_embed_pipeline.schemas import Log, format_message, is_missing

WINDOW = 100  # candidates per message besides itself (the paper's)
SPEAKER_TOKEN = re.compile(r"\bspeaker_(\d+)\b")
BASE_FEATURES: tuple[str, ...] = (
    "self", "log_distance", "log_minutes", "same_speaker", "mentions_candidate", "candidate_mentions", "own_last",
    "candidate_system", "message_system", "message_mentions_anyone", "bm25", "bm25_rank",
)
# The paper's user-history and word-overlap features (Kummerfeld et al. 2019, §5 and its code's feature
# list), computed from the log up to the message only (a live channel has no future lines).
HISTORY_FEATURES: tuple[str, ...] = (
    "message_silent_since", "candidate_latest", "same_target", "candidate_mentions_anyone",
    "message_addressed_before", "message_addressed_between", "candidate_addressed_before", "candidate_addressed_between",
    "message_prev_distance", "message_prev_minutes", "message_prev_targeted", "message_has_prev",
    "candidate_prev_distance", "candidate_prev_minutes", "candidate_prev_targeted", "candidate_has_prev",
    "candidate_next_same", "candidate_before_same", "candidate_question", "message_question",
    "overlap_of_candidate", "overlap_of_message", "overlap_none", "overlap_one", "overlap_many", "overlap_over5",
    "log_lines_per_minute",
)


def _bm25_matrix(texts: Sequence[str], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """BM25 of each text at ``rows`` (queries) against each at ``cols``, within one file."""
    from thread_embed_pipeline.evaluation.retrieval import (
        bm25_index,
        bm25_query_tokens,
        bm25_scores,
    )

    docs = [texts[c] or "" for c in cols]
    if not any(d.strip() for d in docs):
        return np.zeros((len(rows), len(cols)))
    index = bm25_index(docs)
    tokens = bm25_query_tokens([texts[r] or "" for r in rows])
    return np.stack([bm25_scores(index, t, len(docs)) if t else np.zeros(len(docs)) for t in tokens])


def candidate_features(
    log: pd.DataFrame, embeddings: Mapping[int, np.ndarray] | None = None, *, window: int = WINDOW
) -> pd.DataFrame:
    """For ONE file of :func:`channel_logs`: a row per (scored message, candidate) with ``line``,
    ``candidate``, ``label`` (the candidate is a gold link) and the features (see the module
    docstring). ``embeddings``: dim -> (lines x dim) L2-normalised vectors, rows in line order."""
    log = log.reset_index(drop=True)
    n = len(log)
    if not (log["line"].to_numpy() == np.arange(n)).all():
        raise ValueError("a log's lines must be numbered 0..n-1 in order")
    scored = np.flatnonzero(log["scored"].to_numpy())
    if not len(scored):
        return pd.DataFrame()
    d = np.arange(window + 1)
    i = np.repeat(scored, window + 1)
    j = i - np.tile(d, len(scored))
    keep = j >= 0
    i, j = i[keep], j[keep]
    dist = i - j
    spk_codes, speakers = pd.factorize(log["speaker"].where(log["speaker"].notna(), None))
    spk = np.where(log["speaker"].isna().to_numpy(), -1, spk_codes)
    system = log["system"].to_numpy()
    texts = log["text"].fillna("").astype(str).tolist()
    n_spk = int(spk.max()) + 1 if (spk >= 0).any() else 0
    # who each line mentions, by speaker code (the pseudonyms are in the text)
    code_of = {name: k for k, name in enumerate(speakers)}
    mentions = np.zeros((n, max(n_spk, 1)), dtype=bool)
    for row, t in enumerate(texts):
        for m in SPEAKER_TOKEN.finditer(t):
            k = code_of.get(f"speaker_{m[1]}")
            if k is not None:
                mentions[row, k] = True
    ts = log["timestamp"].to_numpy(dtype="datetime64[ns]")
    gap = (ts[i] - ts[j]).astype("timedelta64[s]").astype(np.float64) / 60.0
    gap = np.where(np.isnat(ts[i]) | np.isnat(ts[j]), 0.0, np.clip(gap, 0, None))
    same = (spk[i] == spk[j]) & (spk[i] >= 0) & (dist > 0)
    ment_c = (spk[j] >= 0) & mentions[i, np.clip(spk[j], 0, None)] & (dist > 0)
    c_ment = (spk[i] >= 0) & mentions[j, np.clip(spk[i], 0, None)] & (dist > 0)
    # the candidate is the most recent earlier line by the message's own speaker
    last_by = np.full(n, -1)
    seen: dict[int, int] = {}
    for row in range(n):
        last_by[row] = seen.get(spk[row], -1) if spk[row] >= 0 else -1
        if spk[row] >= 0:
            seen[spk[row]] = row
    frame = {
        "line": i, "candidate": j,
        **_history_features(spk, mentions, texts, ts, last_by, i, j),
        "self": (dist == 0).astype(np.float32), "log_distance": np.log1p(dist).astype(np.float32),
        "log_minutes": np.log1p(gap).astype(np.float32), "same_speaker": same.astype(np.float32),
        "mentions_candidate": ment_c.astype(np.float32), "candidate_mentions": c_ment.astype(np.float32),
        "own_last": (last_by[i] == j).astype(np.float32), "candidate_system": system[j].astype(np.float32),
        "message_system": system[i].astype(np.float32), "message_mentions_anyone": mentions[i].any(axis=1).astype(np.float32),
    }
    lo = max(int(scored.min()) - window, 0)
    cols = np.arange(lo, n)
    bm = _bm25_matrix(texts, scored, cols)
    row_of = {int(r): k for k, r in enumerate(scored)}
    bm25 = bm[np.array([row_of[int(x)] for x in i]), j - lo]
    frame["bm25"] = np.where(dist > 0, bm25, 0.0).astype(np.float32)
    out = pd.DataFrame(frame)
    out["bm25_rank"] = np.log1p(out.groupby("line")["bm25"].rank(ascending=False, method="min")).astype(np.float32)
    for dim, emb in sorted((embeddings or {}).items()):
        cos = np.einsum("nd,nd->n", emb[i], emb[j])
        out[f"cos@{dim}"] = np.where(dist > 0, cos, 0.0).astype(np.float32)
        out[f"cos_rank@{dim}"] = np.log1p(out.groupby("line")[f"cos@{dim}"].rank(ascending=False, method="min")).astype(np.float32)
    gold = log["gold"].tolist()
    out["label"] = [int(c) in gold[r] for r, c in zip(i.tolist(), j.tolist())]
    if embeddings:
        dim = max(embeddings)
        emb = embeddings[dim]
        # training: the candidate's gold conversation so far (its lines before the message)
        labels = np.full(n, -1)
        for k, cluster in enumerate(clusters_from_links(gold_links(log), cutoff=0)):
            labels[list(cluster)] = k
        labels = np.where(labels < 0, n + np.arange(n), labels)  # unlinked lines: their own conversation
        out[CONVERSATION_FEATURE] = np.where(dist > 0, _conversation_cosine(emb, labels, i, j), 0.0).astype(np.float32)
    return out


CONVERSATION_FEATURE = "conversation_cos"


def _history_features(spk: np.ndarray, mentions: np.ndarray, texts: list[str], ts: np.ndarray, last_by: np.ndarray, i: np.ndarray, j: np.ndarray) -> dict[str, np.ndarray]:
    """:data:`HISTORY_FEATURES` of the pairs (message ``i``, candidate ``j``) of one file. ``spk``:
    speaker codes (-1: none); ``mentions``: line x speaker; ``last_by``: each line's speaker's previous
    line (-1: none). The pair features are 0 on the self link; the message's own (``message_*``, the
    file's rate) are the same on all its rows."""
    from sklearn.feature_extraction.text import CountVectorizer

    n = len(spk)
    other = i != j
    next_by = np.full(n, n)
    seen: dict[int, int] = {}
    for row in range(n - 1, -1, -1):
        if spk[row] >= 0:
            next_by[row] = seen.get(spk[row], n)
            seen[spk[row]] = row
    # how often speaker a addressed speaker b before a line: sorted (pair, line) keys, counted by searchsorted
    n_spk = mentions.shape[1]
    rows, targets = np.nonzero(mentions & (spk >= 0)[:, None])
    keys = np.sort((spk[rows].astype(np.int64) * n_spk + targets) * (n + 1) + rows)

    def addressed(a: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """a mentioned b on a line in [lo, hi)."""
        base = (a.astype(np.int64) * n_spk + b) * (n + 1)
        count = np.searchsorted(keys, base + hi, side="left") - np.searchsorted(keys, base + lo, side="left")
        return (count > 0) & (a >= 0) & (b >= 0) & other

    def prev_minutes(rows_: np.ndarray) -> np.ndarray:
        prev = last_by[rows_]
        gap = (ts[rows_] - ts[np.maximum(prev, 0)]).astype("timedelta64[s]").astype(np.float64) / 60.0
        ok = (prev >= 0) & ~np.isnat(ts[rows_]) & ~np.isnat(ts[np.maximum(prev, 0)])
        return np.where(ok, np.log1p(np.clip(gap, 0, None)), 0.0)

    targeted = mentions.any(axis=1)
    prev_targeted = np.where(last_by >= 0, targeted[np.maximum(last_by, 0)], False)
    words = CountVectorizer(binary=True, lowercase=True).fit([t for t in texts if t.strip()] or ["empty"])
    bags = words.transform(texts)
    common = np.asarray(bags[i].multiply(bags[j]).sum(axis=1)).ravel()
    size = np.asarray(bags.sum(axis=1)).ravel()
    question = np.array(["?" in t for t in texts])
    minutes = (ts[~np.isnat(ts)].max() - ts[~np.isnat(ts)].min()).astype("timedelta64[s]").astype(np.float64) / 60.0 if (~np.isnat(ts)).sum() > 1 else 0.0
    nxt, prv = np.minimum(j + 1, n - 1), np.maximum(j - 1, 0)
    out = {
        "message_silent_since": (last_by[i] < j) & other, "candidate_latest": (next_by[j] > i) & other & (spk[j] >= 0),
        "same_target": (mentions[i] & mentions[j]).any(axis=1) & other, "candidate_mentions_anyone": targeted[j] & other,
        "message_addressed_before": addressed(spk[i], spk[j], np.zeros_like(j), j), "message_addressed_between": addressed(spk[i], spk[j], j + 1, i),
        "candidate_addressed_before": addressed(spk[j], spk[i], np.zeros_like(j), j), "candidate_addressed_between": addressed(spk[j], spk[i], j + 1, i),
        "message_prev_distance": np.where(last_by[i] >= 0, np.log1p(i - last_by[i]), 0.0), "message_prev_minutes": prev_minutes(i),
        "message_prev_targeted": prev_targeted[i], "message_has_prev": last_by[i] >= 0,
        "candidate_prev_distance": np.where((last_by[j] >= 0) & other, np.log1p(j - last_by[j]), 0.0), "candidate_prev_minutes": np.where(other, prev_minutes(j), 0.0),
        "candidate_prev_targeted": prev_targeted[j] & other, "candidate_has_prev": (last_by[j] >= 0) & other,
        "candidate_next_same": (spk[nxt] == spk[j]) & (spk[j] >= 0) & (j + 1 < n) & other, "candidate_before_same": (spk[prv] == spk[j]) & (spk[j] >= 0) & (j > 0) & other,
        "candidate_question": question[j] & other, "message_question": question[i],
        "overlap_of_candidate": np.where(other & (size[j] > 0), common / np.maximum(size[j], 1), 0.0),
        "overlap_of_message": np.where(other & (size[i] > 0), common / np.maximum(size[i], 1), 0.0),
        "overlap_none": other & (common == 0), "overlap_one": other & (common == 1), "overlap_many": other & (common > 1), "overlap_over5": other & (common > 5),
        "log_lines_per_minute": np.full(len(i), np.log1p(n / max(minutes, 1.0))),
    }
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def _conversation_cosine(emb: np.ndarray, labels: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Cosine of line ``i`` with the mean of the lines of ``j``'s conversation (``labels``) up to ``i - 1``."""
    n = len(labels)
    order = np.lexsort((np.arange(n), labels))  # by conversation, then line
    key = labels[order].astype(np.int64) * (n + 1) + order
    cum = np.cumsum(emb[order], axis=0, dtype=np.float64)
    start = np.searchsorted(labels[order], labels[order], side="left")  # first position of each line's conversation
    last = np.searchsorted(key, labels[j].astype(np.int64) * (n + 1) + (i - 1), side="right") - 1  # j's conversation, lines <= i - 1
    first = start[last]
    total = cum[last] - np.where(first[:, None] > 0, cum[np.maximum(first - 1, 0)], 0.0)
    norm = np.linalg.norm(total, axis=1)
    return np.einsum("nd,nd->n", emb[i], total) / np.where(norm > 0, norm, 1.0)


def feature_names(dims: Sequence[int]) -> list[str]:
    per_dim = [f for d in sorted(dims) for f in (f"cos@{d}", f"cos_rank@{d}")]
    return [*BASE_FEATURES, *HISTORY_FEATURES, *per_dim, *([CONVERSATION_FEATURE] if dims else [])]


@dataclass
class Candidates:
    """One file's candidate rows (:func:`candidate_features`) and, with a model, its lines' vectors at
    the largest dim (the decoder's conversation feature)."""

    frame: pd.DataFrame
    embeddings: np.ndarray | None = None


def gold_links(log: pd.DataFrame) -> list[tuple[int, int]]:
    """A file's gold links of its scored lines."""
    rows = log[log["scored"]]
    return [(int(line), int(t)) for line, targets in zip(rows["line"], rows["gold"]) for t in (targets or [line])]


def file_features(logs: pd.DataFrame, embed: Callable[[list[str], int], np.ndarray] | None, dims: Sequence[int], *, window: int = WINDOW, log: Log = None) -> dict[str, Candidates]:
    """:func:`candidate_features` of every file of ``logs``; ``embed(texts, dim)`` (None: no
    embedding features) is called once per dim with every line that can be a candidate."""
    groups = {f: g.reset_index(drop=True) for f, g in logs.groupby("file", sort=False)}
    # lines before (first scored line - window) are never a candidate: not embedded
    first = {f: max(int(g.loc[g["scored"], "line"].min()) - window, 0) if g["scored"].any() else len(g) for f, g in groups.items()}
    texts, spans = [], {}
    for f, g in groups.items():
        part = g.iloc[first[f]:]
        spans[f] = (len(texts), len(texts) + len(part))
        texts += [format_message(None if is_missing(sp) else sp, t or "") for sp, t in zip(part["speaker"], part["text"])]
    vectors = {}
    if embed is not None:
        for dim in dims:
            start = time.perf_counter()
            vectors[dim] = np.asarray(embed(texts, dim), dtype=np.float32)
            if log:
                log(f"embedded {len(texts)} lines at dim {dim} in {time.perf_counter() - start:.0f}s")
    out = {}
    for f, g in groups.items():
        a, b = spans[f]
        emb = {d: np.vstack([np.zeros((first[f], d), dtype=np.float32), v[a:b]]) for d, v in vectors.items()} or None
        out[f] = Candidates(candidate_features(g, emb, window=window), emb[max(emb)] if emb else None)
    return out
