"""Bad DiscordChatExporter exports (``--format Json``), each a folder of hand-written channel files."""

from __future__ import annotations

import json

_GUILD = {"id": "7100000000000000000", "name": "Kite Club", "iconUrl": None}
_GENERAL = {"id": "7100000000000000001", "type": "GuildTextChat", "categoryId": "7100000000000000900", "category": "Text Channels", "name": "general", "topic": None}
_ANN = {"id": "7200000000000000001", "name": "ann", "discriminator": "0000", "nickname": "Ann", "color": None, "isBot": False, "roles": [], "avatarUrl": ""}


def _message(i: int, text: str, **extra) -> dict:
    return {
        "id": f"71000000000000001{i:02d}", "type": "Default", "timestamp": f"2024-05-01T10:{i:02d}:00+00:00", "timestampEdited": None,
        "callEndedTimestamp": None, "isPinned": False, "content": text, "author": _ANN, "attachments": [], "embeds": [], "stickers": [],
        "reactions": [], "mentions": [], **extra,
    }


def _export(messages: list, channel: dict = _GENERAL) -> dict:
    return {"guild": _GUILD, "channel": channel, "dateRange": {"after": None, "before": None}, "exportedAt": "2024-05-02T00:00:00+00:00",
            "messages": messages, "messageCount": len(messages)}


def _json(doc: object) -> bytes:
    return json.dumps(doc, indent=2, ensure_ascii=False).encode()


_NAME = "Kite Club - Text Channels - general [7100000000000000001].json"
_TWO = _json(_export([_message(1, "anyone flying on sunday?"), _message(2, "if the wind holds")]))
_NO_ID = _export([_message(1, "fine"), _message(2, "this one lost its id")])
del _NO_ID["messages"][1]["id"]

BAD_CASES: dict[str, dict[str, bytes]] = {
    # an HTML export saved under a .json name
    "discord_chat_exporter_not_json": {_NAME: b"<!DOCTYPE html>\n<html lang=\"en\">\n<head><title>Kite Club - general</title></head>\n</html>\n"},
    # JSON, but Discord's own data package (messages.json of "Request my data"), not DCE
    "discord_chat_exporter_not_a_channel_export": {"messages.json": b'[\n  {"ID": 1, "Timestamp": "2024-05-01 10:00:00", "Contents": "hi"}\n]\n'},
    # structurally wrong: the channel object is missing
    "discord_chat_exporter_channel_missing": {_NAME: _json({k: v for k, v in _export([_message(1, "hi")]).items() if k != "channel"})},
    "discord_chat_exporter_messages_not_a_list": {_NAME: _json(_export({"1": _message(1, "hi")}))},  # type: ignore[arg-type]
    # a thread file that does not name its parent channel (categoryId null)
    "discord_chat_exporter_thread_without_parent": {
        "Kite Club - thread [7100000000000000300].json": _json(
            _export([_message(1, "in a thread")], {**_GENERAL, "id": "7100000000000000300", "type": "GuildPublicThread", "categoryId": None, "category": None})
        )
    },
    "discord_chat_exporter_message_without_id": {_NAME: _json(_NO_ID)},
    "discord_chat_exporter_bad_timestamp": {_NAME: _json(_export([_message(1, "hi", timestamp="yesterday at noon")]))},
    # the export was interrupted: the header is whole, the message list is cut
    "discord_chat_exporter_truncated": {_NAME: _TWO[: _TWO.index(b"if the wind")]},
    "discord_chat_exporter_invalid_utf8": {_NAME: _json(_export([_message(1, "caf_")])).replace(b"caf_", b"caf\xe9")},
    # empty exports: a zero-byte channel file; a folder with no channel file at all (an HTML export)
    "discord_chat_exporter_empty_file": {_NAME: b""},
    "discord_chat_exporter_no_channel_files": {"Kite Club - Text Channels - general [7100000000000000001].html": b"<html></html>\n"},
    # the same channel exported twice over overlapping dates: a counted drop (the corpus' "duplicate")
    "discord_chat_exporter_overlapping_exports": {
        _NAME: _TWO,
        "Kite Club - Text Channels - general [7100000000000000001] (after 2024-05-01).json": _json(_export([_message(2, "if the wind holds"), _message(3, "it did")])),
    },
}
