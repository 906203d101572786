"""The Mattermost bulk export reader (``mattermost_export``): the hand-written fixture read the way the chain
reads it, conversation by conversation, and every bad case of ``export_bad_cases/mattermost_export.py``."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from thread_embed_pipeline.sources.errors import SourceDataError, SourceParseError
from thread_embed_pipeline.sources.exports import get_format, mattermost

from thread_embed_pipeline_tests.bad_input_cases import CASES, write_case
from thread_embed_pipeline_tests.export_bad_cases.mattermost_export import BAD_CASES as MATTERMOST_BAD_CASES
from thread_embed_pipeline_tests.export_helpers import FIXTURES, conversations, export_corpus, read_export, reply_links

FIXTURE = FIXTURES / "mattermost_export"
FORMAT = "mattermost_export"


def _dm(*members: str) -> str:
    return "dm/" + hashlib.sha256("\n".join(sorted(set(members))).encode()).hexdigest()[:12]


DM, GROUP = _dm("ann", "bjorn"), _dm("ann", "bjorn", "chiara")

EXPECTED = {
    "mine/harbor/dev/1717405260000": [
        ("ann", "Has anyone seen the flaky `upload_test` failure? @bjorn @devi"),  # devi never posts; @handles stay as written
        ("bjorn", "Yes, it times out on the slow runners."),  # edited: the export has the final text
        ("ann", "Thanks, I'll raise the timeout."),  # (ci-bot's reply between them is a bot drop)
    ],
    "mine/harbor/dev/1717413000000": [("ann", "No worries.")],  # the reply to a deleted post
    "mine/harbor/town-square/1717412400000": [("bjorn", "Lunch at the harbor café today? @channel")],
    "mine/harbor/town-square/1717412400000-2": [("eli", "Signing off for the summer, see you all in September!")],  # same millisecond
    "mine/harbor/town-square/1717412460000": [("ann", "Nice, is that the new office?")],  # the reply to a file-only post
    f"mine/{DM}/1717407000000": [("ann", "Can you review my PR before standup?"), ("bjorn", "Sure, after lunch.")],
    f"mine/{DM}/1717491600000": [("bjorn", "Merged, thanks for the review")],
    f"mine/{GROUP}/1717495200000": [("chiara", "Who has the launch checklist?"), ("ann", "@chiara it's pinned in ~dev"), ("bjorn", "thanks, found it")],
}


@pytest.fixture(scope="module")
def fixture_corpus():
    return export_corpus(FORMAT, FIXTURE)


def test_the_format_is_registered_with_this_reader():
    fmt = get_format(FORMAT)
    assert (fmt.platform, fmt.module, fmt.threads) == ("mattermost", "mattermost", "native")
    assert fmt.read is mattermost.read_export
    assert (Path(__file__).parents[3] / fmt.doc).is_file()


def test_fixture_conversations_message_by_message(fixture_corpus):
    _, corpus, _, _ = fixture_corpus
    assert conversations(corpus) == EXPECTED
    assert set(corpus["platform"]) == {"mattermost"}


def test_replies_point_at_their_root(fixture_corpus):
    _, corpus, _, _ = fixture_corpus
    links = reply_links(corpus)
    assert links["mine/harbor/dev/1717405260000"] == [None, 0, 0]
    assert links[f"mine/{GROUP}/1717495200000"] == [None, 0, 0]
    assert links[f"mine/{DM}/1717407000000"] == [None, 0]
    # a root that is dropped (deleted; file only, empty text) leaves its reply without a kept parent
    assert links["mine/harbor/dev/1717413000000"] == [None] and links["mine/harbor/town-square/1717412460000"] == [None]


def test_drops_by_reason_and_reader_counts(fixture_corpus):
    raw, _, acc, counts = fixture_corpus
    assert (acc["read"], acc["kept"]) == (19, 13)
    assert {reason: n for reason, n in acc["dropped"].items() if n} == {"system": 1, "bot": 3, "deleted": 1, "empty_text": 1}
    assert counts == {"edits/final_text_only": 1, "attachments/file_only": 1}
    kinds = raw.groupby("record_type")["line"].apply(sorted).to_dict()
    assert kinds["system"] == [11]  # system_join_channel
    assert kinds["bot"] == [12, 13, 18]  # ci-bot's reply (a bot line), ci-bot's post, a webhook post (props.from_webhook)
    assert kinds["deleted"] == [17]
    assert raw.loc[raw["line"] == 15, "text"].tolist() == ["", "Nice, is that the new office?"]


def test_rows_keep_their_timeline_line_and_time(fixture_corpus):
    raw, _, _, _ = fixture_corpus
    root = raw[(raw["line"] == 12)].iloc[0]
    assert (root["file"], root["channel"], root["message_id"], root["conversation_key"]) == ("harbor/dev", "Development", 12 << 20, "1717405260000")
    assert str(root["timestamp"]) == "2024-06-03 09:01:00"
    replies = raw[(raw["line"] == 12)].iloc[1:]
    assert replies["message_id"].tolist() == [(12 << 20) + 1, (12 << 20) + 2, (12 << 20) + 3]
    assert all(parents == [12 << 20] for parents in replies["parent_ids"].map(list))
    assert set(raw.loc[raw["line"].isin([22, 23]), "file"]) == {DM}  # both directions of a DM: one timeline
    assert set(raw["file"]) == {"harbor/dev", "harbor/town-square", DM, GROUP}
    assert not raw["file"].str.contains("ann|bjorn|chiara").any()  # no username in a timeline's path
    for _, rows in raw.groupby("file", sort=False):  # each timeline contiguous, in message id order
        assert rows.index.to_list() == list(range(rows.index[0], rows.index[0] + len(rows)))
        assert rows["message_id"].is_monotonic_increasing


def test_the_zip_mmctl_writes_reads_the_same(fixture_corpus, tmp_path):
    archive = tmp_path / "export_20240610.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(FIXTURE / "import.jsonl", "import.jsonl")
        zf.writestr("data/20240603/teams/noteam/channels/q8x1/users/c3h7/f9a2/floorplan.png", b"\x89PNG\r\n")
    _, corpus, acc, counts = export_corpus(FORMAT, archive)
    assert conversations(corpus) == EXPECTED and (acc, counts) == fixture_corpus[2:]
    _, corpus, _, _ = export_corpus(FORMAT, FIXTURE / "import.jsonl")  # the .jsonl alone
    assert conversations(corpus) == EXPECTED


def test_timelines_are_split_into_pieces_whole(monkeypatch):
    monkeypatch.setattr(mattermost, "MAX_ROWS_PER_PIECE", 4)
    raw, counts, sizes = read_export(FORMAT, FIXTURE)
    assert len(sizes) > 1 and sum(sizes) == 19
    start = 0
    for size in sizes:
        assert not set(raw.iloc[start : start + size]["file"]) & set(raw.iloc[start + size :]["file"])
        start += size
    assert counts == {"edits/final_text_only": 1, "attachments/file_only": 1}


# -- bad input ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mattermost_bad")
    for name in MATTERMOST_BAD_CASES:
        write_case(name, root)
    return root


def _read(path: Path):
    return export_corpus(FORMAT, path)


def _parse_error(path: Path) -> SourceParseError:
    with pytest.raises(SourceParseError) as err:
        _read(path)
    return err.value


def test_a_file_that_is_not_json_lines_names_file_and_line(bad):
    err = _parse_error(bad / "mattermost_export_not_json")
    assert err.file.endswith("mattermost_export_not_json/import.jsonl") and err.line == 1 and "Mattermost bulk export line" in err.expected


def test_a_file_without_the_version_line_is_refused(bad):
    err = _parse_error(bad / "mattermost_export_no_version_line")
    assert err.line == 1 and '{"type": "version"' in err.expected


def test_an_empty_file_is_refused(bad):
    with pytest.raises(SourceDataError, match=r"import.jsonl: the export is empty"):
        _read(bad / "mattermost_export_empty_file")


def test_an_empty_zip_is_refused(bad):
    with pytest.raises(SourceDataError, match="no import.jsonl"):
        _read(bad / "mattermost_export_empty_zip" / "export.zip")


def test_another_platforms_export_is_refused(bad):
    with pytest.raises(SourceDataError, match="not a Mattermost bulk export: no import.jsonl"):
        _read(bad / "mattermost_export_not_mattermost")


def test_two_jsonl_files_are_ambiguous(bad):
    with pytest.raises(SourceDataError, match="several .jsonl files"):
        _read(bad / "mattermost_export_two_jsonl_files")


def test_a_truncated_file_names_its_last_line(bad):
    err = _parse_error(bad / "mattermost_export_truncated")
    assert err.line == 4 and err.got.endswith('"the ')


def test_a_line_without_type_names_its_line(bad):
    assert _parse_error(bad / "mattermost_export_line_without_type").line == 2


def test_a_post_without_channel_names_its_line(bad):
    err = _parse_error(bad / "mattermost_export_post_without_channel")
    assert err.line == 3 and "team and channel" in err.expected


def test_a_create_at_that_is_not_milliseconds_names_its_line(bad):
    err = _parse_error(bad / "mattermost_export_bad_create_at")
    assert err.line == 3 and "create_at in milliseconds" in err.expected


def test_a_direct_post_without_members_names_its_line(bad):
    err = _parse_error(bad / "mattermost_export_direct_post_without_members")
    assert err.line == 2 and "channel_members" in err.expected


def test_a_reply_that_is_not_an_object_names_the_posts_line(bad):
    err = _parse_error(bad / "mattermost_export_reply_not_an_object")
    assert err.line == 2 and "reply 1 of the post" in err.expected


def test_odd_posts_are_kept_with_their_reason(bad):
    raw, corpus, acc, counts = _read(bad / "mattermost_export_odd_posts")
    assert acc["read"] == 4 and acc["dropped"]["malformed"] == 2  # a null message; a post without user
    assert counts == {"lines/unknown_type/thread_summary": 1}
    assert conversations(corpus) == {
        "mine/kiln/glazes/1717405200000": [("ann", "first")],
        f"mine/{_dm('ann')}/1717405380000": [("ann", "note to self")],
    }


def test_every_mattermost_bad_case_is_tested():
    tested = {
        "mattermost_export_not_json", "mattermost_export_no_version_line", "mattermost_export_empty_file", "mattermost_export_empty_zip",
        "mattermost_export_not_mattermost", "mattermost_export_two_jsonl_files", "mattermost_export_truncated",
        "mattermost_export_line_without_type", "mattermost_export_post_without_channel", "mattermost_export_bad_create_at",
        "mattermost_export_direct_post_without_members", "mattermost_export_odd_posts", "mattermost_export_reply_not_an_object",
    }
    assert set(MATTERMOST_BAD_CASES) == tested and {name for name in CASES if name.startswith("mattermost")} == tested
