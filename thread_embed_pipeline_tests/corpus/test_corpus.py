"""raw -> corpus: conversations, drops, reply_to, splits, accounting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from thread_embed_pipeline.corpus.builder import build_corpus, file_stem, gold_clusters
from thread_embed_pipeline.schemas import hash_fraction, hash_split
from thread_embed_pipeline.schemas import CORPUS_COLUMNS, SPLITS
from thread_embed_pipeline.sources import SOURCES, ensure_source_files
from thread_embed_pipeline.sources.parsing import raw_frame
from thread_embed_pipeline.sources.irc import parse_irc

from thread_embed_pipeline_tests.sources.test_sources import IRC_ANN_REL, IRC_REL, write_irc


def check_accounting(raw: pd.DataFrame, corpus: pd.DataFrame, acc: dict) -> None:
    assert acc["read"] == len(raw)
    assert acc["kept"] == len(corpus)
    assert acc["read"] == acc["kept"] + sum(acc["dropped"].values())


def check_shape(corpus: pd.DataFrame) -> None:
    assert tuple(corpus.columns) == CORPUS_COLUMNS
    assert str(corpus["timestamp"].dtype) == "datetime64[ns]"
    assert str(corpus["reply_to"].dtype) == "Int64"
    assert str(corpus["message_idx"].dtype) == "int64"
    assert set(corpus["split"]) <= set(SPLITS)
    ordered = corpus.sort_values(["conversation_id", "message_idx"], kind="stable")
    assert ordered.index.tolist() == corpus.index.tolist()
    # message_idx is 0..n-1 inside each conversation
    sizes = corpus.groupby("conversation_id").size()
    idx_max = corpus.groupby("conversation_id")["message_idx"].max()
    assert (idx_max == sizes - 1).all()
    assert corpus.groupby("conversation_id")["split"].nunique().max() == 1


def keyed_raw(rows: list[tuple], source: str = "slack_dev_chats") -> pd.DataFrame:
    """rows: (file, message_id, conversation_key, author, text[, record_type])."""
    cols: dict[str, list] = {k: [] for k in ("file", "message_id", "conversation_key", "author", "text", "record_type")}
    for r in rows:
        f, mid, key, author, text, *rest = r
        for k, v in zip(cols, (f, mid, key, author, text, rest[0] if rest else "message"), strict=True):
            cols[k].append(v)
    n = len(rows)
    cols.update(
        source=[source] * n,
        line=[m + 1 for m in cols["message_id"]],
        split_hint=[None] * n,
        channel=["racket/general"] * n,
        timestamp=[pd.Timestamp("2020-01-01") + pd.Timedelta(minutes=m) for m in cols["message_id"]],
        parent_ids=[[] for _ in range(n)],
    )
    return raw_frame(cols)


# --------------------------------------------------------------------------------------------
# IRC: link graph
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def tiny_irc(tmp_path) -> pd.DataFrame:
    write_irc(tmp_path)
    return parse_irc(tmp_path, [IRC_REL, IRC_ANN_REL])


def test_irc_components_drops_and_reply_to(tiny_irc):
    corpus, acc = build_corpus(tiny_irc, source="irc_disentangle", platform="irc")
    check_shape(corpus)
    check_accounting(tiny_irc, corpus, acc)
    assert acc["dropped"] == {"duplicate": 0, "system": 1, "context": 3, "malformed": 1, "invalid_encoding": 0, "bot": 0, "edit": 0, "deleted": 0, "empty_text": 1, "too_long": 0}
    assert corpus["conversation_id"].tolist() == ["irc_disentangle/train/2020-01-02_03/3"] * 4 + [
        "irc_disentangle/train/2020-01-02_03/5"
    ]
    assert corpus["text"].tolist() == ["how do I mount a disk?", "carol: use mount", "thanks", "np", "waves"]
    assert corpus["message_idx"].tolist() == [0, 1, 2, 3, 0]
    # 6 -> 3; 9 -> parents 3 and 8 (8 dropped: empty) -> 3; 10 -> parents 6 and 9 -> latest 9;
    # 5 -> parents are context lines only -> null
    assert corpus["reply_to"].tolist() == [pd.NA, 0, 0, 2, pd.NA]
    assert set(corpus["split"]) == {"train"}
    assert set(corpus["platform"]) == {"irc"} and set(corpus["source"]) == {"irc_disentangle"}
    assert corpus["timestamp"].iloc[0] == pd.Timestamp("2020-01-02 03:02")


def test_gold_clusters_include_context_links(tiny_irc):
    g = gold_clusters(tiny_irc)
    # non-context nodes only; {0,2,5} is one component, its annotated part is {5}
    assert g.set_index("message_id")["cluster"].to_dict() == {3: 3, 4: 4, 5: 5, 6: 3, 7: 7, 8: 3, 9: 3, 10: 3}


def test_context_joins_otherwise_separate_messages(tmp_path):
    # 3 and 4 both reply to context line 1 only: one conversation via the context node
    lines = ["[10:00] <a> zero", "[10:00] <b> one", "[10:00] <c> two", "[10:01] <d> three", "[10:02] <e> four"]
    write_irc(tmp_path, links=["1 3 -", "1 4 -"], lines=lines)
    corpus, acc = build_corpus(parse_irc(tmp_path, [IRC_REL]), source="irc_disentangle", platform="irc")
    assert corpus["conversation_id"].nunique() == 1
    assert corpus["reply_to"].isna().all()
    assert acc["dropped"]["context"] == 3


def test_duplicates_dropped(tiny_irc):
    raw = pd.concat([tiny_irc, tiny_irc.iloc[[3, 6]]], ignore_index=True)
    corpus, acc = build_corpus(raw, source="irc_disentangle", platform="irc")
    check_accounting(raw, corpus, acc)
    assert acc["dropped"]["duplicate"] == 2 and acc["kept"] == 5


# --------------------------------------------------------------------------------------------
# keyed sources (XML / .annot)
# --------------------------------------------------------------------------------------------


def test_keyed_conversations_and_stems():
    raw = keyed_raw(
        [
            ("data/racket/2017/merged-racket-general.xml", 0, "1", "a", " hi "),
            ("data/racket/2017/merged-racket-general.xml", 1, "2", "b", "other"),
            ("data/racket/2017/merged-racket-general.xml", 2, "1", "c", "hello"),
            ("data/racket/2018/merged-racket-general.xml", 0, "1", "d", "same key, other year"),
            ("data/racket/2018/merged-racket-general.xml", 1, "1", "e", "   "),
        ]
    )
    corpus, acc = build_corpus(raw, source="slack_dev_chats", platform="slack")
    check_shape(corpus)
    check_accounting(raw, corpus, acc)
    assert acc["dropped"]["empty_text"] == 1
    assert corpus["conversation_id"].tolist() == [
        "slack_dev_chats/racket/2017/merged-racket-general/1",
        "slack_dev_chats/racket/2017/merged-racket-general/1",
        "slack_dev_chats/racket/2017/merged-racket-general/2",
        "slack_dev_chats/racket/2018/merged-racket-general/1",
    ]
    assert corpus["text"].tolist() == ["hi", "hello", "other", "same key, other year"]
    assert corpus["message_idx"].tolist() == [0, 1, 0, 0]
    assert corpus["reply_to"].isna().all()
    for cid, split in zip(corpus["conversation_id"], corpus["split"], strict=True):
        assert split == hash_split(cid)


def test_file_stem():
    assert file_stem("data/test/2005-07-06_14.ascii.txt") == "test/2005-07-06_14"
    assert file_stem("data/train/2004-12-25.train-c.ascii.txt") == "train/2004-12-25.train-c"
    assert file_stem("data/clojurians/Aug2020-Oct2020/clojure_Aug2020-Oct2020.xml.out") == (
        "clojurians/Aug2020-Oct2020/clojure_Aug2020-Oct2020"
    )
    assert file_stem("codi-annot/python_march_2020_algorithm.annot") == "codi-annot/python_march_2020_algorithm"


def test_hash_split_is_stable_and_proportional():
    # pinned values: sha256-based, identical on every machine / Python / PYTHONHASHSEED
    assert hash_fraction("a") == pytest.approx(0.7913742705223816, abs=0)
    assert hash_split("slack_dev_chats/racket/2017/merged-racket-general/2") == "test"
    keys = [f"src/file/{i}" for i in range(20_000)]
    counts = pd.Series([hash_split(k) for k in keys]).value_counts(normalize=True)
    assert abs(counts["train"] - 0.8) < 0.02 and abs(counts["dev"] - 0.1) < 0.015 and abs(counts["test"] - 0.1) < 0.015
    assert {hash_split(k, (1.0, 0.0, 0.0)) for k in keys[:200]} == {"train"}
    assert {hash_split(k, (0.0, 0.0, 1.0)) for k in keys[:200]} == {"test"}


def test_split_deterministic_and_never_spans(tmp_path):
    rng = np.random.default_rng(0)
    rows = [("data/x/y/z.xml", i, str(int(k)), "u", f"m{i}") for i, k in enumerate(rng.integers(0, 300, 3000))]
    raw = keyed_raw(rows)
    a, _ = build_corpus(raw, source="slack_dev_chats", platform="slack")
    b, _ = build_corpus(raw.sample(frac=1.0, random_state=1), source="slack_dev_chats", platform="slack")
    pd.testing.assert_frame_equal(a, b)
    assert a.groupby("conversation_id")["split"].nunique().max() == 1
    assert set(a["split"]) == set(SPLITS)
    c, _ = build_corpus(raw, source="slack_dev_chats", platform="slack", split_fractions=(0.5, 0.25, 0.25))
    assert (c["split"] != a["split"]).any()


def test_bad_split_fractions():
    raw = keyed_raw([("data/a.xml", 0, "1", "u", "x")])
    with pytest.raises(ValueError, match="sum to 1"):
        build_corpus(raw, source="s", platform="slack", split_fractions=(0.5, 0.1, 0.1))
    with pytest.raises(ValueError, match="non-negative"):
        build_corpus(raw, source="s", platform="slack", split_fractions=(1.2, -0.2, 0.0))


def test_empty_raw():
    corpus, acc = build_corpus(keyed_raw([]), source="s", platform="slack")
    assert tuple(corpus.columns) == CORPUS_COLUMNS and len(corpus) == 0
    assert acc["read"] == acc["kept"] == 0


# --------------------------------------------------------------------------------------------
# real mirror
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(mirror_root):
    out = {}
    for name, spec in SOURCES.items():
        root = ensure_source_files(spec, mirror_dir=mirror_root, cache_dir=Path("/nonexistent"), log=lambda s: None)
        raw = spec.load_raw(root)
        corpus, acc = build_corpus(raw, source=name, platform=spec.platform)
        out[name] = (raw, corpus, acc)
    return out


def test_real_irc_reproduces_upstream_gold_clusters(real):
    raw, corpus, acc = real["irc_disentangle"]
    g = gold_clusters(raw)  # before dropping system lines
    assert g.groupby("split_hint").size().to_dict() == {"train": 67_463, "dev": 2_500, "test": 5_000}
    clusters = g.drop_duplicates(["file", "cluster"])
    assert clusters["split_hint"].value_counts().to_dict() == {"train": 17_267, "dev": 494, "test": 961}
    sizes = g.groupby(["split_hint", "file", "cluster"]).size()
    assert (sizes >= 2).groupby(level="split_hint").sum().to_dict() == {"train": 5_553, "dev": 223, "test": 355}


def test_real_irc_corpus(real):
    raw, corpus, acc = real["irc_disentangle"]
    check_shape(corpus)
    check_accounting(raw, corpus, acc)
    assert acc == {
        "read": 247_963,
        "kept": 66_285,
        "dropped": {"duplicate": 0, "system": 8_670, "context": 173_000, "malformed": 0, "invalid_encoding": 0, "bot": 0, "edit": 0, "deleted": 0, "empty_text": 8, "too_long": 0},
    }
    assert corpus.groupby("split")["conversation_id"].nunique().to_dict() == {"train": 9_229, "dev": 329, "test": 583}
    assert "irc_disentangle/test/2005-07-06_14/1003" in set(corpus["conversation_id"])
    # every reply_to points backwards inside its conversation
    r = corpus[corpus["reply_to"].notna()]
    assert (r["reply_to"] < r["message_idx"]).all()
    assert len(r) == 55_949


def test_real_slack_and_discord_corpus(real):
    raw, corpus, acc = real["slack_dev_chats"]
    check_shape(corpus)
    check_accounting(raw, corpus, acc)
    assert acc["kept"] == 52_739 and corpus["conversation_id"].nunique() == 5_899
    assert corpus["reply_to"].isna().all()

    raw, corpus, acc = real["discord_disco"]
    check_shape(corpus)
    check_accounting(raw, corpus, acc)
    assert acc["read"] == 63_315 and acc["dropped"]["empty_text"] == 193 and acc["kept"] == 63_122
    py = corpus[corpus["channel"] == "python/general"]
    assert py["conversation_id"].nunique() == 1_328
