"""Zulip organisation export (``manage.py export`` or the web UI's export, unpacked or zipped) -> raw rows.

What is read: ``realm.json`` (``zerver_userprofile``, ``zerver_userprofile_mirrordummy``,
``zerver_userprofile_crossrealm``, ``zerver_stream``, ``zerver_recipient``) and every
``messages-NNNNNN.json`` (``zerver_message``: ``id``, ``sender``, ``recipient``, ``subject``, ``content``,
``date_sent``, ``edit_history``, ``type``), in the export's folder or one folder below (a zip of the
``zulip-export-*/`` folder). Everything else (uploads, avatars, usermessages, reactions) is not read.

* Timelines: a channel (stream) is one timeline, named by the channel (``/`` written ``%2F``); a direct
  message conversation is ``dm/<user id>-<user id>`` (sorted ids; ``dm/<id>`` for notes to self) and a
  group DM ``dm/group-<group id>``.
* Conversations: a channel message's topic (``subject``) is its conversation: the key is a hash of the
  topic (:func:`topic_key`), case-folded as Zulip compares topics, never the topic's words; an empty
  topic is ``(no topic)``. DMs have no topics: a DM timeline is cut into sessions where two messages are
  more than :data:`DM_SESSION_GAP_S` apart, keyed ``session-<first message id>``. Zulip has no
  reply-to links, so ``parent_ids`` stay empty.
* Record types: a bot sender (``is_bot``; the cross-realm Welcome Bot / Email Gateway) -> ``bot``;
  Notification Bot's posts and topic-resolved notices (``type`` 2) -> ``system``. Deleted messages are not in
  Zulip exports. ``content`` is the final text: ``edit_history`` only records earlier versions, counted
  ``edits/applied`` (content edits) and ``edits/moved`` (topic or channel moves).
* Text: user mentions ``@**Name**``, ``@**Name|id**``, ``@**|id**`` and their silent ``@_`` forms become
  ``<@id|Full Name>``; wildcards (``@**all**``, ``@**topic**``, ...) become ``@all``; group mentions
  ``@*group*`` become ``@group``. A message that is only upload links (``[f.pdf](/user_uploads/...)``)
  has empty text.

Memory: a first pass counts each timeline's messages; then the timelines are read in groups of at most
:data:`MAX_ROWS_PER_PIECE` messages (one more pass over the message files per group), each group one piece.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from thread_embed_pipeline.schemas import RawPiece

from ..errors import SourceDataError, SourceParseError
from .rows import RawRows, group_timelines, mention, safe_key
from .tree import ExportTree

# Recipient.type values (zerver/models/recipients.py)
_PERSONAL, _STREAM, _DM_GROUP = 1, 2, 3
_RESOLVE_TOPIC_NOTIFICATION = 2  # Message.type
# a DM timeline has no topics: a gap longer than this starts a new conversation
DM_SESSION_GAP_S = 3600
# the most messages read into one piece (a bigger timeline still goes whole into its own piece)
MAX_ROWS_PER_PIECE = 200_000
NO_TOPIC = "(no topic)"
_REQUIRED_TABLES = ("zerver_userprofile", "zerver_stream", "zerver_recipient")
_USER_TABLES = ("zerver_userprofile", "zerver_userprofile_mirrordummy")
# the cross-realm system bots an export lists by email only: (display name, record type)
_SYSTEM_BOTS = {
    "notification-bot": ("Notification Bot", "system"),
    "welcome-bot": ("Welcome Bot", "bot"),
    "emailgateway": ("Email Gateway", "bot"),
}
_MESSAGES_RE = re.compile(r"messages-(\d+)\.json")
# zerver/lib/mention.py: what may precede a mention, user (``**``) and group (``*``) mentions, wildcards
_BEFORE = r"(?<![^\s'\"(\{\[/<])"
_USER_MENTION = re.compile(_BEFORE + r"@_?\*\*(?P<body>[^*]+)\*\*")
_GROUP_MENTION = re.compile(_BEFORE + r"@_?\*(?P<body>[^*]+)\*")
_WILDCARDS = frozenset({"all", "everyone", "stream", "channel", "topic"})
_UPLOAD_LINK = re.compile(r"!?\[[^\]]*\]\(/user_uploads/[^)\s]*\)")


@dataclass(frozen=True)
class _User:
    name: str
    record_type: str  # "message" | "bot" | "system"


class _Realm:
    """The parts of ``realm.json`` a reader needs: users, channels, recipients."""

    def __init__(self, tree: ExportTree, rel: str) -> None:
        shown = tree.display(rel)
        data = tree.read_json(rel, expected="a Zulip realm.json (one JSON object of tables)")
        if not isinstance(data, dict):
            raise SourceDataError(f"{shown}: expected a JSON object of tables (zerver_userprofile, zerver_stream, ...), got {type(data).__name__}")
        missing = [t for t in _REQUIRED_TABLES if not isinstance(data.get(t), list)]
        if missing:
            raise SourceDataError(f"{shown}: no table {', '.join(missing)} (expected the realm.json of a Zulip export, with {', '.join(_REQUIRED_TABLES)})")
        self.users: dict[int, _User] = {}
        for table in _USER_TABLES:
            for _, row in _rows(data.get(table) or [], table, shown, ("id",)):
                bot = bool(row.get("is_bot"))
                self.users[row["id"]] = _User(str(row.get("full_name") or f"user-{row['id']}"), "bot" if bot else "message")
        for _, row in _rows(data.get("zerver_userprofile_crossrealm") or [], "zerver_userprofile_crossrealm", shown, ("id",)):
            local = str(row.get("email") or "").split("@")[0]
            name, kind = _SYSTEM_BOTS.get(local, (local or f"bot-{row['id']}", "bot"))
            self.users[row["id"]] = _User(name, kind)
        self.by_name: dict[str, list[int]] = {}
        for uid, user in self.users.items():
            self.by_name.setdefault(user.name.casefold(), []).append(uid)
        self.streams = {row["id"]: str(row.get("name") or f"channel-{row['id']}") for _, row in _rows(data["zerver_stream"], "zerver_stream", shown, ("id",))}
        self.recipients: dict[int, tuple[int, int]] = {}
        for _, row in _rows(data["zerver_recipient"], "zerver_recipient", shown, ("id", "type", "type_id")):
            self.recipients[row["id"]] = (row["type"], row["type_id"])

    def timeline(self, sender: int, recipient: int) -> tuple[str, str, bool] | None:
        """(file, channel, is_dm) of a message, or None when its recipient is not in the export."""
        kind, type_id = self.recipients.get(recipient, (None, None))
        if kind == _STREAM and type_id in self.streams:
            name = self.streams[type_id]
            return safe_key(name) or f"channel-{type_id}", name, False
        if kind == _PERSONAL:
            ids = sorted({sender, type_id})
            path = "dm/" + "-".join(map(str, ids))
            return path, path, True
        if kind == _DM_GROUP:
            path = f"dm/group-{type_id}"
            return path, path, True
        return None


def _rows(table: Any, name: str, shown: str, int_keys: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    """The rows of a realm table, each an object with integer ``int_keys`` (else a parse error naming it)."""
    if not isinstance(table, list):
        raise SourceDataError(f"{shown}: table {name} is not a list of rows")
    for i, row in enumerate(table):
        if not isinstance(row, dict) or not all(_is_int(row.get(k)) for k in int_keys):
            raise SourceParseError(shown, i + 1, f"row {i + 1} of {name}: an object with integer {', '.join(int_keys)}", _preview(row))
        yield i, row


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _preview(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)[:200]


def _find_layout(tree: ExportTree) -> tuple[str, list[str]]:
    """(realm.json's member, the message members in order): the export's top folder or one below it."""
    realms = sorted((f for f in tree.files() if f == "realm.json" or f.endswith("/realm.json")), key=lambda f: (f.count("/"), f))
    if not realms or realms[0].count("/") > 1:
        raise SourceDataError(
            f"{tree.path}: not a Zulip export: no realm.json (expected the folder or zip `manage.py export` writes: realm.json, messages-000001.json, ...)"
        )
    realm = realms[0]
    prefix = realm[: -len("realm.json")]
    numbered: list[tuple[int, str]] = []
    for rel in tree.files():
        name = rel[len(prefix) :] if rel.startswith(prefix) else None
        if name is None or "/" in name:
            continue
        if name.startswith("messages-") and name.endswith(".json.partial"):
            raise SourceDataError(f"{tree.display(rel)}: the export did not finish (a .partial message file); export the organisation again")
        match = _MESSAGES_RE.fullmatch(name)
        if match:
            numbered.append((int(match.group(1)), rel))
    if not numbered:
        raise SourceDataError(f"{tree.display(realm)}: the export has no messages-NNNNNN.json next to realm.json (expected at least messages-000001.json)")
    return realm, [rel for _, rel in sorted(numbered)]


def _messages(tree: ExportTree, rel: str) -> Iterator[tuple[int, dict]]:
    """(1-based position, row) of each ``zerver_message`` row of a message file, checked for integer
    id/sender/recipient and a numeric ``date_sent`` (``pub_date`` before Zulip 2.1), kept as ``date_sent``."""
    shown = tree.display(rel)
    data = tree.read_json(rel, expected="a Zulip messages file (a JSON object with zerver_message)")
    if not isinstance(data, dict) or not isinstance(data.get("zerver_message"), list):
        raise SourceDataError(f"{shown}: no zerver_message list (expected a Zulip messages-NNNNNN.json: {{\"zerver_message\": [...], ...}})")
    for i, row in enumerate(data["zerver_message"]):
        if not isinstance(row, dict) or not all(_is_int(row.get(k)) for k in ("id", "sender", "recipient")):
            raise SourceParseError(shown, i + 1, f"zerver_message row {i + 1}: an object with integer id, sender and recipient", _preview(row))
        sent = row.get("date_sent", row.get("pub_date"))
        if sent is not None and (not isinstance(sent, (int, float)) or isinstance(sent, bool)):
            raise SourceParseError(shown, i + 1, f"zerver_message row {i + 1}: a numeric date_sent (epoch seconds)", _preview(row))
        row["date_sent"] = sent
        yield i + 1, row


class _Text:
    """Zulip markdown as raw text: structured mentions, wildcards and group mentions, upload-only messages."""

    def __init__(self, realm: _Realm, rows: RawRows) -> None:
        self.realm = realm
        self.rows = rows

    def __call__(self, content: str) -> str:
        if _UPLOAD_LINK.search(content) and not _UPLOAD_LINK.sub("", content).strip():
            self.rows.count("attachments/upload_only")
            return ""
        text = _USER_MENTION.sub(self._user, content)
        return _GROUP_MENTION.sub(lambda m: "@" + m.group("body").strip(), text)

    def _user(self, match: re.Match) -> str:
        body = match.group("body").strip()
        name, bar, ident = body.rpartition("|")
        if bar and ident.strip().isdigit():
            uid = int(ident)
            user = self.realm.users.get(uid)
            return mention(uid, user.name if user else (name.strip() or None))
        if body.casefold() in _WILDCARDS:
            return "@" + body
        ids = self.realm.by_name.get(body.casefold(), [])
        if len(ids) == 1:
            return mention(ids[0], self.realm.users[ids[0]].name)
        self.rows.count("mentions/unresolved")  # no (single) user of that name: the name stands as the id
        return mention(body, body)


def _edit_counts(history: Any, rows: RawRows) -> None:
    if history in (None, "", []):
        return
    try:
        events = json.loads(history) if isinstance(history, str) else history
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise ValueError
    except ValueError:
        rows.count("edits/history_unreadable")
        return
    for event in events:
        if "prev_content" in event:
            rows.count("edits/applied")
        if "prev_topic" in event or "prev_subject" in event or "prev_stream" in event:
            rows.count("edits/moved")


def _keys(messages: list[tuple[int, int, dict]], is_dm: bool) -> list[str]:
    """The conversation key of each message of a timeline (sorted by id): topic or DM session."""
    keys: list[str] = []
    if is_dm:
        last, current = None, ""
        for mid, _, row in messages:
            sent = row["date_sent"]
            if last is None or sent is None or sent - last > DM_SESSION_GAP_S:
                current = f"session-{mid}"
            last = sent if sent is not None else last
            keys.append(current)
        return keys
    for _, _, row in messages:
        keys.append(topic_key(str(row.get("subject") or "")))
    return keys


def topic_key(topic: str) -> str:
    """A topic's conversation key: ``topic-`` and a hash of the topic as Zulip compares it (case-folded), not
    the topic itself. A topic is text people type ("Alice's laptop"), and conversation ids travel into
    pairs, eval sets and exports untouched by the text stage."""
    folded = (topic.strip() or NO_TOPIC).casefold()
    return "topic-" + hashlib.sha256(folded.encode("utf-8")).hexdigest()[:16]


def read_export(tree: ExportTree, source: str) -> Iterator[RawPiece]:
    """Raw pieces of a Zulip export (see the module docstring): whole timelines, grouped by size."""
    realm_rel, message_files = _find_layout(tree)
    realm = _Realm(tree, realm_rel)
    rows = RawRows(source)
    text = _Text(realm, rows)
    rows.unit(1 + len(message_files))

    sizes: dict[str, int] = {}
    is_dm: dict[str, bool] = {}
    for rel in message_files:
        for _, row in _messages(tree, rel):
            where = realm.timeline(row["sender"], row["recipient"])
            if where is None:
                rows.count("messages/recipient_unknown")
                continue
            sizes[where[0]] = sizes.get(where[0], 0) + 1
            is_dm[where[0]] = where[2]

    for group in group_timelines(sizes, MAX_ROWS_PER_PIECE) or [[]]:
        wanted = set(group)
        found: dict[str, list[tuple[int, int, dict]]] = {t: [] for t in group}
        channel: dict[str, str] = {}
        if wanted:
            for rel in message_files:
                for line, row in _messages(tree, rel):
                    where = realm.timeline(row["sender"], row["recipient"])
                    if where is not None and where[0] in wanted:
                        found[where[0]].append((row["id"], line, row))
                        channel[where[0]] = where[1]
        for timeline in group:
            messages = sorted(found[timeline], key=lambda m: m[0])
            for (mid, line, row), key in zip(messages, _keys(messages, is_dm[timeline])):
                user = realm.users.get(row["sender"])
                if user is None:
                    rows.count("authors/unknown")
                    user = _User(f"user-{row['sender']}", "message")
                record_type = user.record_type
                if record_type == "message" and row.get("type") == _RESOLVE_TOPIC_NOTIFICATION:
                    record_type = "system"
                content = row.get("content")
                if not isinstance(content, str):
                    record_type, body = "malformed", None
                else:
                    body = text(content)
                _edit_counts(row.get("edit_history"), rows)
                rows.add(
                    file=timeline,
                    line=line,
                    channel=channel[timeline],
                    message_id=mid,
                    timestamp=row["date_sent"],
                    author=user.name,
                    text=body,
                    conversation_key=key,
                    record_type=record_type,
                )
        yield rows.piece()
