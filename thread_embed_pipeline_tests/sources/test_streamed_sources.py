"""The streamed (Hugging Face) sources: parsers on files in each dataset's real layout, sampling,
out-of-core raw -> corpus -> pairs, and clear failures without network or mirror."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from thread_embed_pipeline.corpus.builder import build_corpus
from thread_embed_pipeline.pairs.builders import PairBuilderSettings
from thread_embed_pipeline.sources.errors import SourceDataError
from thread_embed_pipeline.sources.hf import HfDataset, Sampling, resolve_files, select_files
from thread_embed_pipeline.sources.hf_registry import HF_SOURCES
from thread_embed_pipeline.corpus.streaming import build_corpus_stream
from thread_embed_pipeline.pairs.streaming import build_pairs_stream
from thread_embed_pipeline.sources.raw_stream import write_raw_stream

from thread_embed_pipeline_tests import hf_fixtures as F

QUIET = lambda m: None  # noqa: E731


def run_chain(mirror: Path, work: Path, name: str, sampling: Sampling | None = None, batch_rows: int = 20_000, corpus_batch_rows: int = 200_000):
    spec = HF_SOURCES[name]
    sampling = sampling or Sampling()
    resolved = resolve_files(name, spec.dataset, mirror_subdir=spec.mirror_subdir, mirror_dir=mirror, cache_dir=work, sampling=sampling, log=QUIET)
    raw_stats = write_raw_stream(spec, resolved.root, resolved.paths, sampling, work / f"raw_{name}.parquet", batch_rows=batch_rows, log=QUIET)
    corpus_stats = build_corpus_stream(
        work / f"raw_{name}.parquet", work / f"corpus_{name}.parquet", source=name, platform=spec.platform, cut_keys=spec.corpus_cut_keys, batch_rows=corpus_batch_rows, log=QUIET
    )
    settings = PairBuilderSettings(require_question_mark=spec.require_question_mark)
    pairs, pair_stats = build_pairs_stream(work / f"corpus_{name}.parquet", seed=3, settings=settings, strategies=spec.pair_strategies, hard_negatives=True, log=QUIET)
    raw = pd.read_parquet(work / f"raw_{name}.parquet")
    corpus = pd.read_parquet(work / f"corpus_{name}.parquet")
    return raw_stats, corpus_stats, pairs, pair_stats, raw, corpus


def assert_balanced(raw_stats, corpus_stats, raw):
    assert raw_stats["read"] == len(raw)
    assert corpus_stats["read"] == len(raw) == corpus_stats["kept"] + sum(corpus_stats["dropped"].values())


# --- per-source parsers on their real layouts --------------------------------------------------


def test_discord_dialogues_chatml_turns_become_conversations(tmp_path):
    F.write_discord_dialogues(tmp_path, n=10, extra_rows=["no chatml at all", F.chatml([("assistant", "hi there"), ("user", "hello?")])])
    raw_stats, corpus_stats, pairs, _, raw, corpus = run_chain(tmp_path, tmp_path / "w", "discord_dialogues")
    assert_balanced(raw_stats, corpus_stats, raw)
    assert raw_stats["units_read"] == 12
    assert corpus_stats["dropped"]["malformed"] == 1  # the row without ChatML turns, counted
    bad = raw[raw["record_type"] == "malformed"].iloc[0]
    assert (bad["file"], bad["line"], bad["text"]) == ("data/train.parquet", 11, "no chatml at all")
    assert corpus["conversation_id"].nunique() == 11
    first = corpus[corpus["conversation_id"] == corpus["conversation_id"].iloc[0]].sort_values("message_idx")
    assert first["author"].tolist()[:2] == ["speaker_1", "speaker_2"]
    assert first["reply_to"].tolist()[1] == 0  # each turn replies to the one before
    # the row that starts with the assistant role: its first speaker is still speaker_1
    last = corpus[corpus["text"] == "hi there"].iloc[0]
    assert last["author"] == "speaker_1"
    assert set(pairs["strategy"]) == {"thread", "query_response", "adjacency"}


def test_ubuntu_irc_lines_heuristic_links_and_drops(tmp_path):
    doc = F.irc_day(
        "ubuntu",
        "2013-04-29",
        [
            "[10:00] <ann> how do I mount ntfs?",
            "[10:01] <bob> ann: sudo mount -t ntfs-3g /dev/sda1 /mnt",
            "[10:02] <ann> bob, thanks!",
            "[10:03] <ann> it works",  # continuation: same author, within 5 min
            "=== bob is now known as bobby",
            "[10:04]  * cat waves",
            "\x01\x03 relay debris",
            "[10:50] <dan> ann: did fstab work?",  # addressee's last message is 47 min old: new conversation
            "[10:51] <eve> unrelated question about grub?",
        ],
    )
    F.write_ubuntu_irc(tmp_path, docs=[doc])
    raw_stats, corpus_stats, pairs, _, raw, corpus = run_chain(tmp_path, tmp_path / "w", "ubuntu_irc")
    assert_balanced(raw_stats, corpus_stats, raw)
    assert raw_stats["by_record_type"] == {"malformed": 1, "message": 7, "system": 1}
    assert corpus_stats["dropped"]["system"] == 1 and corpus_stats["dropped"]["malformed"] == 1
    assert (raw["line"] == 1).all() and raw["file"].eq("v0/documents/00000_ubuntu.jsonl.gz").all()
    assert raw["channel"].eq("ubuntu").all()
    by_text = corpus.set_index("text")
    thread = by_text.loc[["how do I mount ntfs?", "ann: sudo mount -t ntfs-3g /dev/sda1 /mnt", "bob, thanks!", "it works"], "conversation_id"]
    assert thread.nunique() == 1
    assert by_text.loc["ann: did fstab work?", "conversation_id"] not in set(thread)
    assert by_text.loc["unrelated question about grub?", "conversation_id"] not in set(thread)
    assert by_text.loc["* waves", "author"] == "cat"
    stamp = by_text.loc["bob, thanks!", "timestamp"]
    assert stamp == pd.Timestamp("2013-04-29 10:02")
    reply = corpus[corpus["text"] == "ann: sudo mount -t ntfs-3g /dev/sda1 /mnt"].iloc[0]
    assert reply["reply_to"] == 0
    assert corpus["split"].nunique() == 1 and corpus["conversation_id"].nunique() == 4  # one split per channel-day


def test_ubuntu_irc_splits_follow_channel_days(tmp_path):
    F.write_ubuntu_irc(tmp_path, docs=F.sample_irc_days(30))
    _, _, _, _, raw, corpus = run_chain(tmp_path, tmp_path / "w", "ubuntu_irc")
    per_day = raw.groupby("line")["split_hint"].nunique()
    assert (per_day == 1).all() and raw["split_hint"].nunique() >= 2


def test_ubuntu_irc_channel_falls_back_to_document_id_and_bad_json_names_the_file(tmp_path):
    doc = F.irc_day("ubuntu-devel", "2014-01-02", ["[01:00] <a> hi b", "[01:01] <b> a: hi"])
    del doc["metadata"]
    F.write_ubuntu_irc(tmp_path, docs=[doc])
    _, _, _, _, raw, _ = run_chain(tmp_path, tmp_path / "w", "ubuntu_irc")
    assert raw["channel"].eq("ubuntu-devel").all()

    F.write_ubuntu_irc(tmp_path, docs=[doc], shard="00001_ubuntu.jsonl.gz", raw_lines=['{"id": "x", "text": broken'])
    with pytest.raises(SourceDataError, match=r"v0/documents/00001_ubuntu\.jsonl\.gz: .*JSON"):
        run_chain(tmp_path, tmp_path / "w2", "ubuntu_irc")


@pytest.mark.parametrize("name", ["flyte_slack", "flyte_slack_long"])
def test_flyte_pairs_are_query_response_only(tmp_path, name):
    F.write_flyte(tmp_path, name, n=12, extra=[(None, "an answer without a question"), ("a statement of a problem", "a fix")])
    raw_stats, corpus_stats, pairs, _, raw, corpus = run_chain(tmp_path, tmp_path / "w", name)
    assert_balanced(raw_stats, corpus_stats, raw)
    assert corpus_stats["dropped"]["empty_text"] == 1  # the null input, counted
    assert set(pairs["strategy"]) == {"query_response"}
    # no "?" needed: a problem statement and its reply make a pair
    assert ((pairs["anchor"] == "speaker_1: a statement of a problem") & (pairs["positive"] == "speaker_2: a fix")).any()
    assert len(pairs) == 13


def test_flyte_file_without_its_columns_fails_naming_file_and_columns(tmp_path):
    import pyarrow as pa

    path = F.write_flyte(tmp_path, "flyte_slack_long", n=2)
    pq.write_table(pa.table({"prompt": ["a"], "completion": ["b"]}), path)
    with pytest.raises(SourceDataError, match=r"train-00000-of-00001-cc69f0b6efb99f63\.parquet: lacks column\(s\) \['input', 'output'\]"):
        run_chain(tmp_path, tmp_path / "w", "flyte_slack_long")


def test_discord_unveiled_servers_bots_replies_and_gaps(tmp_path):
    F.write_discord_unveiled(tmp_path, guilds={"100": F.sample_server(0) + ["not json at all"]})
    raw_stats, corpus_stats, pairs, _, raw, corpus = run_chain(tmp_path, tmp_path / "w", "discord_unveiled")
    assert_balanced(raw_stats, corpus_stats, raw)
    assert raw["file"].eq("dataset.zst/100.json").all()
    assert corpus_stats["dropped"]["system"] == 2  # the two bot messages
    assert corpus_stats["dropped"]["malformed"] == 1  # the line that is not JSON
    # per channel: the first 3 human messages form one conversation, the two after a 37-minute gap another
    for channel in ("chan-1", "chan-2"):
        conv = corpus[corpus["channel"] == channel].groupby("conversation_id")["text"].apply(list)
        assert sorted(len(v) for v in conv) == [2, 3]
    reply = corpus[corpus["text"] == "use the setup command in channel 1"].iloc[0]
    assert reply["reply_to"] == 0 and reply["author"] == "ben"
    assert len(pairs) > 0


def test_discord_unveiled_samples_whole_servers_and_stops_early(tmp_path):
    guilds = {f"{g}": F.sample_server(g) for g in range(40)}
    F.write_discord_unveiled(tmp_path, guilds=guilds)
    a = run_chain(tmp_path, tmp_path / "a", "discord_unveiled", Sampling(unit_fraction=0.3, seed=1))
    b = run_chain(tmp_path, tmp_path / "b", "discord_unveiled", Sampling(unit_fraction=0.3, seed=1))
    c = run_chain(tmp_path, tmp_path / "c", "discord_unveiled", Sampling(unit_fraction=0.3, seed=2))
    servers = lambda r: set(r[4]["file"])  # noqa: E731
    assert servers(a) == servers(b) and servers(a) != servers(c)
    assert 0 < a[0]["units_kept"] < 40 and a[0]["units_read"] == 40
    capped = run_chain(tmp_path, tmp_path / "d", "discord_unveiled", Sampling(unit_fraction=0.3, max_units=2, seed=1))
    assert capped[0]["units_kept"] == 2 and capped[0]["units_read"] < 40  # stopped reading the archive early
    assert servers(capped) <= servers(a)


def test_truncated_discord_archive_is_a_clear_error(tmp_path):
    F.write_discord_unveiled(tmp_path, truncate_to=200)
    with pytest.raises(SourceDataError, match=r"dataset\.zst: corrupt or truncated tar\.zst archive"):
        run_chain(tmp_path, tmp_path / "w", "discord_unveiled")


# --- sampling, streaming invariants ------------------------------------------------------------


def test_row_sampling_is_seeded_stable_and_capped(tmp_path):
    F.write_discord_dialogues(tmp_path, n=200)
    a = run_chain(tmp_path, tmp_path / "a", "discord_dialogues", Sampling(unit_fraction=0.25, seed=5), batch_rows=7)
    b = run_chain(tmp_path, tmp_path / "b", "discord_dialogues", Sampling(unit_fraction=0.25, seed=5), batch_rows=64)
    assert a[4]["line"].unique().tolist() == b[4]["line"].unique().tolist()  # batch size does not change the sample
    assert 20 < a[0]["units_kept"] < 80 and a[0]["units_read"] == 200
    capped = run_chain(tmp_path, tmp_path / "c", "discord_dialogues", Sampling(max_units=17), batch_rows=5)
    assert capped[0]["units_kept"] == 17 and capped[4]["line"].nunique() == 17 and capped[4]["line"].max() == 17


CORPUS_COMPARED = ["conversation_id", "message_idx", "channel", "timestamp", "author", "text", "reply_to", "split"]


def _same_corpus(a: pd.DataFrame, b: pd.DataFrame) -> None:
    key = ["conversation_id", "message_idx"]
    a = a.sort_values(key).reset_index(drop=True)[CORPUS_COMPARED].astype({"reply_to": "Int64"})
    b = b.sort_values(key).reset_index(drop=True)[CORPUS_COMPARED].astype({"reply_to": "Int64"})
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


@pytest.mark.parametrize("name", sorted(HF_SOURCES))
def test_streamed_corpus_equals_in_memory_corpus_whatever_the_batch_size(tmp_path, monkeypatch, name):
    from thread_embed_pipeline import storage

    monkeypatch.setattr(storage, "ROW_GROUP_ROWS", 50)
    F.write_all(tmp_path)
    if name == "ubuntu_irc":
        F.write_ubuntu_irc(tmp_path, docs=F.sample_irc_days(8))
    _, _, _, _, raw, streamed = run_chain(tmp_path, tmp_path / "w", name, batch_rows=3, corpus_batch_rows=37)
    assert pq.ParquetFile(tmp_path / "w" / f"raw_{name}.parquet").metadata.num_row_groups > 1
    raw = raw.assign(parent_ids=raw["parent_ids"].map(list))
    whole, _ = build_corpus(raw, source=name, platform=HF_SOURCES[name].platform)
    _same_corpus(streamed, whole)


def test_one_corpus_builder_on_edge_cases_arrow_and_pandas_alike():
    import pyarrow as pa

    from thread_embed_pipeline.corpus.builder import corpus_table
    from thread_embed_pipeline.schemas import RAW_SCHEMA

    rows = [
        # file, message_id, record_type, text, key, parents
        ("a.txt", 0, "message", "hello?", None, []),
        ("a.txt", 1, "message", "  hi  ", None, [0]),
        ("a.txt", 1, "message", "duplicate id", None, []),
        ("a.txt", 2, "system", "=== x", None, []),
        ("a.txt", 3, "message", "   ", None, [1]),  # empty after stripping
        ("a.txt", 4, "message", "links to a dropped row", None, [3]),
        ("a.txt", 5, "message", "parent outside the piece", None, [99]),
        ("a.txt", 6, "message", "self link", None, [6]),
        ("a.txt", 7, "context", "context line joins 8 to 0", None, [0]),
        ("a.txt", 8, "message", "two parents: the latest kept wins", None, [7, 1, 0]),
        ("b.txt", 0, "malformed", "junk", None, []),
        ("b.txt", 1, "message", "keyed one", "k1", []),
        ("b.txt", 2, "message", "keyed two", "k1", [1]),
        ("b.txt", 3, "message", None, "k2", []),
    ]
    raw = pd.DataFrame(
        {
            "source": "s", "file": [r[0] for r in rows], "line": range(1, len(rows) + 1), "split_hint": [None] * 13 + ["test"],
            "channel": "c", "message_id": [r[1] for r in rows], "timestamp": pd.Timestamp("2020-01-01"), "author": "u",
            "text": [r[3] for r in rows], "conversation_key": [r[4] for r in rows], "parent_ids": [r[5] for r in rows], "record_type": [r[2] for r in rows],
        }
    )
    table, acc = corpus_table(pa.Table.from_pandas(raw, schema=RAW_SCHEMA, preserve_index=False), source="s", platform="irc")
    frame, acc_frame = build_corpus(raw, source="s", platform="irc")
    assert acc == acc_frame
    assert acc["dropped"] == {"duplicate": 1, "system": 1, "context": 1, "malformed": 1, "invalid_encoding": 0, "bot": 0, "edit": 0, "deleted": 0, "empty_text": 2, "too_long": 0}
    pd.testing.assert_frame_equal(table.to_pandas().astype({"reply_to": "Int64"})[CORPUS_COMPARED], frame[CORPUS_COMPARED], check_dtype=False)
    got = [(r["conversation_id"], r["message_idx"], r["text"], None if pd.isna(r["reply_to"]) else int(r["reply_to"]), r["split"]) for _, r in frame.iterrows()]
    split_of = {cid: split for cid, _, _, _, split in got}
    assert got == [
        # 0, 1, 3, 4, 7 (context) and 8 are one component: its id is the smallest annotated message_id
        ("s/a/0", 0, "hello?", None, split_of["s/a/0"]),
        ("s/a/0", 1, "hi", 0, split_of["s/a/0"]),
        ("s/a/0", 2, "links to a dropped row", None, split_of["s/a/0"]),
        ("s/a/0", 3, "two parents: the latest kept wins", 1, split_of["s/a/0"]),
        ("s/a/5", 0, "parent outside the piece", None, split_of["s/a/5"]),
        ("s/a/6", 0, "self link", None, split_of["s/a/6"]),
        ("s/b/k1", 0, "keyed one", None, split_of["s/b/k1"]),
        ("s/b/k1", 1, "keyed two", 0, split_of["s/b/k1"]),
    ]
    assert set(split_of.values()) <= {"train", "dev", "test"}


def test_pairs_stream_samples_conversations_by_seed(tmp_path):
    F.write_ubuntu_irc(tmp_path)
    work = tmp_path / "w"
    run_chain(tmp_path, work, "ubuntu_irc")
    corpus = work / "corpus_ubuntu_irc.parquet"
    a, sa = build_pairs_stream(corpus, seed=1, conversation_fraction=0.5, batch_rows=10, log=QUIET)
    b, _ = build_pairs_stream(corpus, seed=1, conversation_fraction=0.5, batch_rows=1000, log=QUIET)
    assert set(a["conversation_id"]) == set(b["conversation_id"])
    assert 0 < sa["conversations_sampled"] < sa["conversations_read"]
    capped, sc = build_pairs_stream(corpus, seed=1, max_conversations=5, log=QUIET)
    assert sc["conversations_sampled"] == 5 and capped["conversation_id"].nunique() <= 5


def test_select_files_keeps_a_seeded_fraction():
    paths = [f"data/{i:03d}.parquet" for i in range(100)]
    kept = select_files(paths, Sampling(file_fraction=0.1, seed=3))
    assert kept == select_files(list(reversed(paths)), Sampling(file_fraction=0.1, seed=3))
    assert 3 <= len(kept) <= 20
    assert len(select_files(paths[:2], Sampling(file_fraction=0.001))) == 1  # never nothing


# --- locating files: mirror, Hub, neither ---------------------------------------------------------


def test_missing_mirror_folder_names_dataset_and_setting(tmp_path):
    spec = HF_SOURCES["ubuntu_irc"]
    with pytest.raises(SourceDataError) as err:
        resolve_files("ubuntu_irc", spec.dataset, mirror_subdir=spec.mirror_subdir, mirror_dir=tmp_path, cache_dir=tmp_path, sampling=Sampling(), log=QUIET)
    text = str(err.value)
    assert "common-pile/ubuntu_irc" in text and "THREAD_EMBED_MIRROR" in text and spec.mirror_subdir in text


class OfflineHub:
    def __init__(self):
        self.calls = 0

    def list_repo_files(self, repo_id, repo_type, revision):
        self.calls += 1
        raise ConnectionError("Failed to resolve 'huggingface.co'")


def test_no_network_and_no_mirror_fails_clearly_after_retries(tmp_path):
    spec = HF_SOURCES["discord_dialogues"]
    hub = OfflineHub()
    with pytest.raises(SourceDataError) as err:
        resolve_files(
            "discord_dialogues", spec.dataset, mirror_subdir=spec.mirror_subdir, mirror_dir=None, cache_dir=tmp_path,
            sampling=Sampling(), log=QUIET, retries=2, backoff_s=0.0, hub_api=hub, download=lambda **kw: None,
        )
    text = str(err.value)
    assert hub.calls == 3
    assert "mookiezi/Discord-Dialogues" in text and spec.dataset.revision in text and "THREAD_EMBED_MIRROR" in text


def test_hub_download_fetches_only_the_sampled_files_at_the_pinned_revision(tmp_path):
    upstream = tmp_path / "upstream"
    for i in range(10):
        F.write_ubuntu_irc(upstream, docs=F.sample_irc_days(1), shard=f"{i:05d}_ubuntu.jsonl.gz")
    spec = HF_SOURCES["ubuntu_irc"]
    src = upstream / spec.mirror_subdir
    fetched = []

    class Hub:
        def list_repo_files(self, repo_id, repo_type, revision):
            assert (repo_id, repo_type, revision) == ("common-pile/ubuntu_irc", "dataset", spec.dataset.revision)
            return ["README.md", "raw/documents/00000_ubuntu.jsonl.gz"] + sorted(p.relative_to(src).as_posix() for p in src.rglob("*.gz"))

    def download(*, repo_id, filename, repo_type, revision, cache_dir):
        fetched.append(filename)
        dest = Path(cache_dir) / "snap" / filename
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((src / filename).read_bytes())
        return str(dest)

    sampling = Sampling(file_fraction=0.3, seed=4)
    resolved = resolve_files("ubuntu_irc", spec.dataset, mirror_subdir=spec.mirror_subdir, mirror_dir=None, cache_dir=tmp_path / "cache", sampling=sampling, log=QUIET, hub_api=Hub(), download=download)
    assert resolved.origin == "hub" and resolved.available == 10
    assert fetched == resolved.paths and 1 <= len(fetched) < 10
    assert all(p.startswith("v0/documents/") for p in fetched)  # raw/ and README are not data files
    stats = write_raw_stream(spec, resolved.root, resolved.paths, sampling, tmp_path / "raw.parquet", log=QUIET)
    assert stats["units_read"] == len(fetched)


def test_hf_dataset_rejects_unknown_format():
    with pytest.raises(ValueError, match="file_format"):
        HfDataset(repo_id="a/b", revision="main", data_files=("*.csv",), file_format="csv", columns=("x",))


def test_every_streamed_source_pins_a_revision_and_declares_columns():
    for spec in HF_SOURCES.values():
        assert len(spec.dataset.revision) == 40 and int(spec.dataset.revision, 16) >= 0
        assert spec.dataset.columns and spec.license and spec.provenance.startswith("https://huggingface.co/datasets/")
        assert set(spec.pair_strategies) <= {"thread", "query_response", "adjacency"}


def test_gzip_fixture_is_really_gzip(tmp_path):
    path = F.write_ubuntu_irc(tmp_path)
    with gzip.open(path, "rt") as f:
        assert json.loads(f.readline())["id"].endswith("-#ubuntu")


def test_discord_unveiled_streams_from_the_hub_without_storing_the_dump(tmp_path):
    guilds = {f"{g}": F.sample_server(g) for g in range(30)}
    archive = F.write_discord_unveiled(tmp_path / "upstream", guilds=guilds)
    spec = HF_SOURCES["discord_unveiled"]
    opened = []

    class Hub:
        def list_repo_files(self, repo_id, repo_type, revision):
            return ["README.md", "dataset.zst", "server_metadata/servers_metadata.txt"]

    class Fs:
        def open(self, url, mode, block_size):
            opened.append(url)
            return open(archive, "rb")

    def no_download(**kw):
        raise AssertionError("the 118 GB dump must not be downloaded")

    sampling = Sampling(unit_fraction=0.5, max_units=4, seed=1)
    cache = tmp_path / "cache"
    resolved = resolve_files("discord_unveiled", spec.dataset, mirror_subdir=spec.mirror_subdir, mirror_dir=None, cache_dir=cache, sampling=sampling, log=QUIET, hub_api=Hub(), download=no_download, hf_fs=Fs())
    assert resolved.origin == "hub-stream" and resolved.paths == ["dataset.zst"]
    stats = write_raw_stream(spec, resolved.root, resolved.paths, sampling, tmp_path / "raw.parquet", log=QUIET, opener=resolved.open)
    assert opened == [f"datasets/SaisExperiments/Discord-Unveiled-Compressed@{spec.dataset.revision}/dataset.zst"]
    assert stats["units_kept"] == 4 and stats["units_read"] < 30
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))
