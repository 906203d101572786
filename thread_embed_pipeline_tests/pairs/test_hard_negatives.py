import time

import numpy as np
import pandas as pd
import pytest

from thread_embed_pipeline.pairs.hard_negatives import add_chat_hard_negatives
from thread_embed_pipeline.pairs.builders import build_pairs
from thread_embed_pipeline.schemas import PAIR_COLUMNS, format_message
from thread_embed_pipeline_tests.chat_fixtures import make_corpus, numbered_conversation

BASE = pd.Timestamp("2020-01-01 12:00")


def _corpus(spec: dict[str, tuple[float | None, int]], *, step_minutes: float = 1.0, split_of=None) -> pd.DataFrame:
    """``{conversation_id: (start minute or None for NaT, n messages)}``, one message every ``step_minutes``."""
    corpus = make_corpus({cid: numbered_conversation(cid, n) for cid, (_, n) in spec.items()}, split_of=split_of)
    start = corpus["conversation_id"].map(lambda cid: spec[cid][0])
    minutes = start.astype(float) + corpus["message_idx"] * step_minutes
    corpus["timestamp"] = pd.to_datetime([BASE + pd.Timedelta(minutes=m) if pd.notna(m) else pd.NaT for m in minutes])
    return corpus


def _line_sources(corpus: pd.DataFrame) -> dict[str, tuple[str, pd.Timestamp]]:
    """formatted message -> (conversation_id, timestamp); numbered_conversation lines are unique."""
    return {
        format_message(a, t): (cid, ts)
        for cid, a, t, ts in zip(corpus["conversation_id"], corpus["author"], corpus["text"], corpus["timestamp"])
    }


def _anchor_times(line_of, anchor: str) -> list[pd.Timestamp]:
    return [line_of[line][1] for line in anchor.split("\n")]


def _timeline(cid: str) -> str:
    return cid.rsplit("/", 1)[0]


@pytest.fixture
def busy() -> pd.DataFrame:
    """Three overlapping threads of src/a, one far-away thread of src/a, one concurrent thread in another file."""
    return _corpus(
        {
            "src/a/1": (0, 10),
            "src/a/2": (3, 10),
            "src/a/3": (6, 8),
            "src/a/late": (24 * 60, 6),  # a day later: never concurrent
            "src/b/1": (0, 10),  # same time, other file: not the same timeline
        }
    )


def test_negative_comes_from_another_conversation_of_the_same_timeline_within_the_window(busy):
    pairs, _ = build_pairs(busy, seed=0)
    out, counts = add_chat_hard_negatives(pairs, busy, seed=0, window_minutes=30)
    assert list(out.columns) == [*PAIR_COLUMNS, "negative"]
    assert out[list(PAIR_COLUMNS)].equals(pairs)
    line_of = _line_sources(busy)
    window = pd.Timedelta(minutes=30)
    got = out[out["negative"].notna()]
    assert set(got["conversation_id"]) == {"src/a/1", "src/a/2", "src/a/3"}
    assert set(got["strategy"]) == {"thread", "query_response", "adjacency"}
    for row in got.itertuples():
        anchor_ts = _anchor_times(line_of, row.anchor)
        neg = [line_of[line] for line in row.negative.split("\n")]
        neg_cids = {cid for cid, _ in neg}
        assert len(neg_cids) == 1, row.negative  # one window of one thread
        (neg_cid,) = neg_cids
        assert neg_cid != row.conversation_id
        assert _timeline(neg_cid) == _timeline(row.conversation_id)
        times = [ts for _, ts in neg]
        if row.strategy == "thread":
            assert any(min(anchor_ts) - window <= ts <= max(anchor_ts) + window for ts in times)
            assert len(neg) == len(row.positive.split("\n"))  # the other threads are long enough
        elif row.strategy == "query_response":
            assert len(neg) == 1 and abs(times[0] - anchor_ts[0]) <= window
        else:  # adjacency: the other thread's continuation from the anchor's end on
            assert max(anchor_ts) <= times[0] <= max(anchor_ts) + window
            assert len(neg) == len(row.positive.split("\n"))
    # the lone threads have nothing concurrent in their timeline
    lone = out[out["conversation_id"].isin(["src/a/late", "src/b/1"])]
    assert len(lone) > 0 and lone["negative"].isna().all()
    assert sum(c["without_by_reason"].get("no_concurrent_thread", 0) for c in counts.values()) == len(lone)


def test_no_negative_without_timestamps_or_concurrent_thread():
    corpus = _corpus({"src/a/1": (None, 6), "src/a/2": (None, 6), "src/c/1": (0, 6), "src/c/2": (200, 6)})
    pairs, _ = build_pairs(corpus, seed=1)
    out, counts = add_chat_hard_negatives(pairs, corpus, seed=1, window_minutes=30)
    assert out["negative"].isna().all()
    reasons = {}
    for c in counts.values():
        for reason, n in c["without_by_reason"].items():
            reasons[reason] = reasons.get(reason, 0) + n
    assert reasons == {
        "no_timestamp": int(pairs["conversation_id"].str.startswith("src/a/").sum()),
        "no_concurrent_thread": int(pairs["conversation_id"].str.startswith("src/c/").sum()),
    }
    # the window is what makes src/c/1 and src/c/2 concurrent ...
    wide, _ = add_chat_hard_negatives(pairs, corpus, seed=1, window_minutes=300)
    c_rows = wide[wide["conversation_id"].str.startswith("src/c/")]
    assert c_rows.loc[c_rows["strategy"] != "adjacency", "negative"].notna().all()
    # ... but only src/c/2 goes on after src/c/1's anchors: adjacency wants the other thread's continuation
    adjacency = c_rows[c_rows["strategy"] == "adjacency"].set_index("conversation_id")["negative"]
    assert adjacency.loc[["src/c/1"]].notna().all() and adjacency.loc[["src/c/2"]].isna().all()


def test_negative_never_equals_anchor_or_positive():
    # two concurrent threads with identical messages: every candidate equals a side of the pair
    same = [("ann", "why does grub fail?", None), ("bob", "reinstall grub", None)]
    corpus = make_corpus({"src/a/1": same, "src/a/2": same})
    pairs, _ = build_pairs(corpus, seed=0)
    assert len(pairs) > 0
    out, counts = add_chat_hard_negatives(pairs, corpus, seed=0)
    assert out["negative"].isna().all()
    assert all(c["without_by_reason"] == {"no_valid_window": c["without"]} for c in counts.values())
    # with a third, different thread the duplicate one is skipped in favour of it
    corpus = make_corpus({"src/a/1": same, "src/a/2": same, "src/a/3": [("cyd", "lunch?", None), ("dan", "sure", None)]})
    pairs, _ = build_pairs(corpus, seed=0)
    out, _ = add_chat_hard_negatives(pairs, corpus, seed=0)
    for row in out.itertuples():
        assert row.negative is not None
        assert row.negative.strip() not in (row.anchor.strip(), row.positive.strip())
        if row.conversation_id != "src/a/3":
            assert row.negative.split("\n")[0].startswith(("cyd", "dan"))


def test_deterministic_order_independent_and_seeded():
    corpus = _corpus({f"src/a/{i}": (i, 12) for i in range(8)})
    pairs, _ = build_pairs(corpus, seed=5)
    a, counts_a = add_chat_hard_negatives(pairs, corpus, seed=5)
    b, counts_b = add_chat_hard_negatives(pairs, corpus, seed=5)
    assert a.equals(b) and counts_a == counts_b
    shuffled, _ = add_chat_hard_negatives(pairs.sample(frac=1.0, random_state=2), corpus.sample(frac=1.0, random_state=3), seed=5)
    assert shuffled.loc[a.index, "negative"].equals(a["negative"])
    # a pair's negative depends only on (seed, conversation, anchor): dropping other pairs changes nothing
    part, _ = add_chat_hard_negatives(pairs.iloc[::3], corpus, seed=5)
    assert part["negative"].equals(a["negative"].iloc[::3])
    other, _ = add_chat_hard_negatives(pairs, corpus, seed=6)
    assert not other["negative"].equals(a["negative"])


def test_counts_add_up_and_match_the_column():
    corpus = _corpus({"src/a/1": (0, 9), "src/a/2": (5, 9), "src/a/3": (500, 9), "src/b/1": (None, 9)})
    pairs, _ = build_pairs(corpus, seed=2)
    out, counts = add_chat_hard_negatives(pairs, corpus, seed=2)
    assert set(counts) == set(pairs["strategy"])
    for strategy, c in counts.items():
        rows = out[out["strategy"] == strategy]
        assert c["with_negative"] + c["without"] == len(rows)
        assert c["with_negative"] == int(rows["negative"].notna().sum()) > 0
        assert sum(c["without_by_reason"].values()) == c["without"] > 0


def test_negatives_stay_within_the_pair_split():
    corpus = _corpus({"src/a/1": (0, 8), "src/a/2": (1, 8), "src/a/3": (2, 8)}, split_of=lambda cid: "test" if cid == "src/a/3" else "train")
    pairs, _ = build_pairs(corpus, seed=0)
    out, _ = add_chat_hard_negatives(pairs, corpus, seed=0)
    line_of = _line_sources(corpus)
    train = out[out["split"] == "train"]
    assert train["negative"].notna().all()
    assert all(line_of[n.split("\n")[0]][0] != "src/a/3" for n in train["negative"])
    assert out.loc[out["split"] == "test", "negative"].isna().all()  # the only test thread is alone


def test_negative_messages_and_multiline_messages():
    corpus = _corpus({"src/a/1": (0, 12), "src/a/2": (0, 12)})
    corpus.loc[corpus["message_idx"] % 3 == 0, "text"] += "\nsecond line\n```code```"
    pairs, _ = build_pairs(corpus, seed=4, strategies=["thread", "adjacency"])
    out, counts = add_chat_hard_negatives(pairs, corpus, seed=4, negative_messages=3)
    assert all(c["without"] == 0 for c in counts.values())  # multi-line anchors are found again
    n_messages = out["negative"].str.count(" message ")  # every numbered message says "message <i>" once
    assert (n_messages == 3).all()


def test_rejects_bad_arguments(busy):
    pairs, _ = build_pairs(busy, seed=0)
    with pytest.raises(ValueError, match="window_minutes"):
        add_chat_hard_negatives(pairs, busy, seed=0, window_minutes=0)
    with pytest.raises(ValueError, match="missing columns"):
        add_chat_hard_negatives(pairs.drop(columns=["anchor"]), busy, seed=0)


def test_real_irc_share_and_runtime(mirror_root):
    from thread_embed_pipeline.corpus.builder import build_corpus
    from thread_embed_pipeline.sources.registry import get_source

    spec = get_source("irc_disentangle")
    raw = spec.load_raw(mirror_root / spec.mirror_subdir)
    corpus, _ = build_corpus(raw, source=spec.name, platform=spec.platform)
    pairs, _ = build_pairs(corpus, seed=13)
    start = time.perf_counter()
    out, counts = add_chat_hard_negatives(pairs, corpus, seed=13)
    elapsed = time.perf_counter() - start
    shares = {s: c["with_negative"] / (c["with_negative"] + c["without"]) for s, c in counts.items()}
    print(f"irc hard negatives: {len(pairs)} pairs in {elapsed:.1f}s, share with a negative {shares}")
    assert elapsed < 20
    assert counts["thread"]["without_by_reason"].get("anchor_not_found", 0) == 0  # every anchor is found again
    # #ubuntu is busy: nearly every thread pair has a concurrent thread
    assert shares["thread"] > 0.9 and shares["query_response"] > 0.9 and shares["adjacency"] > 0.9
    got = out[out["negative"].notna()]
    assert not ((got["negative"].str.strip() == got["anchor"].str.strip()) | (got["negative"].str.strip() == got["positive"].str.strip())).any()
    # spot-check: a negative's lines are messages of another conversation of the same file
    formatted = [format_message(a, t) for a, t in zip(corpus["author"], corpus["text"])]
    cids_of: dict[str, set[str]] = {}
    for line, cid in zip(formatted, corpus["conversation_id"]):
        cids_of.setdefault(line, set()).add(cid)
    rng = np.random.default_rng(0)
    for row in got.iloc[rng.choice(len(got), size=200, replace=False)].itertuples():
        first = row.negative.split("\n")[0]
        owners = {c for c in cids_of.get(first, set()) if _timeline(c) == _timeline(row.conversation_id)}
        assert owners - {row.conversation_id}, (row.conversation_id, first)


def test_a_repeated_anchor_text_takes_the_times_of_its_own_span_not_of_an_earlier_repeat():
    # src/a/1 says the same line at minute 0 and at minute 120; only src/a/2 is live at minute 120
    corpus = make_corpus(
        {
            "src/a/1": [("ann", "anyone here?", None), ("bob", "yes", None), ("cyd", "filler one", None), ("ann", "anyone here?", None), ("bob", "still yes", None)],
            "src/a/0": [("dan", f"early thread line {i}", None) for i in range(3)],
            "src/a/2": [("eve", f"late thread line {i}", None) for i in range(3)],
        }
    )
    minutes = {"src/a/1": [0, 1, 60, 120, 121], "src/a/0": [0, 1, 2], "src/a/2": [119, 120, 121]}
    corpus["timestamp"] = [BASE + pd.Timedelta(minutes=minutes[c][i]) for c, i in zip(corpus["conversation_id"], corpus["message_idx"])]
    pair = {"anchor": "ann: anyone here?", "positive": "bob: still yes", "strategy": "query_response", "source": "toy",
            "conversation_id": "src/a/1", "split": "train", "anchor_start": 3, "anchor_end": 4, "positive_start": 4, "positive_end": 5}
    out, counts = add_chat_hard_negatives(pd.DataFrame([pair]), corpus, seed=0, window_minutes=5)
    assert counts["query_response"]["with_negative"] == 1
    assert out["negative"].iloc[0].startswith("eve: late thread line")
    # a span that holds other text (pairs of another corpus) gets no negative rather than a wrong one
    wrong = dict(pair, anchor_start=1, anchor_end=2)
    _, counts = add_chat_hard_negatives(pd.DataFrame([wrong]), corpus, seed=0, window_minutes=5)
    assert counts["query_response"]["without_by_reason"] == {"anchor_not_found": 1}
