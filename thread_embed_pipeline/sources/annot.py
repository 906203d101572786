"""Parser for Elsner & Charniak ``.annot`` files: ``T<thread> <secs> <user> :  text``.

One raw row per line. ``conversation_key`` is the thread id (``"17"`` for ``T17``), ``timestamp``
is NaT (the file only has a seconds offset from an unknown start; row order is the order), and
``message_id`` is the 0-based running index of the line.

Also home of the two helpers every parser shares: :func:`raw_frame` (column order and dtypes of
the raw table) and :func:`undo_backslash_escapes`.

What the real data holds (discord_disco ``codi-annot/python_march_2020_algorithm.annot``,
56,763 lines, 1,328 threads): every line has the shape above, except that 193 lines carry no
text at all (``T26 50855 Dima :`` - the two spaces after the colon are missing too). Those are
accepted as messages with empty text (the corpus stage drops them as ``empty_text``). Any other
line is a :class:`SourceParseError`. The text is Discord text escaped Python-style upstream
(``i\\'m``, ``\\\\o/``), so the Discord source parses it with ``unescape=True``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thread_embed_pipeline.schemas import RAW_COLUMNS

from .errors import MIRROR_HINT, SourceDataError, SourceParseError

ANNOT_LINE = re.compile(r"^T(\d+) (-?\d+) (\S+) :(?:  (.*))?$")
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


def parse_annot_file(root: Path, rel: str, *, source: str, channel: str, unescape: bool = False) -> dict[str, list]:
    """Columns (dict of lists) for one ``.annot`` file."""
    lines, bad = read_lines_checked(Path(root) / rel, rel)
    cols: dict[str, list] = {k: [] for k in ("line", "message_id", "author", "text", "conversation_key")}
    for i, line in enumerate(lines):
        m = ANNOT_LINE.match(line)
        if m is None:
            raise SourceParseError(rel, i + 1, "a line 'T<thread> <secs> <user> :  text'", line)
        text = m.group(4) or ""
        cols["line"].append(i + 1)
        cols["message_id"].append(i)
        cols["author"].append(m.group(3))
        cols["text"].append(undo_backslash_escapes(text) if unescape else text)
        cols["conversation_key"].append(m.group(1))
    n = len(lines)
    cols.update(
        source=[source] * n,
        file=[rel] * n,
        split_hint=[None] * n,
        channel=[channel] * n,
        timestamp=[pd.NaT] * n,
        record_type=["invalid_encoding" if i in bad else "message" for i in range(n)],
    )
    return cols


def concat_columns(parts: Sequence[Mapping[str, Sequence[Any]]]) -> dict[str, list]:
    out: dict[str, list] = {}
    for part in parts:
        for k, v in part.items():
            out.setdefault(k, []).extend(v)
    if not out:
        out = {k: [] for k in RAW_COLUMNS}
    return out


def parse_annot(
    root: Path,
    files: Sequence[str],
    *,
    source: str,
    channels: Mapping[str, str] | None = None,
    unescape: bool = False,
) -> pd.DataFrame:
    """Raw rows for ``.annot`` files; ``channels`` maps a relative path to its channel name
    (default: the file's stem)."""
    channels = channels or {}
    parts = [
        parse_annot_file(root, rel, source=source, channel=channels.get(rel, Path(rel).stem), unescape=unescape)
        for rel in files
    ]
    return raw_frame(concat_columns(parts))
