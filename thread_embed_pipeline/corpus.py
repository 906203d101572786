"""raw -> corpus: group messages into conversations, drop what is not a chat message.

``build_corpus`` turns a raw table (``schemas.RAW_COLUMNS``) into corpus rows
(``schemas.CORPUS_COLUMNS``) plus an accounting dict ``{"read", "kept", "dropped": {reason: n}}``
with ``read == kept + sum(dropped) == len(raw)``.

Conversations:

* Rows without a ``conversation_key`` (IRC): connected components of the gold reply-to graph
  (``parent_ids``) over *all* lines of a file, context lines included. Context lines are then
  removed, which reproduces upstream's gold clusters (``gold_clusters``). The id is
  ``<source>/<file stem>/<smallest annotated message_id of the component>`` (the first message
  of the upstream cluster, system lines included, so ids are stable whatever is dropped).
* Rows with a ``conversation_key`` (Slack/Discord XML, .annot): ``<source>/<file stem>/<key>``.

The file stem is the path without a leading ``data/`` and without the ``.ascii.txt`` /
``.annotation.txt`` / ``.xml.out`` / ``.xml`` / ``.annot`` / ``.txt`` suffix
(``data/racket/2017/merged-racket-general.xml`` -> ``racket/2017/merged-racket-general``).

Drops, in this order (each row is counted once, under the first reason that applies):
``duplicate`` (same file + message_id seen before), ``system``, ``context``, ``malformed``,
``invalid_encoding`` (a line that is not valid UTF-8), ``empty_text`` (nothing left after
stripping whitespace), ``too_long`` (more than ``MAX_MESSAGE_CHARS`` characters: a paste, not chat).

``message_idx`` is the 0-based file order inside the conversation, after drops. ``reply_to`` is
the ``message_idx`` of the latest gold parent (largest message_id) that is kept and is not the
message itself, else null. ``split`` is ``split_hint`` where the raw row has one, else a stable
hash split: the first 8 bytes of sha256(conversation_id) as a fraction of 2**64, compared with
the cumulative ``split_fractions`` (train, dev, test). A conversation never spans splits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from thread_embed_pipeline.schemas import CORPUS_COLUMNS, RAW_COLUMNS, SPLITS, hash_splits, missing_columns

DROP_REASONS: tuple[str, ...] = ("duplicate", "system", "context", "malformed", "invalid_encoding", "empty_text", "too_long")
# a "message" longer than this is a paste or a dump, not chat (and would cost a 1 MB tokenisation)
MAX_MESSAGE_CHARS = 20_000
_STEM_SUFFIXES = (".ascii.txt", ".annotation.txt", ".xml.out", ".xml", ".annot", ".txt")


def file_stem(path: str) -> str:
    """``data/test/2005-07-06_14.ascii.txt`` -> ``test/2005-07-06_14``."""
    stem = path[len("data/") :] if path.startswith("data/") else path
    for suffix in _STEM_SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def _check_fractions(split_fractions: Sequence[float]) -> None:
    if len(split_fractions) != len(SPLITS) or any(f < 0 for f in split_fractions):
        raise ValueError(f"split_fractions must be {len(SPLITS)} non-negative numbers, got {split_fractions!r}")
    if abs(sum(split_fractions) - 1.0) > 1e-6:
        raise ValueError(f"split_fractions must sum to 1, got {split_fractions!r} (sum {sum(split_fractions)})")


def link_components(raw: pd.DataFrame) -> np.ndarray:
    """Component label (int) per row of ``raw`` from the ``parent_ids`` links within each file.

    Parents that name no row of the same file are ignored. Rows are nodes; labels are arbitrary.
    """
    n = len(raw)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    files = pd.factorize(raw["file"])[0].astype(np.int64)
    mids = raw["message_id"].to_numpy(dtype=np.int64)
    lengths = raw["parent_ids"].map(len).to_numpy()
    child = np.repeat(np.arange(n), lengths)
    if len(child):
        parent_mid = np.fromiter(
            (p for ps in raw["parent_ids"] if len(ps) for p in ps), dtype=np.int64, count=int(lengths.sum())
        )
        # look up (file, parent message_id) -> row position
        node_index = pd.Series(np.arange(n), index=pd.MultiIndex.from_arrays([files, mids]))
        node_index = node_index[~node_index.index.duplicated()]
        parent_pos = node_index.reindex(pd.MultiIndex.from_arrays([files[child], parent_mid])).to_numpy()
        ok = ~np.isnan(parent_pos)
        rows, cols = child[ok], parent_pos[ok].astype(np.int64)
    else:
        rows = cols = np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=True, connection="weak")
    return labels.astype(np.int64)


def gold_clusters(raw: pd.DataFrame) -> pd.DataFrame:
    """Upstream gold clusters of link-annotated (IRC) rows: components of the link graph over all
    rows of a file, restricted to the non-context rows (system lines still included).

    Returns ``file, message_id, split_hint, cluster`` for each non-context row, where
    ``cluster`` is the smallest message_id of its cluster.
    """
    labels = link_components(raw)
    annotated = (raw["record_type"] != "context").to_numpy()
    out = raw.loc[annotated, ["file", "message_id", "split_hint"]].copy()
    out["component"] = labels[annotated]
    out["cluster"] = out.groupby("component")["message_id"].transform("min")
    return out.drop(columns="component").reset_index(drop=True)


def build_corpus(
    raw: pd.DataFrame,
    *,
    source: str,
    platform: str,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
) -> tuple[pd.DataFrame, dict]:
    """Corpus rows (CORPUS_COLUMNS, sorted by conversation_id, message_idx) and the accounting."""
    missing = missing_columns(raw.columns, RAW_COLUMNS)
    if missing:
        raise ValueError(f"raw table lacks columns {missing}")
    _check_fractions(split_fractions)
    df = raw.reset_index(drop=True)
    n = len(df)

    # --- conversations ----------------------------------------------------------------------
    stems = df["file"].map({f: file_stem(f) for f in df["file"].unique()})
    keyed = df["conversation_key"].notna().to_numpy()
    conv = pd.Series(np.full(n, None, dtype=object))
    if keyed.any():
        conv[keyed] = source + "/" + stems[keyed] + "/" + df.loc[keyed, "conversation_key"].astype(str)
    linked = ~keyed
    if linked.any():
        sub = df.loc[linked]
        labels = link_components(sub)
        annotated = (sub["record_type"] != "context").to_numpy()
        mids = sub["message_id"].to_numpy()
        # cluster id: smallest annotated message_id of the component
        first = pd.Series(np.where(annotated, mids, np.iinfo(np.int64).max)).groupby(labels).transform("min")
        conv[linked] = (source + "/" + stems[linked] + "/" + first.astype(str).to_numpy()).to_numpy()

    # --- drops ------------------------------------------------------------------------------
    text = df["text"].astype("str").str.strip()  # None stays missing
    rtype = df["record_type"]
    reason = pd.Series(np.full(n, None, dtype=object))
    conditions = [
        ("duplicate", df.duplicated(["file", "message_id"], keep="first")),
        ("system", rtype == "system"),
        ("context", rtype == "context"),
        ("malformed", rtype == "malformed"),
        ("invalid_encoding", rtype == "invalid_encoding"),
        ("empty_text", text.isna() | (text == "")),
        ("too_long", text.str.len().fillna(0) > MAX_MESSAGE_CHARS),
    ]
    for name, cond in conditions:
        reason[reason.isna() & cond.to_numpy()] = name
    unknown = reason.isna() & (rtype != "message")
    if unknown.any():
        raise ValueError(f"unknown record_type values {sorted(set(rtype[unknown]))}")
    keep = reason.isna().to_numpy()
    dropped = {name: int((reason == name).sum()) for name, _ in conditions}

    kept = df.loc[keep].copy()
    kept["conversation_id"] = conv[keep].to_numpy()
    kept["text"] = text[keep].to_numpy()
    kept = kept.sort_values(["conversation_id", "file", "message_id"], kind="stable")
    kept["message_idx"] = kept.groupby("conversation_id", sort=False).cumcount().astype("int64")

    # --- reply_to ---------------------------------------------------------------------------
    reply_to = pd.Series(pd.NA, index=kept.index, dtype="Int64")
    has_parents = kept["parent_ids"].map(len) > 0
    if has_parents.any():
        links = kept.loc[has_parents, ["file", "message_id", "parent_ids"]].explode("parent_ids")
        links = links.rename(columns={"parent_ids": "parent"})
        links["parent"] = links["parent"].astype("int64")
        links = links[links["parent"] != links["message_id"]]
        links["child_index"] = links.index
        lookup = kept[["file", "message_id", "message_idx", "conversation_id"]].rename(
            columns={"message_id": "parent", "message_idx": "parent_idx", "conversation_id": "parent_conv"}
        )
        links = links.merge(lookup, on=["file", "parent"], how="inner")
        links = links[links["parent_conv"].to_numpy() == kept.loc[links["child_index"], "conversation_id"].to_numpy()]
        if len(links):
            latest = links.sort_values("parent").groupby("child_index")["parent_idx"].last()
            reply_to.loc[latest.index] = latest.astype("int64").to_numpy()
    kept["reply_to"] = reply_to

    # --- split ------------------------------------------------------------------------------
    split = kept["split_hint"].copy()
    need = split.isna()
    if need.any():
        conv_ids = kept.loc[need, "conversation_id"]
        codes, uniq = pd.factorize(conv_ids)
        split[need] = np.asarray(hash_splits(list(uniq), split_fractions), dtype=object)[codes]
    kept["split"] = split

    kept["source"] = source
    kept["platform"] = platform
    corpus = kept[list(CORPUS_COLUMNS)].reset_index(drop=True)
    corpus = corpus.astype(
        {
            "conversation_id": object,
            "source": object,
            "platform": object,
            "channel": object,
            "message_idx": "int64",
            "timestamp": "datetime64[ns]",
            "author": object,
            "text": object,
            "reply_to": "Int64",
            "split": object,
        }
    )
    accounting = {"read": n, "kept": len(corpus), "dropped": dropped}
    assert accounting["read"] == accounting["kept"] + sum(dropped.values())
    return corpus, accounting
