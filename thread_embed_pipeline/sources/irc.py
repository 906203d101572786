"""Parser for the Ubuntu IRC disentanglement data (Kummerfeld et al., ACL 2019).

Files come in pairs under ``data/{train,dev,test}/``: ``<stem>.ascii.txt`` (one message per
line, 0-based line index = message id) and ``<stem>.annotation.txt`` (lines ``A B -``: message
B replies to A; ``A A -`` marks a conversation start or a system message).

One raw row per text line:

* ``record_type``: ``context`` for every line before the file's first annotated index (the
  smallest B in the annotation file; 1000 for all #ubuntu files) whatever its shape - author,
  text and parent links are still filled in so the link graph can use them; otherwise
  ``message``, ``system`` or ``malformed`` from the line shape.
* ``parent_ids``: sorted, de-duplicated list of every A linked to this line, *including* the
  line itself for ``A A -`` self links.
* ``timestamp``: date from the file name + ``[HH:MM]``. The file name date is the date of the
  first annotated line; the day is shifted by one wherever the clock jumps back by more than 12
  hours (a midnight inside the file), so context lines before a midnight get the previous day.
  Some 2004-2007 logs use a 12-hour clock (``12:59`` followed by ``01:00``); that is not
  guessed at. Lines without a time (system lines) get NaT.
* ``channel`` is ``"ubuntu"``; ``split_hint`` is the folder (train/dev/test).

Line shapes in the real mirror (247,963 lines in 173 files):

* ``[HH:MM] <nick> text`` - message (221,619 lines).
* ``=== nick has joined #ubuntu`` etc. - system (25,783 lines; none carries a timestamp in
  this copy, but ``[HH:MM] === ...`` is accepted too). author and text are None.
* ``[HH:MM]  * nick text`` - action (513 lines; note the *two* spaces upstream, one is
  accepted too): message with ``author=nick`` and ``text`` = the action text without the
  ``* nick`` prefix (so it formats as ``nick: waves``). Four actions have no text at all
  (``[07:09]  * homejoe``); they become messages with empty text.
* ``[HH:MM] -nick:#ubuntu- text`` - a channel NOTICE (47 lines, all one spam burst in the
  context of ``train/2006-12-20.train-c``): message with ``author=nick``.
* anything else - ``malformed``, kept with ``author=None`` and the whole line as ``text`` so
  the accounting balances. The real data has exactly one such line:
  ``train/2006-12-06.train-c.ascii.txt`` line 863 ``[01:09] (soundray/#ubuntu) thomas: ...``
  (a relayed message); it lies in the context region, so its record_type is ``context``.

Errors: an annotation line that is not ``<int> <int> -`` (trailing spaces are fine, blank lines
are skipped) or an index past the end of the text file raises :class:`SourceParseError` naming
the annotation file and line. A missing annotation file raises :class:`SourceDataError`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from .parsing import concat_columns, raw_frame, read_lines, read_lines_checked
from .errors import MIRROR_HINT, SourceDataError, SourceParseError

TEXT_SUFFIX = ".ascii.txt"
ANNOTATION_SUFFIX = ".annotation.txt"
CHANNEL = "ubuntu"
SPLIT_FOLDERS = ("train", "dev", "test")

_MESSAGE = re.compile(r"^\[(\d\d):(\d\d)\] <([^>\s]+)> ?(.*)$")
_ACTION = re.compile(r"^\[(\d\d):(\d\d)\]  ?\* (\S+)(?: (.*))?$")
_NOTICE = re.compile(r"^\[(\d\d):(\d\d)\] -([^\s:]+):#\S*?- ?(.*)$")
_SYSTEM = re.compile(r"^(?:\[(\d\d):(\d\d)\] )?=== ?(.*)$")
_TIME = re.compile(r"^\[(\d\d):(\d\d)\]")
_FILE_DATE = re.compile(r"^(\d{4}-\d\d-\d\d)")


def annotation_path_for(text_rel: str) -> str:
    return text_rel[: -len(TEXT_SUFFIX)] + ANNOTATION_SUFFIX


def classify_line(line: str) -> tuple[str, int | None, str | None, str | None]:
    """(kind, minute of day or None, author, text) for one text line; kind in
    message/system/malformed."""
    m = _MESSAGE.match(line)
    if m:
        return "message", int(m.group(1)) * 60 + int(m.group(2)), m.group(3), m.group(4)
    m = _SYSTEM.match(line)
    if m:
        minute = int(m.group(1)) * 60 + int(m.group(2)) if m.group(1) else None
        return "system", minute, None, None
    m = _ACTION.match(line)
    if m:
        return "message", int(m.group(1)) * 60 + int(m.group(2)), m.group(3), m.group(4) or ""
    m = _NOTICE.match(line)
    if m:
        return "message", int(m.group(1)) * 60 + int(m.group(2)), m.group(3), m.group(4)
    m = _TIME.match(line)
    minute = int(m.group(1)) * 60 + int(m.group(2)) if m else None
    return "malformed", minute, None, line


def read_annotation(root: Path, rel: str, n_lines: int) -> list[tuple[int, int]]:
    """Links (A, B) of one annotation file, validated against the text file's length."""
    path = Path(root) / rel
    if not path.is_file():
        raise SourceDataError(f"annotation file {path} ({rel}) is missing; {MIRROR_HINT}")
    links: list[tuple[int, int]] = []
    for i, line in enumerate(read_lines(path, rel)):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or parts[2] != "-" or not parts[0].isdigit() or not parts[1].isdigit():
            raise SourceParseError(rel, i + 1, "an annotation line '<int> <int> -'", line)
        a, b = int(parts[0]), int(parts[1])
        if a >= n_lines or b >= n_lines:
            raise SourceParseError(
                rel, i + 1, f"link indices below {n_lines} (the number of lines of the text file)", line
            )
        links.append((a, b))
    return links


def _timestamps(date: str | None, minutes: list[int | None], anchor: int) -> np.ndarray:
    n = len(minutes)
    out = np.full(n, np.datetime64("NaT"), dtype="datetime64[m]")
    if date is None or n == 0:
        return out.astype("datetime64[ns]")
    mins = np.array([-1 if m is None else m for m in minutes], dtype=np.int64)
    have = mins >= 0
    idx = np.flatnonzero(have)
    if len(idx) == 0:
        return out.astype("datetime64[ns]")
    vals = mins[idx]
    wraps = np.concatenate([[0], np.cumsum(np.diff(vals) < -12 * 60)])
    # anchor: the file-name date is the date of the first timestamped line at/after `anchor`
    pos = int(np.searchsorted(idx, anchor))
    base_wraps = wraps[min(pos, len(idx) - 1)]
    days = wraps - base_wraps
    out[idx] = np.datetime64(date, "m") + (days * 1440 + vals).astype("timedelta64[m]")
    return out.astype("datetime64[ns]")


def parse_irc_file(root: Path, rel: str, *, source: str) -> dict[str, list]:
    """Columns (dict of lists) for one ``.ascii.txt`` file and its annotation file."""
    lines, bad = read_lines_checked(Path(root) / rel, rel)
    n = len(lines)
    links = read_annotation(root, annotation_path_for(rel), n)
    first_annotated = min((b for _, b in links), default=n)
    parents: list[set[int]] = [set() for _ in range(n)]
    for a, b in links:
        parents[b].add(a)

    kinds, minutes, authors, texts = [], [], [], []
    for line in lines:
        kind, minute, author, text = classify_line(line)
        kinds.append(kind)
        minutes.append(minute)
        authors.append(author)
        texts.append(text)
    record_types = ["context" if i < first_annotated else "invalid_encoding" if i in bad else k for i, k in enumerate(kinds)]

    p = PurePosixPath(rel)
    folder = p.parent.name
    m = _FILE_DATE.match(p.name)
    return {
        "source": [source] * n,
        "file": [rel] * n,
        "line": list(range(1, n + 1)),
        "split_hint": [folder if folder in SPLIT_FOLDERS else None] * n,
        "channel": [CHANNEL] * n,
        "message_id": list(range(n)),
        "timestamp": _timestamps(m.group(1) if m else None, minutes, first_annotated),
        "author": authors,
        "text": texts,
        "conversation_key": [None] * n,
        "parent_ids": [sorted(s) for s in parents],
        "record_type": record_types,
    }


def parse_irc(root: Path, files: Sequence[str], *, source: str = "irc_disentangle") -> pd.DataFrame:
    """Raw rows for every ``*.ascii.txt`` in ``files`` (annotation paths in ``files`` are
    ignored: each text file's annotation file is found next to it)."""
    texts = [f for f in files if f.endswith(TEXT_SUFFIX)]
    parts = [parse_irc_file(Path(root), rel, source=source) for rel in sorted(texts)]
    cols = concat_columns(parts)
    if parts:
        cols["timestamp"] = np.concatenate([p["timestamp"] for p in parts])
    return raw_frame(cols)
