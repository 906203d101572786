"""What every file parser shares: the raw table's column order and dtypes, line reading that keeps
upstream line numbers and flags invalid UTF-8, column concatenation, and undoing upstream's
Python-style backslash escapes."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thread_embed_pipeline.schemas import RAW_COLUMNS

from .errors import MIRROR_HINT, SourceDataError

_BACKSLASH_ESCAPE = re.compile(r"\\([\\'\"])")


def undo_backslash_escapes(text: str) -> str:
    r"""Undo the Python-repr style escaping of upstream Discord text: ``\'`` ``\"`` ``\\``.

    One left-to-right pass, so ``\\'`` (an escaped backslash followed by a quote) comes out as
    ``\'``. Evidence that backslashes are escaped too: the Racket char literal ``#\2`` appears
    as ``#\\2`` in the racket-general Discord files.
    """
    return _BACKSLASH_ESCAPE.sub(r"\1", text) if "\\" in text else text


def raw_frame(columns: Mapping[str, Sequence[Any]]) -> pd.DataFrame:
    """A raw table with exactly RAW_COLUMNS, in order, with the agreed dtypes."""
    n = len(columns["line"])
    data = {}
    for name in RAW_COLUMNS:
        values = columns.get(name)
        if values is None:
            values = [[] for _ in range(n)] if name == "parent_ids" else [None] * n
        data[name] = values
    df = pd.DataFrame(
        {
            "source": pd.Series(data["source"], dtype=object),
            "file": pd.Series(data["file"], dtype=object),
            "line": pd.Series(data["line"], dtype="int64"),
            "split_hint": pd.Series(data["split_hint"], dtype=object),
            "channel": pd.Series(data["channel"], dtype=object),
            "message_id": pd.Series(data["message_id"], dtype="int64"),
            "timestamp": _timestamp_series(data["timestamp"]),
            "author": pd.Series(data["author"], dtype=object),
            "text": pd.Series(data["text"], dtype=object),
            "conversation_key": pd.Series(data["conversation_key"], dtype=object),
            "parent_ids": pd.Series(data["parent_ids"], dtype=object),
            "record_type": pd.Series(data["record_type"], dtype=object),
        },
        columns=list(RAW_COLUMNS),
    )
    return df


def _timestamp_series(values: Sequence[Any]) -> pd.Series:
    if isinstance(values, np.ndarray) and np.issubdtype(values.dtype, np.datetime64):
        return pd.Series(values.astype("datetime64[ns]"))
    return pd.Series(pd.to_datetime(pd.Series(values, dtype=object)), dtype="datetime64[ns]")


def read_lines(path: Path, rel: str) -> list[str]:
    """Lines of a text file split on ``\\n`` only (never on ``\\r``/form feeds: line numbers
    must match upstream), without the empty string after a final newline. Invalid UTF-8 is
    replaced (U+FFFD); :func:`read_lines_checked` says which lines had any."""
    return read_lines_checked(path, rel)[0]


def read_lines_checked(path: Path, rel: str) -> tuple[list[str], set[int]]:
    """``read_lines`` plus the 0-based indices of the lines that are not valid UTF-8 (their
    rows become ``record_type == "invalid_encoding"``: a counted drop, never silently mangled text)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SourceDataError(f"source file {path} ({rel}) is missing; {MIRROR_HINT}") from None
    try:
        lines = data.decode("utf-8").split("\n")
        bad: set[int] = set()
    except UnicodeDecodeError:
        raw_lines = data.split(b"\n")
        lines, bad = [], set()
        for i, raw in enumerate(raw_lines):
            try:
                lines.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                lines.append(raw.decode("utf-8", errors="replace"))
                bad.add(i)
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines], bad


def concat_columns(parts: Sequence[Mapping[str, Sequence[Any]]]) -> dict[str, list]:
    out: dict[str, list] = {}
    for part in parts:
        for k, v in part.items():
            out.setdefault(k, []).extend(v)
    if not out:
        out = {k: [] for k in RAW_COLUMNS}
    return out
