"""raw -> corpus: group messages into conversations, drop what is not a chat message.

One builder for every source: :func:`corpus_table` turns a raw Arrow table (``schemas.RAW_SCHEMA``)
into corpus rows (``schemas.CORPUS_SCHEMA``) plus an accounting dict ``{"read", "kept", "dropped":
{reason: n}}`` with ``read == kept + sum(dropped) == len(raw)``. A file source's whole raw table is
one piece; a streamed source's raw Parquet is fed piece by piece (``streaming.build_corpus_stream``,
pieces never split an upstream record). :func:`build_corpus` is the same builder for a pandas frame.

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

Drops (:data:`DROP_REASONS`, the one table of them), in this order (each row is counted once,
under the first reason that applies): ``duplicate`` (same file + message_id seen before),
``system``, ``context``, ``malformed``, ``invalid_encoding`` (a line that is not valid UTF-8),
``bot``, ``edit`` (an edit event a user export folded into the message it edits), ``deleted``
(a deleted message or its tombstone), ``empty_text`` (nothing left after stripping whitespace), ``too_long`` (more than
``MAX_MESSAGE_CHARS`` characters: a paste, not chat).

Rows are sorted by ``conversation_id``, then file and message_id. ``message_idx`` is the 0-based
file order inside the conversation, after drops. ``reply_to`` is the ``message_idx`` of the latest
gold parent (largest message_id) that is kept and is not the message itself, else null. ``split``
is ``split_hint`` where the raw row has one, else a stable hash split: the first 8 bytes of
sha256(conversation_id) as a fraction of 2**64, compared with the cumulative ``split_fractions``
(train, dev, test). A conversation never spans splits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from thread_embed_pipeline.schemas import CORPUS_COLUMNS, CORPUS_SCHEMA, SPLITS, hash_split_array, raw_table

# a "message" longer than this is a paste or a dump, not chat (and would cost a 1 MB tokenisation)
MAX_MESSAGE_CHARS = 20_000
# the record types a parser may emit; every one but "message" is a drop reason of its own ("bot", "edit"
# and "deleted" come from user exports, whose platforms say which posts are bots, edit events or deletions)
RECORD_TYPES: tuple[str, ...] = ("message", "system", "context", "malformed", "invalid_encoding", "bot", "edit", "deleted")
# the drop reasons in the order they are tried: a row counts under the first that applies
DROP_REASONS: tuple[str, ...] = ("duplicate", *RECORD_TYPES[1:], "empty_text", "too_long")
_STEM_SUFFIXES = (".ascii.txt", ".annotation.txt", ".xml.out", ".xml", ".annot", ".txt")
_NO_ID = np.iinfo(np.int64).max


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


class _Links:
    """The reply links of a raw table: one (child row, parent row, parent message_id) per listed
    parent that names a row of the same file (its first occurrence, when an id repeats)."""

    def __init__(self, fcode: np.ndarray, mids: np.ndarray, parent_ids: pa.ChunkedArray | pa.Array) -> None:
        n = len(mids)
        lengths = np.asarray(pc.fill_null(pc.list_value_length(parent_ids), 0), dtype=np.int64)
        child = np.repeat(np.arange(n, dtype=np.int64), lengths)
        parent_mid = np.asarray(pc.list_flatten(parent_ids), dtype=np.int64)
        first = ~pd.DataFrame({"f": fcode, "m": mids}).duplicated(keep="first").to_numpy()
        index = pd.MultiIndex.from_arrays([fcode[first], mids[first]])
        found = index.get_indexer(pd.MultiIndex.from_arrays([fcode[child], parent_mid])) if len(child) else np.zeros(0, np.int64)
        ok = found >= 0
        self.n = n
        self.child = child[ok]
        self.parent = np.flatnonzero(first)[found[ok]]
        self.parent_mid = parent_mid[ok]

    def components(self, nodes: np.ndarray) -> np.ndarray:
        """A component label per row, over the links between rows where ``nodes`` is True."""
        ok = nodes[self.child] & nodes[self.parent]
        graph = coo_matrix((np.ones(int(ok.sum()), dtype=np.int8), (self.child[ok], self.parent[ok])), shape=(self.n, self.n))
        return connected_components(graph, directed=True, connection="weak")[1].astype(np.int64)


def _codes(column) -> tuple[np.ndarray, list]:
    """Integer codes of a string column that sort like its values, and the sorted distinct values."""
    enc = pc.dictionary_encode(column)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    values = enc.dictionary
    order = np.asarray(pc.sort_indices(values), dtype=np.int64)
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = np.arange(len(values))
    return rank[np.asarray(enc.indices, dtype=np.int64)], values.take(pa.array(order)).to_pylist()


def corpus_table(raw: pa.Table | pd.DataFrame, *, source: str, platform: str, split_fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> tuple[pa.Table, dict]:
    """Corpus rows (``CORPUS_SCHEMA``, sorted by conversation_id, message_idx) of one raw piece, and the accounting."""
    _check_fractions(split_fractions)
    table = raw_table(raw)
    n = table.num_rows
    fcode, files = _codes(table.column("file"))
    mids = np.asarray(table.column("message_id"), dtype=np.int64)
    rtype = np.asarray(table.column("record_type").to_numpy(zero_copy_only=False), dtype=object)

    # --- drops: the first reason of DROP_REASONS that applies --------------------------------
    text = pc.utf8_trim_whitespace(table.column("text"))
    length = np.asarray(pc.fill_null(pc.utf8_length(text), 0), dtype=np.int64)
    conditions = {
        "duplicate": pd.DataFrame({"f": fcode, "m": mids}).duplicated(keep="first").to_numpy(),
        **{kind: rtype == kind for kind in RECORD_TYPES[1:]},
        "empty_text": length == 0,
        "too_long": length > MAX_MESSAGE_CHARS,
    }
    taken = np.zeros(n, dtype=bool)
    dropped = {}
    for reason in DROP_REASONS:
        hit = conditions[reason] & ~taken
        dropped[reason] = int(hit.sum())
        taken |= hit
    keep = ~taken
    unknown = keep & (rtype != "message")
    if unknown.any():
        raise ValueError(f"unknown record_type values {sorted(set(map(str, rtype[unknown])))}")

    # --- conversations: the upstream key, else the component's smallest annotated message_id ---
    stems = pa.array([file_stem(f) for f in files], pa.string()).take(pa.array(fcode))
    keys = table.column("conversation_key")
    keyed = np.asarray(pc.is_valid(keys), dtype=bool)
    links = _Links(fcode, mids, table.column("parent_ids"))
    labels = links.components(~keyed)
    annotated = ~keyed & (rtype != "context")
    first = pd.Series(np.where(annotated, mids, _NO_ID)).groupby(labels).transform("min").to_numpy()
    thread = pc.if_else(pa.array(keyed), pc.cast(keys, pa.string()), pc.cast(pa.array(first), pa.string()))
    conv = pc.binary_join_element_wise(pa.scalar(source, pa.string()), stems, thread, "/")
    if isinstance(conv, pa.ChunkedArray):
        conv = conv.combine_chunks()

    # --- kept rows in (conversation, file, message_id) order; message_idx ---------------------
    kidx = np.flatnonzero(keep)
    conv_code, _ = _codes(conv.take(pa.array(kidx)))
    conv_of = np.full(n, -1, dtype=np.int64)
    conv_of[kidx] = conv_code
    order = kidx[np.lexsort((mids[kidx], fcode[kidx], conv_of[kidx]))]
    m = len(order)
    new_group = np.ones(m, dtype=bool)
    new_group[1:] = conv_of[order[1:]] != conv_of[order[:-1]]
    starts = np.flatnonzero(new_group)
    message_idx = np.arange(m) - np.repeat(starts, np.diff(np.append(starts, m)))
    idx_of = np.full(n, -1, dtype=np.int64)
    idx_of[order] = message_idx

    # --- reply_to: the latest kept parent of the same conversation, not the message itself -----
    child, parent = links.child, links.parent
    ok = keep[child] & keep[parent] & (parent != child) & (conv_of[child] == conv_of[parent])
    reply = np.full(n, -1, dtype=np.int64)
    if ok.any():
        c, p, pm = child[ok], parent[ok], links.parent_mid[ok]
        last = np.lexsort((pm, c))  # by child, then parent message_id: the last of each child wins
        c, p = c[last], p[last]
        is_last = np.append(c[1:] != c[:-1], True)
        reply[c[is_last]] = idx_of[p[is_last]]
    reply = reply[order]

    # --- split: upstream's where given, else the stable hash of the conversation id ------------
    take = pa.array(order)
    conv_sorted = conv.take(take)
    split = table.column("split_hint").take(take).combine_chunks()
    need = pc.is_null(split)
    if pc.any(need).as_py():
        needed = pc.dictionary_encode(conv_sorted.filter(need))
        hashed = hash_split_array(needed.dictionary, split_fractions).take(needed.indices)
        split = pc.replace_with_mask(split, need, hashed)
    out = pa.table(
        {
            "conversation_id": conv_sorted,
            "source": pa.array([source] * m, pa.string()),
            "platform": pa.array([platform] * m, pa.string()),
            "channel": table.column("channel").take(take),
            "message_idx": pa.array(message_idx, pa.int64()),
            "timestamp": table.column("timestamp").take(take),
            "author": table.column("author").take(take),
            "text": text.take(take),
            "reply_to": pa.array(reply, pa.int64(), mask=reply < 0),
            "split": split,
        },
        schema=CORPUS_SCHEMA,
    )
    accounting = {"read": n, "kept": m, "dropped": dropped}
    assert accounting["read"] == accounting["kept"] + sum(dropped.values())
    return out, accounting


def corpus_frame(table: pa.Table) -> pd.DataFrame:
    """A corpus table as the pandas stages take it (object strings, nullable ``reply_to``)."""
    frame = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    return frame.astype(
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
    )[list(CORPUS_COLUMNS)]


# CORPUS_SCHEMA with the pandas metadata of corpus_frame's dtypes: a corpus Parquet file written with
# it reads back (pd.read_parquet) exactly as corpus_frame gives it, nullable reply_to included
_ONE_ROW = pa.table(
    {"conversation_id": ["s/f/1"], "source": ["s"], "platform": ["irc"], "channel": ["c"], "message_idx": [0], "timestamp": pa.array([0], pa.timestamp("ns")),
     "author": ["a"], "text": ["t"], "reply_to": pa.array([None], pa.int64()), "split": ["train"]},
    schema=CORPUS_SCHEMA,
)
CORPUS_PANDAS_SCHEMA = CORPUS_SCHEMA.with_metadata(pa.Schema.from_pandas(corpus_frame(_ONE_ROW), preserve_index=False).metadata)


def build_corpus(
    raw: pd.DataFrame,
    *,
    source: str,
    platform: str,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
) -> tuple[pd.DataFrame, dict]:
    """:func:`corpus_table` of a raw pandas frame, as a pandas frame."""
    table, accounting = corpus_table(raw, source=source, platform=platform, split_fractions=split_fractions)
    return corpus_frame(table), accounting


def link_components(raw: pd.DataFrame) -> np.ndarray:
    """Component label (int) per row of ``raw`` from the ``parent_ids`` links within each file.

    Parents that name no row of the same file are ignored. Rows are nodes; labels are arbitrary.
    """
    table = raw_table(raw)
    fcode, _ = _codes(table.column("file"))
    links = _Links(fcode, np.asarray(table.column("message_id"), dtype=np.int64), table.column("parent_ids"))
    return links.components(np.ones(table.num_rows, dtype=bool))


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
