"""``slack_export``: the export a Slack workspace admin downloads (a zip, or the folder it unpacks to).

Layout: ``users.json`` (required), the conversation lists ``channels.json`` (public), ``groups.json``
(private), ``mpims.json`` (group DMs) and ``dms.json`` (DMs), and one folder per conversation with a file
per day, ``<folder>/<YYYY-MM-DD>.json``: a JSON array of messages (``ts``, ``user``, ``text``, ``subtype``,
``thread_ts``, ``parent_user_id``, ``bot_id``, ``user_profile``, ...).

* **Timelines.** Each conversation folder is one timeline. Public and private channels keep their name;
  a DM or group DM is ``dm/<conversation id>`` (their folder names are people's names:
  ``mpdm-alice--bob-1``). Day files are read in date order, messages in ``ts`` order; ``message_id`` is the
  message's position in its timeline, ``line`` its position in its day file.
* **Threads** (Slack's own): a message with ``thread_ts == ts`` is a thread's parent, one with
  ``thread_ts != ts`` a reply, wherever it sits (a reply can be in a later day file than its parent).
  ``conversation_key`` is the thread's ``thread_ts`` (a message outside threads: its own ``ts``, so it is a
  one-message conversation, dropped later by the short-conversation rule with a count); a reply's parent
  link names the parent when the export holds it (else ``replies/parent_missing``: kept, no link).
* **Record types.** ``bot_message``, a ``bot_id``, a bot user (``is_bot`` in ``users.json``, Slackbot) ->
  ``bot``; ``tombstone`` (a deleted thread parent whose replies stay) and ``message_deleted`` -> ``deleted``;
  ``message_changed`` -> ``edit``; ``thread_broadcast`` (a reply also shown in the channel), ``file_share``
  and ``me_message`` are messages; every other subtype (``channel_join``, ``channel_topic``, pins, ...) is
  ``system``. Each subtype seen is counted ``subtype/<name>``.
* **Markup.** ``<@U123>`` / ``<@U123|name>`` -> ``<@U123|display name>`` (``rows.mention``: the text stage
  pseudonymises it); ``<#C123|general>`` -> ``#general``; ``<!here>`` -> ``@here`` (also channel,
  everyone); ``<!subteam^S1|@team>`` -> ``@team``; ``<http://x|label>`` -> ``label`` (``<http://x>`` ->
  the URL); then ``&amp;``, ``&lt;``, ``&gt;`` are unescaped.
* **Names.** An author is the user's ``display_name``, else ``real_name``, else ``name`` in ``users.json``
  (the message's own ``user_profile`` when the user is not listed: ``authors/not_in_users_json``).
  Names, e-mails and profiles are read for that only; the text stage replaces every one of them.

The day files are parsed by DuckDB's JSON reader (columns named, the rest skipped), a group of
timelines at a time: a million-message workspace never sits in memory whole. A zip is unpacked once
per content hash under ``<data>/downloads/exports/<source>/`` for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from thread_embed_pipeline import storage
from thread_embed_pipeline.schemas import RAW_SCHEMA, RawPiece

from ..errors import SourceDataError, SourceParseError
from .rows import RawRows, group_timelines, mention
from .tree import ExportTree

LISTS = ("channels.json", "groups.json", "mpims.json", "dms.json")
_DAY = re.compile(r"(?P<folder>.+)/(?P<day>\d{4}-\d{2}-\d{2})\.json")
_MESSAGE_SUBTYPES = frozenset({"thread_broadcast", "file_share", "me_message", "reply_broadcast"})
_BOT_SUBTYPES = frozenset({"bot_message", "bot_add", "bot_remove"})
_DELETED_SUBTYPES = frozenset({"tombstone", "message_deleted"})
_EDIT_SUBTYPES = frozenset({"message_changed"})
_SLACKBOT = "USLACKBOT"
# read this many bytes of day files per DuckDB query: a group of whole timelines (one timeline may exceed it)
GROUP_BYTES = 64 << 20
_COLUMNS = (
    "{ts: 'VARCHAR', thread_ts: 'VARCHAR', parent_user_id: 'VARCHAR', user: 'VARCHAR', username: 'VARCHAR', "
    "bot_id: 'VARCHAR', subtype: 'VARCHAR', text: 'VARCHAR', "
    "user_profile: 'STRUCT(display_name VARCHAR, real_name VARCHAR, name VARCHAR)'}"
)
_MARKUP = re.compile(r"<([@#!])([^<>|]*)(?:\|([^<>]*))?>|<((?:https?|ftp|mailto|tel)[^<>|]*)(?:\|([^<>]*))?>")


def read_export(tree: ExportTree, source: str) -> Iterator[RawPiece]:
    users, bots = _users(tree)
    timelines = _timelines(tree)
    folder = tree.local_folder(storage.data_dir() / "downloads" / "exports" / source)
    channel_names = {cid: name for cid, (name, _) in timelines["by_id"].items()}
    by_folder = timelines["by_folder"]
    sizes = {name: sum((folder / d).stat().st_size for d in days) for name, (_, days) in by_folder.items()}
    groups = [[(name, *by_folder[name]) for name in names] for names in group_timelines(sizes, GROUP_BYTES)]
    # DuckDB parses the next group's day files (it releases the GIL) while this one is turned into rows
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="slack-json") as pool:
        pending = pool.submit(_parse, tree, folder, groups[0])
        for k, group in enumerate(groups):
            table = pending.result()
            if k + 1 < len(groups):
                pending = pool.submit(_parse, tree, folder, groups[k + 1])
            yield _rows(table, folder, group, source, users, bots, channel_names)
    rows = RawRows(source)
    rows.count("files/lists_read", len([f for f in LISTS if tree.exists(f)]))
    yield rows.piece()  # the counts that belong to no timeline


def _users(tree: ExportTree) -> tuple[dict[str, str], set[str]]:
    """user id -> display name, and the ids of bot users, from ``users.json``."""
    if not tree.exists("users.json"):
        raise SourceDataError(
            f"{tree.path}: no users.json: expected a Slack workspace export (a zip or folder with users.json, channels.json "
            f"and a <channel>/<YYYY-MM-DD>.json file per day); found {len(tree.files())} files"
        )
    users = tree.read_json("users.json", expected="a JSON array of Slack users")
    if not isinstance(users, list):
        raise SourceDataError(f"{tree.display('users.json')}: expected a JSON array of Slack users, got {type(users).__name__}")
    names: dict[str, str] = {}
    bots = {_SLACKBOT}
    for i, user in enumerate(users):
        if not isinstance(user, dict) or not isinstance(user.get("id"), str):
            raise SourceParseError(tree.display("users.json"), i + 1, "a user object with a string 'id' (users.json entry)", repr(user)[:80])
        profile = user.get("profile") if isinstance(user.get("profile"), dict) else {}
        names[user["id"]] = _first(profile.get("display_name"), profile.get("real_name"), user.get("real_name"), user.get("name"), user["id"])
        if user.get("is_bot") or user.get("is_app_user"):
            bots.add(user["id"])
    return names, bots


def _first(*values) -> str | None:
    return next((v.strip() for v in values if isinstance(v, str) and v.strip()), None)


def _timelines(tree: ExportTree) -> dict:
    """``by_folder``: folder -> (timeline, its day files in date order); ``by_id``: conversation id -> (name, timeline)."""
    listed: dict[str, tuple[str, str]] = {}  # folder -> (conversation id, timeline)
    by_id: dict[str, tuple[str, str]] = {}
    for list_name in LISTS:
        if not tree.exists(list_name):
            continue
        entries = tree.read_json(list_name, expected=f"a JSON array of Slack conversations ({list_name})")
        if not isinstance(entries, list):
            raise SourceDataError(f"{tree.display(list_name)}: expected a JSON array of conversations, got {type(entries).__name__}")
        private = list_name in ("mpims.json", "dms.json")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                raise SourceParseError(tree.display(list_name), i + 1, "a conversation object with a string 'id'", repr(entry)[:80])
            cid = entry["id"]
            folder = cid if list_name == "dms.json" else str(entry.get("name") or cid)
            # a DM's or group DM's folder is named after its people: its timeline is its id
            timeline = f"dm/{cid}" if private else folder
            listed[folder] = (cid, timeline)
            by_id[cid] = (folder if not private else timeline, timeline)
    days: dict[str, list[str]] = {}
    for rel in tree.files():
        m = _DAY.fullmatch(rel)
        if m and "/" not in m.group("folder"):
            days.setdefault(m.group("folder"), []).append(rel)
    if not days:
        raise SourceDataError(
            f"{tree.path}: no day files: expected a <channel>/<YYYY-MM-DD>.json file per channel and day next to users.json "
            f"(an empty export, or not a Slack export)"
        )
    by_folder = {folder: (listed.get(folder, (None, folder))[1], sorted(files)) for folder, files in days.items()}
    return {"by_folder": by_folder, "by_id": by_id}


_TS = r"'[0-9]+([.][0-9]+)?'"


def _query(folder: Path, files: list[str]) -> pa.Table:
    """The day files' messages, in file order: the columns the reader uses, and what DuckDB can work out
    for it in parallel (which ts are usable, their nanoseconds, which texts hold markup)."""
    paths = ", ".join("'" + str(folder / f).replace("'", "''") + "'" for f in files)
    with duckdb.connect() as con:
        con.execute("SET preserve_insertion_order = true")
        return con.sql(
            f"""SELECT filename, ts, thread_ts, user, username, bot_id, subtype, text,
                   nullif(trim(user_profile.display_name), '') AS p_display, nullif(trim(user_profile.real_name), '') AS p_real,
                   nullif(trim(user_profile.name), '') AS p_name, nullif(trim(username), '') AS p_username,
                   coalesce(regexp_full_match(ts, {_TS}), false) AS ts_ok,
                   coalesce(regexp_full_match(thread_ts, {_TS}), false) AS thread_ok,
                   CASE WHEN ts_ok THEN CAST(split_part(ts, '.', 1) AS BIGINT) * 1000000000
                        + CAST(rpad(split_part(ts || '.', '.', 2) || '0', 9, '0') AS BIGINT) END AS ns,
                   coalesce(contains(text, '<') OR contains(text, '&'), false) AS marked
               FROM read_json([{paths}], format = 'array', filename = true, columns = {_COLUMNS}, maximum_object_size = 67108864)"""
        ).to_arrow_table()


def _parse(tree: ExportTree, folder: Path, group) -> pa.Table:
    files = [d for _, _, days in group for d in days]
    try:
        return _query(folder, files)
    except duckdb.Error as err:
        raise _explain(tree, folder, files, err) from None


def _rows(table: pa.Table, folder: Path, group, source: str, users, bots, channel_names) -> RawPiece:
    """The raw rows of one group of timelines, from their day files' messages (:func:`_query`)."""
    files = [d for _, _, days in group for d in days]
    counts: dict[str, int] = {}
    n = table.num_rows
    col = {name: table.column(name).combine_chunks() for name in table.column_names}
    # which day file and timeline each row comes from (DuckDB keeps the file order: a timeline's files are consecutive)
    encoded = pc.dictionary_encode(col["filename"])
    file_code = np.asarray(encoded.indices, dtype=np.int64)
    prefix = len(str(folder)) + 1
    file_names = [f[prefix:] for f in encoded.dictionary.to_pylist()]
    timeline_of_file = {d: timeline for _, timeline, days in group for d in days}
    timeline_names = [timeline_of_file[f] for f in file_names]
    timeline_index = {t: i for i, t in enumerate(dict.fromkeys(timeline_names))}
    timeline_code = np.asarray([timeline_index[t] for t in timeline_names], dtype=np.int64)[file_code]
    timelines = pa.DictionaryArray.from_arrays(pa.array(timeline_code, pa.int32()), pa.array(list(timeline_index), pa.string())).cast(pa.string())
    position = np.arange(n, dtype=np.int64)
    line = position - _run_starts(file_code) + 1  # the position in its day file
    message_id = position - _run_starts(timeline_code)  # the position in its timeline

    ts, thread_ts, subtype, user, ts_ok, thread_ok = (col[c] for c in ("ts", "thread_ts", "subtype", "user", "ts_ok", "thread_ok"))
    types = _record_types(ts_ok, subtype, col["bot_id"], user, bots)
    for item in pc.value_counts(subtype.drop_null()).to_pylist():
        counts[f"subtype/{item['values']}"] = int(item["counts"])
    if (bad := n - int(pc.sum(ts_ok).as_py() or 0)):
        counts["messages/without_ts"] = bad

    # threads: a reply (thread_ts != ts) links to the row of its timeline whose ts is that thread_ts
    keys = pc.if_else(thread_ok, thread_ts, ts)
    reply = np.asarray(pc.and_(thread_ok, pc.fill_null(pc.not_equal(thread_ts, ts), True)), dtype=bool)
    found = _parent_rows(timeline_code, ts, ts_ok, thread_ts)
    has_parent = reply & (found >= 0)
    if (missing := int((reply & (found < 0)).sum())):
        counts["replies/parent_missing"] = missing
    counts["threads/replies"] = int(has_parent.sum())
    offsets = np.concatenate(([0], np.cumsum(has_parent))).astype(np.int32)
    parents = pa.ListArray.from_arrays(pa.array(offsets), pa.array(message_id[found[has_parent]], pa.int64()))

    authors, unlisted = _authors(col, users, types)
    if unlisted:
        counts["authors/not_in_users_json"] = unlisted
    out = pa.table(
        {
            "source": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([source], pa.string())).cast(pa.string()),
            "file": timelines,
            "line": pa.array(line, pa.int64()),
            "split_hint": pa.nulls(n, pa.string()),
            "channel": timelines,
            "message_id": pa.array(message_id, pa.int64()),
            "timestamp": col["ns"].cast(pa.timestamp("ns")),
            "author": authors,
            "text": _texts(col["text"], col["marked"], users, channel_names),
            "conversation_key": keys,
            "parent_ids": parents,
            "record_type": types,
        },
        schema=RAW_SCHEMA,
    )
    if (empty := len(files) - len(file_names)):
        counts["files/no_messages"] = empty
    return RawPiece(out if n else None, len(files), len(files), counts)


def _explain(tree: ExportTree, folder: Path, files: list[str], err: Exception) -> Exception:
    """DuckDB's error about a day file, as the project's: the file, the line, what was expected."""
    named = [f for f in files if str(folder / f) in str(err)]
    for rel in named or files:
        data = tree.read_json(rel, expected="a JSON array of Slack messages")  # raises with the line when it is not JSON
        if not isinstance(data, list):
            return SourceDataError(f"{tree.display(rel)}: expected a JSON array of Slack messages, got a JSON {type(data).__name__}")
        bad = next((i for i, m in enumerate(data) if not isinstance(m, dict)), None)
        if bad is not None:
            return SourceParseError(tree.display(rel), bad + 1, "a Slack message object (array element)", repr(data[bad])[:80])
    return SourceDataError(f"{tree.path}: could not read the day files ({str(err).splitlines()[0]})")


def _parent_rows(timeline_code: np.ndarray, ts: pa.Array, ts_ok: pa.Array, thread_ts: pa.Array) -> np.ndarray:
    """For each row, the row of the same timeline whose ``ts`` is its ``thread_ts`` (-1: none)."""
    encoded = pc.dictionary_encode(pc.if_else(ts_ok, ts, pa.scalar(None, pa.string())))
    ts_code = np.asarray(pc.fill_null(encoded.indices, -1), dtype=np.int64)
    thread_code = np.asarray(pc.fill_null(pc.index_in(thread_ts, value_set=encoded.dictionary), -1), dtype=np.int64)
    width = len(encoded.dictionary) + 1
    own = np.where(ts_code >= 0, timeline_code * width + ts_code, -1)
    wanted = np.where(thread_code >= 0, timeline_code * width + thread_code, -2)
    if not len(own):
        return own
    order = np.argsort(own, kind="stable")
    at = np.minimum(np.searchsorted(own[order], wanted), len(own) - 1)
    return np.where(own[order][at] == wanted, order[at], -1)


def _run_starts(codes: np.ndarray) -> np.ndarray:
    """For each row, the index where its run of equal codes starts."""
    if not len(codes):
        return codes
    change = np.flatnonzero(np.diff(codes) != 0) + 1
    starts = np.zeros(len(codes), dtype=np.int64)
    starts[change] = change
    return np.maximum.accumulate(starts)


def _record_types(ts_ok, subtype, bot_id, user, bots) -> pa.Array:
    """message / bot / system / deleted / edit / malformed per row (see the module docstring)."""
    def of(values) -> pa.Array:
        return pc.fill_null(pc.is_in(subtype, value_set=pa.array(sorted(values), pa.string())), False)

    is_bot = pc.or_(pc.or_(of(_BOT_SUBTYPES), pc.is_valid(bot_id)), pc.fill_null(pc.is_in(user, value_set=pa.array(sorted(bots), pa.string())), False))
    kind = pc.if_else(pc.or_(pc.is_null(subtype), of(_MESSAGE_SUBTYPES)), pa.scalar("message"), pa.scalar("system"))
    kind = pc.if_else(is_bot, pa.scalar("bot"), kind)
    kind = pc.if_else(of(_EDIT_SUBTYPES), pa.scalar("edit"), kind)
    kind = pc.if_else(of(_DELETED_SUBTYPES), pa.scalar("deleted"), kind)
    return pc.if_else(ts_ok, kind, pa.scalar("malformed"))


def _authors(col: dict[str, pa.Array], users: dict[str, str], types: pa.Array) -> tuple[pa.Array, int]:
    """The display name of each row's user (``users.json``), else the message's own profile, its
    ``username`` (bot posts), the user id; and how many messages' users ``users.json`` lacks."""
    user = col["user"]
    ids = pa.array(list(users), pa.string())
    listed = pc.take(pa.array(list(users.values()), pa.string()), pc.index_in(user, value_set=ids))
    names = pc.coalesce(listed, col["p_display"], col["p_real"], col["p_name"], col["p_username"], user)
    unlisted = pc.and_(pc.and_(pc.is_null(listed), pc.is_valid(user)), pc.equal(types, "message"))
    return names, int(pc.sum(unlisted).as_py() or 0)


def _texts(text: pa.Array, marked: pa.Array, users: dict[str, str], channel_names: dict[str, str]) -> pa.Array:
    """:func:`_render` of the texts that hold markup or an escape (``marked``); the others as they are."""
    if not pc.any(marked).as_py():
        return text
    mentions: dict[str, str] = {}  # a workspace's mentions repeat: each written once
    rendered = [_render(t, users, channel_names, mentions) for t in text.filter(marked).to_pylist()]
    return pc.replace_with_mask(text, marked, pa.array(rendered, pa.string()))


def _render(text: str | None, users: dict[str, str], channel_names: dict[str, str], mentions: dict[str, str] | None = None) -> str | None:
    """Slack's markup as a reader sees it (see the module docstring)."""
    if text is None:
        return None
    mentions = {} if mentions is None else mentions
    if "<" in text:
        def replace(m: re.Match) -> str:
            sigil, target, label = m.group(1), m.group(2), m.group(3)
            if sigil is None:  # a link
                url, label = m.group(4), m.group(5)
                return label if label else url
            if sigil == "@":
                done = mentions.get(m.group(0))
                if done is None:
                    done = mentions[m.group(0)] = mention(target, users.get(target) or label or None)
                return done
            if sigil == "#":
                return "#" + (label or channel_names.get(target) or target)
            if target.startswith("subteam^"):
                return label or "@team"
            if target in ("here", "channel", "everyone"):
                return "@" + target
            return label or ""  # <!date^...|fallback> and the like
        text = _MARKUP.sub(replace, text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") if "&" in text else text
