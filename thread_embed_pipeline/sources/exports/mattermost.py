"""Mattermost bulk export (``mmctl export create``: a zip holding ``import.jsonl``, or the ``.jsonl`` alone)
-> raw rows.

What is read, line by line: ``version`` (must come first), ``channel`` (``team``, ``name``,
``display_name``), ``bot`` (``username``), ``post`` (``team``, ``channel``, ``user``, ``type``,
``message``, ``props``, ``create_at`` in ms, ``edit_at``, ``attachments``, ``replies``) and ``direct_post``
(``channel_members``, the same fields). ``team``, ``user``, ``role``, ``scheme``, ``emoji`` and
``direct_channel`` lines carry nothing a conversation needs; reactions, flags and files are not read.

* Timelines: ``<team>/<channel>`` for a channel post; ``dm/<12 hex>`` for a direct or group message
  channel (a hash of its members' usernames, so no name lands in a path or conversation id).
* Conversations: a root post and the replies nested under it. The root's ``conversation_key`` is its
  ``create_at`` (``-2``, ``-3`` ... when two roots of a timeline share a millisecond): stable when the
  export is taken again. Each reply's ``parent_ids`` name the root, so ``reply_to`` points at it.
  ``message_id`` is ``line * 2**20 + position`` (0 the root, then the replies by ``create_at``): the export
  carries no post ids.
* Authors are usernames: what Mattermost shows by default, and what ``@username`` mentions (left as
  written) name, so the text stage gives a person one pseudonym for both.
* Record types: ``type`` starting ``system_`` -> ``system``; a bot's post (its username on a ``bot`` line,
  ``props.from_bot`` / ``props.from_webhook``, or a plugin's ``custom_`` type) -> ``bot``; ``delete_at`` > 0
  -> ``deleted`` (``mmctl`` leaves deleted posts out, other tools may not); a post without a string
  ``user`` or ``message`` -> ``malformed``. The export holds each post's final text only: an edited post
  (``edit_at`` > 0) is counted ``edits/final_text_only``.

Memory: a first pass counts each timeline's messages; the timelines are then read in groups of at most
:data:`MAX_ROWS_PER_PIECE` messages, one more pass over the file per group, each group one piece.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from thread_embed_pipeline.schemas import RawPiece

from ..errors import SourceDataError, SourceParseError
from .rows import RawRows, group_timelines, safe_key
from .tree import ExportTree

# the most messages read into one piece (a bigger timeline still goes whole into its own piece)
MAX_ROWS_PER_PIECE = 200_000
_REPLY_SLOTS = 1 << 20  # message_id = line * _REPLY_SLOTS + position in the thread
_LINE_TYPES = frozenset({"version", "role", "scheme", "emoji", "team", "channel", "user", "bot", "post", "direct_channel", "direct_post"})
_EXPECTED_LINE = "a Mattermost bulk export line: one JSON object with a `type`"


def _find_jsonl(tree: ExportTree) -> str:
    """The export's JSON Lines member: ``import.jsonl`` (mmctl's name), else the only ``.jsonl``."""
    files = tree.files()
    if tree.kind == "file":
        return files[0]
    named = sorted((f for f in files if f == "import.jsonl" or f.endswith("/import.jsonl")), key=lambda f: (f.count("/"), f))
    if named:
        return named[0]
    jsonl = [f for f in files if f.endswith(".jsonl")]
    if len(jsonl) == 1:
        return jsonl[0]
    if not jsonl:
        raise SourceDataError(f"{tree.path}: not a Mattermost bulk export: no import.jsonl (expected the zip `mmctl export create` writes, or its .jsonl)")
    raise SourceDataError(f"{tree.path}: several .jsonl files and no import.jsonl ({', '.join(jsonl[:5])}); point the source at one of them")


def _lines(tree: ExportTree, rel: str) -> Iterator[tuple[int, str, dict, str]]:
    """(line number, type, the type's object, the raw line for errors) of each line after the version line."""
    shown = tree.display(rel)
    first = True
    for number, obj in tree.iter_json_lines(rel, expected=_EXPECTED_LINE):
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            raise SourceParseError(shown, number, _EXPECTED_LINE, _preview(obj))
        kind = obj["type"]
        if first:
            if kind != "version":
                raise SourceParseError(shown, number, 'a Mattermost bulk export, whose first line is {"type": "version", "version": 1}', _preview(obj))
            first = False
            continue
        body = obj.get(kind)
        if kind in ("post", "direct_post", "channel", "bot") and not isinstance(body, dict):
            raise SourceParseError(shown, number, f'a "{kind}" line with a "{kind}" object', _preview(obj))
        yield number, kind, body if isinstance(body, dict) else {}, obj
    if first:
        raise SourceDataError(f"{shown}: the export is empty (expected a first line {{\"type\": \"version\", \"version\": 1}})")


def _preview(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)[:200]


def _name(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _timeline(kind: str, post: dict, shown: str, number: int, raw: dict) -> str:
    if kind == "post":
        team, channel = _name(post.get("team")), _name(post.get("channel"))
        if team is None or channel is None:
            raise SourceParseError(shown, number, "a post with its team and channel names", _preview(raw))
        return f"{safe_key(team)}/{safe_key(channel)}"
    members = post.get("channel_members")
    if not isinstance(members, list) or not members or not all(_name(m) for m in members):
        raise SourceParseError(shown, number, "a direct_post with channel_members (a list of usernames)", _preview(raw))
    digest = hashlib.sha256("\n".join(sorted(set(members))).encode()).hexdigest()[:12]
    return f"dm/{digest}"


def _millis(value: Any, shown: str, number: int, raw: dict, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise SourceParseError(shown, number, f"{what} with create_at in milliseconds since the epoch", _preview(raw))


def _seconds(millis: int) -> str:
    return f"{millis // 1000}.{millis % 1000:03d}"  # exact, not via float


class _Thread:
    """The rows of one root post and its replies."""

    def __init__(self, rows: RawRows, bots: set[str]) -> None:
        self.rows = rows
        self.bots = bots

    def record_type(self, post: dict) -> str:
        kind = post.get("type") if isinstance(post.get("type"), str) else ""
        props = post.get("props") if isinstance(post.get("props"), dict) else {}
        delete_at = post.get("delete_at")
        if isinstance(delete_at, int) and not isinstance(delete_at, bool) and delete_at > 0:
            return "deleted"
        if kind.startswith("system_"):
            return "system"
        if post.get("user") in self.bots or kind.startswith("custom_") or any(str(props.get(p)).lower() == "true" for p in ("from_bot", "from_webhook")):
            return "bot"
        if _name(post.get("user")) is None or not isinstance(post.get("message"), str):
            return "malformed"
        return "message"

    def add(self, *, timeline: str, channel: str, number: int, key: str, post: dict, created: int, position: int, parent: int | None) -> int:
        message_id = number * _REPLY_SLOTS + position
        record_type = self.record_type(post)
        text = post.get("message") if isinstance(post.get("message"), str) else None
        if text is not None and not text.strip() and post.get("attachments"):
            self.rows.count("attachments/file_only")
        edit_at = post.get("edit_at")
        if isinstance(edit_at, int) and not isinstance(edit_at, bool) and edit_at > 0:
            self.rows.count("edits/final_text_only")
        self.rows.add(
            file=timeline,
            line=number,
            channel=channel,
            message_id=message_id,
            timestamp=_seconds(created),
            author=_name(post.get("user")),
            text=text,
            conversation_key=key,
            parent_ids=() if parent is None else (parent,),
            record_type=record_type,
        )
        return message_id


def read_export(tree: ExportTree, source: str) -> Iterator[RawPiece]:
    """Raw pieces of a Mattermost bulk export (see the module docstring): whole timelines, grouped by size."""
    rel = _find_jsonl(tree)
    shown = tree.display(rel)
    rows = RawRows(source)
    rows.unit(1)

    bots: set[str] = set()
    channel_names: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for number, kind, body, raw in _lines(tree, rel):
        if kind == "bot" and _name(body.get("username")):
            bots.add(body["username"])
        elif kind == "channel" and _name(body.get("team")) and _name(body.get("name")):
            channel_names[f"{safe_key(body['team'])}/{safe_key(body['name'])}"] = _name(body.get("display_name")) or body["name"]
        elif kind in ("post", "direct_post"):
            timeline = _timeline(kind, body, shown, number, raw)
            replies = body.get("replies") or []
            if not isinstance(replies, list):
                raise SourceParseError(shown, number, f"a {kind} whose replies are a list", _preview(raw))
            if len(replies) >= _REPLY_SLOTS:
                raise SourceParseError(shown, number, f"a {kind} with fewer than {_REPLY_SLOTS} replies", _preview(raw))
            sizes[timeline] = sizes.get(timeline, 0) + 1 + len(replies)
        elif kind not in _LINE_TYPES:
            rows.count(f"lines/unknown_type/{kind}")

    thread = _Thread(rows, bots)
    for group in group_timelines(sizes, MAX_ROWS_PER_PIECE) or [[]]:
        wanted = set(group)
        found: dict[str, list[tuple[int, str, dict, dict]]] = {t: [] for t in group}
        if wanted:
            for number, kind, body, raw in _lines(tree, rel):
                if kind in ("post", "direct_post"):
                    timeline = _timeline(kind, body, shown, number, raw)
                    if timeline in wanted:
                        found[timeline].append((number, kind, body, raw))
        for timeline in group:
            channel = channel_names.get(timeline, timeline)
            used: dict[str, int] = {}
            for number, kind, post, raw in found[timeline]:
                created = _millis(post.get("create_at"), shown, number, raw, f"a {kind}")
                key = str(created)
                used[key] = used.get(key, 0) + 1
                if used[key] > 1:
                    key = f"{key}-{used[key]}"
                root = thread.add(timeline=timeline, channel=channel, number=number, key=key, post=post, created=created, position=0, parent=None)
                replies = []
                for i, reply in enumerate(post.get("replies") or [], start=1):
                    if not isinstance(reply, dict):
                        raise SourceParseError(shown, number, f"reply {i} of the {kind}: an object with user, message and create_at", _preview(reply))
                    replies.append((_millis(reply.get("create_at"), shown, number, raw, f"reply {i} of the {kind}"), i, reply))
                for position, (reply_created, _, reply) in enumerate(sorted(replies, key=lambda r: (r[0], r[1])), start=1):
                    thread.add(timeline=timeline, channel=channel, number=number, key=key, post=reply, created=reply_created, position=position, parent=root)
        yield rows.piece()
