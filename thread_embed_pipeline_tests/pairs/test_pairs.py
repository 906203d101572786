import io

import pandas as pd
import pytest

from thread_embed_pipeline.pairs.builders import PairBuilderSettings, build_pairs, select_training_pairs
from thread_embed_pipeline.schemas import PAIR_COLUMNS
from thread_embed_pipeline_tests.chat_fixtures import ONE_MESSAGE_EACH, make_corpus, numbered_conversation


def _lines(text: str) -> list[str]:
    return text.split("\n")


@pytest.fixture
def corpus() -> pd.DataFrame:
    convs = {f"c{i}": numbered_conversation(f"c{i}", 6 + i) for i in range(12)}
    return make_corpus(convs, split_of=lambda cid: "test" if cid in ("c0", "c1") else "train")


def test_same_inputs_and_seed_give_identical_bytes(corpus):
    a, _ = build_pairs(corpus, seed=3)
    b, _ = build_pairs(corpus.sample(frac=1.0, random_state=1), seed=3)  # row order must not matter
    assert list(a.columns) == list(PAIR_COLUMNS)
    buf_a, buf_b = io.BytesIO(), io.BytesIO()
    a.to_parquet(buf_a, index=False)
    b.to_parquet(buf_b, index=False)
    assert buf_a.getvalue() == buf_b.getvalue()
    c, _ = build_pairs(corpus, seed=4)
    assert not a.equals(c)


def test_thread_pairs_are_two_disjoint_windows_of_one_conversation(corpus):
    pairs, _ = build_pairs(corpus, seed=0, strategies=["thread"])
    assert len(pairs) > 0
    for row in pairs.itertuples():
        anchor, positive = set(_lines(row.anchor)), set(_lines(row.positive))
        assert anchor.isdisjoint(positive)
        # every line names the pair's own conversation
        assert all(f"{row.conversation_id} message" in line for line in anchor | positive)
        assert 1 <= len(anchor) <= 2


def test_query_response_uses_gold_reply_link_and_falls_back_to_next_other_author():
    convs = {
        # gold links: message 3 answers the question at 0, message 1 (bob) does not reply to it
        "gold": [("ann", "how do I mount a usb disk?", None), ("bob", "anyone seen my cat", None), ("cyd", "lunch time", None), ("dan", "ann: use mount /dev/sdb1", 0)],
        "nolinks": [("ann", "why does grub fail?", None), ("ann", "it says error 17", None), ("bob", "reinstall grub", None)],
    }
    corpus = make_corpus(convs)
    pairs, _ = build_pairs(corpus, seed=0, strategies=["query_response"])
    got = dict(zip(pairs["conversation_id"], zip(pairs["anchor"], pairs["positive"])))
    assert got["gold"] == ("ann: how do I mount a usb disk?", "dan: ann: use mount /dev/sdb1")
    assert got["nolinks"] == ("ann: why does grub fail?", "bob: reinstall grub")


def test_adjacency_pairs_are_consecutive_windows():
    corpus = make_corpus({"c": numbered_conversation("c", 12)})
    pairs, _ = build_pairs(corpus, seed=0, strategies=["adjacency"], settings=PairBuilderSettings(adjacency_window_messages=3))
    for row in pairs.itertuples():
        a, p = _lines(row.anchor), _lines(row.positive)
        assert len(a) == len(p) == 3
        last_anchor = int(a[-1].split(" message ")[1].split()[0])
        first_positive = int(p[0].split(" message ")[1].split()[0])
        assert first_positive == last_anchor + 1


def test_select_training_pairs_keeps_train_only_decontaminates_and_balances(corpus):
    pairs, _ = build_pairs(corpus, seed=0)
    leaked_text = pairs[pairs["split"] == "train"]["anchor"].iloc[0]
    selected, stats = select_training_pairs(
        pairs, budget=40, strategy_shares={"thread": 0.5, "adjacency": 0.5}, seed=1, eval_texts={leaked_text}, eval_conversation_ids={"c2"}
    )
    assert set(selected["split"]) == {"train"}
    assert "c2" not in set(selected["conversation_id"])
    assert leaked_text not in set(selected["anchor"]) | set(selected["positive"])
    assert set(selected["strategy"]) <= {"thread", "adjacency"}
    assert len(selected) == 40
    assert stats.read == stats.kept + sum(stats.dropped.values())
    assert stats.dropped["not_train_split"] == int((pairs["split"] != "train").sum())
    again, _ = select_training_pairs(pairs, budget=40, strategy_shares={"thread": 0.5, "adjacency": 0.5}, seed=1, eval_texts={leaked_text}, eval_conversation_ids={"c2"})
    pd.testing.assert_frame_equal(selected, again)


def test_short_strategy_gives_its_share_to_the_others(corpus):
    pairs, _ = build_pairs(corpus, seed=0)
    few_qr = pairs[(pairs["strategy"] != "query_response") | (pairs.index % 10 == 0)]
    n_qr = int(((few_qr["strategy"] == "query_response") & (few_qr["split"] == "train")).sum())
    selected, _ = select_training_pairs(few_qr, budget=60, strategy_shares={"thread": 1, "query_response": 1, "adjacency": 1}, seed=0)
    assert int((selected["strategy"] == "query_response").sum()) == n_qr
    assert len(selected) == min(60, int((few_qr["split"] == "train").sum()))


def test_bad_arguments_are_rejected(corpus):
    pairs, _ = build_pairs(corpus, seed=0)
    with pytest.raises(ValueError, match="budget"):
        select_training_pairs(pairs, budget=0, strategy_shares={"thread": 1}, seed=0)
    with pytest.raises(ValueError, match="unknown"):
        select_training_pairs(pairs, budget=5, strategy_shares={"threads": 1}, seed=0)
    with pytest.raises(ValueError, match="unknown pair strategies"):
        build_pairs(corpus, seed=0, strategies=["nope"])


def test_a_repeated_message_never_pairs_with_itself():
    convs = {"rep": [("ann", "is anyone there?", None)] * 6 + [("bob", "yes", None)]}
    pairs, stats = build_pairs(make_corpus(convs), seed=0)
    assert (pairs["anchor"] != pairs["positive"]).all()
    assert stats["skipped_identical_sides"] > 0


def test_excluded_sources_are_left_out_and_counted(corpus):
    pairs, _ = build_pairs(corpus, seed=0)
    other = pairs.assign(source="other")
    both = pd.concat([pairs, other], ignore_index=True)
    selected, stats = select_training_pairs(both, budget=10_000, strategy_shares={"thread": 1, "query_response": 1, "adjacency": 1}, seed=0, exclude_sources={"other"})
    assert set(selected["source"]) == {"toy"}
    assert stats.dropped["excluded_source"] == int((other["split"] == "train").sum())


def test_a_negative_equal_to_an_eval_text_is_cleared_not_kept(corpus):
    pairs, _ = build_pairs(corpus, seed=0)
    pairs = pairs.assign(negative="ann: some other thread")
    selected, _ = select_training_pairs(pairs, budget=10_000, strategy_shares={"thread": 1}, seed=0, eval_texts={"ann: some other thread"})
    assert "negative" in selected.columns and selected["negative"].isna().all()


def test_source_shares_split_each_strategy_across_sources_and_pass_on_a_shortfall():
    from thread_embed_pipeline.pairs.builders import select_training_pairs

    rows = []
    for source, n in (("big", 300), ("small", 40), ("mid", 100)):
        for i in range(n):
            rows.append({"anchor": f"{source} a{i}", "positive": f"{source} p{i}", "strategy": "thread", "source": source, "conversation_id": f"{source}/{i}", "split": "train", **ONE_MESSAGE_EACH})
    pairs = pd.DataFrame(rows)
    uniform, _ = select_training_pairs(pairs, budget=150, strategy_shares={"thread": 1.0}, seed=0)
    by_size = uniform["source"].value_counts()
    assert by_size["big"] > by_size["mid"] > by_size["small"]
    equal, stats = select_training_pairs(pairs, budget=90, strategy_shares={"thread": 1.0}, seed=0, source_shares={"big": 1 / 3, "small": 1 / 3, "mid": 1 / 3})
    assert equal["source"].value_counts().to_dict() == {"big": 30, "small": 30, "mid": 30}
    short, _ = select_training_pairs(pairs, budget=240, strategy_shares={"thread": 1.0}, seed=0, source_shares={"small": 0.5})
    counts = short["source"].value_counts().to_dict()
    assert counts["small"] == 40 and counts["big"] == counts["mid"] == 100  # small's shortfall goes to the others
    again, _ = select_training_pairs(pairs, budget=90, strategy_shares={"thread": 1.0}, seed=0, source_shares={"big": 1 / 3, "small": 1 / 3, "mid": 1 / 3})
    pd.testing.assert_frame_equal(again, equal)


def test_every_pair_carries_the_message_spans_its_sides_were_cut_from():
    from thread_embed_pipeline.schemas import PAIR_SPAN_COLUMNS, format_window

    corpus = make_corpus({f"c{k}": numbered_conversation(f"c{k}", 6 + k, authors=("ann", "bob")) for k in range(5)})
    corpus.loc[corpus["conversation_id"] == "c2", "reply_to"] = pd.array([None, 0, 1, None, 3, 4, 5, 6], dtype="Int64")
    pairs, stats = build_pairs(corpus, seed=3)
    assert set(pairs["strategy"]) == {"thread", "query_response", "adjacency"}
    assert all(str(pairs[c].dtype) == "int64" for c in PAIR_SPAN_COLUMNS)
    by_conv = {cid: conv.set_index("message_idx") for cid, conv in corpus.groupby("conversation_id")}
    for row in pairs.itertuples():
        conv = by_conv[row.conversation_id]
        for side, start, end in (("anchor", row.anchor_start, row.anchor_end), ("positive", row.positive_start, row.positive_end)):
            window = conv.loc[start : end - 1]
            assert len(window) == end - start > 0
            assert format_window(window["author"].tolist(), window["text"].tolist()) == getattr(row, side)
        if row.strategy == "thread":  # the positive never overlaps the anchor
            assert row.positive_end <= row.anchor_start or row.positive_start >= row.anchor_end
        else:  # the positive follows the anchor
            assert row.positive_start >= row.anchor_end
