"""The ``slack_export`` reader on a hand-written workspace export (threads across day files, a deleted
thread parent, a reply whose parent predates the export, bots, joins, topics, a file share, a broadcast
reply, mentions of someone who never posts, private channels and DMs), read the way the chain reads it,
and on every bad case of ``export_bad_cases/slack_export.py``."""

from __future__ import annotations

import shutil
import zipfile

import pytest

from thread_embed_pipeline.sources.errors import SourceDataError, SourceParseError

from thread_embed_pipeline_tests.bad_input_cases import write_case
from thread_embed_pipeline_tests.export_helpers import FIXTURES, conversations, export_corpus, reply_links

FORMAT = "slack_export"
ROOT = FIXTURES / FORMAT

EXPECTED = {
    "mine/dm/D01ALBOB/1614938400.000100": [("alice", "can you review my PR today?"), ("Bob Stone", "on it")],
    "mine/dm/G02MPDM/1614852000.000100": [("Bob Stone", "are we still on for the review?"), ("Captain C", "yes, 3pm")],
    # its parent was posted before the export's first day: kept alone (then dropped as a short conversation)
    "mine/general/1612000000.000100": [("Bob Stone", "following up on last month's question: it works now")],
    # a thread whose last two replies sit in the next day's file
    "mine/general/1614596400.000300": [
        ("alice", "How do I pin the build cache between CI runs?"),
        ("Bob Stone", "Use the cache key from the lockfile hash, <@U01ALICE|alice>"),
        ("Captain C", "And restore it with restore-keys so a miss still warms up"),
        ("alice", "thanks both, that halved our build time"),
    ],
    "mine/general/1614600000.000500": [("Captain C", "lunch anyone?")],  # nobody replied
    # markup: @here, escapes, a mention of dave (never posts) by id and by id|name, a link's label, a channel link;
    # the file share without text is dropped (empty_text), the broadcast reply stays in its thread
    "mine/general/1614603600.000700": [
        ("Captain C", "@here who owns the <Widget> repo? <@U04DAVE|daveq> wrote it, see the repo and #random"),
        ("Bob Stone", "<@U04DAVE|daveq> does, and <@U03CAROL|Captain C> knows the CI & deploy bits"),
        ("alice", "also posting this to the channel: the repo moved"),
    ],
    # the parent is a tombstone (deleted): its replies stay together
    "mine/general/1614607200.001100": [("Bob Stone", "was that about the outage?"), ("Captain C", "yes, it is fixed now")],
    "mine/random/1614596500.000100": [("Captain C", "Anyone tried the new espresso machine?"), ("alice", "yes, grind finer than you think")],
    "mine/secret-plans/1614765600.000100": [("alice", "Surprise party for <@U03CAROL|Captain C> on Friday?"), ("Bob Stone", "yes! I'll bring the cake")],
}


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("THREAD_EMBED_DATA_DIR", str(tmp_path / "data"))  # where a zip is unpacked


@pytest.fixture()
def export():
    return export_corpus(FORMAT, ROOT)


def test_conversations_message_by_message(export):
    _, corpus, _, _ = export
    assert conversations(corpus) == EXPECTED


def test_replies_link_to_their_thread_parent_across_day_files(export):
    _, corpus, _, _ = export
    links = reply_links(corpus)
    assert links["mine/general/1614596400.000300"] == [None, 0, 0, 0]
    assert links["mine/general/1614607200.001100"] == [None, None]  # the parent was deleted
    assert links["mine/general/1612000000.000100"] == [None]  # the parent is not in the export


def test_drops_by_reason_and_the_readers_counts(export):
    raw, corpus, acc, counts = export
    assert (acc["read"], acc["kept"]) == (25, 19) == (len(raw), len(corpus))
    assert {k: v for k, v in acc["dropped"].items() if v} == {"system": 3, "bot": 1, "deleted": 1, "empty_text": 1}
    assert counts == {
        "threads/replies": 12,
        "replies/parent_missing": 1,
        "subtype/channel_join": 1, "subtype/channel_purpose": 1, "subtype/channel_topic": 1, "subtype/bot_message": 1,
        "subtype/file_share": 1, "subtype/thread_broadcast": 1, "subtype/tombstone": 1,
        "files/lists_read": 4,
    }  # fmt: skip


def test_timelines_are_channels_and_dms_are_named_by_id_not_by_their_people(export):
    raw, _, _, _ = export
    assert set(raw["file"]) == {"general", "random", "secret-plans", "dm/G02MPDM", "dm/D01ALBOB"}
    assert not raw["file"].str.contains("alice|bstone|carol").any()
    general = raw[raw["file"] == "general"]
    # one timeline across its day files: ids run on, lines restart per day file
    assert general["message_id"].tolist() == list(range(17))
    assert general["line"].tolist() == list(range(1, 15)) + [1, 2, 3]


def test_names_come_from_users_json_and_never_the_e_mails_or_real_names_of_the_profile(export):
    raw, _, _, _ = export
    authors = set(raw["author"])
    assert {"alice", "Bob Stone", "Captain C", "deploybot"} <= authors  # display_name, else real_name
    cells = " ".join(raw["text"].dropna()) + " ".join(authors)
    assert "@wonder.example" not in cells and "Alice Liddell" not in cells and "Dave Quietly" not in cells


def test_a_zip_reads_the_same_as_its_folder(tmp_path, export):
    archive = tmp_path / "acme.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(ROOT.rglob("*.json")):
            z.write(path, path.relative_to(ROOT).as_posix())
    raw, corpus, acc, counts = export_corpus(FORMAT, archive)
    assert conversations(corpus) == conversations(export[1]) and counts == export[3] and acc == export[2]


# --- the bad-input corpus -----------------------------------------------------------------------


def _case(name: str, tmp_path):
    return write_case(name, tmp_path)


def test_a_day_file_that_is_not_json_names_the_file_and_line(tmp_path):
    with pytest.raises(SourceParseError) as err:
        export_corpus(FORMAT, _case("slack_export_day_not_json", tmp_path))
    assert err.value.file.endswith("general/2021-03-01.json") and err.value.line == 3 and "JSON array of Slack messages" in str(err.value)


def test_a_zip_without_users_json_says_what_a_slack_export_holds(tmp_path):
    folder = _case("slack_export_zip_without_users", tmp_path)
    with pytest.raises(SourceDataError, match=r"acme\.zip: no users\.json: expected a Slack workspace export"):
        export_corpus(FORMAT, folder / "acme.zip")


def test_an_export_without_day_files_is_an_error(tmp_path):
    with pytest.raises(SourceDataError, match=r"no day files: expected a <channel>/<YYYY-MM-DD>\.json"):
        export_corpus(FORMAT, _case("slack_export_empty", tmp_path))


def test_a_day_file_holding_an_object_names_the_file(tmp_path):
    with pytest.raises(SourceDataError, match=r"general/2021-03-01\.json: expected a JSON array of Slack messages, got a JSON dict"):
        export_corpus(FORMAT, _case("slack_export_day_not_an_array", tmp_path))


def test_an_array_element_that_is_not_a_message_names_its_position(tmp_path):
    with pytest.raises(SourceParseError) as err:
        export_corpus(FORMAT, _case("slack_export_message_not_an_object", tmp_path))
    assert err.value.line == 2 and "a Slack message object" in str(err.value)


def test_a_message_without_ts_is_a_counted_malformed_row(tmp_path):
    raw, corpus, acc, counts = export_corpus(FORMAT, _case("slack_export_message_without_ts", tmp_path))
    assert acc["dropped"]["malformed"] == 1 and counts["messages/without_ts"] == 1
    assert corpus["text"].tolist() == ["fine"]


def test_users_json_that_is_not_a_list_is_an_error(tmp_path):
    with pytest.raises(SourceDataError, match=r"users\.json: expected a JSON array of Slack users, got dict"):
        export_corpus(FORMAT, _case("slack_export_users_not_a_list", tmp_path))
