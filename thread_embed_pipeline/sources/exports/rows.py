"""What every export reader writes: raw rows (``schemas.RAW_SCHEMA``) with the platform's own thread
labels, and counts of what it folded, dropped or could not link.

The raw columns of a user export mean:

``file``
    the **timeline**: the channel the message was posted in, as a stable path inside the export
    (``general``, ``Acme/announcements``). Every message of a channel, its threads included, shares it,
    so pseudonyms are numbered per channel and concurrent-thread retrieval sees the channel.
``line``
    the message's 1-based position in the member it was read from (a JSON array's index + 1, a JSON
    Lines or text line number): with the member named in errors, where to look.
``message_id``
    an int64 unique within the timeline (a native numeric id, else a running index); ``parent_ids``
    name the parent's ``message_id`` when the parent is in the export.
``conversation_key``
    the platform's own thread label where it has one (Slack ``thread_ts``, a Zulip topic, a Discord
    thread channel, a Matrix thread root); None for reply chains, which the corpus stage joins into
    conversations as connected components of ``parent_ids``.
``author``
    the display name the platform shows (raw and corpus keep upstream names; the text stage
    pseudonymises them, and every mention).
``text``
    the message as the user saw it. A structured mention (a Slack ``<@U123>``, a Telegram
    ``mention_name`` entity, a Matrix pill) is written ``<@ID|Name>`` (:func:`mention`), so the text
    stage can give the person one pseudonym whether the id or the name is known to it.
``record_type``
    ``message``, ``system`` (joins, topic changes, pins), ``bot``, ``edit`` (an edit event, already
    applied to the message it edits), ``deleted`` (a deleted message or its tombstone), ``malformed``.
    The corpus stage keeps ``message`` rows only and counts every other type under its own reason.

Counts (:meth:`RawRows.count`) are what the reader did that no row shows, e.g.
``replies/parent_missing`` (a reply whose parent is not in the export: kept, its parent link left
out) or ``edits/applied``; they reach the raw asset's metadata as ``export/<key>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa

from thread_embed_pipeline.schemas import RAW_SCHEMA, RawPiece

# what a user export's rows may be (corpus.RECORD_TYPES lists them all, with the mirrored sources' "context"
# and "invalid_encoding")
EXPORT_RECORD_TYPES: tuple[str, ...] = ("message", "system", "bot", "edit", "deleted", "malformed")
_NAT = np.iinfo(np.int64).min


def mention(user_id: object, name: str | None = None) -> str:
    """A structured mention as written in raw text: ``<@ID|Name>`` (``<@ID>`` without a name)."""
    ident = _clean(str(user_id))
    if name:
        return f"<@{ident}|{_clean(name)}>"
    return f"<@{ident}>"


def _clean(value: str) -> str:
    return " ".join(value.replace("<", "").replace(">", "").replace("|", "/").split())


def epoch_ns(value: object) -> int | None:
    """Nanoseconds since the epoch (naive UTC) of an epoch number in seconds, an ISO-8601 string
    (``Z`` or an offset converts to UTC; no offset is taken as UTC) or a datetime; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a timestamp: {value!r}")
    if isinstance(value, (int, float)):
        return int(round(float(value) * 1e9))
    if isinstance(value, datetime):
        dt = value
    else:
        text = str(value).strip()
        whole, dot, frac = text.partition(".")
        if whole.lstrip("-").isdigit() and (not dot or frac.isdigit()):  # "1577836800.000100": exact, not via float
            sign = -1 if whole.startswith("-") else 1
            return sign * (abs(int(whole)) * 1_000_000_000 + int((frac + "000000000")[:9]))
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


_EPOCH = datetime(1970, 1, 1)


def safe_key(key: object) -> str | None:
    """A conversation key as the corpus stage can use it in an id (``/`` separates the id's parts)."""
    if key is None:
        return None
    text = str(key).strip()
    return text.replace("%", "%25").replace("/", "%2F") if text else None


class RawRows:
    """Raw rows of one export, gathered column by column, and the reader's counts.

    ``add`` one row per message (or system line, bot post, edit, deletion); ``piece()`` hands the rows
    gathered so far to the chain as a :class:`schemas.RawPiece` and starts afresh. A timeline's rows must
    all go into one piece, contiguous (the corpus stage cuts its pieces between timelines).
    """

    _COLUMNS = ("file", "line", "channel", "message_id", "timestamp", "author", "text", "conversation_key", "parent_ids", "record_type")

    def __init__(self, source: str) -> None:
        self.source = source
        self._cols: dict[str, list] = {c: [] for c in self._COLUMNS}
        self.counts: dict[str, int] = {}
        self._units = 0

    def __len__(self) -> int:
        return len(self._cols["file"])

    def add(
        self,
        *,
        file: str,
        line: int,
        channel: str | None,
        message_id: int,
        timestamp: object,
        author: str | None,
        text: str | None,
        conversation_key: object = None,
        parent_ids: Iterable[int] = (),
        record_type: str = "message",
    ) -> None:
        if record_type not in EXPORT_RECORD_TYPES:
            raise ValueError(f"record_type must be one of {EXPORT_RECORD_TYPES}, got {record_type!r}")
        cols = self._cols
        cols["file"].append(file)
        cols["line"].append(int(line))
        cols["channel"].append(channel)
        cols["message_id"].append(int(message_id))
        cols["timestamp"].append(epoch_ns(timestamp))
        cols["author"].append(author)
        cols["text"].append(text)
        cols["conversation_key"].append(safe_key(conversation_key))
        cols["parent_ids"].append([int(p) for p in parent_ids])
        cols["record_type"].append(record_type)

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to counter ``key`` (shown as ``export/<key>`` on the raw asset's page)."""
        self.counts[key] = self.counts.get(key, 0) + int(n)

    def unit(self, n: int = 1) -> None:
        """Count ``n`` export members (files) read into this piece."""
        self._units += n

    def piece(self) -> RawPiece:
        """The rows gathered so far as a raw piece (``RAW_SCHEMA``), with the counts; then start afresh."""
        n = len(self)
        cols = self._cols
        table = pa.table(
            {
                "source": pa.array([self.source] * n, pa.string()),
                "file": pa.array(cols["file"], pa.string()),
                "line": pa.array(cols["line"], pa.int64()),
                "split_hint": pa.nulls(n, pa.string()),
                "channel": pa.array(cols["channel"], pa.string()),
                "message_id": pa.array(cols["message_id"], pa.int64()),
                "timestamp": pa.array(cols["timestamp"], pa.int64()).cast(pa.timestamp("ns")),
                "author": pa.array(cols["author"], pa.string()),
                "text": pa.array(cols["text"], pa.string()),
                "conversation_key": pa.array(cols["conversation_key"], pa.string()),
                "parent_ids": pa.array(cols["parent_ids"], pa.list_(pa.int64())),
                "record_type": pa.array(cols["record_type"], pa.string()),
            },
            schema=RAW_SCHEMA,
        )
        piece = RawPiece(table if n else None, self._units, self._units, dict(self.counts))
        self._cols = {c: [] for c in self._COLUMNS}
        self.counts = {}
        self._units = 0
        return piece


def group_timelines(sizes: dict[str, int], limit: int) -> list[list[str]]:
    """Timelines (sorted) in consecutive groups of at most ``limit`` in total size (rows or bytes); a
    timeline bigger than ``limit`` is a group of its own. Readers read a group into one piece."""
    groups: list[list[str]] = []
    total = 0
    for timeline in sorted(sizes):
        if not groups or total + sizes[timeline] > limit:
            groups.append([])
            total = 0
        groups[-1].append(timeline)
        total += sizes[timeline]
    return groups
