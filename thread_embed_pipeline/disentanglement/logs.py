"""Channel logs, one row per line: the raw table's files (speakers pseudonymised per file, mentions rewritten by
the text stage's own code) or a log in the IRC ``[HH:MM] <nick> text`` form.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd


def channel_logs(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per line of every file: ``file, split, line, scored, system, timestamp, speaker, text,
    gold`` (``gold``: the line's gold link targets; ``scored``: not a context line), speakers as
    ``speaker_<k>`` numbered per file and mentions of them rewritten."""
    from thread_embed_pipeline.text import TextSettings, prepare_text

    need = {"file", "message_id", "split_hint", "record_type", "author", "text", "timestamp", "parent_ids"}
    missing = need - set(raw.columns)
    if missing:
        raise ValueError(f"raw table is missing columns {sorted(missing)}")
    frame = raw.assign(file=raw["file"].map(lambda f: Path(str(f)).name.split(".")[0]))
    frame = frame.sort_values(["file", "message_id"], kind="stable").reset_index(drop=True)
    corpus = pd.DataFrame({
        "conversation_id": frame["file"], "source": "irc", "platform": "irc", "channel": "log",
        "message_idx": frame["message_id"].astype("int64"), "timestamp": pd.to_datetime(frame["timestamp"]),
        "author": frame["author"].astype(object), "text": frame["text"].fillna("").astype(object),
        "reply_to": pd.array([pd.NA] * len(frame), dtype="Int64"), "split": frame["split_hint"].astype(str),
    })
    text, _ = prepare_text(corpus, TextSettings(drop_bots=False, min_conversation_messages=1))
    if len(text) != len(frame):
        raise ValueError(f"the text stage dropped {len(frame) - len(text)} lines: links would lose their line numbers")
    text = text.sort_values(["conversation_id", "message_idx"], kind="stable").reset_index(drop=True)
    if not (text["conversation_id"].to_numpy() == frame["file"].to_numpy()).all():
        raise AssertionError("pseudonymised lines out of step with the raw lines")
    return pd.DataFrame({
        "file": frame["file"], "split": frame["split_hint"].astype(str), "line": frame["message_id"].astype("int64"),
        "scored": (frame["record_type"] != "context").to_numpy(), "system": (frame["record_type"] == "system").to_numpy(),
        "timestamp": pd.to_datetime(frame["timestamp"]), "speaker": text["author"].astype(object), "text": text["text"].astype(object),
        "gold": frame["parent_ids"].map(lambda v: [int(x) for x in v] if v is not None else []),
    })


def parse_irc_log(text: str) -> pd.DataFrame:
    """A log in the IRC ``[HH:MM] <nick> text`` form (``=== ...`` system lines allowed) as a raw-shaped
    table of one file, every line scored. Raises on a line in neither form, naming it."""
    rows = []
    for k, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        m = re.match(r"^\[(\d{1,2}):(\d{2})\]\s+<([^>]*)>\s?(.*)$", line)
        if m:
            rows.append({"time": f"{int(m[1]):02d}:{m[2]}", "author": m[3].strip() or None, "text": m[4], "record_type": "message"})
        elif line.startswith("==="):
            rows.append({"time": None, "author": None, "text": None, "record_type": "system"})
        else:
            raise ValueError(f"line {k + 1} is not '[HH:MM] <nick> text' or '=== ...': {line[:80]!r}")
    if not rows:
        raise ValueError("the log has no messages")
    frame = pd.DataFrame(rows)
    ts = pd.to_datetime("2000-01-01 " + frame["time"].fillna("00:00"), format="%Y-%m-%d %H:%M")
    day = (ts.diff().dt.total_seconds().fillna(0) < 0).cumsum()  # past midnight: the next day
    frame["timestamp"] = (ts + pd.to_timedelta(day, unit="D")).where(frame["time"].notna())
    n = len(frame)
    return pd.DataFrame({
        "file": "log", "message_id": np.arange(n), "split_hint": "user", "record_type": frame["record_type"],
        "author": frame["author"], "text": frame["text"], "timestamp": frame["timestamp"], "parent_ids": [[] for _ in range(n)],
    })
