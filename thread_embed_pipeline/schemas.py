"""Column contracts shared by every stage, and the one message-window formatter.

Each stage is a pure function over pandas DataFrames; these constants are the
contract between them (and what the asset checks verify).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa

# The progress callback every stage takes (``context.log.info`` in an asset, ``print`` in a CLI);
# None: silent.
Log = Callable[[str], None] | None


def is_missing(value) -> bool:
    """None, pd.NA or a float NaN: a cell with no value (what a Parquet null reads back as)."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def hash_fraction(key: str) -> float:
    """A uniform number in [0, 1) from sha256(key): stable across runs, machines and Pythons (the
    splits of conversations, the samples of streamed files and units)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2.0**64


def timeline_of(conversation_id: str) -> str:
    """The timeline (channel log / file) of a conversation: everything before the last ``/`` of its id."""
    return conversation_id.rsplit("/", 1)[0]

# raw/<source>: one row per input line (IRC, .annot) or XML <message> element.
RAW_COLUMNS: tuple[str, ...] = (
    "source",  # registry name, e.g. "irc_disentangle"
    "file",  # path relative to the source's mirror root, e.g. "data/test/2005-07-06_14.ascii.txt"
    "line",  # 1-based line number in `file` (XML: line of the <message> start tag)
    "split_hint",  # upstream split ("train"/"dev"/"test") where upstream defines one, else None
    "channel",  # channel or file-level grouping, e.g. "ubuntu", "racket/general"
    "message_id",  # id unique within `file` (IRC: 0-based line index; XML/annot: running index)
    "timestamp",  # pandas Timestamp (naive UTC) or NaT
    "author",  # nick / anonymised user, None for system lines
    "text",  # message text, None for system lines
    "conversation_key",  # upstream conversation id within file (XML/.annot), None for IRC
    "parent_ids",  # list[int] of message_ids this message replies to (IRC gold links), else []
    "record_type",  # "message" | "system" | "context" | "malformed" | "invalid_encoding"
)

# corpus/<source>: one row per kept message.
CORPUS_COLUMNS: tuple[str, ...] = (
    "conversation_id",  # globally unique: "<source>/<file stem>/<thread key>"
    "source",
    "platform",  # "irc" | "slack" | "discord"
    "channel",
    "message_idx",  # 0-based position of the message inside its conversation (chronological)
    "timestamp",  # nullable
    "author",
    "text",
    "reply_to",  # nullable int: message_idx (same conversation) of the gold parent, if any
    "split",  # "train" | "dev" | "test"
)

# The Arrow types of the raw and corpus columns: the out-of-core writers' Parquet schemas and the
# streamed parsers' record batches (the pandas stages produce the same dtypes).
RAW_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("file", pa.string()),
        ("line", pa.int64()),
        ("split_hint", pa.string()),
        ("channel", pa.string()),
        ("message_id", pa.int64()),
        ("timestamp", pa.timestamp("ns")),
        ("author", pa.string()),
        ("text", pa.string()),
        ("conversation_key", pa.string()),
        ("parent_ids", pa.list_(pa.int64())),
        ("record_type", pa.string()),
    ]
)
CORPUS_SCHEMA = pa.schema(
    [
        ("conversation_id", pa.string()),
        ("source", pa.string()),
        ("platform", pa.string()),
        ("channel", pa.string()),
        ("message_idx", pa.int64()),
        ("timestamp", pa.timestamp("ns")),
        ("author", pa.string()),
        ("text", pa.string()),
        ("reply_to", pa.int64()),
        ("split", pa.string()),
    ]
)


def raw_table(raw: "pa.Table | pd.DataFrame") -> pa.Table:
    """A raw table (pandas or Arrow, extra columns ignored) as Arrow in ``RAW_SCHEMA``; missing columns are an error."""
    columns = raw.column_names if isinstance(raw, pa.Table) else raw.columns
    missing = missing_columns(columns, RAW_COLUMNS)
    if missing:
        raise ValueError(f"raw table lacks columns {missing}")
    if isinstance(raw, pd.DataFrame):
        frame = raw[list(RAW_COLUMNS)].reset_index(drop=True)
        frame = frame.assign(parent_ids=frame["parent_ids"].map(lambda p: [int(x) for x in p] if p is not None else []))
        return pa.Table.from_pandas(frame, schema=RAW_SCHEMA, preserve_index=False)
    return raw.select(list(RAW_COLUMNS)).cast(RAW_SCHEMA)


class RawPiece(NamedTuple):
    """One piece of a source's raw stream: its rows (``RAW_SCHEMA``; None when the sample kept no
    record of this batch), how many upstream units (records, servers, files) it read and kept, and
    what the reader counted that no row shows (a user export's ``replies/parent_missing``, ...)."""

    table: pa.Table | None
    units_read: int
    units_kept: int
    counts: dict[str, int] | None = None


if tuple(RAW_SCHEMA.names) != RAW_COLUMNS or tuple(CORPUS_SCHEMA.names) != CORPUS_COLUMNS:  # pragma: no cover - a typo here
    raise ImportError("schemas: RAW_SCHEMA / CORPUS_SCHEMA must list RAW_COLUMNS / CORPUS_COLUMNS in order")

# pairs/<source> and training_pairs.
PAIR_SORT_KEY: tuple[str, ...] = (
    "anchor",
    "positive",
    "strategy",  # "thread" | "query_response" | "adjacency"
    "source",
    "conversation_id",
    "split",
)
# where each side's messages are: the message_idx span [start, end) of its conversation in the text
# stage's corpus (what the pairs were built from; hard negatives find the anchor's times by it)
PAIR_SPAN_COLUMNS: tuple[str, ...] = ("anchor_start", "anchor_end", "positive_start", "positive_end")
PAIR_COLUMNS: tuple[str, ...] = (*PAIR_SORT_KEY, *PAIR_SPAN_COLUMNS)
# optional: a hard negative per pair (text or null), added by pairs.hard_negatives.add_chat_hard_negatives
NEGATIVE_COLUMN = "negative"

# eval_sets: a normalised table of queries and documents (maps 1:1 onto BEIR corpus/queries/qrels).
EVAL_SET_COLUMNS: tuple[str, ...] = (
    "eval_set",  # "threadembed" for the project's own sets, else the registered name of an external set
    "source",
    "task",  # "thread" | "response"
    "record_type",  # "query" | "document"
    "record_id",  # unique within (eval_set, source, task)
    "conversation_id",
    "text",
    "positive_id",  # query rows: record_id of the relevant document; document rows: None
    "candidate_ids",  # query rows: list of document record_ids (positive first, then distractors); else []
    "relevant_ids",  # query rows: every relevant document record_id (own sets: [positive_id]; BEIR qrels may list several); else []
    "messages",  # document rows of the own sets: the document's messages (``format_message`` each; ``text`` is them joined
    # by newlines), so a thread can be scored message by message (max-sim); else [] (external documents have no boundaries)
)

OWN_EVAL_SET = "threadembed"

SPLITS: tuple[str, ...] = ("train", "dev", "test")


def hash_split(key: str, split_fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> str:
    u = hash_fraction(key)
    acc = 0.0
    for name, frac in zip(SPLITS, split_fractions, strict=True):
        acc += frac
        if u < acc:
            return name
    return SPLITS[-1]


def hash_splits(keys: Sequence[str], split_fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> list[str]:
    """``hash_split`` of many keys at once (same values, without per-key call overhead)."""
    return hash_split_array(pa.array(list(keys), pa.string()), split_fractions).to_pylist()


def hash_split_array(keys: pa.Array, split_fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> pa.Array:
    """``hash_split`` of an Arrow string array, as one: sha256 in DuckDB, vectorised (a large export has
    hundreds of thousands of conversations), the same fraction as :func:`hash_fraction` to the bit."""
    import duckdb

    bounds = np.cumsum(np.asarray(split_fractions, dtype=np.float64))
    bounds[-1] = np.inf  # like hash_split: anything past the last bound falls in the last split
    if len(keys) == 0:
        return pa.array([], pa.string())
    split_keys = pa.table({"k": keys})  # noqa: F841 - read by DuckDB below
    with duckdb.connect() as con:
        top = con.sql("SELECT ('0x' || substr(sha256(k), 1, 16))::UBIGINT AS h FROM split_keys").to_arrow_table().column(0)
    u = np.asarray(top, dtype=np.uint64).astype(np.float64) / 2.0**64
    return pa.array(SPLITS, pa.string()).take(pa.array(np.searchsorted(bounds, u, side="right")))

PAIR_STRATEGIES: tuple[str, ...] = ("thread", "query_response", "adjacency")
# thread / response: the reference protocol (1 positive + up to 99 random distractors);
# concurrent_thread: candidates are the threads active in the same channel at the query's time;
# thread_full_corpus: thread retrieval ranked against every test thread of the source.
EVAL_TASKS: tuple[str, ...] = ("thread", "response", "concurrent_thread", "thread_full_corpus")
DEFAULT_EVAL_TASKS: tuple[str, ...] = ("thread", "response", "concurrent_thread")


def format_message(author: str | None, text: str) -> str:
    """One chat message as the model sees it: ``author: text``."""
    return f"{author}: {text}" if author else text


def format_window(authors: Sequence[str | None], texts: Sequence[str]) -> str:
    """A window of consecutive messages, one ``author: text`` line each.

    The single formatter used by pair building *and* evaluation, so the model is
    trained on exactly the text shape it is evaluated on.
    """
    if len(authors) != len(texts):
        raise ValueError(f"authors ({len(authors)}) and texts ({len(texts)}) differ in length")
    return "\n".join(format_message(a, t) for a, t in zip(authors, texts))


def missing_columns(columns: Iterable[str], expected: Sequence[str]) -> list[str]:
    have = set(columns)
    return [c for c in expected if c not in have]
