"""The ``irc_log`` export reader on its hand-written fixture (ZNC, irssi, weechat and the plain form, one
timeline each), its bad cases, and the disentangler link step that gives the logs their conversations."""

from __future__ import annotations

import shutil
import zipfile
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from thread_embed_pipeline.disentanglement import linking
from thread_embed_pipeline.corpus.builder import corpus_frame, corpus_table, file_stem
from thread_embed_pipeline.disentanglement.scorers import DisentangleScorer, fit_scorer
from thread_embed_pipeline.disentanglement.logs import channel_logs
from thread_embed_pipeline.disentanglement.features import file_features, gold_links
from thread_embed_pipeline.disentanglement.linking import link_export_timelines
from thread_embed_pipeline.schemas import raw_table
from thread_embed_pipeline.sources.errors import SourceDataError, SourceParseError
from thread_embed_pipeline.sources.exports.irc_log import channel_of, detect_style

from thread_embed_pipeline_tests.bad_input_cases import write_case
from thread_embed_pipeline_tests.export_helpers import FIXTURES, conversations, export_corpus, read_export, reply_links
from thread_embed_pipeline_tests.disentanglement.test_disentangle import SPLITS, synthetic_raw

FIXTURE = FIXTURES / "irc_log"
ZNC, IRSSI, WEECHAT, PLAIN = "znc/libera/#kitchen/2021-03-04.log", "irssi/libera/#garden.log", "weechat/irc.oftc.#bikes.weechatlog", "plain/#attic.txt"

# every message is its own conversation until the disentangler links them: the reader links nothing
EXPECTED = {
    "mine/irssi/libera/#garden.log/2": [("erin", "are tomato seedlings ok on a cold windowsill?")],
    "mine/irssi/libera/#garden.log/3": [("fay", "erin: move them away from the glass at night")],
    "mine/irssi/libera/#garden.log/4": [("erin", "moves the tray")],  # "21:58  * erin moves the tray"
    "mine/irssi/libera/#garden.log/5": [("gus", "fay, what about basil? @henry grows it on his balcony")],  # @henry never posts
    "mine/irssi/libera/#garden.log/6": [("erin", "s/tray/trays/")],  # IRC's edit idiom is text, never applied
    "mine/irssi/libera/#garden.log/7": [("fay", "gus: basil hates the cold even more")],
    "mine/irssi/libera/#garden.log/12": [("fay", "swap list is pinned")],  # "-fay:#garden- ...", a notice
    "mine/plain/#attic/1": [("lee", "is anyone still up?")],
    "mine/plain/#attic/2": [("max", "lee: barely")],
    "mine/plain/#attic/3": [("lee", "max: the attic fan makes a clicking noise")],
    "mine/plain/#attic/5": [("max", "lee: loose blade, tighten the hub screw")],
    "mine/weechat/irc.oftc.#bikes.weechatlog/1": [("ivy", "my rear derailleur skips under load")],
    "mine/weechat/irc.oftc.#bikes.weechatlog/2": [("jon", "ivy: check the chain wear first")],  # "@jon": mode char dropped
    "mine/weechat/irc.oftc.#bikes.weechatlog/3": [("ivy", "measures the chain")],  # " *\tivy measures the chain"
    "mine/weechat/irc.oftc.#bikes.weechatlog/4": [("ivy", "0.75 on the gauge\nstretched, right?")],  # a two-line message
    "mine/weechat/irc.oftc.#bikes.weechatlog/5": [("kim", "jon: lend her your chain tool")],
    "mine/znc/libera/#kitchen/2021-03-04.log/2": [("ann", "morning all, my sourdough starter smells like nail polish")],
    "mine/znc/libera/#kitchen/2021-03-04.log/3": [("bob", "ann: that's acetone, it's hungry. feed it twice a day")],
    "mine/znc/libera/#kitchen/2021-03-04.log/4": [("ann", "sniffs the jar again")],
    "mine/znc/libera/#kitchen/2021-03-04.log/5": [("cookbot", "Tip of the day: weigh flour, don't scoop it")],  # a bot, unflagged
    "mine/znc/libera/#kitchen/2021-03-04.log/6": [("cookbot", "reminder: the bake-off starts at 18:00")],  # "-cookbot- ..."
    "mine/znc/libera/#kitchen/2021-03-04.log/7": [("bob", "ask carol about rye starters, she keeps three")],  # carol never posts
    "mine/znc/libera/#kitchen/2021-03-04.log/9": [("dan", "anyone tried a cast iron pan for pizza?")],
    "mine/znc/libera/#kitchen/2021-03-04.log/10": [("ann", "bob: thanks, will feed it at noon")],
    "mine/znc/libera/#kitchen/2021-03-04.log/12": [("dan", "https://example.org/pan.jpg")],  # IRC's "attachment": a link, kept
    "mine/znc/libera/#kitchen/2021-03-04.log/15": [("bob", "dan: yes, preheat it for 45 minutes")],
    "mine/znc/libera/#kitchen/2021-03-04.log/16": [("dan", "bob: at what temperature?")],
    "mine/znc/libera/#kitchen/2021-03-04.log/17": [("bob", "as hot as the oven goes")],  # bold and colour codes removed
}
READER_COUNTS = {
    "actions/as_message": 4, "notices/as_message": 2, "lines/blank": 1, "lines/log_marker": 3, "lines/continuation": 1,
    "lines/formatting_stripped": 1, "dates/from_log_markers": 1, "dates/from_file_name": 1, "dates/default": 1, "dates/midnight_rollover": 1,
}


@pytest.fixture(scope="module")
def fixture_export():
    return export_corpus("irc_log", FIXTURE)


# -- the reader ---------------------------------------------------------------------------------
def test_the_fixture_reads_into_conversations_message_by_message(fixture_export):
    raw, corpus, acc, counts = fixture_export
    assert conversations(corpus) == EXPECTED
    assert all(links == [None] for links in reply_links(corpus).values())  # IRC has no reply links
    assert raw["conversation_key"].isna().all() and raw["parent_ids"].map(len).eq(0).all()


def test_every_line_is_a_row_or_counted_and_the_drops_have_reasons(fixture_export):
    raw, _, acc, counts = fixture_export
    dropped = {k: v for k, v in acc["dropped"].items() if v}
    assert acc["read"] == 50 and acc["kept"] == 28
    assert dropped == {"system": 20, "malformed": 1, "empty_text": 1}  # the empty action "00:02  * gus"
    assert counts == READER_COUNTS
    lines = {rel: len((FIXTURE / rel).read_bytes().splitlines()) for rel in (ZNC, IRSSI, WEECHAT, PLAIN)}
    no_row = counts["lines/blank"] + counts["lines/log_marker"] + counts["lines/continuation"]
    assert len(raw) + no_row == sum(lines.values())


def test_rows_keep_their_timeline_line_and_channel(fixture_export):
    raw, *_ = fixture_export
    assert raw.groupby("file").size().to_dict() == {IRSSI: 14, PLAIN: 6, WEECHAT: 9, ZNC: 21}
    assert raw.groupby("file")["channel"].unique().map(list).to_dict() == {IRSSI: ["#garden"], PLAIN: ["#attic"], WEECHAT: ["#bikes"], ZNC: ["#kitchen"]}
    for _, rows in raw.groupby("file"):
        assert rows["message_id"].tolist() == list(range(len(rows))) and rows["line"].is_monotonic_increasing
    kinds = raw.groupby(["file", "record_type"]).size().to_dict()
    assert kinds == {(IRSSI, "message"): 8, (IRSSI, "system"): 6, (PLAIN, "message"): 4, (PLAIN, "system"): 1, (PLAIN, "malformed"): 1,
                     (WEECHAT, "message"): 5, (WEECHAT, "system"): 4, (ZNC, "message"): 12, (ZNC, "system"): 9}
    system = raw[raw["record_type"] == "system"]
    assert system["author"].isna().all()
    assert "erin [~erin@203.0.113.9] has joined #garden" in set(system["text"]) and "Joins: ann (~ann@203.0.113.5)" in set(system["text"])
    bad = raw[raw["record_type"] == "malformed"]
    assert bad[["file", "line", "text"]].values.tolist() == [[PLAIN, 5, "this line is not an IRC line"]]


def test_dates_come_from_markers_file_names_or_2000_with_midnights(fixture_export):
    raw, *_ = fixture_export
    at = raw.set_index(["file", "line"])["timestamp"]
    assert at[(ZNC, 3)] == datetime(2021, 3, 4, 10, 0, 11)  # ZNC: [HH:MM:SS], the date from "2021-03-04.log"
    assert at[(IRSSI, 4)] == datetime(2021, 3, 6, 21, 56)  # "--- Log opened Sat Mar 06 21:55:12 2021"
    assert at[(IRSSI, 11)] == datetime(2021, 3, 7, 0, 1)  # "--- Day changed Sun Mar 07 2021": no second rollover
    assert at[(WEECHAT, 2)] == datetime(2021, 3, 5, 18, 0, 30)
    assert at[(PLAIN, 2)] == datetime(2000, 1, 1, 23, 58) and at[(PLAIN, 4)] == datetime(2000, 1, 2, 0, 1)  # a midnight
    assert pd.isna(at[(PLAIN, 1)])  # "=== lee joined": no time


def test_a_zip_and_a_single_file_read_as_the_folder(fixture_export, tmp_path):
    raw, *_ = fixture_export
    archive = tmp_path / "logs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(FIXTURE.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(FIXTURE).as_posix())
    zipped, _, _, _ = export_corpus("irc_log", archive)
    pd.testing.assert_frame_equal(zipped, raw)
    single = tmp_path / "#garden.log"
    shutil.copy(FIXTURE / IRSSI, single)
    one, counts, sizes = read_export("irc_log", single)
    assert set(one["file"]) == {"#garden.log"} and sizes == [14] and counts["lines/log_marker"] == 3
    assert one.drop(columns=["file"]).equals(raw[raw["file"] == IRSSI].drop(columns=["file"]).reset_index(drop=True))


def test_styles_and_channels_are_read_from_the_lines_and_paths():
    assert detect_style(["[10:00] <ann> hi", "=== bob joined"]) == "bracketed"
    assert detect_style(["--- Log opened Mon Jan 04 10:00:00 2021", "10:00 < ann> hi"]) == "irssi"
    assert detect_style(["2021-01-04 10:00:00\tann\thi"]) == "weechat"
    assert detect_style(["ann: hi", "bob: hello"]) is None
    assert channel_of("libera/#python/2021-01-04.log") == "#python" and channel_of("irc.oftc.#bikes.weechatlog") == "#bikes"
    assert channel_of("logs/kitchen.txt") == "kitchen" and channel_of("&local.log") == "&local"


# -- bad input ----------------------------------------------------------------------------------
def test_a_file_in_no_irc_style_names_the_file_its_line_and_the_styles(tmp_path):
    folder = write_case("irc_log_not_a_log", tmp_path)
    with pytest.raises(SourceParseError) as err:
        read_export("irc_log", folder)
    assert err.value.file == f"{folder}/notes.txt" and err.value.line == 2 and err.value.got == "shopping list"
    assert "'[HH:MM] <nick> text' (plain, ZNC)" in str(err.value) and "(irssi)" in str(err.value) and "(weechat)" in str(err.value)


def test_another_platforms_json_is_not_an_irc_log(tmp_path):
    folder = write_case("irc_log_json_file", tmp_path)
    with pytest.raises(SourceParseError, match=r"result\.json:1: an IRC log line"):
        read_export("irc_log", folder)


def test_a_binary_file_is_not_an_irc_log(tmp_path):
    folder = write_case("irc_log_binary_file", tmp_path)
    with pytest.raises(SourceParseError, match=r"#kitchen\.log:1: an IRC log line"):
        read_export("irc_log", folder)


def test_an_empty_export_is_an_error_not_an_empty_source(tmp_path):
    folder = write_case("irc_log_empty_export", tmp_path)
    with pytest.raises(SourceDataError, match=r"no IRC log lines in the export \(2 file\(s\)"):
        read_export("irc_log", folder)
    (folder / "#empty.log").unlink()
    (folder / "#blank.log").unlink()
    with pytest.raises(SourceDataError, match="holds no files"):
        read_export("irc_log", folder)


def test_a_log_of_markers_only_has_no_lines(tmp_path):
    folder = write_case("irc_log_markers_only", tmp_path)
    with pytest.raises(SourceDataError, match="no IRC log lines"):
        read_export("irc_log", folder)


def test_malformed_lines_and_impossible_clocks_are_counted_drops_with_their_lines(tmp_path):
    raw, corpus, acc, _ = export_corpus("irc_log", write_case("irc_log_malformed_lines", tmp_path))
    assert acc["dropped"]["malformed"] == 3 and acc["kept"] == 2
    assert raw.loc[raw["record_type"] == "malformed", ["line", "text"]].values.tolist() == [
        [2, "ann says hi without brackets"], [3, "no timestamp at all"], [4, "[25:61:00] <bob> impossible clock"]]
    assert corpus["text"].tolist() == ["is the dough ready?", "ann: give it an hour"]


def test_a_line_that_is_not_utf8_is_a_counted_drop_not_mangled_text(tmp_path):
    raw, corpus, acc, counts = export_corpus("irc_log", write_case("irc_log_invalid_utf8", tmp_path))
    assert counts["lines/invalid_utf8"] == 1 and acc["dropped"]["malformed"] == 1
    assert raw.loc[raw["record_type"] == "malformed", "line"].tolist() == [1]
    assert corpus["text"].tolist() == ["ann: two please"]


def test_a_weechat_date_that_does_not_exist_is_malformed(tmp_path):
    raw, corpus, acc, _ = export_corpus("irc_log", write_case("irc_log_weechat_bad_date", tmp_path))
    assert raw["record_type"].tolist() == ["malformed", "malformed", "message"]  # a stray first line continues nothing
    assert corpus["text"].tolist() == ["the last day of February"]


# -- the disentangler link step ------------------------------------------------------------------
@pytest.fixture(scope="module")
def scorer() -> DisentangleScorer:
    """A features-only scorer fitted as test_disentangle fits one (synthetic logs, logistic regression)."""
    logs = channel_logs(synthetic_raw(SPLITS))
    feats = file_features(logs, None, [], window=20)
    gold = {f: gold_links(g) for f, g in logs.groupby("file")}
    train = pd.concat([feats[f].frame for f in ("t1", "t2", "t3")], ignore_index=True)
    return fit_scorer(train, {"d1": feats["d1"]}, {"d1": gold["d1"]}, dims=[], models=("logreg:0.1",))


def _fixture_raw() -> pa.Table:
    raw, _, _ = read_export("irc_log", FIXTURE)
    return raw_table(raw)


def _components(frame: pd.DataFrame) -> dict[tuple[str, int], int]:
    """(file, message_id) -> the smallest message_id of its parent_ids component (the corpus stage's id)."""
    root = {(f, m): (f, m) for f, m in zip(frame["file"], frame["message_id"])}

    def find(x):
        while root[x] != x:
            root[x] = root[root[x]]
            x = root[x]
        return x

    for f, m, parents in zip(frame["file"], frame["message_id"], frame["parent_ids"]):
        for p in parents:
            a, b = find((f, m)), find((f, int(p)))
            root[max(a, b)] = min(a, b)
    return {x: find(x)[1] for x in root}


def test_every_message_gets_a_link_to_itself_or_an_earlier_message_of_its_timeline(scorer):
    raw = _fixture_raw()
    linked, counts = link_export_timelines(raw, scorer, unthreaded_only=False)
    before, after = raw.to_pandas(), linked.to_pandas()
    messages = after["record_type"] == "message"
    assert counts["linked/timelines"] == 4 and counts["linked/predicted"] == int(messages.sum()) == 29
    assert counts["linked/self"] + counts["linked/parent"] == 29 and counts["linked/self"] >= 4  # each timeline's first message
    assert counts["linked/parent"] == int(after.loc[messages, "parent_ids"].map(len).sum())
    kinds = after.set_index(["file", "message_id"])["record_type"]
    for row in after[messages].itertuples():
        for parent in row.parent_ids:
            assert parent < row.message_id and kinds[(row.file, parent)] == "message"  # earlier, same timeline, a message
    untouched = after.drop(columns=["parent_ids"])
    assert untouched.equals(before.drop(columns=["parent_ids"]))  # same rows, same order, same values
    assert after.loc[~messages, "parent_ids"].map(len).eq(0).all()  # system and malformed rows are never linked


def test_linked_logs_become_conversations_as_connected_components(scorer):
    linked, _ = link_export_timelines(_fixture_raw(), scorer, unthreaded_only=False)
    frame = linked.to_pandas()
    corpus = corpus_frame(corpus_table(linked, source="mine", platform="irc")[0])
    smallest = _components(frame)
    kept = frame[(frame["record_type"] == "message") & frame["text"].str.strip().ne("")]
    expected = sorted((f"mine/{file_stem(f)}/{smallest[(f, m)]}", a, t) for f, m, a, t in zip(kept["file"], kept["message_id"], kept["author"], kept["text"]))
    assert sorted(zip(corpus["conversation_id"], corpus["author"], corpus["text"])) == expected
    assert corpus["conversation_id"].nunique() < len(EXPECTED)  # the links join messages
    multi = corpus.groupby("conversation_id").filter(lambda g: len(g) > 1)
    assert multi.groupby("conversation_id")["reply_to"].apply(lambda r: r.notna().sum() >= 1).all()


def test_blocks_give_the_same_kind_of_links_with_bounded_history(scorer, monkeypatch):
    monkeypatch.setattr(linking, "LINK_CHUNK", 3)
    linked, counts = link_export_timelines(_fixture_raw(), scorer, unthreaded_only=False)
    frame = linked.to_pandas()
    assert counts["linked/predicted"] == 29
    for row in frame[frame["record_type"] == "message"].itertuples():
        assert all(p < row.message_id for p in row.parent_ids) and len(row.parent_ids) <= 1


def test_unthreaded_only_links_lone_messages_and_leaves_native_conversations_untouched(scorer):
    frame = _fixture_raw().to_pandas()
    kitchen = frame["file"] == ZNC
    thread = kitchen & frame["message_id"].isin([2, 3, 10])  # a native thread: ann asks, bob answers, ann thanks
    frame.loc[thread, "conversation_key"] = "1614852011.000100"
    chain = {16: [15], 17: [16]}  # a native reply chain: bob -> dan -> bob
    frame["parent_ids"] = [chain.get(m, list(p)) if k else list(p) for k, m, p in zip(kitchen, frame["message_id"], frame["parent_ids"])]
    frame.loc[kitchen & (frame["message_id"] == 12), "conversation_key"] = "solo"  # a key no other row has: alone
    frame.loc[kitchen & (frame["message_id"] == 9), "parent_ids"] = pd.Series([[999]], index=frame.index[kitchen & (frame["message_id"] == 9)])
    raw = raw_table(frame)
    with pytest.raises(ValueError, match="has native threads"):
        link_export_timelines(raw, scorer, unthreaded_only=False)
    linked, counts = link_export_timelines(raw, scorer, unthreaded_only=True)
    out = linked.to_pandas()
    native = kitchen & frame["message_id"].isin([2, 3, 10, 15, 16, 17])
    assert counts["linked/native"] == 6 and counts["linked/predicted"] == 29 - 6 and counts["linked/key_copied"] >= 1
    assert out.loc[native, ["conversation_key"]].equals(frame.loc[native, ["conversation_key"]])
    assert out.loc[native, "parent_ids"].map(list).tolist() == frame.loc[native, "parent_ids"].map(list).tolist()
    keyed = out.set_index(["file", "message_id"])["conversation_key"]
    for row in out[~native & (out["record_type"] == "message")].itertuples():
        if len(row.parent_ids):  # linked: it joined its target's conversation
            (target,) = row.parent_ids
            key, target_key = row.conversation_key, keyed[(row.file, target)]
            assert target < row.message_id and (key == target_key or (pd.isna(key) and pd.isna(target_key)))
    corpus = corpus_frame(corpus_table(linked, source="mine", platform="slack")[0])
    members = corpus.groupby("conversation_id")["text"].apply(set)
    thread_texts = set(frame.loc[thread, "text"])
    chain_texts = set(frame.loc[kitchen & frame["message_id"].isin([15, 16, 17]), "text"])
    assert any(thread_texts <= m for m in members) and any(chain_texts <= m for m in members)  # each stays whole
    assert not any(thread_texts & m and chain_texts & m for m in members)  # and they are not merged


def test_an_embedding_scorer_is_refused(scorer):
    with_dims = DisentangleScorer(scorer.pipeline, [32], scorer.window)
    with pytest.raises(ValueError, match=r"features-only scorer \(dims == \[\]\).*a cycle"):
        link_export_timelines(_fixture_raw(), with_dims, unthreaded_only=False)


def test_a_timeline_of_system_lines_only_is_returned_as_is(scorer):
    frame = _fixture_raw().to_pandas()
    quiet = raw_table(frame[frame["record_type"] == "system"].reset_index(drop=True))
    linked, counts = link_export_timelines(quiet, scorer, unthreaded_only=False)
    assert linked.equals(quiet) and counts["linked/predicted"] == 0
    assert np.array_equal(linked.column("message_id").to_numpy(), quiet.column("message_id").to_numpy())
