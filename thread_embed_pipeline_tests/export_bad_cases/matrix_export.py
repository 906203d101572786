"""Bad Element "Export chat" JSON exports (format ``matrix_export``), hand-written: each ends in an error
naming the member (and the line where JSON breaks) or in counted drops."""

from __future__ import annotations

import json

_ROOM = "!bAdCaSeRoOm:example.org"


def _event(n: int, body: str, sender: str = "@ann:example.org", room: str = _ROOM, **extra) -> dict:
    return {
        "type": "m.room.message", "sender": sender, "content": {"msgtype": "m.text", "body": body},
        "origin_server_ts": 1715600000000 + n * 60_000, "unsigned": {}, "event_id": f"$bad{n:02d}", "room_id": room, **extra,
    }


def _export(name: str, events: list, **top) -> bytes:
    data = {"room_name": name, "room_creator": "Ann", "topic": "", "export_date": "Mon, May 20 2024", "exported_by": "Ann", "messages": events, **top}
    return json.dumps(data, indent=2, ensure_ascii=False).encode()


_GOOD = _export("General", [_event(1, "first message"), _event(2, "second message", "@ben:example.org")])

BAD_CASES: dict[str, dict[str, bytes]] = {
    # Element's plain-text export handed in as the JSON one
    "matrix_export_not_json": {"Element - General - Chat Export.json": b"Thu, May 16 2024\n\nAnn: first message\nBen: second message\n"},
    # cut off mid-way (a download that did not finish): the error names the line where the JSON breaks
    "matrix_export_truncated": {"Element - General - Chat Export.json": _GOOD[: _GOOD.index(b"second message") - 40]},
    "matrix_export_empty_file": {"Element - General - Chat Export.json": b""},
    # structurally wrong: the required key "messages" is missing, or is not a list
    "matrix_export_missing_messages": {"Element - General - Chat Export.json": json.dumps({"room_name": "General", "topic": "", "exported_by": "Ann"}).encode()},
    "matrix_export_messages_not_a_list": {"Element - General - Chat Export.json": json.dumps({"room_name": "General", "messages": {"$bad01": "hi"}}).encode()},
    # not an Element JSON export at all: a list at the top (another tool's dump)
    "matrix_export_top_level_list": {"Element - General - Chat Export.json": json.dumps([_event(1, "hi")]).encode()},
    # an export with nothing in it
    "matrix_export_no_events": {"Element - General - Chat Export.json": _export("General", [])},
    # a zip/folder holding only Element's HTML export: no JSON room export to read
    "matrix_export_html_only": {"Element - General - Chat Export/index.html": b"<html><body><p>Ann: first message</p></body></html>\n"},
    # one room exported twice (two dates): the same timeline in two members
    "matrix_export_same_room_twice": {
        "Element - General - Chat Export - 2024-05-19.json": _export("General", [_event(1, "first message")]),
        "Element - General - Chat Export - 2024-05-20.json": _GOOD,
    },
    "matrix_export_two_rooms_in_one_file": {
        "Element - General - Chat Export.json": _export("General", [_event(1, "first message"), _event(2, "elsewhere", room="!oThErRoOm:example.org")]),
    },
    # events a row cannot be built from: kept as malformed rows (the corpus counts them), the rest read
    "matrix_export_malformed_events": {
        "Element - General - Chat Export.json": _export(
            "General",
            [
                _event(1, "first message"),
                "not an event",
                {k: v for k, v in _event(3, "no event id").items() if k != "event_id"},
                {**_event(4, "no sender"), "sender": None},
                {**_event(5, "a timestamp that is a date string"), "origin_server_ts": "2024-05-13T10:05:00Z"},
                {**_event(6, "content that is a string"), "content": "hello"},
                _event(7, "last message", "@ben:example.org"),
            ],
        ),
    },
    # the same event listed twice: the repeat keeps the first position, so the corpus drops it as a duplicate
    "matrix_export_duplicate_events": {
        "Element - General - Chat Export.json": _export("General", [_event(1, "first message"), _event(2, "second message"), _event(2, "second message")]),
    },
}
