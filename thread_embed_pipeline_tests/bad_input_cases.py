"""The bad-input corpus: one case per entry, each a set of small hand-written files in its source's
layout (relative path -> bytes). ``write_case`` puts a case under a folder for the parsers to read;
the tests never ship copies of upstream data, only these deliberately broken files."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import zstandard

from thread_embed_pipeline_tests.export_bad_cases import export_cases

_CONTEXT = b"[10:00] <ctx> context line\n[10:01] <ctx> context line two\n"  # lines 0-1: before the first annotated line
_SELF_LINKS = b"".join(f"{i} {i} -\n".encode() for i in range(2, 8))


def _tar_zst(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name=name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return zstandard.ZstdCompressor().compress(buf.getvalue())


def _discord(i: int, minute: int, text: str, user: str) -> bytes:
    message = {
        "id": f"m{i}", "channel_id": "1", "channel_name": "general", "author": {"id": user, "username": user, "bot": False},
        "timestamp": f"2021-03-01T10:{minute:02d}:00+00:00", "type": 0, "content": text, "is_bot": False, "message_reference": None,
    }
    return (json.dumps(message) + "\n").encode()


_ASK, _ANSWER, _THANKS = _discord(0, 0, "how do I set up the bot?", "ann"), _discord(1, 1, "use the setup command", "ben"), _discord(2, 2, "thanks", "ann")
DISCORD_ARCHIVE = "hf/SaisExperiments__Discord-Unveiled-Compressed/dataset.zst"

CASES: dict[str, dict[str, bytes]] = {
    "irc_malformed_lines": {
        "data/train/2020-01-01.train-a.ascii.txt": _CONTEXT
        + b"[10:02] <ann> fine message\nthis line has no timestamp or nick\n[10:03] (relay/#ubuntu) bob: relayed\n"
        + b"[10:04] <bob> another fine one\n[10:05] <cyd> third\n[10:06] <ann> fourth\n",
        "data/train/2020-01-01.train-a.annotation.txt": _SELF_LINKS,
    },
    "irc_invalid_utf8": {
        "data/train/2020-01-02.train-a.ascii.txt": _CONTEXT
        + b"[10:02] <ann> good line\n[10:03] <bob> caf\xe9 latin-1 byte\n[10:04] <cyd> truncated \xf0\x9f\n"
        + b"[10:05] <ann> ok again\n[10:06] <bob> fine\n[10:07] <cyd> fine too\n",
        "data/train/2020-01-02.train-a.annotation.txt": _SELF_LINKS,
    },
    "irc_empty_messages": {
        "data/train/2020-01-03.train-a.ascii.txt": _CONTEXT
        + b"[10:02] <ann> a real message\n[10:03] <bob> \n[10:04] <cyd>    \t  \n[10:05]  * dan\n[10:06] <ann> another real one\n[10:07] <bob> last\n",
        "data/train/2020-01-03.train-a.annotation.txt": _SELF_LINKS,
    },
    "irc_annotation_missing": {"data/train/2020-01-04.train-a.ascii.txt": _CONTEXT + b"[10:02] <ann> hi\n"},
    "irc_annotation_past_end": {
        "data/train/2020-01-05.train-a.ascii.txt": _CONTEXT + b"[10:02] <ann> hi\n[10:03] <bob> hey\n",
        "data/train/2020-01-05.train-a.annotation.txt": b"2 2 -\n2 3 -\n3 9 -\n",
    },
    "slack_truncated_xml": {
        "data/racket/2020/truncated.xml": b"<slack><team_domain>racket</team_domain><channel_name>general</channel_name>\n"
        b'<message conversation_id="1"><ts>2020-01-01T10:00:00</ts><user>ann</user><text>hello</text></message>\n'
        b'<message conversation_id="1"><ts>2020-01-01T10:01:00</ts><user>bob</user><text>cut he',
    },
    "annot_malformed_line": {"codi-annot/broken.annot": b"T1 0 ann :  hello there\nT1 5 bob :  hi ann\nnot an annot line at all\n"},
    "discord_duplicate_ids": {DISCORD_ARCHIVE: _tar_zst([("./100.json", _ASK + _ANSWER + _ANSWER + _THANKS)])},
    "discord_path_escape": {DISCORD_ARCHIVE: _tar_zst([("./100.json", _ASK), ("../../escape.json", _ANSWER)])},
    **export_cases(),  # one module per user-export format (export_bad_cases/)
}


def write_case(name: str, root: Path) -> Path:
    """Write case ``name``'s files under ``root/name`` and return that folder."""
    folder = Path(root) / name
    for rel, data in CASES[name].items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder
