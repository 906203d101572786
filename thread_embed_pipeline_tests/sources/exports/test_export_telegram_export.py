"""The ``telegram_export`` reader (Telegram Desktop's result.json) on a hand-written account export and a
single-chat export, read the way the chain reads them (reader -> raw pieces -> corpus), and on every bad
case of ``export_bad_cases/telegram_export.py``."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pandas as pd
import pytest

from thread_embed_pipeline.sources.errors import SourceDataError, SourceParseError
from thread_embed_pipeline.sources.exports import telegram

from thread_embed_pipeline_tests.bad_input_cases import CASES, write_case
from thread_embed_pipeline_tests.export_helpers import FIXTURES, conversations, export_corpus, read_export, reply_links

FORMAT = "telegram_export"
ROOT = FIXTURES / FORMAT
ACCOUNT = ROOT / "account"
SINGLE = ROOT / "single_chat"

HIKING, OSKAR, WEATHER, NEWS, CLIMBING = "channel777000111", "user1002", "user5005", "channel888000222", "channel999000333"

EXPECTED = {
    # history migrated from the basic group: Telegram shifts its ids below zero
    f"mine/{HIKING}/-999999995": [("Mira Lind", "Anyone up for a first trip in May?"), ("Oskar Berg", "Yes, May works for me")],
    # 2 <- 3 (edited in place) <- 5 <- 12; Jonas's photo-only reply (6) is an empty_text drop
    f"mine/{HIKING}/2": [
        ("Mira Lind", "Who is in for Saturday?"),
        ("Oskar Berg", "Count me in, I'll bring the map"),
        ("Tuva Holm", "<@1002|Oskar> can you pick up <@1007|Sigrid> on the way?"),  # Sigrid never posts
        ("Mira Lind", "Route is here"),  # a text_link keeps its text, not its href
    ],
    f"mine/{HIKING}/8": [("Oskar Berg", "As I said in March, the north trail is closed")],  # its parent (1200) is not exported
    f"mine/{HIKING}/9": [
        ("user1009", "see you all there"),  # a deleted account: no name, its id stands in
        ("Tuva Holm", "Ask @karin_v about the hut booking: https://huts.example.org/book"),  # @handle stays as written
    ],
    f"mine/{HIKING}/13": [("Oskar Berg", "The bridge at Abisko has reopened.")],  # forwarded: the forwarder's message
    f"mine/{HIKING}/14": [("Tuva Holm", "That is the bridge from the news")],  # replies to a message of another chat
    f"mine/{OSKAR}/101": [("Mira Lind", "Did you get the tent back?"), ("Oskar Berg", "Yes, it is drying on the balcony")],
    f"mine/{WEATHER}/201": [("Mira Lind", "/forecast Abisko"), ("Mira Lind", "thanks")],  # the bot's answer between is dropped
    f"mine/{NEWS}/3": [("Trail News", "The bridge at Abisko has reopened.")],
    f"mine/{NEWS}/4": [("Trail News", "Summer trail maps are out")],
    f"mine/{CLIMBING}/50": [("Mira Lind", "I can lend my rope for Sunday")],  # a left chat: only one's own messages
    f"mine/{CLIMBING}/51": [("Mira Lind", "Leaving the group, see you at the crag")],
}


@pytest.fixture(scope="module")
def account():
    return export_corpus(FORMAT, ACCOUNT)


def test_account_export_conversations_message_by_message(account):
    _, corpus, _, _ = account
    assert conversations(corpus) == EXPECTED


def test_reply_links_follow_reply_to_message_id_within_the_chat(account):
    _, corpus, _, _ = account
    links = reply_links(corpus)
    assert links[f"mine/{HIKING}/2"] == [None, 0, 1, 2]
    assert links[f"mine/{HIKING}/-999999995"] == [None, 0]
    assert links[f"mine/{HIKING}/9"] == [None, 0]
    assert links[f"mine/{OSKAR}/101"] == [None, 0]
    assert links[f"mine/{WEATHER}/201"] == [None, None]  # "thanks" replies to the bot, which is dropped
    assert links[f"mine/{HIKING}/8"] == links[f"mine/{HIKING}/14"] == links[f"mine/{CLIMBING}/50"] == [None]


def test_drops_by_reason_and_the_readers_counts(account):
    raw, corpus, acc, counts = account
    assert (acc["read"], acc["kept"]) == (30, 19) == (len(raw), len(corpus))
    assert {k: v for k, v in acc["dropped"].items() if v} == {"system": 5, "bot": 3, "malformed": 1, "empty_text": 2}
    assert counts == {
        "replies/parent_missing": 2,  # message 8 (parent 1200) and the left chat's 50 (parent 49)
        "replies/other_chat": 1,  # message 14: reply_to_peer_id names Trail News
        "edits/in_place": 2,
        "messages/forwarded": 1,
        "bots/via_bot": 1,
        "bots/bot_account": 2,  # Weather Bot (the peer of a bot_chat) in its chat and in Hiking Club
        "authors/no_name": 1,
        "malformed/unsupported": 1,
    }


def test_each_chat_is_one_timeline_named_by_its_peer_id(account):
    raw, _, _, _ = account
    assert raw["file"].drop_duplicates().tolist() == [HIKING, OSKAR, WEATHER, NEWS, CLIMBING]
    assert raw.groupby("file", sort=False)["channel"].unique().map(list).to_dict() == {
        HIKING: ["Hiking Club"], OSKAR: ["personal chat"], WEATHER: ["Weather Bot"], NEWS: ["Trail News"], CLIMBING: ["Old Climbing Group"]
    }
    # line: the message's position in its chat's "messages"
    for _, rows in raw.groupby("file", sort=False):
        assert rows["line"].tolist() == list(range(1, len(rows) + 1))
    hiking = raw[raw["file"] == HIKING]
    assert hiking["message_id"].tolist() == [-999999996, -999999995, -999999994, *range(1, 16)]


def test_raw_keeps_what_the_corpus_drops_with_its_record_type(account):
    raw, _, _, _ = account
    by_id = {(r.file, r.message_id): r for r in raw.itertuples(index=False)}
    assert by_id[(HIKING, 4)].record_type == "system" and by_id[(HIKING, 4)].author == "Jonas Ek"
    assert by_id[(HIKING, 4)].text == "join_group_by_link"
    assert by_id[(HIKING, -999999996)].text == "create_group: Hiking Club, Oskar Berg, Tuva Holm"
    assert by_id[(HIKING, 7)].record_type == "bot" and by_id[(HIKING, 7)].author == "Mira Lind"  # via_bot @wiki
    assert by_id[(HIKING, 15)].record_type == "bot" and by_id[(WEATHER, 202)].record_type == "bot"
    assert by_id[(HIKING, 6)].record_type == "message" and by_id[(HIKING, 6)].text == ""  # photo only: no text invented
    assert by_id[(OSKAR, 102)].text == ""  # a sticker
    assert by_id[(OSKAR, 105)].record_type == "malformed" and by_id[(OSKAR, 105)].line == 5  # {"type": "unsupported"}
    assert list(by_id[(HIKING, 14)].parent_ids) == []  # the other chat's message 3 is not this chat's 3
    assert list(by_id[(HIKING, 8)].parent_ids) == [] and list(by_id[(HIKING, 5)].parent_ids) == [3]
    assert set(raw["record_type"]) <= {"message", "system", "bot", "malformed"}  # Telegram exports no edit events or tombstones


def test_timestamps_come_from_date_unixtime_not_the_local_date(account):
    raw, _, _, _ = account
    row = raw[(raw["file"] == HIKING) & (raw["message_id"] == 2)].iloc[0]
    assert row["timestamp"] == pd.Timestamp("2024-05-06 09:00:00")  # "date" says 11:00, the exporter's local time
    # an older export without date_unixtime: its local "date", taken as UTC
    raw, _, _ = read_export(FORMAT, SINGLE)
    assert raw.loc[raw["message_id"] == 2, "timestamp"].iloc[0] == pd.Timestamp("2024-04-20 20:05:00")


def test_single_chat_export_folder_and_file_read_alike():
    for path in (SINGLE, SINGLE / "result.json"):
        raw, corpus, acc, counts = export_corpus(FORMAT, path)
        assert conversations(corpus) == {
            "mine/chat4242/2": [("Lea Fors", "Next book: The Long Ships?"), ("Nils Dahl", "Yes! Chapters 1-5 by Friday"), ("Lea Fors", "Agreed")]
        }
        assert reply_links(corpus)["mine/chat4242/2"] == [None, 0, 1]
        assert set(raw["file"]) == {"chat4242"} and acc["dropped"]["system"] == 1 and counts == {}


def test_a_zip_of_the_export_reads_like_the_folder(account, tmp_path):
    archive = tmp_path / "telegram.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(ACCOUNT.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(ACCOUNT).as_posix())
    raw, corpus, acc, counts = export_corpus(FORMAT, archive)
    assert conversations(corpus) == conversations(account[1]) and acc == account[2] and counts == account[3]


def test_a_folder_of_several_exports_reads_each(account):
    raw, corpus, _, _ = export_corpus(FORMAT, ROOT)
    assert raw["file"].drop_duplicates().tolist() == [HIKING, OSKAR, WEATHER, NEWS, CLIMBING, "chat4242"]
    assert len(conversations(corpus)) == len(EXPECTED) + 1


def test_a_piece_holds_whole_chats(monkeypatch):
    raw, counts, sizes = read_export(FORMAT, ACCOUNT)
    assert sizes == [30]  # small chats share a piece
    monkeypatch.setattr(telegram, "PIECE_ROWS", 1)
    raw, counts_one, sizes = read_export(FORMAT, ACCOUNT)
    assert sizes == [18, 5, 3, 2, 2] and counts_one == counts  # one chat per piece, never split


# -- bad input (export_bad_cases/telegram_export.py) -----------------------------------------------------
@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("telegram_bad")
    for name in CASES:
        if name.startswith(FORMAT):
            write_case(name, root)
    return root


def test_a_file_that_is_not_json_names_file_and_line(bad):
    with pytest.raises(SourceParseError, match=r"telegram_export_not_json/result\.json:1: Telegram Desktop's result\.json \(JSON\).*'<!DOCTYPE html>'"):
        export_corpus(FORMAT, bad / "telegram_export_not_json")


def test_an_html_export_says_json_was_expected(bad):
    with pytest.raises(SourceDataError, match=r"no result\.json in the export \(expected Telegram Desktop's 'Machine-readable JSON' export"):
        export_corpus(FORMAT, bad / "telegram_export_html_export")


def test_a_truncated_export_names_file_and_line(bad):
    with pytest.raises(SourceParseError) as err:
        export_corpus(FORMAT, bad / "telegram_export_truncated")
    assert err.value.file.endswith("telegram_export_truncated/result.json") and err.value.line == 22 and err.value.got == '   "text": "hi A'


def test_an_empty_file_is_named(bad):
    with pytest.raises(SourceDataError, match=r"ChatExport_2024-05-08/result\.json: the file is empty"):
        export_corpus(FORMAT, bad / "telegram_export_empty_file")


def test_an_export_without_messages_is_an_error(bad):
    with pytest.raises(SourceDataError, match=r"telegram_export_no_messages/result\.json: the export holds no messages"):
        export_corpus(FORMAT, bad / "telegram_export_no_messages")


def test_an_account_export_without_chats_is_an_error(bad):
    with pytest.raises(SourceDataError, match=r"result\.json: expected an object with \"messages\" \(one chat\) or \"chats\".*'personal_information'"):
        export_corpus(FORMAT, bad / "telegram_export_account_without_chats")


def test_a_chat_without_an_id_names_the_chat(bad):
    with pytest.raises(SourceDataError, match=r"result\.json: chats\.list\[1\]: expected a chat with an integer \"id\".*got no \"id\""):
        export_corpus(FORMAT, bad / "telegram_export_chat_without_id")


def test_messages_that_are_not_a_list_are_an_error(bad):
    with pytest.raises(SourceDataError, match=r"result\.json: expected a chat .* got \"messages\" as dict"):
        export_corpus(FORMAT, bad / "telegram_export_messages_not_a_list")


def test_a_chat_exported_twice_is_refused(bad):
    with pytest.raises(SourceDataError, match=r"ChatExport_b/result\.json: chat chat4242 \('Book Circle'\) is also in .*ChatExport_a/result\.json"):
        export_corpus(FORMAT, bad / "telegram_export_duplicate_chat")


def test_unreadable_messages_are_malformed_rows_with_a_counted_reason(bad):
    raw, corpus, acc, counts = export_corpus(FORMAT, bad / "telegram_export_bad_messages")
    assert acc["dropped"]["malformed"] == 5 and acc["kept"] == 3
    assert raw.loc[raw["record_type"] == "malformed", "line"].tolist() == [2, 3, 4, 5, 6]
    assert counts == {
        "malformed/not_an_object": 1, "malformed/no_id": 1, "malformed/bad_date": 1, "malformed/bad_text": 1, "malformed/unknown_type": 1,
        "replies/bad_parent_id": 1,  # kept, unlinked
    }
    assert conversations(corpus) == {
        "mine/chat4242/1": [("Ann Ek", "first"), ("Ben Ro", "a reply to the first")],
        "mine/chat4242/8": [("Ben Ro", "an unreadable parent id")],
    }


def test_telegrams_control_character_escapes_are_read_and_counted(bad):
    raw, corpus, _, counts = export_corpus(FORMAT, bad / "telegram_export_control_char_escape")
    assert corpus["text"].tolist() == ["tab\x0bbed, and a path C:\\x41"]  # an escaped backslash before "x41" stays text
    assert counts == {"json/control_escapes_repaired": 1}
