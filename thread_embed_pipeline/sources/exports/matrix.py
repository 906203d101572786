"""Element's "Export chat" JSON (format ``matrix_export``) -> raw rows; see ``docs/sources/matrix_export.md``.

Element writes one JSON object per room, ``{room_name, room_creator, topic, export_date, exported_by,
messages}``, where ``messages`` is the room's events in timeline order, each as the client holds it
(``type``, ``sender``, ``origin_server_ts`` in ms, ``event_id``, ``room_id``, ``content``, ``unsigned``;
an encrypted event as its decrypted form). Without attachments it is one ``<brand> - <room> - Chat
Export - <date>.json``; with them a zip of ``<that name>/export.json`` plus ``images/``, ``files/``,
``videos/``, ``audio/``, ``stickers/``. The export given may be one such file, a zip, or a folder of
several; every JSON member outside the attachment folders is one room, read and handed on as one piece.

Per room:

* timeline (``file``) = ``<room name> (<first 8 characters of the room id>)``: the name people know the
  room by, and the id so two rooms with one name stay apart and a re-export (whose file name carries the
  export date) keeps its timeline.
* ``message_id`` = the event's position in ``messages`` (``line``); an event id seen twice keeps its first
  position, so the corpus counts the repeat as a duplicate. ``parent_ids`` map event ids to positions.
* threads (``m.relates_to.rel_type == "m.thread"``): ``conversation_key`` = the root's event id, the root
  included; a thread event's parent is the message it really replies to (``m.in_reply_to`` without
  ``is_falling_back``), else the root. Other replies (``m.in_reply_to``) are reply chains (no key).
* edits (``m.replace``, in the export or bundled under ``unsigned["m.relations"]["m.replace"]``): the
  original keeps its place with the most recent valid edit's ``m.new_content`` (spec: latest
  ``origin_server_ts``, then largest event id; same sender, same type); each edit event is an ``edit`` row.
* redacted events (``unsigned.redacted_because``, or the target of an ``m.room.redaction`` in the export)
  -> ``deleted``; state events and calls -> ``system``; ``m.notice`` -> ``bot``; reactions, redaction
  events and undecrypted events are counted, not rows.
* authors: the sender's display name from the room's ``m.room.member`` events in the export (the last
  one given), ``Name (@id)`` where two senders share a name, else the Matrix ID: the events carry
  no other name.
* text: ``body`` without the reply fallback; where ``formatted_body`` holds user pills, the HTML as text
  with each pill written ``mention(MXID, pill text)``. Media: the caption (``filename`` present and
  different from ``body``), else empty text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import PurePosixPath
from urllib.parse import unquote

from thread_embed_pipeline.schemas import RawPiece

from ..errors import SourceDataError
from .rows import RawRows, mention
from .tree import ExportTree

EXPECTED = "Element's JSON chat export (Export chat, format JSON): an object with 'room_name' and a 'messages' list"
# the folders Element's zip keeps attachments in (Exporter.getFilePath): their files are never rooms
ATTACHMENT_DIRS = frozenset({"images", "files", "videos", "audio", "stickers"})
MEDIA_MSGTYPES = frozenset({"m.image", "m.file", "m.video", "m.audio", "m.location"})
BOT_MSGTYPES = frozenset({"m.notice", "m.server_notice"})
SYSTEM_MSGTYPES = frozenset({"m.key.verification.request"})
POLL_START = frozenset({"m.poll.start", "org.matrix.msc3381.poll.start"})
SYSTEM_TYPES = frozenset({"m.poll.end", "org.matrix.msc3381.poll.end", "m.room.third_party_invite"})
HTML_FORMAT = "org.matrix.custom.html"
# a user permalink: https://matrix.to/#/@bob:example.org (maybe %-encoded, ?via=...), Element's
# .../#/user/@bob:example.org, or the matrix: URI scheme (matrix:u/bob:example.org)
_USER_LINK = re.compile(r"^(?:https?://[^#]*#/(?:user/)?(?P<at>@[^/?#]+)|matrix:u/(?P<local>[^/?#]+))")
_FALLBACK_HEAD = re.compile(r"^> (?:\* )?<@[^>\s]+>")  # "> <@alice:example.org> ..." (or "> * <@...>" for an emote)


def read_export(tree: ExportTree, source: str) -> Iterator[RawPiece]:
    """One raw piece per room export in ``tree`` (see the module docstring)."""
    rows = RawRows(source)
    rooms = []
    for rel in tree.files():
        parts = PurePosixPath(rel).parts
        if len(parts) > 1 and ATTACHMENT_DIRS & set(parts[:-1]):
            rows.count("files/attachments_skipped")
        elif tree.kind == "file" or rel.lower().endswith(".json"):
            rooms.append(rel)
        else:
            rows.count("files/not_json_skipped")
    if not rooms:
        raise SourceDataError(f"{tree.path}: no room export in it; expected {EXPECTED} (Element's HTML and plain-text exports are not read)")
    timelines: dict[str, str] = {}
    events_read = 0
    for rel in rooms:
        events_read += _read_room(tree, rel, rows, timelines)
        rows.unit()
        yield rows.piece()
    if not events_read:
        raise SourceDataError(f"{tree.path}: the export holds no events (every room's 'messages' list is empty)")


def _read_room(tree: ExportTree, rel: str, rows: RawRows, timelines: dict[str, str]) -> int:
    """Add one room export's rows to ``rows``; returns how many events it lists."""
    shown = tree.display(rel)
    export = tree.read_json(rel, expected=EXPECTED)
    if not isinstance(export, dict) or "room_name" not in export or not isinstance(export.get("messages"), list):
        raise SourceDataError(f"{shown}: expected {EXPECTED}, got {_what_is_wrong(export)}")
    events = export["messages"]
    if not events:
        rows.count("rooms/empty")
        return 0
    room = _Room(events, shown)
    room_name = str(export["room_name"] or "").strip()
    if room.is_direct(room_name):  # Element names a DM after its people: only the room id names its timeline
        room_name = "dm"
    timeline = _timeline(room_name, room.room_id)
    if timeline in timelines:
        raise SourceDataError(f"{shown}: room {timeline!r} is also exported in {timelines[timeline]}; keep one export per room (the newer one holds the older's messages)")
    timelines[timeline] = shown
    channel = room_name or timeline
    for line, event in enumerate(events, start=1):
        kind = room.kinds[line - 1]
        common = {"file": timeline, "line": line, "channel": channel}
        if kind == "malformed":
            sender = event.get("sender") if isinstance(event, dict) else None
            rows.add(**common, message_id=line, timestamp=None, author=sender if isinstance(sender, str) else None, text=None, record_type="malformed")
            continue
        if kind.startswith("count:"):
            rows.count(kind[len("count:") :])
            continue
        eid, content = event["event_id"], event.get("content") or {}
        mid, author, ts = room.mid_of[eid], room.author(event["sender"]), _timestamp(event["origin_server_ts"])
        common.update(message_id=mid, timestamp=ts, author=author)
        key = eid if eid in room.roots else None
        if kind == "deleted":
            rows.add(**common, text=None, conversation_key=key, record_type="deleted")
        elif kind == "system":
            rows.add(**common, text=_system_text(event), record_type="system")
        elif kind == "edit":
            rows.count(f"edits/{room.edit_status[line - 1]}")
            new = content.get("m.new_content")
            rows.add(**common, text=_text(new if isinstance(new, dict) else content, event["type"], reply=False), record_type="edit")
        else:  # message, bot: with the latest edit applied; threads and replies
            content = room.edited_content(eid, content, rows)
            relates = _relates(content)
            thread = relates.get("event_id") if relates.get("rel_type") == "m.thread" and isinstance(relates.get("event_id"), str) else None
            if thread is not None:
                key = thread
            parent = _parent(relates, thread)
            parents = []
            if parent is not None and parent != eid:
                if parent in room.mid_of:
                    parents = [room.mid_of[parent]]
                else:
                    rows.count("replies/parent_missing")
            record = _record_type(content)
            text = _text(content, event["type"], reply="m.in_reply_to" in relates)
            rows.add(**common, text=text, conversation_key=key, parent_ids=parents, record_type=record)
    return len(events)


class _Room:
    """What one room's rows need from all of its events: each event's kind, positions, thread roots,
    display names, and the edits and redactions that apply to other events."""

    def __init__(self, events: list, shown: str) -> None:
        valid = [_valid(e) for e in events]
        room_ids = {e["room_id"] for e, ok in zip(events, valid) if ok and isinstance(e.get("room_id"), str)}
        if len(room_ids) > 1:
            raise SourceDataError(f"{shown}: expected the events of one room (Element exports one room per file), got events of {len(room_ids)} rooms: {sorted(room_ids)[:3]}")
        self.room_id = next(iter(room_ids), None)
        self.index: dict[str, int] = {}  # event id -> its first position (0-based)
        redacted: set[str] = set()
        names: dict[str, str] = {}
        self.roots: set[str] = set()
        for i, (event, ok) in enumerate(zip(events, valid)):
            if not ok:
                continue
            self.index.setdefault(event["event_id"], i)
            content = event.get("content") or {}
            if event["type"] == "m.room.redaction":
                target = event.get("redacts") or content.get("redacts")  # top level; in content from room version 11
                if isinstance(target, str):
                    redacted.add(target)
            elif event["type"] == "m.room.member" and isinstance(event.get("state_key"), str):
                name = content.get("displayname")
                if isinstance(name, str) and name.strip():
                    names[event["state_key"]] = " ".join(name.split())
            relates = _relates(content)
            if relates.get("rel_type") == "m.thread" and isinstance(relates.get("event_id"), str):
                self.roots.add(relates["event_id"])
            if isinstance(_bundled(event, "m.thread"), dict):
                self.roots.add(event["event_id"])
        self.senders = {e["sender"] for e, ok in zip(events, valid) if ok and isinstance(e.get("sender"), str)}
        self.kinds = [_kind(e, redacted, self.index) if ok else "malformed" for e, ok in zip(events, valid)]
        self.mid_of = {eid: i + 1 for eid, i in self.index.items() if self.kinds[i] in _ROW_KINDS}
        self._names = _disambiguate(names)
        self._resolve_edits(events)

    def author(self, sender: str) -> str:
        return self._names.get(sender, sender)

    def is_direct(self, room_name: str) -> bool:
        """Whether the room's name is made of its people's names (Element names a room without a name, a DM
        above all, "Alice", "Alice and Bob", "Alice, Bob and 3 others"): a name, MXID or its localpart
        of anyone in the export appears in it."""
        people = set(self._names) | set(self.senders)
        names = {n.lower() for n in self._names.values()} | {p.lower() for p in people} | {p.lstrip("@").split(":")[0].lower() for p in people}
        low = room_name.lower()
        return not low or any(len(n) >= 3 and n in low for n in names)

    def _resolve_edits(self, events: list) -> None:
        """Each edit event's status (``applied``, ``target_missing``, ``target_deleted``, ``invalid``) and,
        per edited event, its latest valid edit: ((origin_server_ts, event_id), m.new_content, bundled)."""
        self.edit_status: dict[int, str] = {}
        self.latest: dict[str, tuple[tuple[int, str], dict, bool]] = {}
        for i, (event, kind) in enumerate(zip(events, self.kinds)):
            if kind != "edit":
                continue
            target = _relates(event.get("content") or {}).get("event_id")
            status = self._edit_status(event, target, events)
            self.edit_status[i] = status
            if status == "applied":
                self._offer(target, (event["origin_server_ts"], event["event_id"]), event["content"]["m.new_content"], bundled=False)
        for eid, i in self.index.items():  # edits the server bundled with the original (spec v1.7+)
            edit = _bundled(events[i], "m.replace")
            if self.kinds[i] not in ("message", "bot") or not isinstance(edit, dict) or str(edit.get("event_id")) in self.index:
                continue
            new = (edit.get("content") or {}).get("m.new_content") if isinstance(edit.get("content"), dict) else None
            ts = edit.get("origin_server_ts")
            if isinstance(new, dict) and _is_int(ts) and edit.get("sender", events[i]["sender"]) == events[i]["sender"]:
                self._offer(eid, (ts, str(edit.get("event_id", ""))), new, bundled=True)

    def _edit_status(self, edit: dict, target: object, events: list) -> str:
        if not isinstance(target, str) or target not in self.index:
            return "target_missing"
        original = events[self.index[target]]
        if self.kinds[self.index[target]] == "deleted":
            return "target_deleted"
        valid = (
            original["sender"] == edit["sender"]
            and original["type"] == edit["type"]
            and "state_key" not in original
            and _relates(original.get("content") or {}).get("rel_type") != "m.replace"
            and isinstance(edit["content"].get("m.new_content"), dict)
        )
        return "applied" if valid else "invalid"

    def _offer(self, target: str, order: tuple[int, str], new: dict, *, bundled: bool) -> None:
        if target not in self.latest or order > self.latest[target][0]:
            self.latest[target] = (order, new, bundled)

    def edited_content(self, eid: str, content: dict, rows: RawRows) -> dict:
        """``content`` with its latest edit applied: ``m.new_content`` replaces it, ``m.relates_to`` stays."""
        if eid not in self.latest:
            return content
        _, new, bundled = self.latest.pop(eid)  # popped: a repeated event id applies (and counts) once
        if bundled:
            rows.count("edits/applied_bundled")
        edited = {k: v for k, v in new.items() if k != "m.relates_to"}
        if "m.relates_to" in content:
            edited["m.relates_to"] = content["m.relates_to"]
        return edited


_ROW_KINDS = frozenset({"message", "bot", "system", "edit", "deleted"})


def _valid(event: object) -> bool:
    """An event with the fields every row needs: string type, event_id and sender, integer ms timestamp, object content."""
    return (
        isinstance(event, dict)
        and all(isinstance(event.get(k), str) and event.get(k) for k in ("type", "event_id", "sender"))
        and _is_int(event.get("origin_server_ts"))
        and event["origin_server_ts"] >= 0
        and isinstance(event.get("content", {}), dict)
        and isinstance(event.get("unsigned", {}), dict)
    )


def _kind(event: dict, redacted: set[str], present: dict[str, int]) -> str:
    """The row an event becomes (message, bot, system, edit, deleted) or ``count:<key>`` when it becomes none."""
    etype = event["type"]
    content = event.get("content") or {}
    if etype == "m.reaction":
        return "count:reactions/skipped"
    if etype == "m.room.redaction":
        target = event.get("redacts") or content.get("redacts")
        return "count:redactions/applied" if isinstance(target, str) and target in present else "count:redactions/target_missing"
    if (event.get("unsigned") or {}).get("redacted_because") is not None or event["event_id"] in redacted:
        return "deleted"
    if "state_key" in event or etype.startswith("m.call.") or etype in SYSTEM_TYPES:
        return "system"
    if etype == "m.room.encrypted" or content.get("msgtype") == "m.bad.encrypted":
        return "count:encrypted/undecrypted"
    if etype in ("m.room.message", "m.sticker") or etype in POLL_START:
        if _relates(content).get("rel_type") == "m.replace":
            return "edit"
        return _record_type(content)
    return f"count:unknown_type/{etype}"


def _record_type(content: dict) -> str:
    msgtype = content.get("msgtype")
    return "bot" if msgtype in BOT_MSGTYPES else "system" if msgtype in SYSTEM_MSGTYPES else "message"


def _relates(content: dict) -> dict:
    relates = content.get("m.relates_to")
    return relates if isinstance(relates, dict) else {}


def _bundled(event: dict, rel_type: str) -> object:
    relations = (event.get("unsigned") or {}).get("m.relations")
    return relations.get(rel_type) if isinstance(relations, dict) else None


def _parent(relates: dict, thread: str | None) -> str | None:
    """The event a message answers: its real reply target, else (in a thread) the thread root."""
    reply = relates.get("m.in_reply_to")
    target = reply.get("event_id") if isinstance(reply, dict) else None
    if thread is not None and (target is None or relates.get("is_falling_back")):
        return thread  # a thread's reply fallback names the thread's latest event, not a reply
    return target if isinstance(target, str) else None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _timestamp(ms: int) -> str:
    """Milliseconds as exact epoch seconds (a digit string: no float rounding)."""
    return f"{ms // 1000}.{ms % 1000:03d}"


def _timeline(room_name: str, room_id: str | None) -> str:
    name = " ".join(room_name.replace("/", "-").split())
    if room_id is None:
        return name or "Unnamed Room"
    short = room_id.lstrip("!").split(":")[0][:8].replace("/", "-")
    return f"{name} ({short})" if name else short


def _disambiguate(names: dict[str, str]) -> dict[str, str]:
    """Element's rule: a display name two senders share is shown with the Matrix ID."""
    holders: dict[str, int] = {}
    for name in names.values():
        holders[name.lower()] = holders.get(name.lower(), 0) + 1
    return {uid: f"{name} ({uid})" if holders[name.lower()] > 1 else name for uid, name in names.items()}


def _what_is_wrong(export: object) -> str:
    if not isinstance(export, dict):
        return f"a JSON {_json_type(export)}"
    missing = [repr(key) for key in ("room_name", "messages") if key not in export]
    if missing:
        return f"an object without {' and '.join(missing)} (its keys: {sorted(export)[:8]})"
    return f"'messages' as a JSON {_json_type(export['messages'])}"


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _system_text(event: dict) -> str:
    content = event.get("content") or {}
    if event["type"] == "m.room.member":
        return " ".join(str(x) for x in (content.get("membership"), event.get("state_key"), content.get("displayname")) if x)
    for field in ("topic", "name", "body"):
        if isinstance(content.get(field), str):
            return f"{event['type']}: {content[field]}"
    return event["type"]


def _text(content: dict, etype: str, *, reply: bool) -> str:
    """What the message shows: caption or nothing for media, pills as mentions, no reply fallback."""
    body = content.get("body") if isinstance(content.get("body"), str) else ""
    if etype == "m.sticker":
        return ""
    if etype in POLL_START:
        text = content.get("org.matrix.msc1767.text")
        return text if isinstance(text, str) else body
    if content.get("msgtype") in MEDIA_MSGTYPES:
        filename = content.get("filename")
        if not isinstance(filename, str) or filename == body:
            return ""  # body is the file name: an attachment with no text
    html = content.get("formatted_body")
    if content.get("format") == HTML_FORMAT and isinstance(html, str) and ("matrix.to/" in html or "matrix:u/" in html):
        text = _PillText.render(html)
        if text is not None:
            return text
    return _strip_reply_fallback(body) if reply else body


def _strip_reply_fallback(body: str) -> str:
    """Drop the quoted ``> <@user> ...`` lines a reply's body opens with, and the blank line after them."""
    lines = body.split("\n")
    if not lines or not _FALLBACK_HEAD.match(lines[0]):
        return body
    while lines and lines[0].startswith("> "):
        lines.pop(0)
    if lines and lines[0] == "":
        lines.pop(0)
    return "\n".join(lines)


def _user_of(href: str | None) -> str | None:
    m = _USER_LINK.match(unquote(href or ""))
    if m is None:
        return None
    return m.group("at") or "@" + m.group("local")


class _PillText(HTMLParser):
    """``formatted_body`` as plain text: the reply fallback (``<mx-reply>``) dropped, user pills as
    ``<@MXID|text>``, line breaks for ``<br>`` and block ends, other tags' text as it reads."""

    _BLOCKS = frozenset({"p", "div", "li", "ul", "ol", "blockquote", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "table"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.reply_depth = 0
        self.pre_depth = 0
        self.pill: tuple[str, list[str]] | None = None
        self.pills = 0

    @classmethod
    def render(cls, html: str) -> str | None:
        """The text, or None when the HTML has no user pill (the plain body then reads the same)."""
        parser = cls()
        parser.feed(html)
        parser.close()
        if not parser.pills:
            return None
        lines = [line.strip() for line in "".join(parser.out).split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()

    def _emit(self, text: str) -> None:
        if self.reply_depth:
            return
        if self.pill is not None:
            self.pill[1].append(text)
        else:
            self.out.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "mx-reply":
            self.reply_depth += 1
        elif tag == "a" and self.pill is None:
            user = _user_of(dict(attrs).get("href"))
            if user is not None:
                self.pill = (user, [])
        elif tag == "br":
            self._emit("\n")
        elif tag == "img":  # a custom emoji: its alt text
            self._emit(dict(attrs).get("alt") or "")
        elif tag == "pre":
            self.pre_depth += 1
        elif tag in self._BLOCKS:
            self._emit("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "mx-reply":
            self.reply_depth = max(0, self.reply_depth - 1)
        elif tag == "a" and self.pill is not None:
            user, parts = self.pill
            self.pill = None
            name = " ".join("".join(parts).split())
            if not self.reply_depth:
                self.pills += 1
                self._emit(mention(user, name or None))
        elif tag == "pre":
            self.pre_depth = max(0, self.pre_depth - 1)
            self._emit("\n")
        elif tag in self._BLOCKS:
            self._emit("\n")

    def handle_data(self, data: str) -> None:
        self._emit(data if self.pre_depth else re.sub(r"\s+", " ", data))
