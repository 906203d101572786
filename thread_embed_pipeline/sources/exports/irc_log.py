"""Plain IRC channel logs (irssi, weechat, ZNC and the project's own ``[HH:MM] <nick> text``) as a user source.

An export is a folder, a ``.zip`` of one, or a single log file. **Every file is one timeline**: ``file`` is
its path in the export, ``channel`` the ``#name`` in that path (ZNC's ``<network>/#chan/<date>.log``,
irssi's ``#chan.log``, weechat's ``irc.<server>.#chan.weechatlog``), else the file's stem. Each file's
line style is detected from its first 200 non-blank lines (the style with the most matching lines):

``bracketed`` (plain, ZNC, eggdrop)
    ``[HH:MM] <nick> text`` or ``[HH:MM:SS] ...`` (ZNC's default timestamp); ``* nick action``;
    ``-nick- notice``; status lines ``*** Joins: nick (ident@host)`` (ZNC) or ``=== ...`` (with or
    without a time).
``irssi``
    ``HH:MM <nick> text`` with the nick-mode column (``<@nick>``, ``<+nick>``, ``< nick>``);
    ``HH:MM  * nick action``; ``HH:MM -!- nick [user@host] has joined #chan`` (every ``-!-`` line);
    ``-nick:#chan- notice``; the markers ``--- Log opened|Log closed Mon Jan 01 00:00:00 2020`` and
    ``--- Day changed Tue Jan 02 2020``.
``weechat``
    ``YYYY-MM-DD HH:MM:SS<TAB>prefix<TAB>message``: prefix a nick (mode char allowed) for a message,
    `` *`` for an action (``nick does x``), ``-->``/``<--``/``--``/``=!=`` (or empty) for joins, parts
    and quits, network lines (nick changes, modes, topics, notices) and errors. A line with no leading
    date is the rest of the previous message (weechat writes multi-line messages that way).

A file in none of these styles raises :class:`SourceParseError` naming it, its first line and the styles
expected. Inside a detected file every non-blank line is a row or counted:

* ``message``: said lines, actions and notices, ``author`` the nick without its mode char, ``text`` what
  was said (an action's text without the ``* nick`` prefix, as the mirrored Ubuntu logs are read, so it
  formats as ``nick: waves``; counted ``actions/as_message``; notices ``notices/as_message``). A line's
  IRC formatting codes (bold, colours, ...) are removed (``lines/formatting_stripped``).
* ``system``: joins, parts, quits, nick changes, modes, topics, kicks, network lines (``author`` None,
  ``text`` the line's event).
* ``malformed``: a line in no shape of its file's style, an impossible time or date, a line that is not
  UTF-8 (also ``lines/invalid_utf8``); ``text`` the line as read.
* counted, no row: ``lines/blank``, ``lines/log_marker`` (irssi's Log opened/closed, Day changed;
  weechat's ``****  Beginning of log  ****``), ``lines/continuation`` (weechat), ``files/empty``.

Nothing is linked: IRC has no threads, replies, edits, deletions, attachments or bot flags; every row has
no ``conversation_key`` and no ``parent_ids`` (conversations come from the project's disentangler,
``disentangle.link_export_timelines``). ``message_id`` is the row's 0-based index in its file.

Times: weechat lines carry their date. A time-only line takes the date of the latest ``Log opened`` /
``Day changed`` marker, else a ``YYYY-MM-DD`` (or ``YYYYMMDD``) in the file name, else 2000-01-01 (one count per
such file: ``dates/from_log_markers``, ``dates/from_file_name``, ``dates/default``); a clock that goes back without a marker is a midnight
(``dates/midnight_rollover``). Times are naive, taken as UTC (a log does not say its zone).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import PurePosixPath

from thread_embed_pipeline.schemas import RawPiece

from ..errors import SourceDataError, SourceParseError
from .rows import RawRows
from .tree import ExportTree

PIECE_ROWS = 50_000  # a piece is cut between files once it holds this many rows
DETECT_LINES = 200  # non-blank lines read to pick a file's style
DEFAULT_DATE = date(2000, 1, 1)
EXPECTED = (
    "an IRC log line: '[HH:MM] <nick> text' (plain, ZNC), 'HH:MM <nick> text' (irssi) "
    "or 'YYYY-MM-DD HH:MM:SS<TAB>nick<TAB>text' (weechat)"
)

_BRACKETED = re.compile(r"^\[(\d{1,2}):(\d{2})(?::(\d{2}))?\]\s+(.*)$")
_IRSSI = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2}))?\s+(.*)$")
_WEECHAT = re.compile(r"^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})\t(.*)$")
_MARKER = re.compile(r"^--- (Log opened|Log closed|Day changed)\b ?(.*)$")
_MARKER_DATE = re.compile(r"^(?:[A-Za-z]{3} )?([A-Za-z]{3}) +(\d{1,2})(?: (\d{2}):(\d{2}):(\d{2}))? (\d{4})$")
_UNTIMED_STATUS = re.compile(r"^=== ?(.*)$")
# the body of a timed line (bracketed and irssi styles)
_SAY = re.compile(r"^<\s*[~&@%+]?([^>\s]+)> ?(.*)$")  # irssi: "<@nick>", "< nick>" (empty mode), padded "<   nick>"
_STATUS = re.compile(r"^(?:-!-|\*\*\*|===)(?: (.*))?$")
_ZNC_STATUS = re.compile(r"^((?:Connected to|Disconnected from) IRC .*|Broadcast: .*)$")
_ACTION = re.compile(r"^\* ([^\s*]\S*)(?: (.*))?$")
_NOTICE = re.compile(r"^-([^\s:!]+)(?::\S*)?- ?(.*)$")
_MODE_CHARS = "~&@%+!"
# IRC formatting: bold, italics, underline, strike, monospace, reverse, reset, and colour codes (mIRC, hex)
_FORMATTING = re.compile(r"\x03(?:\d{1,2}(?:,\d{1,2})?)?|\x04(?:[0-9a-fA-F]{6}(?:,[0-9a-fA-F]{6})?)?|[\x02\x0f\x11\x16\x1d\x1e\x1f]")
_FILE_DATE = re.compile(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)")
_MONTHS = {m: k for k, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
_SUFFIXES = (".weechatlog", ".log", ".txt")


def read_export(tree: ExportTree, source: str) -> Iterator[RawPiece]:
    """Raw pieces of an IRC log export: every file whole, files grouped up to :data:`PIECE_ROWS` rows."""
    files = tree.files()
    if not files:
        raise SourceDataError(f"{tree.path}: the export holds no files (expected IRC log files)")
    rows = RawRows(source)
    total = 0
    for rel in files:
        total += _read_file(tree, rel, rows)
        rows.unit()
        if len(rows) >= PIECE_ROWS:
            yield rows.piece()
    if not total:
        raise SourceDataError(f"{tree.path}: no IRC log lines in the export ({len(files)} file(s), all empty or log markers only)")
    if len(rows) or rows.counts:
        yield rows.piece()


def channel_of(rel: str) -> str:
    """The ``#channel`` named by a log's path (nearest to the file first), else the file's stem."""
    path = PurePosixPath(rel)
    name = path.name
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    for part in (name, *reversed(path.parent.parts)):
        for mark in ("#", "&"):
            if mark in part:
                return part[part.index(mark):]
    return name


def _decode(raw: bytes) -> tuple[str, bool]:
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), False


def detect_style(lines: list[str]) -> str | None:
    """``weechat``, ``bracketed`` or ``irssi``: the style most of the first non-blank lines are in (None: none)."""
    votes = {"weechat": 0, "bracketed": 0, "irssi": 0}
    seen = 0
    for line in lines:
        if not line.strip():
            continue
        seen += 1
        if seen > DETECT_LINES:
            break
        if _WEECHAT.match(line):
            votes["weechat"] += 1
        elif _BRACKETED.match(line) or _UNTIMED_STATUS.match(line):
            votes["bracketed"] += 1
        elif _IRSSI.match(line) or _MARKER.match(line):
            votes["irssi"] += 1
    best = max(votes, key=lambda k: votes[k])
    return best if votes[best] else None


def _read_file(tree: ExportTree, rel: str, rows: RawRows) -> int:
    """Add one file's rows; returns how many."""
    data = tree.read_bytes(rel)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    decoded = [_decode(b[:-1] if b.endswith(b"\r") else b) for b in raw_lines]
    lines = [text for text, _ in decoded]
    if not any(line.strip() for line in lines):
        rows.count("files/empty")
        return 0
    style = detect_style(lines)
    if style is None:
        first = next(k for k, line in enumerate(lines) if line.strip())
        raise SourceParseError(tree.display(rel), first + 1, EXPECTED, lines[first])
    reader = _FileReader(rel, style, rows)
    for number, (line, ok) in enumerate(decoded, start=1):
        reader.line(number, line, ok)
    reader.done()
    channel = channel_of(rel)
    for message_id, row in enumerate(reader.pending):
        rows.add(file=rel, channel=channel, message_id=message_id, **row)
    return len(reader.pending)


class _FileReader:
    """One file's rows (``pending``), line by line, with its running date (time-only styles); counts go
    straight to ``rows``."""

    def __init__(self, rel: str, style: str, rows: RawRows) -> None:
        self.style, self.rows = style, rows
        self.pending: list[dict] = []
        self.day = DEFAULT_DATE
        self.prev: int | None = None  # the previous timed line's second of the day
        self.last_message: dict | None = None  # the latest row if a message (weechat continuations)
        self.dated_by = "default"
        if style != "weechat":
            match = _FILE_DATE.search(PurePosixPath(rel).name)
            found = _valid_date(*map(int, match.groups())) if match else None
            if found:
                self.day, self.dated_by = found, "from_file_name"

    def done(self) -> None:
        """Count where the file's dates came from (time-only styles)."""
        if self.style != "weechat":
            self.rows.count(f"dates/{self.dated_by}")

    def add(self, number: int, timestamp: object, author: str | None, text: str | None, record_type: str) -> None:
        row = {"line": number, "timestamp": timestamp, "author": author, "text": text, "record_type": record_type}
        self.pending.append(row)
        self.last_message = row if record_type == "message" else None

    def line(self, number: int, line: str, utf8: bool) -> None:
        if not line.strip():
            self.rows.count("lines/blank")
            return
        if not utf8:
            self.rows.count("lines/invalid_utf8")
            self.add(number, None, None, line, "malformed")
            return
        clean = _FORMATTING.sub("", line)
        if clean != line:
            self.rows.count("lines/formatting_stripped")
        if self.style == "weechat":
            self._weechat(number, clean)
        else:
            self._timed(number, clean)

    # -- bracketed / irssi ----------------------------------------------------------------------
    def _timed(self, number: int, line: str) -> None:
        marker = _MARKER.match(line)
        if marker:
            self._marker(marker[1], marker[2])
            return
        match = (_BRACKETED if self.style == "bracketed" else _IRSSI).match(line)
        if not match:
            status = _UNTIMED_STATUS.match(line)
            if status:
                self.add(number, None, None, status[1], "system")
            else:
                self.add(number, None, None, line, "malformed")
            return
        hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
        if hour > 23 or minute > 59 or second > 59:
            self.add(number, None, None, line, "malformed")
            return
        of_day = hour * 3600 + minute * 60 + second
        if self.prev is not None and of_day < self.prev:
            self.day += timedelta(days=1)
            self.rows.count("dates/midnight_rollover")
        self.prev = of_day
        when = datetime(self.day.year, self.day.month, self.day.day) + timedelta(seconds=of_day)
        self._body(number, when, match[4])

    def _body(self, number: int, when: datetime, body: str) -> None:
        said = _SAY.match(body)
        if said:
            self.add(number, when, said[1], said[2], "message")
            return
        status = _STATUS.match(body) or _ZNC_STATUS.match(body)
        if status:
            self.add(number, when, None, status[1] or "", "system")
            return
        action = _ACTION.match(body)
        if action:
            self.rows.count("actions/as_message")
            self.add(number, when, action[1].lstrip(_MODE_CHARS) or action[1], action[2] or "", "message")
            return
        notice = _NOTICE.match(body)
        if notice:
            self.rows.count("notices/as_message")
            self.add(number, when, notice[1], notice[2], "message")
            return
        self.add(number, when, None, body, "malformed")

    def _marker(self, kind: str, rest: str) -> None:
        self.rows.count("lines/log_marker")
        match = _MARKER_DATE.match(rest.strip())
        month = _MONTHS.get(match[1].lower()) if match else None
        day = _valid_date(int(match[6]), month, int(match[2])) if match and month else None
        if day is None:
            self.rows.count("dates/marker_unreadable")
            return
        self.day, self.dated_by = day, "from_log_markers"
        # "Day changed" has no time: the next line starts the day; "Log opened" says when (to the
        # minute: lines stamped HH:MM in that minute are not a midnight)
        self.prev = int(match[3]) * 3600 + int(match[4]) * 60 if match[3] else None

    # -- weechat --------------------------------------------------------------------------------
    def _weechat(self, number: int, line: str) -> None:
        match = _WEECHAT.match(line)
        if not match:
            if self.last_message is not None:  # a multi-line message's next line
                self.rows.count("lines/continuation")
                self.last_message["text"] += "\n" + line
            else:
                self.add(number, None, None, line, "malformed")
            return
        year, month, day, hour, minute, second = (int(match[k]) for k in range(1, 7))
        found = _valid_date(year, month, day)
        if found is None or hour > 23 or minute > 59 or second > 59:
            self.add(number, None, None, line, "malformed")
            return
        when = datetime(found.year, found.month, found.day, hour, minute, second)
        prefix, tab, message = match[7].partition("\t")
        if not tab:
            if "****" in prefix:  # logger.file.info_lines: "****  Beginning of log  ****"
                self.rows.count("lines/log_marker")
                self.last_message = None
            else:
                self.add(number, when, None, prefix, "system")
            return
        if prefix.strip() in ("", "-->", "<--", "--", "=!="):
            self.add(number, when, None, message, "system")
        elif prefix.strip() == "*":
            nick, _, text = message.partition(" ")
            self.rows.count("actions/as_message")
            self.add(number, when, nick.lstrip(_MODE_CHARS) or nick, text, "message")
        else:
            self.add(number, when, prefix.strip().lstrip(_MODE_CHARS) or prefix.strip(), message, "message")


def _valid_date(year: int, month: int | None, day: int) -> date | None:
    if month is None or not 1970 <= year <= 2100:
        return None
    try:
        return date(year, month, day)
    except ValueError:
        return None
