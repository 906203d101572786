"""Parser for the Slack (MSR'20) and Discord (DISCO, MSR'22) disentangled-chat XML files.

Layout (root ``<slack>`` or ``<discord>``)::

    <slack><team_domain>racket</team_domain><channel_name>general</channel_name>
      <start_date/><end_date/>
      <message conversation_id="N"><ts>ISO-8601</ts><user>name</user><text>...</text></message>
      ...

One raw row per ``<message>`` element: ``line`` is the line of its start tag (expat's
``CurrentLineNumber``), ``message_id`` the 0-based running index in the file,
``conversation_key`` the ``conversation_id`` attribute (a string; unique only within a file),
``channel`` ``"<team_domain>/<channel_name>"``, ``timestamp`` the ``<ts>`` (naive), no split hint
and no parent links.

Irregularities found in the real mirror and how they are handled:

* ``data/racket/2017/merged-racket-general.xml`` line 16244: one message has two ``<text>``
  children (an empty ``<text />`` followed by the real one). The non-empty texts of a message
  are joined with a newline.
* Discord text is escaped Python-style upstream (``i\\'m``, ``#\\\\2`` for the Racket char
  ``#\\2``); with ``unescape=True`` (the Discord source) ``\\'``, ``\\"`` and ``\\\\`` are undone
  in one pass. Slack text is *not* escaped that way (its ``\\"`` are real, inside code), so the
  Slack source leaves it alone.

Broken XML raises :class:`SourceParseError` with the file and the line expat reports; a
``<message>`` without ``conversation_id`` or with an unreadable ``<ts>`` does too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from xml.parsers import expat

import numpy as np
import pandas as pd

from .parsing import concat_columns, raw_frame, undo_backslash_escapes
from .errors import MIRROR_HINT, SourceDataError, SourceParseError

_FIELDS = ("ts", "user", "text")
_HEADER = ("team_domain", "channel_name")


def _line_at(lines: list[str], lineno: int) -> str | None:
    return lines[lineno - 1] if 1 <= lineno <= len(lines) else None


def parse_chat_xml_file(root: Path, rel: str, *, source: str, unescape: bool = False) -> dict[str, list]:
    """Columns (dict of lists) for one Slack/Discord XML file."""
    path = Path(root) / rel
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SourceDataError(f"source file {path} ({rel}) is missing; {MIRROR_HINT}") from None

    parser = expat.ParserCreate()
    parser.buffer_text = True
    stack: list[str] = []
    header: dict[str, str] = {}
    messages: list[dict] = []
    current: dict | None = None
    buf: list[str] | None = None
    bad: list[tuple[int, str]] = []

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal current, buf
        stack.append(name)
        depth = len(stack)
        if name == "message" and depth == 2:
            current = {
                "line": parser.CurrentLineNumber,
                "key": attrs.get("conversation_id"),
                "ts": None,
                "user": None,
                "text": [],
            }
            if not current["key"]:
                bad.append((parser.CurrentLineNumber, "a <message> with a conversation_id attribute"))
        elif current is not None and depth == 3 and name in _FIELDS:
            buf = []
        elif depth == 2 and name in _HEADER:
            buf = []

    def chars(text: str) -> None:
        if buf is not None:
            buf.append(text)

    def end(name: str) -> None:
        nonlocal current, buf
        depth = len(stack)
        stack.pop()
        if name == "message" and depth == 2 and current is not None:
            messages.append(current)
            current = None
        elif buf is not None and (depth == 3 or depth == 2):
            value = "".join(buf)
            buf = None
            if depth == 2:
                header[name] = value.strip()
            elif name == "text":
                current["text"].append(value)
            else:
                current[name] = value

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    lines: list[str] | None = None
    try:
        parser.Parse(data, True)
    except expat.ExpatError as e:
        lines = data.decode("utf-8", errors="replace").split("\n")
        raise SourceParseError(
            rel,
            e.lineno,
            f"well-formed XML ({expat.ErrorString(e.code)} at column {e.offset})",
            _line_at(lines, e.lineno),
        ) from None
    if bad:
        lines = data.decode("utf-8", errors="replace").split("\n")
        lineno, expected = bad[0]
        raise SourceParseError(rel, lineno, expected, _line_at(lines, lineno))

    ts_raw = pd.Series([m["ts"].strip() if m["ts"] else None for m in messages], dtype=object)
    ts = pd.to_datetime(ts_raw, format="ISO8601", errors="coerce")
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    unreadable = ts.isna() & ts_raw.notna()
    if unreadable.any():
        i = int(unreadable.to_numpy().nonzero()[0][0])
        lines = data.decode("utf-8", errors="replace").split("\n")
        lineno = messages[i]["line"]
        raise SourceParseError(rel, lineno, "a <message> with an ISO-8601 <ts>", _line_at(lines, lineno))

    def text_of(m: dict) -> str:
        parts = [t for t in m["text"] if t.strip()]
        text = "\n".join(parts)
        return undo_backslash_escapes(text) if unescape else text

    n = len(messages)
    channel = f"{header.get('team_domain', '')}/{header.get('channel_name', '')}"
    return {
        "source": [source] * n,
        "file": [rel] * n,
        "line": [m["line"] for m in messages],
        "split_hint": [None] * n,
        "channel": [channel] * n,
        "message_id": list(range(n)),
        "timestamp": ts.astype("datetime64[ns]").to_numpy(),
        "author": [m["user"].strip() if m["user"] is not None else None for m in messages],
        "text": [text_of(m) for m in messages],
        "conversation_key": [m["key"] for m in messages],
        "parent_ids": [[] for _ in range(n)],
        "record_type": ["message"] * n,
    }


def parse_chat_xml(root: Path, files: Sequence[str], *, source: str, unescape: bool = False) -> pd.DataFrame:
    """Raw rows for Slack/Discord XML files (``.xml`` / ``.xml.out``)."""
    parts = [parse_chat_xml_file(Path(root), rel, source=source, unescape=unescape) for rel in files]
    cols = concat_columns(parts)
    if parts:
        cols["timestamp"] = np.concatenate([p["timestamp"] for p in parts])
    return raw_frame(cols)
