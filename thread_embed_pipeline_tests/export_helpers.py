"""Reading a user-export fixture the way the chain does: the format's reader → raw pieces → the corpus
stage, and the conversations it yields as plain lists (for message-by-message assertions)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from thread_embed_pipeline.corpus.builder import corpus_frame, corpus_table
from thread_embed_pipeline.sources.exports import ExportTree, get_format

FIXTURES = Path(__file__).parent / "fixtures" / "exports"


def read_export(format_name: str, path: Path | str, source: str = "mine") -> tuple[pd.DataFrame, dict[str, int], list[int]]:
    """(the raw rows of every piece, the summed reader counts, the row count of each piece)."""
    fmt = get_format(format_name)
    tables, counts, sizes = [], {}, []
    for piece in fmt.read(ExportTree(path), source):
        for key, n in (piece.counts or {}).items():
            counts[key] = counts.get(key, 0) + n
        if piece.table is not None:
            tables.append(piece.table)
            sizes.append(piece.table.num_rows)
    raw = pa.concat_tables(tables).to_pandas() if tables else pd.DataFrame()
    return raw, counts, sizes


def export_corpus(format_name: str, path: Path | str, source: str = "mine") -> tuple[pd.DataFrame, pd.DataFrame, dict, dict[str, int]]:
    """(raw, corpus, the corpus accounting, the reader's counts) of an export, piece by piece as the chain builds it."""
    fmt = get_format(format_name)
    raws, corpora, counts = [], [], {}
    acc = {"read": 0, "kept": 0, "dropped": {}}
    for piece in fmt.read(ExportTree(path), source):
        for key, n in (piece.counts or {}).items():
            counts[key] = counts.get(key, 0) + n
        if piece.table is None:
            continue
        table, part = corpus_table(piece.table, source=source, platform=fmt.platform)
        raws.append(piece.table.to_pandas())
        corpora.append(corpus_frame(table))
        acc["read"] += part["read"]
        acc["kept"] += part["kept"]
        for reason, n in part["dropped"].items():
            acc["dropped"][reason] = acc["dropped"].get(reason, 0) + n
    assert acc["read"] == acc["kept"] + sum(acc["dropped"].values())
    raw = pd.concat(raws, ignore_index=True) if raws else pd.DataFrame()
    corpus = pd.concat(corpora, ignore_index=True) if corpora else pd.DataFrame()
    return raw, corpus, acc, counts


def conversations(corpus: pd.DataFrame) -> dict[str, list[tuple[str, str]]]:
    """``{conversation_id: [(author, text), ...]}`` in message order."""
    out: dict[str, list[tuple[str, str]]] = {}
    for row in corpus.sort_values(["conversation_id", "message_idx"]).itertuples(index=False):
        out.setdefault(row.conversation_id, []).append((row.author, row.text))
    return out


def reply_links(corpus: pd.DataFrame) -> dict[str, list[int | None]]:
    """``{conversation_id: [reply_to of each message]}`` (None where a message replies to nothing kept)."""
    out: dict[str, list[int | None]] = {}
    for row in corpus.sort_values(["conversation_id", "message_idx"]).itertuples(index=False):
        out.setdefault(row.conversation_id, []).append(None if pd.isna(row.reply_to) else int(row.reply_to))
    return out


# --- a synthetic DiscordChatExporter export, big enough for eval sets (the hand-written fixture is not) ------

DCE_PEOPLE = (("quill_fenwick", "Quill Fenwick"), ("marrow.ash", "Marrow Ash"), ("tansy_o", "Tansy Orbel"), ("brisk_lo", "Brisk Lorne"), ("juno.vale", "Juno Vale"))
DCE_OUTSIDER = ("oswin_nopost", "Oswin Nopost")  # mentioned, never posts
_DCE_TOPICS = (
    "solder iron flux tip temperature joint wire",
    "paper lantern frame glue bamboo shade",
    "battery led resistor voltage current circuit",
    "kiln clay glaze firing cone crack",
    "varnish sanding grit oak finish coat",
)


def write_dce_export(folder: Path, conversations: int = 120, seed: int = 0) -> Path:
    """A DiscordChatExporter JSON export: one channel of reply chains (with @mentions of participants and of
    someone who never posts) and one thread channel file; every conversation keeps to one topic."""
    import json
    import random

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    guild = {"id": "4400000000000000000", "name": "Bench Workshop"}
    author = lambda p: {"id": str(4500000000000000000 + DCE_PEOPLE.index(p)), "name": p[0], "discriminator": "0000", "nickname": p[1], "isBot": False}  # noqa: E731
    messages, thread_messages, mid, t = [], [], 4600000000000000000, 1_704_067_200
    for c in range(conversations):
        words = _DCE_TOPICS[c % len(_DCE_TOPICS)].split()
        root = None
        for k in range(rng.randint(8, 14)):  # long enough for the thread and response eval tasks
            mid += 1
            t += rng.randint(20, 400)
            person = rng.choice(DCE_PEOPLE)
            text = " ".join(rng.choice(words) for _ in range(rng.randint(5, 12))) + (f" {c}?" if k == 0 else f" {c}")
            mentions = []
            if rng.random() < 0.3:
                other = rng.choice([*DCE_PEOPLE, DCE_OUTSIDER])
                text = f"@{other[1]} {text}"
                mentions = [{"id": str(4500000000000009999 if other == DCE_OUTSIDER else 4500000000000000000 + DCE_PEOPLE.index(other)), "name": other[0], "nickname": other[1], "isBot": False}]
            message = {"id": str(mid), "type": "Reply" if root else "Default", "timestamp": f"{t}", "content": text, "author": author(person), "mentions": mentions}
            message["timestamp"] = __import__("datetime").datetime.fromtimestamp(t, __import__("datetime").timezone.utc).isoformat()
            if root:
                message["reference"] = {"messageId": str(root if rng.random() < 0.5 else mid - 1)}
            root = root or mid
            (thread_messages if c % 10 == 9 else messages).append(message)
    channel = {"id": "4700000000000000001", "type": "GuildTextChat", "categoryId": "4700000000000000900", "category": "Text Channels", "name": "workbench"}
    thread = {"id": "4700000000000000002", "type": "GuildPublicThread", "categoryId": "4700000000000000001", "category": "workbench", "name": "long builds"}
    for ch, ms in ((channel, messages), (thread, [{**m, "type": "Default", "reference": None} for m in thread_messages])):
        (folder / f"Bench Workshop - {ch['category']} - {ch['name']} [{ch['id']}].json").write_text(json.dumps({"guild": guild, "channel": ch, "messages": ms}, indent=2))
    return folder
