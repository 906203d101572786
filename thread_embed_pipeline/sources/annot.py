"""Parser for Elsner & Charniak ``.annot`` files: ``T<thread> <secs> <user> :  text``.

One raw row per line. ``conversation_key`` is the thread id (``"17"`` for ``T17``), ``timestamp``
is NaT (the file only has a seconds offset from an unknown start; row order is the order), and
``message_id`` is the 0-based running index of the line.

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

import pandas as pd

from .errors import SourceParseError
from .parsing import concat_columns, raw_frame, read_lines_checked, undo_backslash_escapes

ANNOT_LINE = re.compile(r"^T(\d+) (-?\d+) (\S+) :(?:  (.*))?$")


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
