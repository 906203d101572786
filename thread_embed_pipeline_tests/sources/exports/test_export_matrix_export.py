"""Element's "Export chat" JSON (``matrix_export``): the hand-written fixture read message by message --
threads, reply chains, edits, deletions, bots, system events, pills -- and every bad case."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from thread_embed_pipeline.sources.errors import SourceDataError, SourceParseError

from thread_embed_pipeline_tests.bad_input_cases import write_case
from thread_embed_pipeline_tests.export_helpers import FIXTURES, conversations, export_corpus, read_export, reply_links

EXPORT = FIXTURES / "matrix_export"
GARDEN_FILE = "Element - Garden Club - Chat Export - 2024-05-20T18-30-00.000Z.json"
GARDEN, TOOLS = "Garden Club (gRdNcLuB)", "Tool Library (t00lL1bR)"
G, T = f"mine/{GARDEN}", f"mine/{TOOLS}"

CONVERSATIONS = {
    # a thread: the root and its replies (the last one a real reply inside the thread, its fallback quote stripped)
    f"{G}/$gc08seedsquestion": [
        ("Alice Moss", "Who is bringing seeds on Saturday?"),
        ("Bob Reed", "I have tomato and basil seeds."),
        ("Cara", "<@@bob:example.org|Bob Reed>: could you spare some basil?"),
        ("Bob Reed", "Sure, I'll bring a packet for you."),
    ],
    # a reply chain; the sender with no m.room.member event in the export is named by the Matrix ID; @dave stays
    f"{G}/13": [
        ("@fern:matrix.example", "Is the community plot open on Sunday too?"),
        ("Alice Moss", "Yes, from 9 to 12. Ask @dave for the key."),
    ],
    # the original keeps its place with the latest of its two edits (another sender's "edit" is ignored)
    f"{G}/15": [("Bob Reed", "Work day starts at 9:30am at the north gate"), ("Cara", "Noted, see you there!")],
    f"{G}/21": [("Alice Moss", "The new raised bed is finished")],  # an image caption; a one-message conversation
    f"{G}/25": [("Cara", "Agreed, I'll chip in for compost.")],  # its parent is not in the export
    # pills: %-encoded matrix.to, plain matrix.to and the matrix: URI; Erin never posts
    f"{G}/26": [
        ("Alice Moss", "<@@erin:example.org|Erin> asked to join the work day, <@@cara:example.org|Cara> can you add her to the rota?"),
        ("Cara", "Done, <@@erin:example.org|Erin> is on the rota."),
    ],
    f"{G}/30": [("Alice Moss", "Compost workshop is on the 14th")],  # an edit the server bundled in unsigned
    # two senders share the display name "Alice Moss": Element's disambiguation with the Matrix ID
    f"{T}/$tl04drillbits": [
        ("Gus", "Has anyone got the long drill bits?"),
        ("Alice Moss (@alice:example.org)", "They should be in drawer 3"),
        ("Alice Moss (@alice2:other.example)", "<@@gus:example.org|Gus> I returned them yesterday"),
    ],
    f"{T}/9": [("Gus", "Found them, thanks both!")],
}
REPLY_LINKS = {
    f"{G}/$gc08seedsquestion": [None, 0, 0, 2],  # fallback thread replies answer the root; the real reply its target
    f"{G}/13": [None, 0],
    f"{G}/15": [None, 0],
    f"{G}/21": [None],
    f"{G}/25": [None],
    f"{G}/26": [None, 0],
    f"{G}/30": [None],
    f"{T}/$tl04drillbits": [None, 0, 0],
    f"{T}/9": [None],
}
DROPPED = {
    "duplicate": 0, "system": 11, "context": 0, "malformed": 0, "invalid_encoding": 0,
    "bot": 2,  # WeatherBot's and LoanBot's m.notice
    "edit": 4,  # two applied, one by another sender, one whose target is not in the export
    "deleted": 2,  # one redacted_because, one target of an m.room.redaction in the export
    "empty_text": 2,  # two attachment-only images
    "too_long": 0,
}
READER_COUNTS = {
    "files/attachments_skipped": 1,
    "edits/applied": 2,
    "edits/applied_bundled": 1,
    "edits/invalid": 1,
    "edits/target_missing": 1,
    "reactions/skipped": 1,
    "redactions/applied": 1,
    "replies/parent_missing": 1,
    "encrypted/undecrypted": 2,
    "unknown_type/org.matrix.msc3381.poll.response": 1,
}


@pytest.fixture(scope="module")
def fixture_export():
    return export_corpus("matrix_export", EXPORT)


def test_conversations_message_by_message(fixture_export):
    _, corpus, _, _ = fixture_export
    assert conversations(corpus) == CONVERSATIONS


def test_reply_links(fixture_export):
    _, corpus, _, _ = fixture_export
    assert reply_links(corpus) == REPLY_LINKS


def test_drops_by_reason_and_the_readers_counts(fixture_export):
    raw, _, acc, counts = fixture_export
    assert acc["dropped"] == DROPPED
    assert acc["read"] == len(raw) == 38 and acc["kept"] == 17
    assert counts == READER_COUNTS


def test_each_room_is_one_timeline_in_one_piece():
    raw, _, sizes = read_export("matrix_export", EXPORT)
    assert raw["file"].tolist() == [GARDEN] * 29 + [TOOLS] * 9 and sizes == [29, 9]
    assert set(raw["channel"]) == {"Garden Club", "Tool Library"}
    garden = raw[raw["file"] == GARDEN]
    assert (garden["message_id"] == garden["line"]).all()  # position in "messages"; skipped events leave gaps
    assert 19 not in set(garden["line"]) and 24 not in set(garden["line"])  # the reaction and the redaction event


def test_raw_rows_keep_what_the_corpus_drops(fixture_export):
    raw, _, _, _ = fixture_export
    garden = raw[raw["file"] == GARDEN].set_index("line")
    assert garden.loc[8, "timestamp"] == pd.Timestamp("2024-05-11 09:10:00")  # origin_server_ts in ms, UTC
    assert garden.loc[[1, 2, 4, 31], "record_type"].tolist() == ["system"] * 4
    assert garden.loc[31, "text"] == "leave @bob:example.org"
    assert garden.loc[12, ["author", "record_type"]].tolist() == ["WeatherBot", "bot"]
    edits = garden[garden["record_type"] == "edit"]
    assert edits["text"].tolist() == ["Work day starts at 9:30am", "Work day starts at 9:30am at the north gate", "Work day cancelled", "Bring gloves"]
    assert garden.loc[[22, 23], "record_type"].tolist() == ["deleted", "deleted"] and garden.loc[[22, 23], "text"].isna().all()
    assert garden.loc[20, ["record_type", "text"]].tolist() == ["message", ""]  # seedlings.jpg: no text invented
    assert garden.loc[[8, 9, 10, 11], "conversation_key"].tolist() == ["$gc08seedsquestion"] * 4
    assert garden.loc[[13, 14], "conversation_key"].isna().all()


def test_a_zip_and_a_single_file_read_like_the_folder(fixture_export, tmp_path):
    raw, corpus, acc, counts = fixture_export
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(EXPORT.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(EXPORT).as_posix())
    zraw, zcorpus, zacc, zcounts = export_corpus("matrix_export", archive)
    pd.testing.assert_frame_equal(zraw, raw)
    assert conversations(zcorpus) == CONVERSATIONS and zacc == acc and zcounts == counts

    single = tmp_path / GARDEN_FILE
    shutil.copy(EXPORT / GARDEN_FILE, single)
    _, scorpus, _, scounts = export_corpus("matrix_export", single)
    assert conversations(scorpus) == {k: v for k, v in CONVERSATIONS.items() if k.startswith(G)}
    assert "files/attachments_skipped" not in scounts


# --- small exports built in the test: rules the fixture does not pin down ---------------------------------


def _room(tmp_path: Path, events: list[dict]) -> Path:
    path = tmp_path / "Element - Lab - Chat Export.json"
    full = [{"sender": "@ann:example.org", "unsigned": {}, "room_id": "!lAbRoOm:example.org", **e} for e in events]
    path.write_text(json.dumps({"room_name": "Lab", "room_creator": "Ann", "topic": "", "export_date": "", "exported_by": "Ann", "messages": full}))
    return path


def _msg(n: int, body: str, **content) -> dict:
    return {"type": "m.room.message", "event_id": f"${n}", "origin_server_ts": 1_700_000_000_000 + n, "content": {"msgtype": "m.text", "body": body, **content}}


def _edit(n: int, target: int, body: str, ts: int) -> dict:
    return {**_msg(n, f" * {body}", **{"m.new_content": {"msgtype": "m.text", "body": body}, "m.relates_to": {"rel_type": "m.replace", "event_id": f"${target}"}}), "origin_server_ts": ts}


def test_the_latest_edit_wins_by_timestamp_then_event_id_whatever_the_order(tmp_path):
    later, tie_low, tie_high = _edit(2, 1, "later", 50), _edit(3, 1, "tie low", 40), _edit(4, 1, "tie high", 40)
    _, corpus, _, counts = export_corpus("matrix_export", _room(tmp_path, [_msg(1, "original"), later, tie_high, tie_low]))
    assert corpus["text"].tolist() == ["later"] and counts["edits/applied"] == 3
    _, corpus, _, _ = export_corpus("matrix_export", _room(tmp_path, [_msg(1, "original"), tie_low, tie_high]))
    assert corpus["text"].tolist() == ["tie high"]


def test_only_a_replys_fallback_quote_is_stripped(tmp_path):
    quote = _msg(1, "> to be or not to be\n\nthat is a quote, not a reply")
    reply = _msg(2, "> <@ann:example.org> to be or not\n> second line\n\nmy answer", **{"m.relates_to": {"m.in_reply_to": {"event_id": "$1"}}})
    emote_reply = _msg(3, "> * <@ann:example.org> waves\n\nhello", **{"m.relates_to": {"m.in_reply_to": {"event_id": "$1"}}})
    _, corpus, _, _ = export_corpus("matrix_export", _room(tmp_path, [quote, reply, emote_reply]))
    assert conversations(corpus) == {"mine/Lab (lAbRoOm)/1": [("@ann:example.org", "> to be or not to be\n\nthat is a quote, not a reply"), ("@ann:example.org", "my answer"), ("@ann:example.org", "hello")]}


def test_pills_in_every_link_form_and_html_as_text(tmp_path):
    html = (
        '<p><a href="https://matrix.to/#/%40bo%3Aexample.org?via=example.org">Bo</a> and '
        '<a href="https://app.element.io/#/user/@cy:example.org">Cy &amp; co</a>,<br>see '
        '<a href="https://matrix.to/#/#garden:example.org">#garden:example.org</a> '
        '<a href="https://example.com/x">the plan</a></p>\n<p>then <a href="matrix:u/di:example.org?action=chat">Di</a></p>'
    )
    event = _msg(1, "Bo and Cy & co,\nsee #garden:example.org the plan\n\nthen Di", format="org.matrix.custom.html", formatted_body=html)
    _, corpus, _, _ = export_corpus("matrix_export", _room(tmp_path, [event]))
    assert corpus["text"].tolist() == ["<@@bo:example.org|Bo> and <@@cy:example.org|Cy & co>,\nsee #garden:example.org the plan\n\nthen <@@di:example.org|Di>"]


def test_an_undecryptable_parent_leaves_its_replies_unlinked_and_counted(tmp_path):
    events = [
        {"type": "m.room.encrypted", "event_id": "$1", "origin_server_ts": 1, "content": {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "xyz"}},
        _msg(2, "replying to something I could read", **{"m.relates_to": {"m.in_reply_to": {"event_id": "$1"}}}),
    ]
    raw, corpus, _, counts = export_corpus("matrix_export", _room(tmp_path, events))
    assert len(raw) == 1 and raw["parent_ids"].iloc[0].tolist() == []
    assert counts == {"encrypted/undecrypted": 1, "replies/parent_missing": 1}


# --- bad cases (export_bad_cases/matrix_export.py) --------------------------------------------------------


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("matrix_bad")


def _case(bad: Path, name: str) -> Path:
    folder = write_case(name, bad)
    files = [p for p in folder.rglob("*") if p.is_file()]
    return files[0] if len(files) == 1 and files[0].parent == folder else folder


def test_not_json_names_the_file_the_line_and_what_was_expected(bad):
    path = _case(bad, "matrix_export_not_json")
    with pytest.raises(SourceParseError) as err:
        export_corpus("matrix_export", path)
    assert err.value.file == str(path) and err.value.line == 1
    assert "Element's JSON chat export" in str(err.value) and "Thu, May 16 2024" in str(err.value)


def test_a_truncated_export_names_the_line_where_the_json_breaks(bad):
    path = _case(bad, "matrix_export_truncated")
    with pytest.raises(SourceParseError) as err:
        export_corpus("matrix_export", path)
    assert err.value.file == str(path) and err.value.line == len(path.read_bytes().split(b"\n"))


def test_an_empty_file_is_a_parse_error(bad):
    path = _case(bad, "matrix_export_empty_file")
    with pytest.raises(SourceParseError, match="Element's JSON chat export") as err:
        export_corpus("matrix_export", path)
    assert err.value.line == 1


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("matrix_export_missing_messages", r"a 'messages' list, got an object without 'messages' \(its keys: \['exported_by', 'room_name', 'topic'\]\)$"),
        ("matrix_export_messages_not_a_list", r"a 'messages' list, got 'messages' as a JSON object$"),
        ("matrix_export_top_level_list", r"a 'messages' list, got a JSON array$"),
    ],
)
def test_a_structurally_wrong_export_names_the_file_and_the_missing_key(bad, case, message):
    path = _case(bad, case)
    with pytest.raises(SourceDataError, match=message) as err:
        export_corpus("matrix_export", path)
    assert not isinstance(err.value, SourceParseError) and str(err.value).startswith(f"{path}: expected Element's JSON chat export")


def test_an_export_with_no_events_is_an_error(bad):
    path = _case(bad, "matrix_export_no_events")
    with pytest.raises(SourceDataError, match="holds no events"):
        export_corpus("matrix_export", path)


def test_an_export_with_no_json_room_is_an_error(bad):
    path = _case(bad, "matrix_export_html_only")
    with pytest.raises(SourceDataError, match="no room export in it.*HTML and plain-text exports are not read"):
        export_corpus("matrix_export", path)


def test_one_room_exported_twice_names_both_files(bad):
    path = _case(bad, "matrix_export_same_room_twice")
    with pytest.raises(SourceDataError) as err:
        export_corpus("matrix_export", path)
    message = str(err.value)
    assert message.startswith(f"{path}/Element - General - Chat Export - 2024-05-20.json: room 'General (bAdCaSeR)'")
    assert f"also exported in {path}/Element - General - Chat Export - 2024-05-19.json" in message


def test_events_of_two_rooms_in_one_file_is_an_error(bad):
    path = _case(bad, "matrix_export_two_rooms_in_one_file")
    with pytest.raises(SourceDataError, match=r"events of 2 rooms"):
        export_corpus("matrix_export", path)


def test_malformed_events_are_rows_the_corpus_counts_and_the_rest_is_read(bad):
    path = _case(bad, "matrix_export_malformed_events")
    raw, corpus, acc, _ = export_corpus("matrix_export", path)
    assert raw.loc[raw["record_type"] == "malformed", "line"].tolist() == [2, 3, 4, 5, 6]
    assert acc["dropped"]["malformed"] == 5
    assert conversations(corpus) == {"mine/General (bAdCaSeR)/1": [("@ann:example.org", "first message")], "mine/General (bAdCaSeR)/7": [("@ben:example.org", "last message")]}


def test_a_repeated_event_is_a_counted_duplicate(bad):
    path = _case(bad, "matrix_export_duplicate_events")
    raw, corpus, acc, _ = export_corpus("matrix_export", path)
    assert raw["message_id"].tolist() == [1, 2, 2] and acc["dropped"]["duplicate"] == 1
    assert corpus["text"].tolist() == ["first message", "second message"]


def test_a_room_named_after_its_people_is_named_by_its_id_only(tmp_path):
    member = lambda who, name: {"type": "m.room.member", "event_id": f"$m{who}", "origin_server_ts": 1_700_000_000_000, "sender": f"@{who}:example.org",
                                "state_key": f"@{who}:example.org", "content": {"membership": "join", "displayname": name}}  # fmt: skip
    events = [member("ann", "Ann Vale"), member("zed", "Zed Orlov"), _msg(1, "hi"), {**_msg(2, "hello"), "sender": "@zed:example.org"}]
    path = tmp_path / "Element - Zed Orlov - Chat Export.json"
    full = [{"sender": "@ann:example.org", "unsigned": {}, "room_id": "!dIrEcTrM:example.org", **e} for e in events]
    path.write_text(json.dumps({"room_name": "Zed Orlov", "room_creator": "Ann Vale", "topic": "", "export_date": "", "exported_by": "Ann Vale", "messages": full}))
    raw, corpus, _, _ = export_corpus("matrix_export", path)
    assert set(raw["file"]) == {"dm (dIrEcTrM)"} and set(raw["channel"]) == {"dm"}
    assert not corpus["conversation_id"].str.contains("Zed").any()
