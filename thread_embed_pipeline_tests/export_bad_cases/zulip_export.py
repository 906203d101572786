"""Bad Zulip organisation exports (``zulip_export``): each ends in an error naming the member (and the row
where known), or in rows whose drops and counts say why."""

from __future__ import annotations

import io
import json
import zipfile


def _json(value: object) -> bytes:
    return json.dumps(value, indent=2, ensure_ascii=False).encode()


def _realm(**drop_or_replace) -> bytes:
    tables = {
        "zerver_realm": [{"id": 2, "string_id": "kiln"}],
        "zerver_userprofile": [{"id": 11, "full_name": "Ann Ek", "is_bot": False}, {"id": 12, "full_name": "Ben Ro", "is_bot": False}],
        "zerver_userprofile_mirrordummy": [],
        "zerver_userprofile_crossrealm": [],
        "zerver_stream": [{"id": 3, "name": "pottery"}],
        "zerver_recipient": [{"id": 30, "type": 2, "type_id": 3}, {"id": 41, "type": 1, "type_id": 11}, {"id": 42, "type": 1, "type_id": 12}],
    }
    for name, value in drop_or_replace.items():
        if value is None:
            tables.pop(name)
        else:
            tables[name] = value
    return _json(tables)


def _message(mid: int, content: object, sender: int = 11, **extra) -> dict:
    return {"id": mid, "sender": sender, "recipient": 30, "realm": 2, "type": 1, "subject": "glazes", "content": content,
            "date_sent": 1714986000.0 + 60 * mid, "edit_history": None, **extra}


def _messages(*rows: object) -> bytes:
    return _json({"zerver_message": list(rows), "zerver_usermessage": []})


def _empty_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w"):
        pass
    return buf.getvalue()


_GOOD = _messages(_message(1, "which glaze for the mugs?"), _message(2, "the celadon", sender=12))

BAD_CASES: dict[str, dict[str, bytes]] = {
    # an HTML error page saved under the export's name
    "zulip_export_realm_not_json": {"realm.json": b"<!DOCTYPE html>\n<html><body>502 Bad Gateway</body></html>\n", "messages-000001.json": _GOOD},
    # a Slack export given as a Zulip one: no realm.json
    "zulip_export_not_zulip": {"users.json": _json([{"id": "U1", "name": "ann"}]), "general/2024-05-06.json": _json([{"type": "message", "text": "hi"}])},
    # an empty zip archive
    "zulip_export_empty_zip": {"export.zip": _empty_zip()},
    # realm.json without the recipients table
    "zulip_export_no_recipient_table": {"realm.json": _realm(zerver_recipient=None), "messages-000001.json": _GOOD},
    # realm.json but no message files
    "zulip_export_no_message_files": {"zulip-export-kiln/realm.json": _realm()},
    # an export interrupted before its message files were finished
    "zulip_export_partial": {"realm.json": _realm(), "messages-000001.json": _GOOD, "messages-000002.json.partial": _GOOD},
    # a message file that is a bare list, not {"zerver_message": [...]}
    "zulip_export_messages_not_an_object": {"realm.json": _realm(), "messages-000001.json": _json([_message(1, "hi")])},
    # the second message has no sender
    "zulip_export_message_without_sender": {
        "realm.json": _realm(),
        "messages-000001.json": _messages(_message(1, "hi"), {k: v for k, v in _message(2, "who sent me?").items() if k != "sender"}),
    },
    "zulip_export_bad_date_sent": {"realm.json": _realm(), "messages-000001.json": _messages(_message(1, "hi"), _message(2, "when?", date_sent="yesterday"))},
    # rows the reader keeps with a reason: null content (malformed), an unknown sender, unreadable edit history,
    # a recipient the export lacks (counted), an empty but valid file
    "zulip_export_odd_messages": {
        "realm.json": _realm(),
        "messages-000001.json": _messages(
            _message(1, "first"),
            _message(2, None),
            _message(3, "from a user the export lacks", sender=77),
            _message(4, "edited", edit_history="not json ["),
            _message(5, "to nowhere", recipient=999),
        ),
        "messages-000002.json": _messages(),
    },
    "zulip_export_empty_org": {"realm.json": _realm(), "messages-000001.json": _messages()},
    "zulip_export_invalid_utf8": {"realm.json": _realm()[:40] + b"\xff\xfe" + _realm()[40:], "messages-000001.json": _GOOD},
}
