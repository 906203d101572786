"""Parsers of the streamed (Hugging Face) sources: one upstream record batch -> raw rows.

Every parser takes a ``pyarrow.RecordBatch`` with the columns its source declares, the data file
it came from (path relative to the dataset root), the 1-based row number of the batch's first
record in that file and the first free ``message_id`` of the file, and returns a raw table
(``schemas.RAW_COLUMNS``): ``line`` is the 1-based row (Parquet) / line (JSON Lines) of the record
a message came from, ``message_id`` runs over the whole file. Records that cannot be read become
``record_type == "malformed"`` rows (text cut to 200 characters), which ``build_corpus`` counts as
dropped -- nothing disappears silently.

Speakers: ChatML / Q&A sources have no names, only turns; their speakers are ``speaker_1`` (who
speaks first) and ``speaker_2``, so that "who said it" stays visible to the model the same way
across sources.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import PurePosixPath

import numpy as np
import pandas as pd
import pyarrow as pa

from thread_embed_pipeline.schemas import RAW_COLUMNS, RAW_SCHEMA, hash_splits

MALFORMED_TEXT_CHARS = 200


def raw_frame(columns: dict) -> pd.DataFrame:
    """A raw table from column arrays (all RAW_COLUMNS, in order)."""
    frame = pd.DataFrame(columns)
    return frame[list(RAW_COLUMNS)]


def _row_numbers(batch: pa.RecordBatch, first_row: int, rows=None) -> np.ndarray:
    """Each record's 1-based row: ``rows`` when given (a sample), else consecutive from ``first_row``."""
    if rows is not None:
        return np.asarray(rows, dtype=np.int64)
    return np.arange(first_row, first_row + batch.num_rows, dtype=np.int64)


# --- Q&A pair tables (flyte_slack, flyte_slack_long) --------------------------------------------


def parse_qa_pairs(batch: pa.RecordBatch, *, source: str, file: str, first_row: int, first_message_id: int, channel: str, rows=None) -> pd.DataFrame:
    """``input`` / ``output`` columns: two messages per row, the output replying to the input.

    Conversation key: the row number. A null side becomes an empty message (dropped as
    ``empty_text`` by the corpus stage, and counted).
    """
    n = batch.num_rows
    rows = _row_numbers(batch, first_row, rows)
    inputs = batch.column("input").to_pylist()
    outputs = batch.column("output").to_pylist()
    mids = np.arange(first_message_id, first_message_id + 2 * n, dtype=np.int64)
    text = [None] * (2 * n)
    text[0::2] = [t if t is not None else "" for t in inputs]
    text[1::2] = [t if t is not None else "" for t in outputs]
    parents: list[list[int]] = [[] for _ in range(2 * n)]
    for i in range(n):
        parents[2 * i + 1] = [int(mids[2 * i])]
    return raw_frame(
        {
            "source": source,
            "file": file,
            "line": np.repeat(rows, 2),
            "split_hint": None,
            "channel": channel,
            "message_id": mids,
            "timestamp": pd.NaT,
            "author": ["speaker_1", "speaker_2"] * n,
            "text": text,
            "conversation_key": np.repeat(rows, 2).astype(str),
            "parent_ids": parents,
            "record_type": "message",
        }
    )


# --- ChatML exchanges (discord_dialogues) ------------------------------------------------------

CHATML_TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>", re.DOTALL)


def parse_chatml(batch: pa.RecordBatch, *, source: str, file: str, first_row: int, first_message_id: int, channel: str, rows=None) -> pd.DataFrame:
    """``text`` in ChatML (``<|im_start|>user\\n...<|im_end|>`` turns, ``<|end_of_text|>`` at the end).

    One conversation per row (key: the row number); each turn replies to the one before. The first
    role to speak is ``speaker_1``, the other ``speaker_2``. A row without any well-formed turn is
    one ``malformed`` row.
    """
    rows = _row_numbers(batch, first_row, rows)
    out: dict[str, list] = {k: [] for k in ("line", "author", "text", "key", "parents", "rtype")}
    mid = first_message_id
    mids: list[int] = []
    for row, text in zip(rows.tolist(), batch.column("text").to_pylist()):
        turns = CHATML_TURN.findall(text) if isinstance(text, str) else []
        if not turns:
            out["line"].append(row)
            out["author"].append(None)
            out["text"].append((text or "")[:MALFORMED_TEXT_CHARS] if isinstance(text, str) else None)
            out["key"].append(str(row))
            out["parents"].append([])
            out["rtype"].append("malformed")
            mids.append(mid)
            mid += 1
            continue
        first_role = turns[0][0]
        for k, (role, body) in enumerate(turns):
            out["line"].append(row)
            out["author"].append("speaker_1" if role == first_role else "speaker_2")
            out["text"].append(body.strip())
            out["key"].append(str(row))
            out["parents"].append([mid - 1] if k else [])
            out["rtype"].append("message")
            mids.append(mid)
            mid += 1
    return raw_frame(
        {
            "source": source,
            "file": file,
            "line": np.asarray(out["line"], dtype=np.int64),
            "split_hint": None,
            "channel": channel,
            "message_id": np.asarray(mids, dtype=np.int64),
            "timestamp": pd.Series(pd.NaT, index=range(len(mids)), dtype="datetime64[ns]"),
            "author": out["author"],
            "text": out["text"],
            "conversation_key": out["key"],
            "parent_ids": out["parents"],
            "record_type": out["rtype"],
        }
    )


# --- Ubuntu IRC channel-day logs (ubuntu_irc) ---------------------------------------------------

# "[HH:MM] <nick> message" or "[HH:MM]  * nick action" (common-pile's ubuntu/preprocess.py);
# an addressed message starts "nick: ..." / "nick, ..." (RE2 patterns for Arrow, below)


class IrcHeuristic:
    """Reply links for undisentangled IRC logs (the settings of :func:`parse_channel_day_logs`).

    * A message that starts by addressing a nick (``nick: ...`` / ``nick, ...``) replies to that
      nick's latest message in the same channel-day, if it is at most ``mention_window_min`` old.
    * Otherwise it continues its author's previous message when that is at most
      ``continuation_gap_min`` old.
    * Otherwise it starts a new conversation. Conversations are the connected components of these
      links (``corpus.build_corpus``).

    Known weakness: answers that do not name their addressee start a conversation of their own
    (over-splitting), and a nick answering two people in a row within the continuation gap merges
    their conversations; the Kummerfeld et al. (2019) gold data shows both happen often in #ubuntu.
    """

    mention_window_min = 30
    continuation_gap_min = 5


IRC_CHAT_RE2 = r"^\[\d\d:\d\d\] <[^>\s]+>( |$)"  # [HH:MM] <nick> message
IRC_ACTION_RE2 = r"^\[\d\d:\d\d\]  ?\* \S"  # [HH:MM]  * nick action
ADDRESSEE_RE2 = r"^(?P<target>[^\s:,]{1,40})[:,](?:\s|$)"  # "nick: ..." / "nick, ..."


def _irc_line_fields(lines: pa.Array):
    """(author, text, minutes, is_chat, is_action) of every line, vectorised.

    Lines are recognised by two anchored RE2 matches; the fields come from fixed offsets and
    one split at the first ``>`` (chat) or ``* `` (action) -- several times faster than a
    capturing regex over millions of lines. Unrecognised lines get nulls.
    """
    import pyarrow.compute as pc

    null_str = pa.scalar(None, pa.string())
    chat = pc.fill_null(pc.match_substring_regex(lines, IRC_CHAT_RE2), False)
    action = pc.and_(pc.invert(chat), pc.fill_null(pc.match_substring_regex(lines, IRC_ACTION_RE2), False))
    ok = pc.or_(chat, action)
    minutes = pc.add(
        pc.multiply(pc.cast(pc.utf8_slice_codeunits(pc.if_else(ok, lines, "[00:00]"), 1, 3), pa.int64()), 60),
        pc.cast(pc.utf8_slice_codeunits(pc.if_else(ok, lines, "[00:00]"), 4, 6), pa.int64()),
    )
    # chat: "[HH:MM] <nick" ">" " message"
    chat_parts = pc.split_pattern(pc.if_else(chat, lines, "[00:00] <x> "), ">", max_splits=1)
    nick = pc.utf8_slice_codeunits(pc.list_element(chat_parts, 0), 9)
    body = pc.list_element(chat_parts, 1)
    body = pc.if_else(pc.starts_with(body, " "), pc.utf8_slice_codeunits(body, 1), body)
    # action: "[HH:MM]  " "* " "nick rest"
    act_parts = pc.split_pattern(pc.if_else(action, lines, "[00:00] * x "), "* ", max_splits=1)
    act_rest = pc.split_pattern(pc.list_element(act_parts, 1), " ", max_splits=1)
    act_nick = pc.list_element(act_rest, 0)
    act_text = pc.binary_join_element_wise("*", _second_or_empty(act_rest), " ")
    author = pc.if_else(chat, nick, pc.if_else(action, act_nick, null_str))
    text = pc.if_else(chat, body, pc.if_else(action, act_text, null_str))
    return author, text, pc.if_else(ok, minutes, pa.scalar(None, pa.int64())), chat, action


def _second_or_empty(lists: pa.Array) -> pa.Array:
    """The second element of each list, or "" where a list has one element."""
    import pyarrow.compute as pc

    padded = pc.list_slice(lists, 0, 2)
    length = pc.list_value_length(padded)
    safe = pc.if_else(pc.equal(length, 2), padded, pa.scalar(["", ""], padded.type))
    return pc.list_element(safe, 1)


def parse_channel_day_logs(
    batch: pa.RecordBatch,
    *,
    source: str,
    file: str,
    first_row: int,
    first_message_id: int,
    channel: str | None = None,
    heuristic: type[IrcHeuristic] = IrcHeuristic,
    rows=None,
) -> pa.Table:
    """common-pile ``ubuntu_irc`` documents (``id``, ``text``, ``created``, ``metadata.channel``).

    Each document is one channel on one day; each line of its ``text`` is ``[HH:MM] <nick> msg``
    or ``[HH:MM]  * nick action`` (kept as a message ``* action``). ``===`` status lines are
    ``system`` rows; any other non-empty line (relay debris such as ``\\x01\\x03``) is a
    ``malformed`` row; empty lines (the newline after the last line) are not records.
    Timestamps: ``created`` (the day) + ``HH:MM``. Reply links: :class:`IrcHeuristic`. Split: one
    per document (``split_hint`` = the stable hash split of ``<source>/<id>``).

    Vectorised with Arrow compute (RE2 regexes over all lines of the batch at once) and numpy
    (the addressee lookup is an as-of join), returning an Arrow table in ``RAW_COLUMNS`` order.
    """
    import pyarrow.compute as pc

    rows = _row_numbers(batch, first_row, rows)
    texts = pc.fill_null(batch.column("text").cast(pa.string()), "")
    split = pc.split_pattern(texts, "\n")
    flat = pc.list_flatten(split)
    doc_of = np.asarray(pc.list_parent_indices(split), dtype=np.int64)
    nonempty = pc.greater(pc.utf8_length(flat), 0)
    flat = pc.filter(flat, nonempty)
    doc_of = doc_of[np.asarray(nonempty, dtype=bool)]
    n = len(flat)
    if n == 0:
        return RAW_SCHEMA.empty_table()

    author, text, minutes, chat, action = _irc_line_fields(flat)
    ok = np.asarray(pc.or_(chat, action), dtype=bool)
    is_msg = chat
    created = pc.utf8_slice_codeunits(batch.column("created").cast(pa.string()), 0, 10)
    day = pc.strptime(created, format="%Y-%m-%d", unit="ns", error_is_null=True)
    day_ns = np.asarray(pc.fill_null(pc.cast(day, pa.int64()), -1), dtype=np.int64)[doc_of]
    minute_ns = np.asarray(pc.fill_null(minutes, 0), dtype=np.int64) * 60_000_000_000
    ts_ns = np.where(ok & (day_ns >= 0), day_ns + minute_ns, np.iinfo(np.int64).min)
    mids = np.arange(first_message_id, first_message_id + n, dtype=np.int64)

    # --- reply links (positions within the batch; -1: none) ------------------------------------
    parent = np.full(n, -1, dtype=np.int64)
    target = pc.struct_field(pc.extract_regex(pc.if_else(is_msg, text, ""), ADDRESSEE_RE2), "target")
    codes = pc.dictionary_encode(pa.chunked_array([pc.fill_null(author, ""), pc.fill_null(target, "")]).combine_chunks())
    code = np.asarray(codes.indices, dtype=np.int64)
    author_code, target_code = code[:n], code[n:]
    has_target = np.asarray(pc.is_valid(target), dtype=bool) & ok & (target_code != author_code)
    good = np.flatnonzero(ok)
    window = heuristic.mention_window_min * 60_000_000_000
    gap = heuristic.continuation_gap_min * 60_000_000_000
    if len(good):
        asked = np.flatnonzero(has_target)
        if len(asked):
            left = pd.DataFrame({"pos": asked, "doc": doc_of[asked], "who": target_code[asked]})
            right = pd.DataFrame({"parent_pos": good, "doc": doc_of[good], "who": author_code[good]})
            joined = pd.merge_asof(left, right, left_on="pos", right_on="parent_pos", by=["doc", "who"], allow_exact_matches=False, direction="backward")
            joined = joined[joined["parent_pos"].notna()]
            child = joined["pos"].to_numpy(dtype=np.int64)
            par = joined["parent_pos"].to_numpy(dtype=np.int64)
            fresh = (ts_ns[child] - ts_ns[par]) <= window
            parent[child[fresh]] = par[fresh]
        # otherwise the author's previous message in the same document, if recent
        order = good[np.lexsort((good, author_code[good], doc_of[good]))]
        same = np.zeros(len(order), dtype=bool)
        same[1:] = (doc_of[order[1:]] == doc_of[order[:-1]]) & (author_code[order[1:]] == author_code[order[:-1]])
        prev = np.full(len(order), -1, dtype=np.int64)
        prev[1:] = order[:-1]
        cont = same & ((ts_ns[order] - ts_ns[np.clip(prev, 0, None)]) <= gap) & (parent[order] < 0)
        parent[order[cont]] = prev[cont]

    has_parent = parent >= 0
    offsets = np.concatenate([[0], np.cumsum(has_parent)]).astype(np.int32)
    parent_ids = pa.ListArray.from_arrays(pa.array(offsets), pa.array(mids[parent[has_parent]], pa.int64()))
    system = np.asarray(pc.fill_null(pc.starts_with(flat, "==="), False), dtype=bool)
    record_type = np.where(ok, "message", np.where(system, "system", "malformed"))
    out_text = pc.if_else(pa.array(ok), text, pc.utf8_slice_codeunits(flat, 0, MALFORMED_TEXT_CHARS))
    ids = batch.column("id").to_pylist()
    channels = np.asarray(_channels(batch, ids), dtype=object)
    # one split per channel-day: the heuristic's conversations are noisy, and conversations of
    # one day in different splits would share messages' context across train and test
    doc_split = np.asarray(hash_splits([f"{source}/{doc_id}" for doc_id in ids]), dtype=object)
    ts = pa.array(np.where(ts_ns == np.iinfo(np.int64).min, 0, ts_ns), pa.int64()).cast(pa.timestamp("ns"))
    ts = pc.if_else(pa.array(ts_ns != np.iinfo(np.int64).min), ts, pa.scalar(None, pa.timestamp("ns")))
    return pa.table(
        {
            "source": pa.array(np.full(n, source, dtype=object), pa.string()),
            "file": pa.array(np.full(n, file, dtype=object), pa.string()),
            "line": pa.array(rows[doc_of], pa.int64()),
            "split_hint": pa.array(doc_split[doc_of], pa.string()),
            "channel": pa.array(channels[doc_of], pa.string()),
            "message_id": pa.array(mids, pa.int64()),
            "timestamp": ts,
            "author": pc.if_else(pa.array(ok), author, pa.scalar(None, pa.string())),
            "text": out_text,
            "conversation_key": pa.nulls(n, pa.string()),
            "parent_ids": parent_ids,
            "record_type": pa.array(record_type.astype(object), pa.string()),
        }
    )


def _channels(batch: pa.RecordBatch, ids: list) -> list[str]:
    """``metadata.channel`` where present, else the ``#channel`` part of ``id`` (``yyyy-mm-dd-#chan``)."""
    from_meta: list | None = None
    if "metadata" in batch.schema.names:
        meta = batch.column("metadata")
        if pa.types.is_struct(meta.type) and meta.type.get_field_index("channel") >= 0:
            from_meta = meta.field("channel").to_pylist()
    out = []
    for i, doc_id in enumerate(ids):
        chan = from_meta[i] if from_meta is not None else None
        if not chan and isinstance(doc_id, str) and len(doc_id) > 11:
            chan = doc_id[11:]
        out.append((chan or "unknown").lstrip("#"))
    return out


# --- Discord Unveiled (per-server JSON Lines of Discord API messages) ---------------------------

DISCORD_REGULAR_TYPES = (0, 19)  # default message, reply


class DiscordSegmenting:
    """Conversations of a Discord channel: runs of messages with less than ``gap_min`` of silence,
    cut every ``max_messages`` messages; reply references are kept as reply links."""

    gap_min = 15
    max_messages = 50


def parse_discord_messages(
    messages: list[dict], *, source: str, file: str, first_row: int, first_message_id: int, server: str, segmenting: type[DiscordSegmenting] = DiscordSegmenting
) -> pd.DataFrame:
    """Discord API message objects of one server (``content``, ``author.username``, ``timestamp``,
    ``channel_id``/``channel_name``, ``type``, ``is_bot``/``author.bot``, ``message_reference``).

    Bots and non-chat message types (joins, pins, ...) are ``system`` rows; a record that is not
    an object with a timestamp and channel is ``malformed``. ``line`` is the record's 1-based line
    in the server's member file ``file`` (``<archive>/<guild>.json``).
    """
    n = len(messages)
    if n == 0:
        return raw_frame({c: [] for c in RAW_COLUMNS})
    recs = []
    for i, m in enumerate(messages):
        ok = isinstance(m, dict) and m.get("timestamp") and m.get("channel_id") is not None
        author = m.get("author") if isinstance(m, dict) else None
        author = author if isinstance(author, dict) else {}
        ref = m.get("message_reference") if isinstance(m, dict) else None
        mtype = m.get("type", 0) if isinstance(m, dict) else None
        is_bot = bool(m.get("is_bot") or author.get("bot")) if isinstance(m, dict) else False
        recs.append(
            (
                first_row + i,
                str(m.get("id")) if ok else None,
                str(m.get("channel_id")) if ok else None,
                (m.get("channel_name") or str(m.get("channel_id"))) if ok else None,
                m.get("timestamp") if ok else None,
                author.get("username"),
                m.get("content") if ok else (str(m)[:MALFORMED_TEXT_CHARS]),
                str(ref.get("message_id")) if isinstance(ref, dict) and ref.get("message_id") is not None else None,
                "malformed" if not ok else ("system" if is_bot or mtype not in DISCORD_REGULAR_TYPES else "message"),
            )
        )
    df = pd.DataFrame(recs, columns=["line", "id", "channel_id", "channel", "ts", "author", "text", "ref", "record_type"])
    df["ts"] = pd.to_datetime(df["ts"], errors="coerce", utc=True, format="ISO8601").dt.tz_localize(None)
    df.loc[df["ts"].isna() & (df["record_type"] != "malformed"), "record_type"] = "malformed"
    df["message_id"] = np.arange(first_message_id, first_message_id + n, dtype=np.int64)
    # a message id seen twice (a re-scraped message) gets its first copy's message_id, so the
    # corpus stage counts it as a "duplicate" drop
    has_id = df["id"].notna()
    first_copy = df[has_id].groupby("id", sort=False)["message_id"].transform("first")
    df.loc[has_id, "message_id"] = first_copy.to_numpy()
    # conversations: per channel, in time order, cut at gaps and every max_messages messages
    order = df.sort_values(["channel_id", "ts"], kind="stable", na_position="last").index
    s = df.loc[order]
    new_channel = s["channel_id"].ne(s["channel_id"].shift())
    gap = (s["ts"] - s["ts"].shift()) > pd.Timedelta(minutes=segmenting.gap_min)
    segment = (new_channel | gap).cumsum()
    within = s.groupby(segment).cumcount() // segmenting.max_messages
    key = pd.Series(None, index=df.index, dtype=object)
    # keys are local to this batch of the member file (a run crossing batches is cut there)
    prefix = f"{server}/{first_row}/"
    key.loc[order] = (prefix + s["channel_id"].fillna("none").astype(str) + "/" + segment.astype(str) + "." + within.astype(str)).to_numpy()
    by_id = pd.Series(df["message_id"].to_numpy(), index=df["id"].fillna("").to_numpy())
    by_id = by_id[~by_id.index.duplicated()]
    parent = df["ref"].map(by_id)
    parents = [[int(p)] if p == p and p is not None else [] for p in parent.tolist()]
    # rows of one conversation are contiguous (time order inside), so the corpus stage can cut
    # the stream between conversations
    out = raw_frame(
        {
            "source": source,
            "file": file,
            "line": df["line"].to_numpy(dtype=np.int64),
            "split_hint": None,
            "channel": df["channel"].fillna("unknown").to_numpy(dtype=object),
            "message_id": df["message_id"].to_numpy(),
            "timestamp": df["ts"].to_numpy(dtype="datetime64[ns]"),
            "author": df["author"].to_numpy(dtype=object),
            "text": df["text"].to_numpy(dtype=object),
            "conversation_key": key.to_numpy(dtype=object),
            "parent_ids": parents,
            "record_type": df["record_type"].to_numpy(dtype=object),
        }
    )
    return out.iloc[order].reset_index(drop=True)


def iter_tar_zst_members(fileobj, *, wanted=None) -> Iterator[tuple[str, Iterator[bytes]]]:
    """(member name, line iterator) of each regular file in a ``tar.zst`` stream, read sequentially.

    ``wanted(name) -> bool`` skips members without decoding their lines (the stream is still read
    through: a tar stream has no index).
    """
    import tarfile

    import zstandard

    reader = zstandard.ZstdDecompressor(max_window_size=2**31).stream_reader(fileobj, read_size=1 << 20)
    with tarfile.open(fileobj=reader, mode="r|") as archive:
        for member in archive:
            if not member.isfile():
                continue
            name = member.name[2:] if member.name.startswith("./") else member.name
            parts = PurePosixPath(name).parts
            if name.startswith("/") or ".." in parts or not parts:
                # never used as a path here, but a member that claims to live outside the archive's
                # folder is a corrupt or hostile archive: refuse it rather than guess
                raise ValueError(f"archive member {member.name!r} escapes the archive's folder")
            if wanted is not None and not wanted(name):
                continue
            handle = archive.extractfile(member)
            if handle is None:
                continue
            yield name, iter(handle)
