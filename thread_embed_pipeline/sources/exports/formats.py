"""The export formats a user source can declare, and where each keeps its threads.

Each format is one module of this package with one function, ``read_export(tree, source)``: the export
(:class:`~.tree.ExportTree`) in, raw pieces (:class:`schemas.RawPiece`, built with :class:`~.rows.RawRows`)
out, every timeline whole in one piece. ``threads`` says where the conversation labels come from:
``native`` (the platform's threads and replies) or ``disentangler`` (a plain log has none: the project's
disentangler links its lines; the report says those labels are predicted). The documentation of each
format, what is read, what is dropped and where the threads come from, is ``docs/sources/<name>.md``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from thread_embed_pipeline.schemas import RawPiece

from .tree import ExportTree

Reader = Callable[[ExportTree, str], Iterator[RawPiece]]


@dataclass(frozen=True)
class ExportFormat:
    name: str  # what a user writes as `format:` in configs/my_sources.yaml
    platform: str
    module: str  # the reader's module in this package
    threads: str  # "native" | "disentangler"
    summary: str

    @property
    def read(self) -> Reader:
        """The format's ``read_export(tree, source)``."""
        return importlib.import_module(f"{__package__}.{self.module}").read_export

    @property
    def doc(self) -> str:
        return f"docs/sources/{self.name}.md"


FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat("slack_export", "slack", "slack", "native", "a Slack workspace export (zip or folder: users.json, channels.json, <channel>/<YYYY-MM-DD>.json); threads by thread_ts"),
        ExportFormat("discord_chat_exporter", "discord", "discord", "native", "DiscordChatExporter JSON (one file per channel or thread); conversations are reply chains and thread channels"),
        ExportFormat("telegram_export", "telegram", "telegram", "native", "Telegram Desktop's result.json (one chat or a whole account); conversations are reply chains"),
        ExportFormat("matrix_export", "matrix", "matrix", "native", "Element's 'Export chat' JSON; threads by m.thread, replies by m.in_reply_to, edits by m.replace"),
        ExportFormat("zulip_export", "zulip", "zulip", "native", "a Zulip export; a message's (stream, topic) is its thread"),
        ExportFormat("mattermost_export", "mattermost", "mattermost", "native", "Mattermost bulk export (JSON Lines); replies nested under their root post"),
        ExportFormat("irc_log", "irc", "irc_log", "disentangler", "plain IRC logs (irssi, weechat, ZNC, '[HH:MM] <nick> text'); threads predicted by the project's disentangler"),
    )
}


def get_format(name: str) -> ExportFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown export format {name!r}; known formats: {', '.join(FORMATS)}") from None
