"""The Zulip export reader (``zulip_export``): the hand-written fixture read the way the chain reads it,
conversation by conversation, and every bad case of ``export_bad_cases/zulip_export.py``."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from thread_embed_pipeline.sources.errors import SourceDataError, SourceParseError
from thread_embed_pipeline.sources.exports import get_format, zulip

from thread_embed_pipeline_tests.bad_input_cases import CASES, write_case
from thread_embed_pipeline_tests.export_bad_cases.zulip_export import BAD_CASES as ZULIP_BAD_CASES
from thread_embed_pipeline_tests.export_helpers import FIXTURES, conversations, export_corpus, read_export, reply_links

FIXTURE = FIXTURES / "zulip_export"
FORMAT = "zulip_export"
T = zulip.topic_key  # conversation keys are hashes of topics, never their words

EXPECTED = {
    f"mine/engineering/{T('Flaky CI')}": [
        ("Ines Okafor", "The integration suite failed twice on main today. <@12|Tomás Berg> can you take a look?"),
        ("Tomás Berg", "Looking now. It's the timeout in `test_upload`; I'll bump it."),  # the edited (final) text
        ("Priya Raman", "Thanks both! Let's ask <@14|Dana Ito> to add a retry policy too."),  # Dana never posts
    ],
    f"mine/engineering/{T('Release notes')}": [("Ines Okafor", "Draft for 2.3 is up, comments welcome @all")],
    f"mine/random/{T('lunch')}": [
        ("Tomás Berg", "Anyone up for dumplings at 12:30? @backend team"),
        ("Olaf Quist", "<@12|Tomás Berg> count me in"),  # a deactivated (mirror dummy) user, a silent mention
    ],
    f"mine/random/{T('(no topic)')}": [
        ("Priya Raman", "Does a message without a topic still land in a topic?"),
        ("Tomás Berg", "It does. <@Sam Unknown|Sam Unknown> asked the same last week."),
    ],
    f"mine/launch%2Fops/{T('countdown')}": [("Priya Raman", "T-minus 10 minutes, all stations report."), ("Ines Okafor", "Telemetry green.")],
    "mine/dm/11-12/session-1015": [("Ines Okafor", "Can you review my PR before standup?"), ("Tomás Berg", "Sure, after lunch.")],
    "mine/dm/11-12/session-1017": [("Ines Okafor", "Merged, thanks!")],
    "mine/dm/group-7/session-1018": [
        ("Priya Raman", "Who has the launch checklist?"),
        ("Ines Okafor", "<@13|Priya Raman> it is pinned in #**launch/ops>countdown**."),
    ],
}


@pytest.fixture(scope="module")
def fixture_corpus():
    return export_corpus(FORMAT, FIXTURE)


def test_the_format_is_registered_with_this_reader():
    fmt = get_format(FORMAT)
    assert (fmt.platform, fmt.module, fmt.threads) == ("zulip", "zulip", "native")
    assert fmt.read is zulip.read_export
    assert Path(fmt.doc).name == "zulip_export.md" and (Path(__file__).parents[3] / fmt.doc).is_file()


def test_fixture_conversations_message_by_message(fixture_corpus):
    _, corpus, _, _ = fixture_corpus
    assert conversations(corpus) == EXPECTED
    assert set(corpus["platform"]) == {"zulip"}


def test_topics_are_conversations_without_reply_links(fixture_corpus):
    _, corpus, _, _ = fixture_corpus
    assert all(all(link is None for link in links) for links in reply_links(corpus).values())


def test_drops_by_reason_and_reader_counts(fixture_corpus):
    raw, _, acc, counts = fixture_corpus
    assert (acc["read"], acc["kept"]) == (20, 15)
    assert {reason: n for reason, n in acc["dropped"].items() if n} == {"system": 2, "bot": 2, "empty_text": 1}
    assert counts == {
        "edits/applied": 1,  # message 1003's content edit (its content is already the final text)
        "edits/moved": 1,  # message 1014 moved from topic "count down"
        "attachments/upload_only": 1,  # message 1010: only an upload link
        "mentions/unresolved": 1,  # @**Sam Unknown**: no such user
        "messages/recipient_unknown": 1,  # message 1021: recipient 99 is not in realm.json
    }
    kinds = raw.set_index("message_id")["record_type"]
    assert kinds[[1001, 1007]].tolist() == ["system", "system"]  # Notification Bot; a topic-resolved notice
    assert kinds[[1004, 1020]].tolist() == ["bot", "bot"]  # an incoming-webhook bot; Welcome Bot
    assert raw.loc[raw["message_id"] == 1010, "text"].tolist() == [""]


def test_rows_keep_their_timeline_member_line_and_time(fixture_corpus):
    raw, _, _, _ = fixture_corpus
    by_id = raw.set_index("message_id")
    assert by_id.loc[1002, ["file", "channel", "line", "conversation_key"]].tolist() == ["engineering", "engineering", 2, T("Flaky CI")]
    assert by_id.loc[1003, "conversation_key"] == T("Flaky CI") == T("flaky ci")  # Zulip topics are case-insensitive
    assert by_id.loc[1013, ["file", "channel", "line"]].tolist() == ["launch%2Fops", "launch/ops", 3]
    assert by_id.loc[1016, "file"] == "dm/11-12"  # a reply to a DM sits in the same timeline as its partner's message
    assert by_id.loc[1018, "file"] == "dm/group-7"
    assert by_id.loc[1011, "conversation_key"] == T(zulip.NO_TOPIC) == T("")
    assert str(by_id.loc[1002, "timestamp"]) == "2024-03-04 10:01:00"
    assert (raw["parent_ids"].map(len) == 0).all()
    # each timeline's rows are contiguous, in message id order
    for _, rows in raw.groupby("file", sort=False):
        assert rows.index.to_list() == list(range(rows.index[0], rows.index[0] + len(rows)))
        assert rows["message_id"].is_monotonic_increasing


def test_a_zip_of_the_export_folder_reads_the_same(fixture_corpus, tmp_path):
    archive = tmp_path / "zulip-export-lumenworks.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(FIXTURE.iterdir()):
            zf.write(path, f"zulip-export-lumenworks/{path.name}")
    _, corpus, acc, counts = export_corpus(FORMAT, archive)
    assert conversations(corpus) == EXPECTED
    assert (acc, counts) == fixture_corpus[2:]


def test_timelines_are_split_into_pieces_whole(monkeypatch):
    monkeypatch.setattr(zulip, "MAX_ROWS_PER_PIECE", 3)
    raw, counts, sizes = read_export(FORMAT, FIXTURE)
    assert len(sizes) > 1 and sum(sizes) == 20
    start = 0
    for size in sizes:  # no timeline crosses a piece boundary
        piece = raw.iloc[start : start + size]
        assert not set(piece["file"]) & set(raw.iloc[start + size :]["file"])
        start += size
    assert counts["edits/applied"] == 1 and counts["messages/recipient_unknown"] == 1


# -- bad input ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("zulip_bad")
    for name in ZULIP_BAD_CASES:
        write_case(name, root)
    return root


def _read(path: Path):
    return export_corpus(FORMAT, path)


def test_realm_that_is_not_json_names_the_member_and_line(bad):
    with pytest.raises(SourceParseError) as err:
        _read(bad / "zulip_export_realm_not_json")
    assert err.value.file.endswith("zulip_export_realm_not_json/realm.json") and err.value.line == 1
    assert "Zulip realm.json" in str(err.value)


def test_another_platforms_export_is_refused(bad):
    with pytest.raises(SourceDataError, match="not a Zulip export: no realm.json"):
        _read(bad / "zulip_export_not_zulip")


def test_an_empty_zip_is_refused(bad):
    with pytest.raises(SourceDataError, match="no realm.json"):
        _read(bad / "zulip_export_empty_zip" / "export.zip")


def test_a_missing_table_is_named(bad):
    with pytest.raises(SourceDataError, match=r"realm.json: no table zerver_recipient"):
        _read(bad / "zulip_export_no_recipient_table")


def test_an_export_without_message_files_is_refused(bad):
    with pytest.raises(SourceDataError, match=r"zulip-export-kiln/realm.json: the export has no messages-NNNNNN.json"):
        _read(bad / "zulip_export_no_message_files")


def test_an_unfinished_export_is_refused(bad):
    with pytest.raises(SourceDataError, match=r"messages-000002.json.partial: the export did not finish"):
        _read(bad / "zulip_export_partial")


def test_a_message_file_of_the_wrong_shape_is_named(bad):
    with pytest.raises(SourceDataError, match=r"messages-000001.json: no zerver_message list"):
        _read(bad / "zulip_export_messages_not_an_object")


def test_a_message_without_sender_names_member_and_row(bad):
    with pytest.raises(SourceParseError) as err:
        _read(bad / "zulip_export_message_without_sender")
    assert err.value.file.endswith("messages-000001.json") and err.value.line == 2
    assert "integer id, sender and recipient" in err.value.expected


def test_a_date_that_is_not_a_number_names_member_and_row(bad):
    with pytest.raises(SourceParseError) as err:
        _read(bad / "zulip_export_bad_date_sent")
    assert err.value.file.endswith("messages-000001.json") and err.value.line == 2 and "date_sent" in err.value.expected


def test_odd_messages_are_kept_with_their_reason(bad):
    raw, corpus, acc, counts = _read(bad / "zulip_export_odd_messages")
    assert acc["read"] == 4 and acc["dropped"]["malformed"] == 1  # null content
    assert counts == {"authors/unknown": 1, "edits/history_unreadable": 1, "messages/recipient_unknown": 1}
    assert conversations(corpus) == {
        f"mine/pottery/{T('glazes')}": [("Ann Ek", "first"), ("user-77", "from a user the export lacks"), ("Ann Ek", "edited")]
    }


def test_an_organisation_without_messages_reads_as_no_rows(bad):
    raw, corpus, acc, counts = _read(bad / "zulip_export_empty_org")
    assert raw.empty and corpus.empty and acc["read"] == 0 and counts == {}


def test_invalid_utf8_names_the_member(bad):
    with pytest.raises(SourceParseError, match=r"realm.json:\d+: a Zulip realm.json .* in UTF-8"):
        _read(bad / "zulip_export_invalid_utf8")


def test_every_zulip_bad_case_is_tested():
    tested = {
        "zulip_export_realm_not_json", "zulip_export_not_zulip", "zulip_export_empty_zip", "zulip_export_no_recipient_table",
        "zulip_export_no_message_files", "zulip_export_partial", "zulip_export_messages_not_an_object",
        "zulip_export_message_without_sender", "zulip_export_bad_date_sent", "zulip_export_odd_messages",
        "zulip_export_empty_org", "zulip_export_invalid_utf8",
    }
    assert set(ZULIP_BAD_CASES) == tested and {name for name in CASES if name.startswith("zulip")} == tested
