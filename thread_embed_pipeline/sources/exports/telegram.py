"""Telegram Desktop's JSON export (``result.json``): one chat, or a whole account's chats.

What is read (``docs/sources/telegram_export.md`` says it for users):

* every ``result.json`` in the export (a single-file export: that file, whatever its name). A file is
  one chat (``{name, type, id, messages}``) or an account (``chats.list`` and ``left_chats.list`` of
  such chats); the rest of an account export (contacts, sessions, ...) is not read.
* one **timeline** per chat, named like Telegram names peers in ``from_id`` and ``reply_to_peer_id``:
  ``user<id>`` (personal, bot, saved-messages chats), ``chat<id>`` (basic groups), ``channel<id>``
  (supergroups and channels). The id survives renames and a private group going public, so a
  conversation keeps its id (and its hash split) from one export to the next; the chat's name is
  the ``channel`` column.
* conversations are reply chains (``reply_to_message_id``); ``message_id`` is Telegram's message id
  (unique within a chat; history migrated from a basic group has ids shifted below zero).

Rows: ``message`` -> ``message`` (or ``bot``: posted ``via_bot``, or sent by a bot account the export
itself names, the peer of a ``bot_chat``); ``service`` -> ``system``; ``unsupported`` and anything
unreadable -> ``malformed`` with a count ``malformed/<reason>``. Text is ``text`` (a string, or strings
and entity objects); a ``mention_name`` entity becomes :func:`~.rows.mention`, every other entity keeps
its text. Edits are already applied by the exporter (``edited`` marks them; counted ``edits/in_place``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from thread_embed_pipeline.schemas import RawPiece

from ..errors import SourceDataError, SourceParseError
from .rows import RawRows, epoch_ns, mention
from .tree import ExportTree

RESULT_FILE = "result.json"
# a piece closes after the chat that brings it to this many rows (a chat is never split)
PIECE_ROWS = 100_000
# the peer kind each chat type is named by (Telegram's own "user123" / "chat123" / "channel123")
_PEER_PREFIX = {
    "personal_chat": "user",
    "bot_chat": "user",
    "saved_messages": "user",
    "replies": "user",
    "private_group": "chat",
    "private_supergroup": "channel",
    "public_supergroup": "channel",
    "private_channel": "channel",
    "public_channel": "channel",
}
_UNNAMED = {"saved_messages": "Saved Messages", "replies": "Replies"}
# malformed rows without a usable id: far below Telegram's ids, migrated ones (-1e9 + id) included
_NO_ID = -(1 << 62)
_EXPECTED = "Telegram Desktop's result.json (JSON)"
_X_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\x([0-9A-Fa-f]{2})")


class _Unreadable(ValueError):
    """A message field the reader cannot use; the message becomes a ``malformed`` row (the reason)."""


def read_export(tree: ExportTree, source: str) -> Iterator[RawPiece]:
    """Raw pieces of a Telegram Desktop JSON export, one or more whole chats per piece."""
    rows = RawRows(source)
    seen: dict[str, str] = {}  # timeline -> where it was read (a chat exported twice is refused)
    total = 0
    members = _result_members(tree)
    for rel in members:
        data = _load(tree, rel, rows)
        rows.unit()
        chats = _chats(tree, rel, data)
        bots = {_timeline(chat) for _, chat in chats if chat.get("type") == "bot_chat"}
        for where, chat in chats:
            timeline = _timeline(chat)
            place = f"{tree.display(rel)}{where}"
            if timeline in seen:
                raise SourceDataError(f"{place}: chat {timeline} ({_chat_name(chat)!r}) is also in {seen[timeline]}; keep one copy of each chat in the export")
            seen[timeline] = place
            before = len(rows)
            _read_chat(rows, chat, timeline, bots)
            total += len(rows) - before
            if len(rows) >= PIECE_ROWS:
                yield rows.piece()
    if total == 0:
        raise SourceDataError(
            f"{', '.join(tree.display(r) for r in members)}: the export holds no messages "
            "(expected chats with messages; in Telegram Desktop's export settings, tick the chats to export)"
        )
    if len(rows) or rows.counts:
        yield rows.piece()


# -- the export's files and chats ------------------------------------------------------------------
def _result_members(tree: ExportTree) -> list[str]:
    files = tree.files()
    if tree.kind == "file":
        return files
    found = [f for f in files if PurePosixPath(f).name == RESULT_FILE]
    if not found:
        raise SourceDataError(
            f"{tree.path}: no {RESULT_FILE} in the export (expected Telegram Desktop's 'Machine-readable JSON' export; "
            f"an HTML export has messages.html instead); files: {', '.join(files[:5]) or 'none'}"
        )
    return found


def _load(tree: ExportTree, rel: str, rows: RawRows) -> Any:
    with tree.open(rel) as handle:
        if not handle.read(64).strip():
            raise SourceDataError(f"{tree.display(rel)}: the file is empty (expected {_EXPECTED})")
    try:
        return tree.read_json(rel, expected=_EXPECTED)
    except SourceParseError as err:
        if "Invalid \\escape" not in err.expected:
            raise
        first = err
    # Telegram Desktop writes a control character (other than tab, CR, LF) as "\x0B", which JSON lacks:
    # read it as "\u000B" (the same character); a backslash escaped before it ("\\x41") is left alone
    raw = tree.read_bytes(rel)
    fixed, repaired = _X_ESCAPE.subn(rb"\1\\u00\2", raw)
    if not repaired:
        raise first
    try:
        data = json.loads(fixed.decode("utf-8-sig"))
    except json.JSONDecodeError as err:
        got = fixed.split(b"\n")[err.lineno - 1].decode("utf-8", errors="replace")
        raise SourceParseError(tree.display(rel), err.lineno, f"{_EXPECTED} ({err.msg} at column {err.colno})", got) from None
    rows.count("json/control_escapes_repaired", repaired)
    return data


def _chats(tree: ExportTree, rel: str, data: Any) -> list[tuple[str, dict]]:
    """``(where, chat)`` for each chat of a result.json, checked for the keys the reader needs."""
    shape = "an object with \"messages\" (one chat) or \"chats\" (a whole account)"
    if not isinstance(data, dict):
        raise SourceDataError(f"{tree.display(rel)}: expected {shape}, got {type(data).__name__}")
    if "messages" in data:
        chats = [("", data)]
    elif "chats" in data or "left_chats" in data:
        chats = []
        for key in ("chats", "left_chats"):
            if key not in data:
                continue
            listed = data[key].get("list") if isinstance(data[key], dict) else None
            if not isinstance(listed, list):
                raise SourceDataError(f"{tree.display(rel)}: \"{key}\" must be an object with a \"list\" of chats, got {_brief(data[key])}")
            chats += [(f": {key}.list[{i}]", chat) for i, chat in enumerate(listed)]
    else:
        raise SourceDataError(f"{tree.display(rel)}: expected {shape}, got an object with keys {sorted(data)[:8]}")
    for where, chat in chats:
        if not isinstance(chat, dict):
            got = type(chat).__name__
        elif _int(chat.get("id")) is None:
            got = f"\"id\": {json.dumps(chat['id'])}" if "id" in chat else f"no \"id\" ({_brief(chat)})"
        elif not isinstance(chat.get("messages"), list):
            got = f"\"messages\" as {type(chat.get('messages')).__name__}"
        else:
            continue
        raise SourceDataError(f"{tree.display(rel)}{where}: expected a chat with an integer \"id\" and a \"messages\" list, got {got}")
    return chats


def _timeline(chat: dict) -> str:
    return f"{_PEER_PREFIX.get(chat.get('type'), 'peer')}{_int(chat['id'])}"


def _chat_name(chat: dict) -> str:
    """The ``channel`` column: a group's or channel's name; a one-to-one chat, named after the person, by its type only."""
    if chat.get("type") in _PERSONAL:
        return _PERSONAL[chat["type"]]
    name = chat.get("name")
    return name if isinstance(name, str) and name else _UNNAMED.get(chat.get("type"), _timeline(chat))


_PERSONAL = {"personal_chat": "personal chat"}  # its `name` is the other person's name


# -- one chat ---------------------------------------------------------------------------------------
def _read_chat(rows: RawRows, chat: dict, timeline: str, bots: set[str]) -> None:
    messages = chat["messages"]
    if not messages:
        rows.count("chats/empty")
        return
    ids = {i for i in (_int(m.get("id")) if isinstance(m, dict) else None for m in messages) if i is not None}
    name = _chat_name(chat)
    for index, message in enumerate(messages):
        common = {"file": timeline, "line": index + 1, "channel": name}
        try:
            row = _row(message, timeline, ids, bots, rows)
        except _Unreadable as err:
            rows.count(f"malformed/{err}")
            mid = _int(message.get("id")) if isinstance(message, dict) else None
            rows.add(**common, message_id=_NO_ID - index if mid is None else mid, timestamp=None, author=None, text=None, record_type="malformed")
            continue
        rows.add(**common, **row)


def _row(message: Any, timeline: str, ids: set[int], bots: set[str], rows: RawRows) -> dict:
    """The ``RawRows.add`` fields of one message (raises :class:`_Unreadable`); counts what no row shows."""
    if not isinstance(message, dict):
        raise _Unreadable("not_an_object")
    mid = _int(message.get("id"))
    if mid is None:
        raise _Unreadable("no_id")
    kind = message.get("type")
    if kind == "unsupported":  # the exporter's stub for content it could not serialise: an id, nothing else
        raise _Unreadable("unsupported")
    if kind not in ("message", "service"):
        raise _Unreadable("unknown_type")
    stamp = message.get("date_unixtime", message.get("date"))
    try:
        if epoch_ns(stamp) is None:
            raise _Unreadable("bad_date")
    except (TypeError, ValueError):
        raise _Unreadable("bad_date") from None
    text = _text(message)
    if kind == "service":
        author = _name(message, "actor", rows)
        return {"message_id": mid, "timestamp": stamp, "author": author, "text": _service_text(message, text), "record_type": "system"}

    parents = []
    if "reply_to_message_id" in message:
        parent = _int(message["reply_to_message_id"])
        peer = message.get("reply_to_peer_id")
        if parent is None:
            rows.count("replies/bad_parent_id")
        elif peer is not None and _peer(peer) != timeline:  # a reply to a message of another chat
            rows.count("replies/other_chat")
        elif parent in ids:
            parents = [parent]
        else:  # before the export's date range, deleted, or not exported (only one's own messages of a left chat)
            rows.count("replies/parent_missing")
    if message.get("edited") or message.get("edited_unixtime"):
        rows.count("edits/in_place")
    if message.get("forwarded_from") is not None or message.get("saved_from") is not None:
        rows.count("messages/forwarded")
    record_type = "message"
    if message.get("via_bot"):
        record_type = "bot"
        rows.count("bots/via_bot")
    elif _peer(message.get("from_id")) in bots:
        record_type = "bot"
        rows.count("bots/bot_account")
    author = _name(message, "from", rows)
    return {"message_id": mid, "timestamp": stamp, "author": author, "text": text, "parent_ids": parents, "record_type": record_type}


def _text(message: dict) -> str:
    """The message as shown: ``text`` (a string or a list of strings and entities), else ``text_entities``."""
    value = message.get("text", message.get("text_entities", ""))
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise _Unreadable("bad_text")
    out = []
    for part in value:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            user_id = part.get("user_id")
            if part.get("type") == "mention_name" and user_id not in (None, ""):
                out.append(mention(user_id, part["text"].lstrip("@")))
            else:  # plain, bold, link, text_link (its text, not its href), mention (@handle), code, ...
                out.append(part["text"])
        else:
            raise _Unreadable("bad_text")
    return "".join(out)


def _service_text(message: dict, text: str) -> str:
    """A short line for a system row: the action and what it names (title, members), or the exporter's text."""
    action = message.get("action") or ("custom" if message.get("information_text") else "service")
    members = message.get("members") if isinstance(message.get("members"), list) else []
    details = [message.get("title"), message.get("new_title"), *members, message.get("information_text"), text]
    shown = [str(d) for d in details if isinstance(d, str) and d]
    return f"{action}: {', '.join(shown)}" if shown else str(action)


def _name(message: dict, key: str, rows: RawRows) -> str | None:
    """The display name under ``key`` (``from``/``actor``); a deleted account has none: its id stands in."""
    name = message.get(key)
    if isinstance(name, str) and name.strip():
        return name
    peer = _peer(message.get(f"{key}_id"))
    rows.count("authors/no_name" if peer else "authors/missing")
    return peer


def _peer(value: Any) -> str | None:
    """A peer id as the exporter writes it (``user123``, ``channel45``); a bare number is a user."""
    if isinstance(value, str) and value:
        return value
    number = _int(value)
    return None if number is None else f"user{number}"


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _brief(value: Any) -> str:
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)[:8]}"
    return repr(json.dumps(value, ensure_ascii=False, default=str)[:80])
