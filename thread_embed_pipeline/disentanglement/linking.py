"""Disentangling whole splits and timelines: train on train files, choose on dev, link and score the test
files (:func:`disentangle_splits`); link a user export's timelines in blocks (:func:`link_export_timelines`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from thread_embed_pipeline.disentanglement.features import WINDOW, Candidates, candidate_features, file_features, gold_links
from thread_embed_pipeline.disentanglement.logs import channel_logs
from thread_embed_pipeline.disentanglement.scorers import SCORERS, DisentangleScorer, fit_scorer
from thread_embed_pipeline.schemas import Log


def disentangle_splits(
    logs: pd.DataFrame, embed: Callable[[list[str], int], np.ndarray] | None, dims: Sequence[int], *,
    window: int = WINDOW, max_train_files: int | None = 40, models: Sequence[str] = SCORERS,
    n_resamples: int = 200, seed: int = 0, log: Log = None,
) -> dict:
    """Train on (a seeded sample of ``max_train_files``) train files, choose the scorer on dev, link the test
    files and score them: ``metrics`` (:func:`~.evaluation.disentanglement.file_bootstrap`), the
    ``scorer``, the test ``links`` per file, and counts and timings."""
    from thread_embed_pipeline.disentanglement.metrics import file_bootstrap

    train_files = sorted(logs.loc[logs["split"] == "train", "file"].unique())
    if max_train_files and len(train_files) > max_train_files:
        train_files = sorted(np.random.default_rng(seed).choice(train_files, max_train_files, replace=False).tolist())
    parts = {s: logs[logs["file"].isin(train_files)] if s == "train" else logs[logs["split"] == s] for s in ("train", "dev", "test")}
    empty = [s for s, p in parts.items() if not p["scored"].any()]
    if empty:
        raise ValueError(f"no scored lines in the {', '.join(empty)} files: the disentangler needs train, dev and test")
    start = time.perf_counter()
    feats = {s: file_features(p, embed, dims, window=window, log=log) for s, p in parts.items()}
    gold = {s: {f: gold_links(g) for f, g in p.groupby("file")} for s, p in parts.items()}
    if log:
        log(f"candidate features of {sum(len(v) for v in feats.values())} files in {time.perf_counter() - start:.0f}s")
    train = pd.concat([c.frame.assign(file=f) for f, c in feats["train"].items()], ignore_index=True)
    scorer = fit_scorer(train, feats["dev"], gold["dev"], dims=dims, models=models, seed=seed, log=log)
    scorer.chosen["train_files"] = len(train_files)
    start = time.perf_counter()
    links = {f: scorer.links(c) for f, c in feats["test"].items()}
    link_s = time.perf_counter() - start
    metrics = file_bootstrap(gold["test"], links, n_resamples=n_resamples, seed=seed)
    return {"metrics": metrics, "scorer": scorer, "links": links, "train_files": len(train_files), "test_messages": int(parts["test"]["scored"].sum()), "link_test_s": link_s}


LINK_CHUNK = 1000  # messages scored per block when linking a timeline: BM25 is (block x block + history)


def link_export_timelines(raw, scorer: DisentangleScorer, *, unthreaded_only: bool, log: Log = None) -> tuple:
    """Predicted reply links for a user export's raw rows (``RAW_SCHEMA``, whole timelines; ``file`` is the
    timeline): the same rows, in the same order, with ``parent_ids`` (and, with ``unthreaded_only``,
    ``conversation_key``) set from the scorer, and counts ``linked/<what>``.

    A timeline's ``message`` rows, in time order (timestamp, then message_id; a missing time takes the
    previous row's), are the log: each scored message links to its best candidate among itself and the
    ``scorer.window`` messages before it (a self link starts a conversation: ``linked/self``; else its
    ``parent_ids`` name the target: ``linked/parent``). Other rows (system, bot, edit, ...) are neither
    scored nor candidates, and are returned untouched. Only the features-only scorer (``dims == []``)
    is accepted: an embedding scorer would need the model, which trains on the pairs these links make.

    * ``unthreaded_only=False`` (an IRC log): every message is scored; a timeline with any
      ``conversation_key`` or in-timeline parent link is refused (its threads are native).
    * ``unthreaded_only=True`` (``link_unthreaded: disentangler`` of a threaded platform): only messages
      whose conversation would hold one message (grouped as the corpus stage groups them: by key, else
      by ``parent_ids`` components, counting message rows) are scored (``linked/native``: those left in
      their native conversation); every message is a candidate. A linked message joins its target's
      conversation: it takes the target's ``conversation_key`` (``linked/key_copied``), or, the target
      having none, loses its own and the parent link puts it in the target's component.

    Timelines are scored in blocks of :data:`LINK_CHUNK` messages, each with the ``max(window, LINK_CHUNK)``
    messages before it as history (speaker and mention features read it), so memory stays bounded.
    """
    import pyarrow as pa
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from thread_embed_pipeline.schemas import raw_table

    if scorer.dims:
        raise ValueError(
            f"link_export_timelines needs the features-only scorer (dims == []), got dims {scorer.dims}: an embedding "
            "scorer reads the model, which is trained on the pairs these links make (a cycle); load disentanglement/features_only"
        )
    table = raw_table(raw)
    frame = table.select(["file", "message_id", "timestamp", "author", "text", "conversation_key", "parent_ids", "record_type"]).to_pandas()
    parents = [list(p) if p is not None else [] for p in frame["parent_ids"]]
    keys = [k if isinstance(k, str) else None for k in frame["conversation_key"]]
    counts = {"linked/timelines": 0, "linked/predicted": 0, "linked/self": 0, "linked/parent": 0}
    if unthreaded_only:
        counts |= {"linked/native": 0, "linked/key_copied": 0}
    history = max(scorer.window, LINK_CHUNK)
    for timeline, rows in frame.groupby("file", sort=False).indices.items():
        start = time.perf_counter()
        rows = np.asarray(rows)
        mids = frame["message_id"].to_numpy()[rows]
        is_message = frame["record_type"].to_numpy()[rows] == "message"
        local: dict[int, int] = {}
        for k, mid in enumerate(mids.tolist()):
            local.setdefault(mid, k)  # a repeated id: its first row, as the corpus stage reads it
        edges = [(r, local[p]) for r in range(len(rows)) for p in parents[rows[r]] if local.get(p, r) != r]
        keyed = np.array([keys[r] is not None for r in rows], dtype=bool)
        if not unthreaded_only and (keyed.any() or edges):
            raise ValueError(f"timeline {timeline!r} has native threads (conversation_key or parent links): link it with unthreaded_only=True")
        alone = is_message.copy()
        if unthreaded_only:
            unkeyed_edges = [(a, b) for a, b in edges if not keyed[a] and not keyed[b]]
            graph = coo_matrix((np.ones(len(unkeyed_edges)), ([a for a, _ in unkeyed_edges], [b for _, b in unkeyed_edges])), shape=(len(rows), len(rows)))
            component = connected_components(graph, directed=True, connection="weak")[1]
            group = pd.Series([("k", keys[r]) if keyed[k] else ("c", int(component[k])) for k, r in enumerate(rows)])
            messages_in = group[is_message].value_counts()
            alone &= group.map(messages_in).fillna(0).to_numpy() == 1
            counts["linked/native"] += int(is_message.sum() - alone.sum())
        # the log: message rows in time order
        msg = np.flatnonzero(is_message)
        if not len(msg):
            continue
        ts = pd.Series(frame["timestamp"].to_numpy()[rows[msg]]).ffill().bfill()
        ts_ns = ts.to_numpy(dtype="datetime64[ns]").astype(np.int64) if ts.notna().all() else np.zeros(len(msg), dtype=np.int64)
        order = msg[np.lexsort((mids[msg], ts_ns))]  # log position -> local row
        scored = alone[order]
        counts["linked/timelines"] += 1
        if not scored.any():
            continue
        m = len(order)
        logs = channel_logs(pd.DataFrame({
            "file": "timeline", "message_id": np.arange(m), "split_hint": "user", "record_type": "message",
            "author": frame["author"].to_numpy()[rows[order]], "text": frame["text"].to_numpy()[rows[order]],
            "timestamp": frame["timestamp"].to_numpy()[rows[order]], "parent_ids": [[] for _ in range(m)],
        }))
        links: list[tuple[int, int]] = []
        for lo in range(0, m, LINK_CHUNK):
            hi = min(lo + LINK_CHUNK, m)
            if not scored[lo:hi].any():
                continue
            first = max(0, lo - history)
            part = logs.iloc[first:hi].reset_index(drop=True)
            part["line"] = np.arange(hi - first)
            part["scored"] = np.r_[np.zeros(lo - first, dtype=bool), scored[lo:hi]]
            links += [(first + i, first + j) for i, j in scorer.links(Candidates(candidate_features(part, window=scorer.window)))]
        for position, target in sorted(links):  # in log order: a target's own link is applied first
            row, parent = rows[order[position]], rows[order[target]]
            counts["linked/predicted"] += 1
            if position == target:
                counts["linked/self"] += 1
                continue
            counts["linked/parent"] += 1
            parents[row] = [int(frame["message_id"].iat[parent])]
            if unthreaded_only:
                keys[row] = keys[parent]
                counts["linked/key_copied"] += int(keys[parent] is not None)
        if log:
            log(f"{timeline}: linked {int(scored.sum())} of {m} messages in {time.perf_counter() - start:.1f}s")
    out = table.set_column(table.schema.get_field_index("parent_ids"), "parent_ids", pa.array(parents, pa.list_(pa.int64())))
    out = out.set_column(out.schema.get_field_index("conversation_key"), "conversation_key", pa.array(keys, pa.string()))
    return out, counts
