"""DiscordChatExporter JSON exports (``sources/exports/discord.py``): the hand-written guild fixture read
message by message through the corpus stage, and every bad case ending in a clear error or a counted drop."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from thread_embed_pipeline.sources.errors import SourceDataError, SourceParseError
from thread_embed_pipeline.sources.exports import get_format

from thread_embed_pipeline_tests.bad_input_cases import write_case
from thread_embed_pipeline_tests.export_bad_cases.discord_chat_exporter import BAD_CASES
from thread_embed_pipeline_tests.export_helpers import FIXTURES, conversations, export_corpus, read_export, reply_links

FORMAT = "discord_chat_exporter"
GUILD = FIXTURES / FORMAT / "guild"
GENERAL = "Lantern Makers/general [1100000000000000001]"
HELP = "Lantern Makers/help [1100000000000000002]"
ADA = "<@2200000000000000001|Ada Wren>"
BO = "<@2200000000000000002|bo.k>"
CYRIL = "<@2200000000000000003|Cyril>"
DEE = "<@2200000000000000004|Dee Rowan>"  # mentioned, never posts


def conv(timeline: str, key: int) -> str:
    return f"mine/{timeline}/{key}"


EXPECTED = {
    # a reply chain in #general; Bo's reply pings Ada by her multi-word nickname
    conv(GENERAL, 1100000000000000102): [
        ("Ada Wren", f"morning all! {BO} did the paper shades arrive?"),
        ("bo.k", f"they did, thanks {ADA}!"),
        ("Ada Wren", "great, I'll pick them up after lunch"),  # edited in place
    ],
    # a reply whose parent was deleted: kept alone, its link left out
    conv(GENERAL, 1100000000000000107): [("Cyril", "agreed, that was the best kiln setting")],
    # a deleted account's message keeps Discord's "Deleted User"; the reply mentions someone who never posts
    conv(GENERAL, 1100000000000000109): [
        ("Deleted User", "anyone selling spare copper wire?"),
        ("Ada Wren", f"ask {DEE}, she has a whole spool"),
    ],
    # a private thread of #general started without a message: the thread is the conversation; a role
    # mention stays plain text
    conv(GENERAL, 1100000000000000120): [
        ("bo.k", "who's in tonight?"),
        ("Ada Wren", "me, until ten"),
        ("Cyril", "@Organisers can we keep the back room open?"),
    ],
    # a thread of #help started from Cyril's question: the question (in #help, same id as the thread) opens it
    conv(HELP, 1100000000000000201): [
        ("Cyril", "first time here: how do I stop the glue from warping the paper?"),
        ("Ada Wren", "thin coats, then press it under a heavy book overnight"),
        ("Cyril", "will try that tonight, cheers"),
        ("Ada Wren", f"{CYRIL} post a photo when it's dry"),
    ],
    # a chain through a bot's reply: the bot's row is dropped, the chain stays one conversation
    conv(HELP, 1100000000000000202): [
        ("bo.k", "is the laser cutter booked on friday?"),
        ("bo.k", "thanks LampBot"),
    ],
}


@pytest.fixture(scope="module")
def guild():
    return export_corpus(FORMAT, GUILD)


def test_the_format_is_registered_with_its_reader_and_doc():
    fmt = get_format(FORMAT)
    assert (fmt.platform, fmt.module, fmt.threads) == ("discord", "discord", "native")
    assert (Path(__file__).parents[3] / fmt.doc).is_file()


def test_conversations_message_by_message(guild):
    _, corpus, _, _ = guild
    assert conversations(corpus) == EXPECTED


def test_reply_links_follow_references_within_a_conversation(guild):
    _, corpus, _, _ = guild
    assert reply_links(corpus) == {
        conv(GENERAL, 1100000000000000102): [None, 0, 1],
        conv(GENERAL, 1100000000000000107): [None],
        conv(GENERAL, 1100000000000000109): [None, 0],
        conv(GENERAL, 1100000000000000120): [None, 0, None],
        conv(HELP, 1100000000000000201): [None, None, 1, 2],
        conv(HELP, 1100000000000000202): [None, None],  # its parent was the bot's reply, dropped
    }


def test_drops_by_reason_and_the_readers_counts(guild):
    raw, _, acc, counts = guild
    dropped = {k: v for k, v in acc["dropped"].items() if v}
    # system: the join, "Started a thread.", the pin, the thread's starter stub (type 21); bot: LampBot twice;
    # empty_text: the attachment-only message and the forward (its words are another author's)
    assert dropped == {"system": 4, "bot": 2, "empty_text": 2}
    assert (acc["read"], acc["kept"]) == (23, 15) and len(raw) == 23
    assert counts == {
        "files/not_read": 2,  # the media folder's png and json
        "threads/starter_joined": 1,
        "replies/parent_missing": 1,
        "edits/seen": 2,
        "mentions/structured": 4,
        "mentions/not_in_text": 2,  # reply pings: listed in mentions[], not written in the content
        "attachments/without_text": 1,
        "forwards/content_not_read": 1,
    }


def test_raw_rows_keep_record_types_lines_and_the_parent_link_rules(guild):
    raw, _, _, _ = guild
    by_id = raw.set_index("message_id")
    assert by_id.loc[1100000000000000101, ["record_type", "author", "text"]].tolist() == ["system", "Cyril", "Joined the server."]
    assert by_id.loc[1100000000000000210, ["record_type", "text", "conversation_key"]].tolist() == ["system", "", "1100000000000000201"]
    assert by_id.loc[1100000000000000106, ["record_type", "text"]].tolist() == ["bot", "@here Reminder: the workshop opens at 18:00."]
    assert by_id.loc[1100000000000000105, ["record_type", "text"]].tolist() == ["message", ""]  # attachment only
    assert list(by_id.loc[1100000000000000107, "parent_ids"]) == []  # parent deleted
    assert list(by_id.loc[1100000000000000111, "parent_ids"]) == []  # a pin references, it does not reply
    assert list(by_id.loc[1100000000000000112, "parent_ids"]) == []  # a forward references, it does not reply
    assert by_id.loc[1100000000000000104, "line"] == 4 and by_id.loc[1100000000000000213, "line"] == 4
    # +01:00 converts to UTC
    assert str(by_id.loc[1100000000000000102, "timestamp"]) == "2024-03-02 09:00:00"
    assert set(raw["record_type"]) == {"message", "system", "bot"}


def test_threads_share_their_parent_channels_timeline_and_piece():
    raw, _, sizes = read_export(FORMAT, GUILD)
    assert raw["file"].tolist() == [GENERAL] * 15 + [HELP] * 8  # each timeline contiguous, threads after their channel
    assert sizes == [15, 8]  # one piece per timeline
    assert set(raw.loc[raw["file"] == GENERAL, "channel"]) == {"Lantern Makers/general"}
    night_shift = raw[raw["conversation_key"] == "1100000000000000120"]
    assert night_shift["message_id"].tolist() == [1100000000000000121, 1100000000000000122, 1100000000000000123]


def test_a_zip_of_the_export_reads_the_same(guild, tmp_path):
    archive = tmp_path / "lantern.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(GUILD.rglob("*")):
            if path.is_file():
                zf.write(path, f"export/{path.relative_to(GUILD).as_posix()}")
    raw, corpus, acc, counts = export_corpus(FORMAT, archive)
    assert conversations(corpus) == EXPECTED and counts == guild[3] and acc == guild[2]


def test_a_single_thread_file_names_its_parents_timeline(tmp_path):
    single = tmp_path / "glue.json"
    shutil.copy(GUILD / "Lantern Makers - help - glue question [1100000000000000201].json", single)
    raw, corpus, _, counts = export_corpus(FORMAT, single)
    assert set(raw["file"]) == {HELP} and set(raw["conversation_key"]) == {"1100000000000000201"}
    # the starter message is in the parent channel's file, not read here
    assert conversations(corpus) == {conv(HELP, 1100000000000000201): EXPECTED[conv(HELP, 1100000000000000201)][1:]}
    assert "threads/starter_joined" not in counts


def _user(uid: str, name: str, nickname: str) -> dict:
    return {"id": uid, "name": name, "discriminator": "0000", "nickname": nickname, "isBot": False}


def _channel_file(path: Path, messages: list, first_key: str = "guild") -> Path:
    doc = {
        "guild": {"id": "9000000000000000000", "name": "Test Guild"},
        "channel": {"id": "9000000000000000001", "type": "GuildTextChat", "categoryId": None, "category": None, "name": "lab", "topic": None},
        "messages": messages,
    }
    if first_key == "messages":  # not DCE's key order: the header comes from the whole file
        doc = {"messages": doc.pop("messages"), **doc}
    path.write_text(json.dumps(doc, indent=2))
    return path


def test_mentions_raw_ids_and_overlapping_nicknames(tmp_path):
    ada, ad = _user("9100000000000000001", "ada_w", "Ada Wren"), _user("9100000000000000002", "ad", "Ada")
    messages = [
        {"id": "9000000000000000101", "type": "Default", "timestamp": "2024-01-01T00:00:00+00:00", "author": ada,
         "content": "@Ada Wren and @Ada, also @Adam", "mentions": [ad, ada]},
        {"id": "9000000000000000102", "type": "Default", "timestamp": "2024-01-01T00:01:00+00:00", "author": ad,
         "content": "with --markdown false: <@9100000000000000001> <@!9100000000000000077>", "mentions": [ada]},
        {"id": "9000000000000000103", "type": "Default", "timestamp": "2024-01-01T00:02:00+00:00", "author": ad,
         "content": "@Sam, which Sam?", "mentions": [_user("9100000000000000005", "sam1", "Sam"), _user("9100000000000000006", "sam2", "Sam")]},
    ]
    for order in ("guild", "messages"):
        raw, counts, _ = read_export(FORMAT, _channel_file(tmp_path / f"{order}.json", messages, order))
        assert raw["text"].tolist() == [
            "<@9100000000000000001|Ada Wren> and <@9100000000000000002|Ada>, also @Adam",  # @Adam: no such mention, plain text
            "with --markdown false: <@9100000000000000001|Ada Wren> <@9100000000000000077>",
            "<@9100000000000000005|Sam>, which Sam?",  # two listed users render alike: the first listed wins
        ]
        assert raw["file"].tolist() == ["Test Guild/lab [9000000000000000001]"] * 3
        assert counts == {"mentions/structured": 5, "mentions/ambiguous_name": 1, "mentions/not_in_text": 1}


# -- bad input: one test per case --------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("discord_bad")
    for name in BAD_CASES:
        write_case(name, root)
    return root


def _error(bad: Path, case: str, kind: type[Exception]) -> str:
    with pytest.raises(kind) as err:
        export_corpus(FORMAT, bad / case)
    return str(err.value)


CHANNEL_FILE = "Kite Club - Text Channels - general [7100000000000000001].json"


def test_bad_an_html_file_named_json_is_a_parse_error_with_its_line(bad):
    msg = _error(bad, "discord_chat_exporter_not_json", SourceParseError)
    assert f"{CHANNEL_FILE}:1: a DiscordChatExporter JSON export" in msg and "<!DOCTYPE html>" in msg


def test_bad_another_json_is_not_a_channel_export(bad):
    msg = _error(bad, "discord_chat_exporter_not_a_channel_export", SourceDataError)
    assert "messages.json: not a DiscordChatExporter channel export: expected the keys guild, channel and messages" in msg


def test_bad_a_missing_channel_object_names_the_keys_found(bad):
    msg = _error(bad, "discord_chat_exporter_channel_missing", SourceDataError)
    assert CHANNEL_FILE in msg and "expected the keys guild, channel and messages" in msg and "'guild'" in msg


def test_bad_messages_that_are_not_a_list(bad):
    msg = _error(bad, "discord_chat_exporter_messages_not_a_list", SourceDataError)
    assert f"{CHANNEL_FILE}: expected messages to be a list" in msg


def test_bad_a_thread_without_its_parent_channel(bad):
    msg = _error(bad, "discord_chat_exporter_thread_without_parent", SourceDataError)
    assert "[7100000000000000300].json: a thread (GuildPublicThread) must name its parent channel in channel.categoryId" in msg


def test_bad_a_message_without_an_id_names_its_index(bad):
    msg = _error(bad, "discord_chat_exporter_message_without_id", SourceParseError)
    assert f"{CHANNEL_FILE}:2: messages[1]: a message 'id'" in msg


def test_bad_an_unreadable_timestamp(bad):
    msg = _error(bad, "discord_chat_exporter_bad_timestamp", SourceParseError)
    assert f"{CHANNEL_FILE}:1: messages[0]: an ISO-8601 'timestamp'" in msg and "yesterday at noon" in msg


def test_bad_a_truncated_file_fails_at_its_last_line_though_its_header_reads(bad):
    msg = _error(bad, "discord_chat_exporter_truncated", SourceParseError)
    last = len((bad / "discord_chat_exporter_truncated" / CHANNEL_FILE).read_bytes().split(b"\n"))
    assert f"{CHANNEL_FILE}:{last}: a DiscordChatExporter JSON export" in msg and "Unterminated string" in msg


def test_bad_invalid_utf8_names_the_line(bad):
    msg = _error(bad, "discord_chat_exporter_invalid_utf8", SourceParseError)
    assert f"{CHANNEL_FILE}:" in msg and "in UTF-8" in msg and '"content": "caf' in msg


def test_bad_an_empty_file(bad):
    msg = _error(bad, "discord_chat_exporter_empty_file", SourceParseError)
    assert f"{CHANNEL_FILE}:1: a DiscordChatExporter JSON export" in msg and "got ''" in msg


def test_bad_an_export_without_channel_files(bad):
    msg = _error(bad, "discord_chat_exporter_no_channel_files", SourceDataError)
    assert "no DiscordChatExporter channel file in the export" in msg and "--format Json" in msg and ".html" in msg


def test_bad_overlapping_exports_of_a_channel_are_counted_duplicates(bad):
    raw, corpus, acc, _ = export_corpus(FORMAT, bad / "discord_chat_exporter_overlapping_exports")
    assert len(raw) == 4 and acc["dropped"]["duplicate"] == 1 and acc["kept"] == 3
    assert sorted(corpus["text"]) == ["anyone flying on sunday?", "if the wind holds", "it did"]


def test_a_direct_message_timeline_is_named_by_its_id_not_its_people(tmp_path):
    import json

    doc = {
        "guild": {"id": "0", "name": "Direct Messages"}, "channel": {"id": "555", "type": "DirectTextChat", "name": "Zora Quill"},
        "messages": [
            {"id": "1001", "type": "Default", "timestamp": "2024-01-01T10:00:00+00:00", "content": "hi Zora", "author": {"id": "7", "name": "kit", "nickname": "Kit"}},
            {"id": "1002", "type": "Reply", "timestamp": "2024-01-01T10:01:00+00:00", "content": "hey", "author": {"id": "8", "name": "zq", "nickname": "Zora Quill"},
             "reference": {"messageId": "1001"}},
        ],
    }  # fmt: skip
    (tmp_path / "Direct Messages - Zora Quill [555].json").write_text(json.dumps(doc))
    raw, corpus, _, _ = export_corpus("discord_chat_exporter", tmp_path)
    assert set(raw["file"]) == {"dm [555]"} and set(raw["channel"]) == {"dm"}
    assert not corpus["conversation_id"].str.contains("Zora").any()
