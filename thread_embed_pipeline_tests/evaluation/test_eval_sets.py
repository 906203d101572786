"""Eval-set protocol: what the query/document/pool construction must mean."""

from __future__ import annotations

import pandas as pd
import pytest

import numpy as np

from thread_embed_pipeline.evaluation.eval_sets import (
    build_concurrent_thread_eval_set,
    build_eval_sets,
    build_response_eval_set,
    build_thread_eval_set,
    build_thread_full_corpus_eval_set,
    eval_texts,
)
from thread_embed_pipeline.schemas import (
    CORPUS_COLUMNS,
    DEFAULT_EVAL_TASKS,
    EVAL_SET_COLUMNS,
    OWN_EVAL_SET,
    format_message,
    format_window,
)

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
        assert q["eval_set"] == OWN_EVAL_SET and list(q["relevant_ids"]) == [q["positive_id"]]
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
        assert d["positive_id"] is None and list(d["candidate_ids"]) == [] and list(d["relevant_ids"]) == []
        assert d["eval_set"] == OWN_EVAL_SET


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
    es, notes = build_eval_sets(corpus_by_source, tasks=("thread", "response"), pool_size=4, seed=0)
    assert list(es.columns) == list(EVAL_SET_COLUMNS)
    assert set(es["eval_set"]) == {OWN_EVAL_SET}
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


# ---------------------------------------------------------------------------------------------
# thread_full_corpus


def test_full_corpus_shares_thread_queries_and_ranks_against_every_eligible_conversation():
    corpus = make_corpus(lengths_by_split={"test": [8 + (i % 5) for i in range(15)] + [3, 5]})
    thread = build_thread_eval_set(corpus, source="src_a", pool_size=4, max_queries=5, seed=2)
    full = build_thread_full_corpus_eval_set(corpus, source="src_a", max_queries=5, seed=2)
    assert list(full.columns) == list(EVAL_SET_COLUMNS)
    assert set(full["task"]) == {"thread_full_corpus"} and set(full["eval_set"]) == {OWN_EVAL_SET}
    cols = ["record_id", "conversation_id", "text", "positive_id", "relevant_ids"]
    # the same sampled queries, with the same texts and positives
    assert _queries(full)[cols].to_dict("records") == _queries(thread)[cols].to_dict("records")
    # ...but a document for every eligible conversation (>= 8 messages), not only the sampled ones
    all_docs = build_thread_eval_set(corpus, source="src_a", pool_size=4, seed=2)
    assert sorted(_docs(full)["record_id"]) == sorted(_docs(all_docs)["record_id"])
    assert len(_docs(full)) == 15
    by_id = _docs(all_docs).set_index("record_id")["text"]
    assert all(by_id[r] == t for r, t in zip(_docs(full)["record_id"], _docs(full)["text"]))
    everything = set(_docs(full)["record_id"])
    for _, q in _queries(full).iterrows():
        cands = list(q["candidate_ids"])
        assert cands[0] == q["positive_id"]
        assert len(cands) == len(set(cands)) and set(cands) == everything


def test_full_corpus_in_build_eval_sets():
    es, notes = build_eval_sets({"src_a": make_corpus()}, tasks=("thread_full_corpus",), max_queries=2)
    assert notes == []
    q = _queries(es)
    assert len(q) == 2 and all(len(c) == 6 for c in q["candidate_ids"])


# ---------------------------------------------------------------------------------------------
# concurrent_thread

T0 = pd.Timestamp("2024-03-01 10:00")


def timeline_corpus(messages, *, source: str = "src_c", split: str = "test") -> pd.DataFrame:
    """``messages``: (conversation_id, minutes after T0, channel) in chronological order per thread."""
    rows, counts = [], {}
    for cid, minutes, channel in messages:
        i = counts.get(cid, 0)
        counts[cid] = i + 1
        rows.append(
            {
                "conversation_id": cid,
                "source": source,
                "platform": "irc",
                "channel": channel,
                "message_idx": i,
                "timestamp": T0 + pd.Timedelta(minutes=minutes) if minutes is not None else pd.NaT,
                "author": AUTHORS[i % 3],
                "text": f"{cid} m{i}",
                "reply_to": None,
                "split": split,
            }
        )
    return pd.DataFrame(rows, columns=list(CORPUS_COLUMNS))


def random_timelines(seed: int, *, files: int = 2, threads: int = 8, minute_resolution: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    msgs = []
    for f in range(files):
        for k in range(threads):
            t = float(rng.integers(0, 180))
            for _ in range(int(rng.integers(1, 14))):
                msgs.append((f"src_c/test/f{f}/{k}", t, "#c"))
                t += float(rng.integers(0, 15)) if minute_resolution else float(rng.uniform(0, 15))
    return timeline_corpus(msgs)


def check_concurrent_protocol(corpus, es, *, window_minutes, max_context_messages, min_prior_messages, min_candidates):
    """What the concurrent-thread protocol means, checked by brute force against the corpus."""
    corpus = corpus.copy()
    corpus["line"] = [format_message(a if isinstance(a, str) else None, t) for a, t in zip(corpus["author"], corpus["text"])]
    by_line = corpus.set_index("line")
    assert by_line.index.is_unique
    timeline = {cid: (cid.rsplit("/", 1)[0], ch) for cid, ch in zip(corpus["conversation_id"], corpus["channel"])}
    window = pd.Timedelta(minutes=window_minutes)
    docs = _docs(es).set_index("record_id")
    queries = _queries(es)
    assert queries["conversation_id"].is_unique  # at most one query per thread
    for _, q in queries.iterrows():
        m = by_line.loc[q["text"]]
        t, own = m["timestamp"], q["conversation_id"]
        assert m["conversation_id"] == own
        cands = list(q["candidate_ids"])
        assert len(cands) >= min_candidates and len(set(cands)) == len(cands)
        assert q["positive_id"] == cands[0] and list(q["relevant_ids"]) == [cands[0]]
        assert docs.loc[q["positive_id"], "conversation_id"] == own  # the positive is the query's own thread
        cand_threads = [docs.loc[c, "conversation_id"] for c in cands]
        assert len(set(cand_threads)) == len(cand_threads)
        # exactly the own thread plus every thread of the same timeline active in [t - window, t)
        same = corpus[[timeline[c] == timeline[own] for c in corpus["conversation_id"]]]
        active = same[(same["timestamp"] >= t - window) & (same["timestamp"] < t)]
        assert set(cand_threads) == {own} | set(active["conversation_id"])
        for did, cid in zip(cands, cand_threads):
            assert did == f"d:{q['record_id']}:{cid}"
            lines = docs.loc[did, "text"].split("\n")
            assert q["text"] not in lines  # the query never appears in any candidate
            thread = corpus[corpus["conversation_id"] == cid].sort_values("message_idx")
            if cid == own:
                prior = thread[thread["message_idx"] < m["message_idx"]]
                assert len(prior) >= min_prior_messages
                assert (prior["timestamp"] <= t).all()
            else:
                # strictly earlier: nothing at or after the query's time (same minute included)
                prior = thread[thread["timestamp"] < t]
                assert ((prior["timestamp"] >= t - window) & (prior["timestamp"] < t)).any()  # active in the window
            assert lines == prior["line"].tolist()[-max_context_messages:]
            assert all(by_line.loc[line, "conversation_id"] == cid for line in lines)
            if cid != own:
                assert all(by_line.loc[line, "timestamp"] < t for line in lines)


@pytest.mark.parametrize("minute_resolution", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_concurrent_protocol_holds_on_random_timelines(seed, minute_resolution):
    corpus = random_timelines(seed, minute_resolution=minute_resolution)
    params = dict(window_minutes=20, max_context_messages=3, min_prior_messages=2, min_candidates=2)
    es = build_concurrent_thread_eval_set(corpus, source="src_c", seed=seed, **params)
    assert list(es.columns) == list(EVAL_SET_COLUMNS)
    assert set(es["task"]) == {"concurrent_thread"} and set(es["eval_set"]) == {OWN_EVAL_SET}
    assert len(_queries(es)) >= 3
    assert not es.duplicated(["record_id"]).any()
    check_concurrent_protocol(corpus, es, **params)


def test_concurrent_same_minute_window_edges_and_timelines():
    f = "src_c/test/f0"
    corpus = timeline_corpus(
        [
            (f"{f}/A", 0, "#c"), (f"{f}/A", 10, "#c"), (f"{f}/A", 10, "#c"),  # query: A m2 at 10:10
            (f"{f}/B", -10, "#c"), (f"{f}/B", 10, "#c"),  # active at 09:50; its 10:10 message is same-minute
            (f"{f}/C", 10, "#c"),  # only a same-minute message: not known to precede the query
            (f"{f}/G", -20, "#c"),  # exactly t - 30 min: inside [t - 30, t)
            (f"{f}/H", -21, "#c"),  # t - 31 min: outside
            (f"{f}/J", 12, "#c"),  # only after the query
            ("src_c/test/f1/E", 5, "#c"),  # other file
            (f"{f}/F", 5, "#other"),  # same file, other channel
        ]
    )
    es = build_concurrent_thread_eval_set(corpus, source="src_c", window_minutes=30, min_prior_messages=2)
    q = _queries(es)
    assert len(q) == 1
    q = q.iloc[0]
    assert q["text"] == format_message(AUTHORS[2], f"{f}/A m2") and q["record_id"] == f"q:{f}/A:2"
    docs = _docs(es).set_index("record_id")
    assert [docs.loc[c, "conversation_id"] for c in q["candidate_ids"]] == [f"{f}/A", f"{f}/B", f"{f}/G"]
    texts = [docs.loc[c, "text"] for c in q["candidate_ids"]]
    # own thread: everything before the query in message order, even in the same minute
    assert texts[0] == format_window(AUTHORS[:2], [f"{f}/A m0", f"{f}/A m1"])
    # other threads: only strictly earlier minutes
    assert texts[1] == format_message(AUTHORS[0], f"{f}/B m0")
    assert texts[2] == format_message(AUTHORS[0], f"{f}/G m0")
    check_concurrent_protocol(
        corpus, es, window_minutes=30, max_context_messages=10, min_prior_messages=2, min_candidates=2
    )
    # a lone thread (too few candidates) yields nothing
    assert build_concurrent_thread_eval_set(corpus, source="src_c", window_minutes=30, min_candidates=4).empty


def test_concurrent_context_is_capped_and_never_includes_the_future():
    f = "src_c/test/f0"
    msgs = [(f"{f}/A", i, "#c") for i in range(20)] + [(f"{f}/B", i + 0.5, "#c") for i in range(20)]
    corpus = timeline_corpus(msgs)
    es = build_concurrent_thread_eval_set(corpus, source="src_c", max_context_messages=4, window_minutes=5)
    assert len(_queries(es)) == 2
    check_concurrent_protocol(corpus, es, window_minutes=5, max_context_messages=4, min_prior_messages=2, min_candidates=2)
    assert all(len(t.split("\n")) <= 4 for t in _docs(es)["text"])


def test_concurrent_deterministic_order_independent_and_seeded():
    corpus = random_timelines(5, files=3, threads=10)
    kw = dict(source="src_c", window_minutes=20, max_queries=8)
    a = build_concurrent_thread_eval_set(corpus, seed=4, **kw)
    b = build_concurrent_thread_eval_set(corpus.sample(frac=1.0, random_state=3), seed=4, **kw)
    c = build_concurrent_thread_eval_set(corpus, seed=5, **kw)
    assert a.to_dict("records") == b.to_dict("records")
    assert a.to_dict("records") != c.to_dict("records")
    assert len(_queries(a)) == 8


def test_concurrent_pool_size_caps_candidates_keeping_the_positive():
    corpus = random_timelines(7, files=1, threads=20)
    full = build_concurrent_thread_eval_set(corpus, source="src_c", window_minutes=60)
    capped = build_concurrent_thread_eval_set(corpus, source="src_c", window_minutes=60, pool_size=3)
    assert _queries(full)["record_id"].tolist() == _queries(capped)["record_id"].tolist()
    assert _queries(full)["candidate_ids"].map(len).max() > 3
    for (_, qf), (_, qc) in zip(_queries(full).iterrows(), _queries(capped).iterrows()):
        assert qc["candidate_ids"][0] == qf["candidate_ids"][0]
        assert len(qc["candidate_ids"]) == min(3, len(qf["candidate_ids"]))
        assert set(qc["candidate_ids"]) <= set(qf["candidate_ids"])
    assert set(_docs(capped)["record_id"]) == set().union(*map(set, _queries(capped)["candidate_ids"]))


def test_concurrent_skipped_with_a_note_without_timestamps():
    timed = random_timelines(1)
    untimed = timeline_corpus([(cid, None, "#c") for cid in timed["conversation_id"]], source="src_n")
    partly = pd.concat(
        [random_timelines(2).assign(source="src_p"), timeline_corpus([("src_p/test/annot/1", None, "#c")] * 3, source="src_p")],
        ignore_index=True,
    )
    assert build_concurrent_thread_eval_set(untimed, source="src_n").empty
    es, notes = build_eval_sets({"src_c": timed, "src_n": untimed, "src_p": partly}, tasks=("concurrent_thread",))
    assert set(es["source"]) == {"src_c", "src_p"}
    assert any("src_n/concurrent_thread" in n and "timestamp" in n for n in notes)
    assert any("src_p/concurrent_thread" in n and "1 of" in n for n in notes)
    assert "src_p/test/annot/1" not in set(es["conversation_id"])


def test_build_eval_sets_default_tasks_include_concurrent():
    es, notes = build_eval_sets({"src_a": make_corpus(), "src_c": random_timelines(3)}, seed=1)
    assert DEFAULT_EVAL_TASKS == ("thread", "response", "concurrent_thread")
    assert set(es["task"]) == set(DEFAULT_EVAL_TASKS)
    assert not es.duplicated(["eval_set", "source", "task", "record_id"]).any()
    texts = eval_texts(es)
    conc = es[es["task"] == "concurrent_thread"]
    pos = set(_queries(conc)["positive_id"])
    assert {t for r, t in zip(_docs(conc)["record_id"], _docs(conc)["text"]) if r in pos} <= texts
