"""Bad Mattermost bulk exports (``mattermost_export``): each ends in an error naming the file and line, or in
rows whose drops and counts say why."""

from __future__ import annotations

import io
import json
import zipfile

_VERSION = {"type": "version", "version": 1, "info": {"generator": "mattermost-server", "version": "9.11.0", "created": "2024-06-10T08:00:00Z"}}
_CHANNEL = {"type": "channel", "channel": {"team": "kiln", "name": "glazes", "display_name": "Glazes", "type": "O"}}


def _post(message: object, user: object = "ann", create_at: object = 1717405200000, **extra) -> dict:
    return {"type": "post", "post": {"team": "kiln", "channel": "glazes", "user": user, "type": "", "message": message, "props": {},
                                     "create_at": create_at, "edit_at": 0, "replies": [], **extra}}


def _jsonl(*lines: object) -> bytes:
    return b"".join(json.dumps(line, ensure_ascii=False).encode() + b"\n" for line in lines)


def _empty_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w"):
        pass
    return buf.getvalue()


_GOOD = _jsonl(_VERSION, _CHANNEL, _post("which glaze for the mugs?"), _post("the celadon", user="ben", create_at=1717405260000))

BAD_CASES: dict[str, dict[str, bytes]] = {
    # an HTML error page saved as the export
    "mattermost_export_not_json": {"import.jsonl": b"<!DOCTYPE html>\n<html><body>502 Bad Gateway</body></html>\n"},
    # a JSON Lines file of another tool: no version line first
    "mattermost_export_no_version_line": {"import.jsonl": _jsonl(_CHANNEL, _post("hi"))},
    "mattermost_export_empty_file": {"import.jsonl": b"\n\n"},
    "mattermost_export_empty_zip": {"export.zip": _empty_zip()},
    # a Zulip export given as a Mattermost one
    "mattermost_export_not_mattermost": {"realm.json": b"{\"zerver_userprofile\": []}\n", "messages-000001.json": b"{\"zerver_message\": []}\n"},
    "mattermost_export_two_jsonl_files": {"teams-a.jsonl": _GOOD, "teams-b.jsonl": _GOOD},
    # the download stopped inside line 4
    "mattermost_export_truncated": {"import.jsonl": _GOOD[: _GOOD.rindex(b"celadon")]},
    "mattermost_export_line_without_type": {"import.jsonl": _jsonl(_VERSION, {"post": _post("hi")["post"]})},
    "mattermost_export_post_without_channel": {
        "import.jsonl": _jsonl(_VERSION, _post("hi"), {"type": "post", "post": {k: v for k, v in _post("where am I?")["post"].items() if k != "channel"}})
    },
    "mattermost_export_bad_create_at": {"import.jsonl": _jsonl(_VERSION, _post("hi"), _post("when?", create_at="yesterday"))},
    "mattermost_export_direct_post_without_members": {
        "import.jsonl": _jsonl(_VERSION, {"type": "direct_post", "direct_post": {"user": "ann", "message": "to whom?", "create_at": 1717405200000}})
    },
    # posts the reader keeps with a reason (null message, no user: malformed), a line type it does not know
    # (counted), a note to self (one member twice), a reply that is not an object... is an error, so not here
    "mattermost_export_odd_posts": {
        "import.jsonl": _jsonl(
            _VERSION,
            _CHANNEL,
            _post("first"),
            _post(None, create_at=1717405260000),
            _post("nobody wrote me", user=None, create_at=1717405320000),
            {"type": "thread_summary", "thread_summary": {"post": "first"}},
            {"type": "direct_post", "direct_post": {"channel_members": ["ann", "ann"], "user": "ann", "message": "note to self", "create_at": 1717405380000}},
        )
    },
    "mattermost_export_reply_not_an_object": {"import.jsonl": _jsonl(_VERSION, _post("hi", replies=["a reply as a bare string"]))},
}
