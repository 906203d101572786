"""Bad Telegram Desktop exports (``telegram_export``): each ends in an error naming the file (and the line
or the chat), or in rows whose drops and counts say why."""

from __future__ import annotations

import json


def _message(mid: int, text: str, author: str = "Ann Ek", **extra) -> dict:
    return {"id": mid, "type": "message", "date": "2024-05-06T11:00:00", "date_unixtime": str(1714986000 + 60 * mid),
            "from": author, "from_id": "user1" if author == "Ann Ek" else "user2", "text": text, **extra}


def _chat(messages: list, chat_id: object = 4242, name: str = "Book Circle") -> dict:
    chat = {"name": name, "type": "private_group", "id": chat_id, "messages": messages}
    return chat if chat_id is not None else {k: v for k, v in chat.items() if k != "id"}


def _json(value: object) -> bytes:
    return json.dumps(value, indent=1, ensure_ascii=False).encode()


_GOOD = [_message(1, "hello"), _message(2, "hi Ann", "Ben Ro", reply_to_message_id=1)]

BAD_CASES: dict[str, dict[str, bytes]] = {
    # an HTML page saved under the JSON export's name
    "telegram_export_not_json": {"result.json": b"<!DOCTYPE html>\n<html>\n<head><title>Exported Data</title></head>\n</html>\n"},
    # Telegram Desktop's HTML export: messages.html, no result.json
    "telegram_export_html_export": {
        "ChatExport_2024-05-08/messages.html": b"<!DOCTYPE html>\n<html><body><div class=\"message\">hello</div></body></html>\n",
        "ChatExport_2024-05-08/css/style.css": b"body { margin: 0 }\n",
    },
    # the export stopped mid-file, inside the second message's text (line 22)
    "telegram_export_truncated": {"result.json": _json(_chat(_GOOD)).split(b"hi Ann")[0] + b"hi A"},
    "telegram_export_empty_file": {"ChatExport_2024-05-08/result.json": b""},
    "telegram_export_no_messages": {"result.json": _json(_chat([]))},
    # an account export with the chats unticked: personal information only
    "telegram_export_account_without_chats": {
        "result.json": _json({"about": "Here is the data you requested.", "personal_information": {"user_id": 1, "first_name": "Ann", "last_name": "Ek"}})
    },
    "telegram_export_chat_without_id": {
        "result.json": _json({"about": "Here is the data you requested.", "chats": {"about": "", "list": [_chat(_GOOD), _chat(_GOOD, chat_id=None, name="No Id")]}})
    },
    "telegram_export_messages_not_a_list": {"result.json": _json({"name": "Book Circle", "type": "private_group", "id": 4242, "messages": {"1": _GOOD[0]}})},
    # the same chat exported twice (two single-chat exports in one folder)
    "telegram_export_duplicate_chat": {"ChatExport_a/result.json": _json(_chat(_GOOD)), "ChatExport_b/result.json": _json(_chat(_GOOD))},
    # messages the reader cannot use: malformed rows with a counted reason; the good ones are kept
    "telegram_export_bad_messages": {
        "result.json": _json(
            _chat(
                [
                    _message(1, "first"),
                    "not a message",
                    {"type": "message", "date_unixtime": "1714986000", "from": "Ann Ek", "text": "no id"},
                    _message(4, "no date", date_unixtime="soon", date="later"),
                    _message(5, [{"type": "bold"}, " entity without text"]),
                    _message(6, "an unknown type", type="sponsored"),
                    _message(7, "a reply to the first", "Ben Ro", reply_to_message_id=1),
                    _message(8, "an unreadable parent id", "Ben Ro", reply_to_message_id="the first one"),
                ]
            )
        )
    },
    # Telegram Desktop writes a control character as "\x0B" (not JSON): read as the character, and counted
    "telegram_export_control_char_escape": {
        "result.json": b'{\n "name": "Book Circle",\n "type": "private_group",\n "id": 4242,\n "messages": [\n  {\n   "id": 1,\n'
        b'   "type": "message",\n   "date": "2024-05-06T11:00:00",\n   "date_unixtime": "1714986000",\n   "from": "Ann Ek",\n'
        b'   "from_id": "user1",\n   "text": "tab\\x0Bbed, and a path C:\\\\x41"\n  }\n ]\n}\n'
    },
}
