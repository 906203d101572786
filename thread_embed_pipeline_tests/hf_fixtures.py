"""Small files in the streamed sources' real upstream layouts and columns, written by the tests.

Each writer puts its files under ``<mirror>/<spec.mirror_subdir>/`` exactly where the dataset
keeps them on the Hub, with the dataset's own column names (including ones the parser ignores).
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from thread_embed_pipeline.sources.hf_registry import HF_SOURCES


def source_dir(mirror: Path, name: str) -> Path:
    folder = Path(mirror) / HF_SOURCES[name].mirror_subdir
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def chatml(turns: list[tuple[str, str]]) -> str:
    return "\n".join(f"<|im_start|>{role}\n{text}<|im_end|>" for role, text in turns) + "\n<|end_of_text|>"


def write_discord_dialogues(mirror: Path, n: int = 40, extra_rows: list[str] | None = None) -> Path:
    rows = []
    for i in range(n):
        turns = [("user", f"anyone know how to fix mod {i} crashing on startup?"), ("assistant", f"reinstall mod {i} and clear the cache"), ("user", f"thanks, mod {i} works now")]
        rows.append(chatml(turns[: 2 + i % 2]))
    rows += extra_rows or []
    table = pa.table(
        {
            "text": rows,
            "tokens": [len(t.split()) for t in rows],
            "turns": [t.count("<|im_start|>") for t in rows],
            "characters": [len(t) for t in rows],
            "words": [len(t.split()) for t in rows],
        }
    )
    path = source_dir(mirror, "discord_dialogues") / "data" / "train.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def irc_day(channel: str, day: str, lines: list[str]) -> dict:
    authors = sorted({ln.split("<", 1)[1].split(">", 1)[0] for ln in lines if "<" in ln and ">" in ln})
    return {
        "id": f"{day}-#{channel}",
        "text": "\n".join(lines) + "\n",
        "source": "ubuntu-chat",
        "added": "2024-01-12T19:40:10.630330",
        "created": day,
        "metadata": {"license": "Public Domain", "authors": authors, "url": f"https://irclogs.ubuntu.com/{day.replace('-', '/')}/%23{channel}.txt", "channel": f"#{channel}"},
    }


def sample_irc_days(n_days: int = 12) -> list[dict]:
    docs = []
    for d in range(n_days):
        day = f"2013-04-{d + 1:02d}"
        lines = []
        for t in range(6):
            a, b = f"asker{t}", f"helper{t}"
            lines += [
                f"[1{t}:0{d % 10}] <{a}> how do I mount my ntfs partition {t} on day {d}?",
                f"[1{t}:1{d % 10}] <{b}> {a}: use sudo mount -t ntfs-3g /dev/sda{t} /mnt",
                f"[1{t}:2{d % 10}] <{a}> {b}, thanks that worked for partition {t}",
                f"[1{t}:3{d % 10}] <{a}> one more thing about fstab {t}?",
            ]
        lines.insert(3, "=== helper0 is now known as helper0_")
        lines.insert(5, f"[11:11]  * helper1 waves on day {d}")
        docs.append(irc_day("ubuntu", day, lines))
    return docs


def write_ubuntu_irc(mirror: Path, docs: list[dict] | None = None, shard: str = "00000_ubuntu.jsonl.gz", raw_lines: list[str] | None = None) -> Path:
    docs = sample_irc_days() if docs is None else docs
    path = source_dir(mirror, "ubuntu_irc") / "v0" / "documents" / shard
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps(doc) + "\n" for doc in docs) + "".join(line + "\n" for line in (raw_lines or []))
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(body)
    return path


def write_flyte(mirror: Path, name: str = "flyte_slack", n: int = 30, extra: list[tuple] | None = None) -> Path:
    files = {
        "flyte_slack": "data/train-00000-of-00001-eee8571970947cde.parquet",
        "flyte_slack_long": "data/train-00000-of-00001-cc69f0b6efb99f63.parquet",
    }
    inputs = [f"my flyte workflow {i} fails with a serialization error\n" for i in range(n)]
    outputs = [f"register task {i} again with --fast and pin flytekit to 1.{i}\n" for i in range(n)]
    for a, b in extra or []:
        inputs.append(a)
        outputs.append(b)
    path = source_dir(mirror, name) / files[name]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"input": pa.array(inputs, pa.string()), "output": pa.array(outputs, pa.string())}), path)
    return path


def discord_message(i: int, channel: str, minute: int, text: str, user: str, ref: str | None = None, bot: bool = False, mtype: int = 0) -> dict:
    return {
        "id": f"m{channel}{i}",
        "channel_id": channel,
        "channel_name": f"chan-{channel}",
        "author": {"id": f"u{user}", "username": user, "discriminator": "0", "bot": bot},
        "timestamp": f"2021-03-01T10:{minute:02d}:00.000000+00:00",
        "edited_timestamp": None,
        "type": 19 if ref else mtype,
        "content": text,
        "is_bot": bot,
        "pinned": False,
        "mention_everyone": False,
        "tts": False,
        "flags": 0,
        "attachments": [],
        "embeds": [],
        "mentions": [],
        "mention_roles": [],
        "sticker_items": [],
        "message_reference": {"message_id": ref, "guild_id": "g"} if ref else None,
    }


def sample_server(guild: int) -> list[dict]:
    msgs = []
    for c in ("1", "2"):
        msgs += [
            discord_message(0, c, 0, f"how do I set up the bot in server {guild} channel {c}?", "ann"),
            discord_message(1, c, 1, f"use the setup command in channel {c}", "ben", ref=f"m{c}0"),
            discord_message(2, c, 2, "beep", "robot", bot=True),
            discord_message(3, c, 3, f"thanks, that worked in {c}", "ann"),
            discord_message(4, c, 40, f"new topic after a long gap in {c}: anyone tried the api?", "cat"),
            discord_message(5, c, 41, f"yes the api works in {c}", "dan"),
        ]
    msgs.sort(key=lambda m: m["timestamp"])
    return msgs


def write_discord_unveiled(mirror: Path, guilds: dict[str, list] | None = None, truncate_to: int | None = None) -> Path:
    guilds = guilds if guilds is not None else {f"{100 + g}": sample_server(g) for g in range(6)}
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        for guild, messages in guilds.items():
            data = "".join((json.dumps(m) if not isinstance(m, str) else m) + "\n" for m in messages).encode("utf-8")
            info = tarfile.TarInfo(name=f"./{guild}.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    compressed = zstandard.ZstdCompressor().compress(tar_bytes.getvalue())
    if truncate_to is not None:
        compressed = compressed[:truncate_to]
    folder = source_dir(mirror, "discord_unveiled")
    (folder / "server_metadata").mkdir(exist_ok=True)
    (folder / "server_metadata" / "servers_metadata.txt").write_text(json.dumps([{"id": g, "name": f"server {g}"} for g in guilds]))
    path = folder / "dataset.zst"
    path.write_bytes(compressed)
    return path


def write_all(mirror: Path) -> None:
    write_discord_dialogues(mirror)
    write_discord_unveiled(mirror)
    write_ubuntu_irc(mirror)
    write_flyte(mirror, "flyte_slack")
    write_flyte(mirror, "flyte_slack_long")
