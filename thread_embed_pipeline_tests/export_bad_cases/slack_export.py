"""Broken Slack workspace exports: one case per way an admin's export (or a hand-edited one) goes wrong."""

from __future__ import annotations

import io
import json
import zipfile

_USERS = json.dumps([{"id": "U1", "name": "ann", "profile": {"display_name": "ann"}}]).encode()
_CHANNELS = json.dumps([{"id": "C1", "name": "general"}]).encode()
_DAY = json.dumps([{"type": "message", "ts": "1614592800.000100", "user": "U1", "text": "hello"}]).encode()


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


BAD_CASES: dict[str, dict[str, bytes]] = {
    # a day file cut off mid-message: the error names the file and the line
    "slack_export_day_not_json": {"users.json": _USERS, "channels.json": _CHANNELS, "general/2021-03-01.json": b'[\n  {"ts": "1614592800.000100",\n  "text": "cut he'},
    # the workspace's zip without users.json (a channel folder zipped alone)
    "slack_export_zip_without_users": {"acme.zip": _zip({"channels.json": _CHANNELS, "general/2021-03-01.json": _DAY})},
    # users.json and channels.json, but no day file at all
    "slack_export_empty": {"users.json": _USERS, "channels.json": _CHANNELS},
    # a day file holding one object instead of an array of messages
    "slack_export_day_not_an_array": {"users.json": _USERS, "channels.json": _CHANNELS, "general/2021-03-01.json": b'{"ts": "1614592800.000100", "text": "hi"}'},
    # an array element that is not a message object
    "slack_export_message_not_an_object": {"users.json": _USERS, "general/2021-03-01.json": b'[{"ts": "1614592800.000100", "user": "U1", "text": "ok"}, "stray string"]'},
    # a message without ts: kept as a malformed row, counted
    "slack_export_message_without_ts": {"users.json": _USERS, "general/2021-03-01.json": b'[{"user": "U1", "text": "no timestamp"}, {"ts": "1614592800.000100", "user": "U1", "text": "fine"}]'},
    # users.json that is not a list of users
    "slack_export_users_not_a_list": {"users.json": b'{"U1": "ann"}', "general/2021-03-01.json": _DAY},
}
