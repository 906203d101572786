"""DiscordChatExporter's JSON (``--format Json``): one file per channel, and per thread with
``--include-threads`` -> raw rows.

What is read (``docs/sources/discord_chat_exporter.md`` says it for users):

* every ``*.json`` of the export outside DCE's media folders (``<export>.json_Files/``; a single-file
  export: that file, whatever its name). Each is one channel: ``guild {id, name}``, ``channel {id, type,
  categoryId, category, name}`` and ``messages[]``. Other files are counted (``files/not_read``).
* one **timeline** per channel: ``<guild name>/<channel name> [<channel id>]`` (DCE's own file naming:
  readable, and unique even where two channels share a name); a direct message (guild id 0, whose channel
  DCE names after its people) is ``dm [<channel id>]``. A thread file (``channel.type``
  ``GuildPublicThread``/``GuildPrivateThread``/``GuildNewsThread``) joins the timeline of its parent
  channel, which DCE writes as the thread's ``categoryId``/``category``; files are grouped by timeline
  (headers first, read cheaply), and each timeline is read whole into one piece.
* conversations: a thread is one (``conversation_key`` = the thread's channel id), its starter message
  in the parent channel included (Discord gives a thread started from a message that message's id);
  elsewhere reply chains (``type: Reply`` with ``reference.messageId``; ``message_id`` is the snowflake).

Rows: ``Default``/``Reply`` -> ``message`` (``bot`` when ``author.isBot``); every other ``type``
(``ThreadCreated``, ``GuildMemberJoin``, ``ChannelPinnedMessage``, ``Call``, a number DCE has no name
for) -> ``system``. Text is ``content`` as DCE wrote it, where a user mention is ``@<nickname>`` (its
``mentions[]`` entry gives the id) or, with ``--markdown false``, ``<@id>``: both become
:func:`~.rows.mention`. Edits are in place (``timestampEdited``; counted ``edits/seen``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Any

from thread_embed_pipeline.schemas import RawPiece

from ..errors import SourceDataError, SourceParseError
from .rows import RawRows, epoch_ns, mention
from .tree import ExportTree

_EXPECTED = "a DiscordChatExporter JSON export (--format Json)"
_MESSAGE_TYPES = frozenset({"Default", "Reply", "0", "19"})  # DCE writes names; Discord's numbers too
_REPLY_TYPES = frozenset({"Reply", "19"})
_THREAD_TYPES = frozenset({"GuildPublicThread", "GuildPrivateThread", "GuildNewsThread", "10", "11", "12"})
_MEDIA_FOLDER = "_Files"  # DCE downloads media next to the export, into "<file>.json_Files/"
_HEADER_BYTES = 1 << 16  # guild and channel come first; a topic is at most 1024 characters
_MESSAGES_KEY = re.compile(rb'(?<!\\)"messages"\s*:\s*\[')
_INT64_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class _Channel:
    """One channel file's header, and the timeline it joins."""

    rel: str
    guild_id: str
    guild: str
    channel_id: str
    name: str
    thread: bool
    timeline_id: str  # the channel itself, or a thread's parent channel
    timeline_channel: str  # that channel's name as this file knows it


@dataclass(frozen=True)
class _Message:
    line: int
    id: int
    type: str
    timestamp: str
    author: str
    is_bot: bool
    text: str
    parent: int | None  # reference.messageId of a Reply
    edited: bool


def read_export(tree: ExportTree, source: str) -> Iterator[RawPiece]:
    """Raw pieces of a DiscordChatExporter export, one per timeline (see the module docstring)."""
    files = tree.files()
    if tree.kind == "file":
        channel_files = files
    else:
        channel_files = [f for f in files if f.lower().endswith(".json") and not _in_media_folder(f)]
    chosen = set(channel_files)
    not_read = [f for f in files if f not in chosen]
    if not channel_files:
        raise SourceDataError(
            f"{tree.path}: no DiscordChatExporter channel file in the export (expected *.json files written with --format Json"
            f"{'; found ' + ', '.join(not_read[:5]) if not_read else ''})"
        )
    timelines: dict[str, list[_Channel]] = {}  # by the timeline's channel id (a snowflake: unique across guilds)
    for rel in channel_files:
        channel = _header(tree, rel)
        timelines.setdefault(channel.timeline_id, []).append(channel)

    for number, (timeline, channel_label, channels) in enumerate(_ordered(timelines)):
        rows = RawRows(source)
        if number == 0 and not_read:
            rows.count("files/not_read", len(not_read))
        _read_timeline(tree, rows, timeline, channel_label, channels)
        yield rows.piece()


def _ordered(timelines: dict[str, list[_Channel]]) -> list[tuple[str, str, list[_Channel]]]:
    """(timeline, channel label, its files: the channel's own first, then its threads) by timeline."""
    named = [(*_timeline_name(channels), sorted(channels, key=lambda c: (c.thread, c.rel))) for channels in timelines.values()]
    return sorted(named, key=lambda t: (t[0], t[2][0].rel))


def _in_media_folder(rel: str) -> bool:
    return any(part.endswith(_MEDIA_FOLDER) for part in PurePosixPath(rel).parts[:-1])


# -- headers: which timeline a file joins ---------------------------------------------------------
def _header(tree: ExportTree, rel: str) -> _Channel:
    """The guild and channel of a channel file, parsed from its first bytes where it can be (DCE writes
    them before ``messages``), else from the whole file."""
    doc = None
    with tree.open(rel) as handle:
        head = handle.read(_HEADER_BYTES)
    found = _MESSAGES_KEY.search(head)
    if found:
        try:
            doc = json.loads(head[: found.start()].decode("utf-8-sig").rstrip().rstrip(",") + "}")
        except (UnicodeDecodeError, json.JSONDecodeError):
            doc = None
        if isinstance(doc, dict):
            doc["messages"] = []
    if not (isinstance(doc, dict) and isinstance(doc.get("guild"), dict) and isinstance(doc.get("channel"), dict)):
        doc = tree.read_json(rel, expected=_EXPECTED)
    return _channel_of(tree, rel, doc)


def _channel_of(tree: ExportTree, rel: str, doc: Any) -> _Channel:
    where = tree.display(rel)
    if not isinstance(doc, dict) or not {"guild", "channel", "messages"} <= set(doc):
        got = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise SourceDataError(f"{where}: not a DiscordChatExporter channel export: expected the keys guild, channel and messages, got {got}")
    guild, channel = doc["guild"], doc["channel"]
    if not isinstance(guild, dict) or not _snowflake(guild.get("id"), allow_zero=True):
        raise SourceDataError(f"{where}: expected guild.id (a Discord id; DCE writes 0 for direct messages), got {_shown(guild)}")
    if not isinstance(channel, dict) or not _snowflake(channel.get("id")):
        raise SourceDataError(f"{where}: expected channel.id (a Discord id), got {_shown(channel)}")
    channel_id = str(channel["id"])
    name = _label(channel.get("name")) or channel_id
    thread = str(channel.get("type")) in _THREAD_TYPES
    if thread:
        parent = channel.get("categoryId")
        if not _snowflake(parent):
            raise SourceDataError(
                f"{where}: a thread ({channel.get('type')}) must name its parent channel in channel.categoryId, got {_shown(parent)}"
            )
        timeline_id, timeline_channel = str(parent), _label(channel.get("category")) or str(parent)
    else:
        timeline_id, timeline_channel = channel_id, name
    guild_name = _label(guild.get("name")) or str(guild["id"])
    return _Channel(rel, str(guild["id"]), guild_name, channel_id, name, thread, timeline_id, timeline_channel)


def _timeline_name(channels: list[_Channel]) -> tuple[str, str]:
    """(the timeline string, the ``channel`` column) of a timeline's files: named by the parent channel's
    own file where the export has it, else by what its first thread file calls the parent."""
    best = min(channels, key=lambda c: (c.thread, c.rel))
    if best.guild_id == "0":  # a DM or group DM: DCE names the channel after its people, so only its id names the timeline
        return f"dm [{best.timeline_id}]", "dm"
    label = f"{best.guild}/{best.timeline_channel}"
    return f"{label} [{best.timeline_id}]", label


def _label(value: object) -> str:
    """A name as one path part: whitespace collapsed, ``/`` (which would add a level) made ``_``."""
    return " ".join(str(value).split()).replace("/", "_") if value is not None else ""


def _snowflake(value: object, allow_zero: bool = False) -> bool:
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    return text.isdigit() and (allow_zero or int(text) > 0) and int(text) <= _INT64_MAX


def _shown(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return repr(text if len(text) <= 80 else text[:77] + "...")


# -- messages -------------------------------------------------------------------------------------
def _read_timeline(tree: ExportTree, rows: RawRows, timeline: str, channel_label: str, channels: list[_Channel]) -> None:
    """Every message of one timeline's files, as rows in file order (the parent channel first)."""
    read: list[tuple[_Channel, list[_Message]]] = []
    for channel in channels:
        doc = tree.read_json(channel.rel, expected=_EXPECTED)
        if _channel_of(tree, channel.rel, doc) != channel:  # the header read cheaply must be the file's
            raise SourceDataError(f"{tree.display(channel.rel)}: the guild/channel header is not what its first bytes said; re-export the channel")
        messages = doc["messages"]
        if not isinstance(messages, list):
            raise SourceDataError(f"{tree.display(channel.rel)}: expected messages to be a list of messages, got {_shown(messages)}")
        read.append((channel, [_message(tree, channel.rel, line, item, rows) for line, item in enumerate(messages, start=1)]))
        rows.unit()
        del doc, messages

    ids = {m.id for _, messages in read for m in messages}
    threads = {int(c.channel_id) for c in channels if c.thread}
    for channel, messages in read:
        for m in messages:
            if channel.thread:
                key = channel.channel_id
            elif m.id in threads:  # the message the thread was started from
                key = str(m.id)
                rows.count("threads/starter_joined")
            else:
                key = None
            parents = ()
            if m.type in _REPLY_TYPES:
                if m.parent is not None and m.parent in ids and m.parent != m.id:
                    parents = (m.parent,)
                else:
                    rows.count("replies/parent_missing")
            if m.edited:
                rows.count("edits/seen")
            record_type = "system" if m.type not in _MESSAGE_TYPES else "bot" if m.is_bot else "message"
            rows.add(
                file=timeline,
                line=m.line,
                channel=channel_label,
                message_id=m.id,
                timestamp=m.timestamp,
                author=m.author,
                text=m.text,
                conversation_key=key,
                parent_ids=parents,
                record_type=record_type,
            )


def _message(tree: ExportTree, rel: str, line: int, item: Any, rows: RawRows) -> _Message:
    """One entry of ``messages[]`` (``line`` = its 1-based index); a message without what every DCE
    message has (id, type, timestamp, author) is an error naming the file and the index."""

    def bad(expected: str) -> SourceParseError:
        got = json.dumps(item, ensure_ascii=False, default=str)
        return SourceParseError(tree.display(rel), line, f"messages[{line - 1}]: {expected}", got)

    if not isinstance(item, dict):
        raise bad("a message object")
    if not _snowflake(item.get("id")):
        raise bad("a message 'id' (a Discord id)")
    kind = item.get("type")
    if not isinstance(kind, (str, int)) or isinstance(kind, bool) or str(kind) == "":
        raise bad("a message 'type' (Default, Reply, ThreadCreated, ...)")
    stamp = item.get("timestamp")
    try:
        if not isinstance(stamp, str) or epoch_ns(stamp) is None:
            raise ValueError(stamp)
    except ValueError:
        raise bad("an ISO-8601 'timestamp'") from None
    author = item.get("author")
    if not isinstance(author, dict) or not (author.get("nickname") or author.get("name")):
        raise bad("an 'author' with a name")

    content = item.get("content")
    text = content if isinstance(content, str) else ""
    mentioned = item.get("mentions")
    text = _with_mentions(text, mentioned if isinstance(mentioned, list) else [], rows)
    if not text.strip() and any(item.get(k) for k in ("attachments", "stickers", "embeds")):
        rows.count("attachments/without_text")  # kept with empty text; the corpus counts it empty_text
    if item.get("forwardedMessage"):
        rows.count("forwards/content_not_read")  # another author's message, not this one's words

    parent = None
    reference = item.get("reference")
    if isinstance(reference, dict) and _snowflake(reference.get("messageId")) and reference.get("type", "Default") == "Default":
        parent = int(reference["messageId"])
    return _Message(
        line=line,
        id=int(item["id"]),
        type=str(kind),
        timestamp=stamp,
        author=_display_name(author),
        is_bot=author.get("isBot") is True,
        text=text,
        parent=parent,
        edited=bool(item.get("timestampEdited")),
    )


def _display_name(user: dict) -> str:
    """What Discord shows: DCE's ``nickname`` (the server nickname, else the global display name, else
    the user name), else ``name``."""
    return str(user.get("nickname") or user.get("name"))


# -- mentions -------------------------------------------------------------------------------------
def _with_mentions(text: str, mentioned: list, rows: RawRows) -> str:
    """``text`` with each mentioned user's rendered form (``@<nickname>``, also ``@<name>``, or the raw
    ``<@id>``/``<@!id>``) written :func:`~.rows.mention`; a multi-word nickname is replaced whole."""
    listed = [u for u in mentioned if isinstance(u, dict) and _snowflake(u.get("id")) and (u.get("nickname") or u.get("name"))]
    if len(listed) < len(mentioned):
        rows.count("mentions/unreadable", len(mentioned) - len(listed))
    names = {str(u["id"]): _display_name(u) for u in listed}
    forms: dict[str, str] = {}  # rendered name -> id: nicknames (what DCE renders) first, then user names; the first listed wins
    for key in ("nickname", "name"):
        for user in listed:
            if user.get(key) and forms.setdefault(str(user[key]), str(user["id"])) != str(user["id"]) and key == "nickname":
                rows.count("mentions/ambiguous_name")
    seen: set[str] = set()

    def replace(match: re.Match) -> str:
        uid = match.group(1) or forms[match.group(2)]
        seen.add(uid)
        rows.count("mentions/structured")
        return mention(uid, names.get(uid))

    out = _mention_pattern(tuple(sorted(forms, key=lambda f: (-len(f), f)))).sub(replace, text) if "@" in text else text
    if set(names) - seen:  # e.g. the author replied to: pinged, not written
        rows.count("mentions/not_in_text", len(set(names) - seen))
    return out


@lru_cache(maxsize=4096)
def _mention_pattern(forms: tuple[str, ...]) -> re.Pattern:
    """``<@id>``/``<@!id>``, or ``@`` and one of ``forms`` (longest first) not followed by a word character."""
    named = "|".join(re.escape(f) for f in forms)
    return re.compile(r"<@!?(\d+)>" + (rf"|@({named})(?!\w)" if named else ""))
