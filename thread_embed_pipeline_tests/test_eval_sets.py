"""Eval-set protocol: what the query/document/pool construction must mean."""

from __future__ import annotations

import pandas as pd
import pytest

from thread_embed_pipeline.evaluation.eval_sets import (
    build_eval_sets,
    build_response_eval_set,
    build_thread_eval_set,
    eval_texts,
)
from thread_embed_pipeline.schemas import CORPUS_COLUMNS, EVAL_SET_COLUMNS, format_message, format_window

AUTHORS = ["alice", "bob", "carol", None]


def make_corpus(
    source: str = "src_a",
    lengths_by_split: dict[str, list[int]] | None = None,
    shuffle: bool = True,
) -> pd.DataFrame:
    """Synthetic corpus; every message text is globally unique ("<cid> m<i> ...")."""
    lengths_by_split = lengths_by_split or {"train": [10, 12], "dev": [9], "test": [8, 9, 10, 12, 13, 20, 3, 7]}
    rows = []
    for split, lengths in lengths_by_split.items():
        for c, n in enumerate(lengths):
            cid = f"{source}/{split}/c{c:02d}"
            for i in range(n):
                rows.append(
                    {
                        "conversation_id": cid,
                        "source": source,
                        "platform": "irc",
                        "channel": "#test",
                        "message_idx": i,
                        "timestamp": pd.Timestamp("2024-01-01") + pd.Timedelta(minutes=i),
                        "author": AUTHORS[(c + i) % len(AUTHORS)],
                        "text": f"{cid} m{i} token{c}x{i}",
                        "reply_to": i - 1 if i else None,
                        "split": split,
                    }
                )
    df = pd.DataFrame(rows, columns=list(CORPUS_COLUMNS))
    return df.sample(frac=1.0, random_state=1).reset_index(drop=True) if shuffle else df


def _messages(corpus: pd.DataFrame, cid: str) -> tuple[list, list]:
    g = corpus[corpus["conversation_id"] == cid].sort_values("message_idx")
    authors = [a if isinstance(a, str) else None for a in g["author"]]
    return authors, g["text"].tolist()


def _queries(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["record_type"] == "query"]


def _docs(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["record_type"] == "document"]


def test_thread_set_query_is_middle_message_and_document_is_rest_of_own_thread():
    corpus = make_corpus()
    es = build_thread_eval_set(corpus, source="src_a", pool_size=100)
    assert list(es.columns) == list(EVAL_SET_COLUMNS)
    docs = _docs(es).set_index("record_id")
    queries = _queries(es)
    # only test-split conversations with >= 8 messages
    assert sorted(queries["conversation_id"]) == [f"src_a/test/c{c:02d}" for c in range(6)]
    assert all(cid.startswith("src_a/test/") for cid in es["conversation_id"])
    for _, q in queries.iterrows():
        authors, texts = _messages(corpus, q["conversation_id"])
        mid = len(texts) // 2
        assert q["text"] == format_message(authors[mid], texts[mid])
        assert q["record_id"] == f"q:{q['conversation_id']}"
        assert q["positive_id"] == f"d:{q['conversation_id']}"
        doc = docs.loc[q["positive_id"]]
        assert doc["conversation_id"] == q["conversation_id"]
        # the positive is the rest of the thread, in order, with the query message removed
        assert doc["text"] == format_window(authors[:mid] + authors[mid + 1 :], texts[:mid] + texts[mid + 1 :])
        assert len(doc["text"].split("\n")) == len(texts) - 1
        # the query never leaks into its target
        assert texts[mid] not in doc["text"]
        assert q["text"] not in doc["text"].split("\n")


def test_pools_positive_first_distractors_from_other_conversations_only():
    corpus = make_corpus(lengths_by_split={"test": [8 + (i % 5) for i in range(30)]})
    es = build_thread_eval_set(corpus, source="src_a", pool_size=10, seed=3)
    doc_ids = set(_docs(es)["record_id"])
    doc_conv = dict(zip(_docs(es)["record_id"], _docs(es)["conversation_id"]))
    for _, q in _queries(es).iterrows():
        cands = q["candidate_ids"]
        assert cands[0] == q["positive_id"]
        assert len(cands) == 10  # pool_size, 29 other conversations available
        assert len(set(cands)) == len(cands)
        assert set(cands) <= doc_ids
        assert all(doc_conv[d] != q["conversation_id"] for d in cands[1:])
    for _, d in _docs(es).iterrows():
        assert d["positive_id"] is None and list(d["candidate_ids"]) == []


def test_pool_capped_by_available_conversations():
    es = build_thread_eval_set(make_corpus(), source="src_a", pool_size=100)
    n = len(_queries(es))
    assert all(len(c) == n for c in _queries(es)["candidate_ids"])
    es_small = build_thread_eval_set(make_corpus(), source="src_a", pool_size=3)
    assert all(len(c) == 3 for c in _queries(es_small)["candidate_ids"])


def test_deterministic_for_a_seed_and_order_independent():
    corpus = make_corpus(lengths_by_split={"test": [8 + (i % 5) for i in range(40)]})
    a = build_thread_eval_set(corpus, source="src_a", pool_size=5, max_queries=20, seed=7)
    b = build_thread_eval_set(corpus.sample(frac=1.0, random_state=9), source="src_a", pool_size=5, max_queries=20, seed=7)
    c = build_thread_eval_set(corpus, source="src_a", pool_size=5, max_queries=20, seed=8)
    assert a.to_dict("records") == b.to_dict("records")
    assert a.to_dict("records") != c.to_dict("records")


def test_max_queries_samples_before_building_pools():
    corpus = make_corpus(lengths_by_split={"test": [9] * 40})
    es = build_thread_eval_set(corpus, source="src_a", pool_size=100, max_queries=12, seed=1)
    queries = _queries(es)
    assert len(queries) == 12 and len(_docs(es)) == 12
    sampled = set(_docs(es)["record_id"])
    for cands in queries["candidate_ids"]:
        assert set(cands) <= sampled
        assert len(cands) == 12


def test_response_set_prefix_and_continuation():
    corpus = make_corpus()
    es = build_response_eval_set(corpus, source="src_a", pool_size=100)
    docs = _docs(es).set_index("record_id")
    queries = _queries(es)
    # >= 12 messages in test: c03 (12), c04 (13), c05 (20)
    assert sorted(queries["conversation_id"]) == ["src_a/test/c03", "src_a/test/c04", "src_a/test/c05"]
    for _, q in queries.iterrows():
        authors, texts = _messages(corpus, q["conversation_id"])
        assert q["text"] == format_window(authors[:5], texts[:5])
        doc = docs.loc[q["positive_id"]]
        assert doc["text"] == format_window(authors[5:10], texts[5:10])
        assert not any(t in doc["text"] for t in texts[:5])
        assert q["candidate_ids"][0] == q["positive_id"]
        others = q["candidate_ids"][1:]
        assert all(docs.loc[d, "conversation_id"] != q["conversation_id"] for d in others)
        assert len(others) == 2


def test_split_and_source_filtering():
    corpus = pd.concat([make_corpus("src_a"), make_corpus("src_b")], ignore_index=True)
    es = build_thread_eval_set(corpus, source="src_a", split="train", pool_size=100)
    assert set(es["conversation_id"]) == {"src_a/train/c00", "src_a/train/c01"}
    assert set(es["source"]) == {"src_a"} and set(es["task"]) == {"thread"}


def test_build_eval_sets_concatenates_and_skips_small_sets():
    corpus_by_source = {
        "src_a": make_corpus("src_a"),
        # only one conversation long enough for "response" -> skipped with a note
        "src_b": make_corpus("src_b", lengths_by_split={"test": [8, 8, 12]}),
    }
    es, notes = build_eval_sets(corpus_by_source, pool_size=4, seed=0)
    assert list(es.columns) == list(EVAL_SET_COLUMNS)
    assert set(zip(es["source"], es["task"])) == {("src_a", "thread"), ("src_a", "response"), ("src_b", "thread")}
    assert len(notes) == 1 and "src_b" in notes[0] and "response" in notes[0]
    assert not es.duplicated(["source", "task", "record_id"]).any()
    q = _queries(es)
    assert all(len(c) <= 4 for c in q["candidate_ids"])
    assert _docs(es)["positive_id"].isna().all()

    texts = eval_texts(es)
    assert set(q["text"]) <= texts
    assert set(_docs(es)["text"]) <= texts  # every document here is some query's positive
    assert eval_texts(es.iloc[0:0]) == set()


def test_build_eval_sets_rejects_unknown_task():
    with pytest.raises(ValueError):
        build_eval_sets({"src_a": make_corpus()}, tasks=("nope",))
