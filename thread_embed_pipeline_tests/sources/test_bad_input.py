"""The bad-input corpus (``bad_input_cases.CASES``, one case per entry, each written to its own folder
in its source's layout):
every case ends in a clear error naming the file and line, or in a counted, reasoned drop -- and
every accounting balances: read = kept + dropped by reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from thread_embed_pipeline.corpus.builder import MAX_MESSAGE_CHARS, build_corpus
from thread_embed_pipeline.sources.annot import parse_annot
from thread_embed_pipeline.sources.chat_xml import parse_chat_xml
from thread_embed_pipeline.sources.errors import SourceDataError, SourceParseError
from thread_embed_pipeline.sources.hf import Sampling
from thread_embed_pipeline.sources.hf_registry import HF_SOURCES
from thread_embed_pipeline.sources.irc import parse_irc
from thread_embed_pipeline.corpus.streaming import build_corpus_stream
from thread_embed_pipeline.sources.raw_stream import write_raw_stream

from thread_embed_pipeline_tests.bad_input_cases import CASES, DISCORD_ARCHIVE, write_case



@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    """Every case written under one folder (``bad / <case>``)."""
    root = tmp_path_factory.mktemp("bad_input")
    for name in CASES:
        write_case(name, root)
    return root


def irc_corpus(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.ascii.txt"))
    raw = parse_irc(root, files, source="irc_disentangle")
    corpus, acc = build_corpus(raw, source="irc_disentangle", platform="irc")
    assert acc["read"] == len(raw) == acc["kept"] + sum(acc["dropped"].values())
    return raw, corpus, acc


def test_malformed_lines_are_counted_drops_kept_in_raw_with_file_and_line(bad):
    raw, corpus, acc = irc_corpus(bad / "irc_malformed_lines")
    assert acc["dropped"]["malformed"] == 2
    bad = raw[raw["record_type"] == "malformed"]
    assert bad["line"].tolist() == [4, 5] and bad["text"].iloc[0] == "this line has no timestamp or nick"
    assert "this line has no timestamp or nick" not in set(corpus["text"])


def test_invalid_utf8_lines_are_counted_drops_not_mangled_text(bad):
    raw, corpus, acc = irc_corpus(bad / "irc_invalid_utf8")
    assert acc["dropped"]["invalid_encoding"] == 2
    assert raw.loc[raw["record_type"] == "invalid_encoding", "line"].tolist() == [4, 5]
    assert not corpus["text"].str.contains("\ufffd").any()
    assert {"good line", "ok again"} <= set(corpus["text"])


def test_empty_and_whitespace_only_messages_are_counted_drops(bad):
    _, corpus, acc = irc_corpus(bad / "irc_empty_messages")
    assert acc["dropped"]["empty_text"] == 3  # "<bob> ", "<cyd>  \t  ", and the action "* dan" with no text
    assert (corpus["text"].str.strip() != "").all()


def test_a_one_megabyte_message_is_a_counted_drop(bad, tmp_path):
    root = tmp_path / "irc"
    shutil.copytree(bad / "irc_empty_messages", root)
    text_file = next(root.rglob("*.ascii.txt"))
    lines = text_file.read_text().splitlines()
    lines[2] = "[10:02] <ann> " + "x" * (1 << 20)  # one 1 MiB message
    text_file.write_text("\n".join(lines) + "\n")
    raw = parse_irc(root, [text_file.relative_to(root).as_posix()], source="irc_disentangle")
    corpus, acc = build_corpus(raw, source="irc_disentangle", platform="irc")
    assert acc["dropped"]["too_long"] == 1 and corpus["text"].str.len().max() <= MAX_MESSAGE_CHARS
    assert acc["read"] == acc["kept"] + sum(acc["dropped"].values())


def test_missing_annotation_file_names_it(bad):
    root = bad / "irc_annotation_missing"
    with pytest.raises(SourceDataError, match=r"2020-01-04\.train-a\.annotation\.txt.*is missing"):
        parse_irc(root, ["data/train/2020-01-04.train-a.ascii.txt"])


def test_annotation_past_the_end_of_its_text_file_names_file_and_line(bad):
    root = bad / "irc_annotation_past_end"
    with pytest.raises(SourceParseError, match=r"2020-01-05\.train-a\.annotation\.txt:3: link indices below 4"):
        parse_irc(root, ["data/train/2020-01-05.train-a.ascii.txt"])


def test_truncated_xml_names_file_and_line(bad):
    root = bad / "slack_truncated_xml"
    with pytest.raises(SourceParseError) as err:
        parse_chat_xml(root, ["data/racket/2020/truncated.xml"], source="slack_dev_chats")
    assert err.value.file == "data/racket/2020/truncated.xml" and err.value.line == 3


def test_malformed_annot_line_names_file_and_line(bad):
    root = bad / "annot_malformed_line"
    with pytest.raises(SourceParseError, match=r"codi-annot/broken\.annot:3: a line 'T<thread>"):
        parse_annot(root, ["codi-annot/broken.annot"], source="discord_disco")


def _discord_chain(case_dir: Path, tmp_path: Path):
    spec = HF_SOURCES["discord_unveiled"]
    root = case_dir / spec.mirror_subdir
    assert (case_dir / DISCORD_ARCHIVE).is_file()
    stats = write_raw_stream(spec, root, ["dataset.zst"], Sampling(), tmp_path / "raw.parquet", log=lambda m: None)
    acc = build_corpus_stream(tmp_path / "raw.parquet", tmp_path / "corpus.parquet", source="discord_unveiled", platform="discord", cut_keys=spec.corpus_cut_keys, log=lambda m: None)
    return stats, acc


def test_duplicate_message_ids_are_counted_drops(bad, tmp_path):
    stats, acc = _discord_chain(bad / "discord_duplicate_ids", tmp_path)
    assert stats["read"] == 4 and acc["dropped"]["duplicate"] == 1 and acc["kept"] == 3
    assert acc["read"] == acc["kept"] + sum(acc["dropped"].values())


def test_archive_member_escaping_its_folder_is_refused(bad, tmp_path):
    with pytest.raises(SourceDataError, match=r"dataset\.zst: .*'\.\./\.\./escape\.json' escapes the archive's folder"):
        _discord_chain(bad / "discord_path_escape", tmp_path)
    assert not (tmp_path / "raw.parquet").exists()  # nothing half-written is left in place
