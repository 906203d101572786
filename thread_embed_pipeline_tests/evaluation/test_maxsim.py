"""Max-sim: a document that is a set of messages, scored by its messages (``evaluation/maxsim.py``), in the
retrieval code, the dev choice of an aggregation, the eval sets that keep message boundaries, and search."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from thread_embed_pipeline.evaluation.eval_sets import build_eval_sets, protocol_eval_set, without_speakers
from thread_embed_pipeline.evaluation.maxsim import (
    AGGREGATIONS,
    aggregate,
    best_messages,
    choose_aggregation,
    flatten_messages,
    maxsim_name,
    top_message_scores,
)
from thread_embed_pipeline.evaluation.retrieval import pool_scores, prepare_sets, rank_retrieval, maxsim_dev_table, summarize
from thread_embed_pipeline.schemas import EVAL_SET_COLUMNS

from thread_embed_pipeline_tests.evaluation.test_retrieval import make_eval_set
from thread_embed_pipeline_tests.evaluation.test_eval_sets import make_corpus, random_timelines

WORDS = ["grub", "boot", "error", "kernel", "wifi", "driver", "sound", "pulse", "disk", "mount", "apt", "lock", "printer", "cups", "ssh", "key"]


class BagOfWords:
    """An embedder that sees words: a normalised count vector over ``WORDS``, from the first ``max_words``
    words only (a truncating encoder, as a 256-token model is)."""

    def __init__(self, name: str = "bow", max_words: int = 12):
        self.name, self.max_dim, self.max_words = name, len(WORDS), max_words

    def embed(self, texts, dim):
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower())[: self.max_words]:
                if word in WORDS and WORDS.index(word) < dim:
                    out[i, WORDS.index(word)] += 1
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1)


def _with_messages(frame: pd.DataFrame, messages: dict[str, list[str]]) -> pd.DataFrame:
    frame = frame.copy()
    frame["messages"] = [messages.get(rid, []) if kind == "document" else [] for rid, kind in zip(frame["record_id"], frame["record_type"])]
    return frame


def test_top_message_scores_are_each_documents_best_messages_best_first():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(4, 6))
    m = rng.normal(size=(10, 6))
    q, m = q / np.linalg.norm(q, axis=1, keepdims=True), m / np.linalg.norm(m, axis=1, keepdims=True)
    starts = np.array([0, 1, 3, 7])  # documents of 1, 2, 4 and 3 messages
    top = top_message_scores(q, m, starts)
    sims = q @ m.T
    for d, (a, b) in enumerate(zip(starts, [*starts[1:], 10])):
        want = -np.sort(-sims[:, a:b], axis=1)[:, :3]
        assert np.allclose(top[:, d, : want.shape[1]], want)
        assert np.isneginf(top[:, d, want.shape[1] :]).all()  # a document of one message has no second best
    best = best_messages(sims[1], starts)
    assert best.tolist() == [int(np.argmax(sims[1, a:b])) for a, b in zip(starts, [*starts[1:], 10])]


def test_aggregations_by_hand():
    top = np.array([[[0.9, 0.5, 0.1], [0.6, -np.inf, -np.inf]]])  # one query, two documents
    doc = np.array([[0.2, 0.4]])
    assert aggregate(top, doc, "max").tolist() == [[0.9, 0.6]]
    assert np.allclose(aggregate(top, doc, "top2"), [[0.7, 0.6]])  # a one-message document: its one message
    assert np.allclose(aggregate(top, doc, "top3"), [[0.5, 0.6]])
    assert np.allclose(aggregate(top, doc, "max+0.2doc"), [[0.94, 0.68]])
    with pytest.raises(ValueError, match="unknown max-sim aggregation"):
        aggregate(top, doc, "mean")
    assert choose_aggregation({}) == "max"
    assert choose_aggregation({"max": 0.5, "top2": 0.6, "max+0.1doc": 0.6}) == "top2"  # a tie goes to the simpler one
    assert set(AGGREGATIONS) >= {"max", "top2", "top3", "max+0.1doc"}


def test_a_long_thread_whose_answer_is_past_the_truncation_point_is_found_by_its_message():
    """The point of max-sim: a truncating encoder never reads the message that matches; max-sim does."""
    chatter = [f"speaker_{i % 3}: sound pulse printer cups" for i in range(6)]
    docs = {
        "long": [*chatter, "speaker_1: grub boot error after the kernel update"],  # the answer is the last message
        "short": ["speaker_2: disk mount error", "speaker_3: apt lock"],
        "other": ["speaker_4: wifi driver", "speaker_5: ssh key"],
    }
    frame = make_eval_set([("q", "speaker_9: grub boot error", ["long", "short", "other"], ["long"])], {d: "\n".join(m) for d, m in docs.items()})
    per_query = rank_retrieval(_with_messages(frame, docs), {"bow": BagOfWords()}, dims=[16], include_bm25=False, maxsim_aggregation="max")
    ranks = per_query.set_index("model")["first_relevant_rank"]
    assert ranks["bow"] > 1 and ranks[maxsim_name("bow")] == 1


def test_maxsim_rows_only_for_sets_whose_documents_are_messages():
    docs = {"a": ["grub error", "boot"], "b": ["wifi driver", "sound"]}
    own = _with_messages(make_eval_set([("q", "grub boot", ["a", "b"], ["a"])], {d: "\n".join(m) for d, m in docs.items()}), docs)
    external = make_eval_set([("q", "grub", ["x", "y"], ["x"])], {"x": "grub", "y": "wifi"}, eval_set="ext", source="ext", task="pool")
    per_query = rank_retrieval(pd.concat([own, external], ignore_index=True), {"bow": BagOfWords()}, dims=[16, 8], maxsim_aggregation="top2")
    maxsim_rows = per_query[per_query["model"] == maxsim_name("bow")]
    assert set(maxsim_rows["eval_set"]) == {"threadembed"} and set(maxsim_rows["dim"]) == {16, 8}
    assert len(per_query[per_query["model"] == "bow"]) == 4  # the truncated rows everywhere
    no_maxsim = rank_retrieval(own, {"bow": BagOfWords()}, dims=[16])
    assert maxsim_name("bow") not in set(no_maxsim["model"])


def test_maxsim_tasks_limit_the_rows_and_the_messages_encoded_to_those_tasks():
    calls = []

    class Counting(BagOfWords):
        def embed(self, texts, dim):
            calls.append(list(texts))
            return super().embed(texts, dim)

    thread_docs = {"a": ["grub error", "boot"], "b": ["wifi driver", "sound"]}
    window_docs = {"w1": ["apt lock", "disk mount"], "w2": ["printer cups", "ssh key"]}
    thread = _with_messages(make_eval_set([("q", "grub boot", ["a", "b"], ["a"])], {d: "\n".join(m) for d, m in thread_docs.items()}), thread_docs)
    response = make_eval_set([("r", "apt", ["w1", "w2"], ["w1"])], {d: "\n".join(m) for d, m in window_docs.items()}, task="response")
    frame = pd.concat([thread, _with_messages(response, window_docs)], ignore_index=True)
    per_query = rank_retrieval(frame, {"bow": Counting()}, dims=[16], include_bm25=False, maxsim_aggregation="max", maxsim_tasks=["thread"])
    assert set(per_query.loc[per_query["model"] == maxsim_name("bow"), "task"]) == {"thread"}
    assert set(per_query.loc[per_query["model"] == "bow", "task"]) == {"thread", "response"}
    assert "grub error" in calls[0] and "apt lock" not in calls[0]  # the response windows' messages are not encoded
    from thread_embed_pipeline.evaluation.runner import run_evaluation

    with pytest.raises(ValueError, match="maxsim_tasks names unknown tasks"):
        run_evaluation(frame, {"bow": BagOfWords()}, dims=[16], maxsim_tasks=["threads"])


def test_each_unique_message_is_encoded_once_per_dim_in_the_same_call():
    calls = []

    class Counting(BagOfWords):
        def embed(self, texts, dim):
            calls.append(list(texts))
            return super().embed(texts, dim)

    docs = {"a": ["grub error", "boot"], "b": ["grub error", "wifi"]}  # a message shared by two threads
    frame = _with_messages(make_eval_set([("q", "grub", ["a", "b"], ["a"])], {d: "\n".join(m) for d, m in docs.items()}), docs)
    pool_scores(prepare_sets(frame), {"c": Counting()}, [16], bm25=False, maxsim=True)
    assert len(calls) == 1 and calls[0].count("grub error") == 1 and {"boot", "wifi", "grub"} <= set(calls[0])


def test_the_dev_table_scores_every_aggregation_and_the_truncated_encoding():
    docs = {"a": ["grub error", "boot"], "b": ["wifi driver", "sound"], "c": ["apt lock", "disk"]}
    frame = _with_messages(make_eval_set([("q1", "grub", ["a", "b", "c"], ["a"]), ("q2", "sound", ["a", "b", "c"], ["b"])], {d: "\n".join(m) for d, m in docs.items()}), docs)
    scores = pool_scores(prepare_sets(frame), {"bow": BagOfWords()}, [16], bm25=False, maxsim=True)
    table = maxsim_dev_table(scores, "bow")
    assert set(table["aggregation"]) == {"truncated", *AGGREGATIONS} and set(table["task"]) == {"thread", "all"}
    assert (table.loc[table["task"] == "all", "n"] == 2).all()


def test_eval_set_documents_keep_their_message_boundaries():
    sets, _ = build_eval_sets({"src_a": make_corpus("src_a", {"test": [8, 9, 12, 13, 20]})}, tasks=("thread", "response"))
    concurrent, _ = build_eval_sets({"src_c": random_timelines(1)}, tasks=("concurrent_thread",))
    sets = pd.concat([sets, concurrent], ignore_index=True)
    assert "messages" in EVAL_SET_COLUMNS
    docs = sets[sets["record_type"] == "document"]
    assert len(docs) and (docs["messages"].map(len) > 0).all()
    assert (docs["text"] == docs["messages"].map("\n".join)).all()  # the text is its messages, joined
    assert (sets.loc[sets["record_type"] == "query", "messages"].map(len) == 0).all()
    thread = sets[(sets["task"] == "thread") & (sets["record_type"] == "document")]
    assert all(len(m) >= 7 for m in thread["messages"])  # every message but the query's


def test_the_speaker_free_view_strips_the_speaker_of_each_query_line_only():
    assert without_speakers("speaker_1: grub fails\nspeaker_22: speaker_3: try this") == "grub fails\nspeaker_3: try this"
    assert protocol_eval_set("speaker_free") == "threadembed-speaker_free"


def test_summaries_cover_maxsim_rows_with_cis():
    docs = {f"d{i}": [f"{WORDS[i]} {WORDS[i + 1]}", WORDS[(i + 5) % 16]] for i in range(6)}
    queries = [(f"q{i}", WORDS[i], list(docs), [f"d{i}"]) for i in range(6)]
    frame = _with_messages(make_eval_set(queries, {d: "\n".join(m) for d, m in docs.items()}), docs)
    results = summarize(rank_retrieval(frame, {"bow": BagOfWords()}, dims=[16], include_bm25=False, maxsim_aggregation="max"), n_resamples=50)
    row = results[(results["model"] == maxsim_name("bow")) & (results["metric"] == "mrr@10")].iloc[0]
    assert row["ci_low"] <= row["value"] <= row["ci_high"] and row["n"] == 6
    messages, starts = flatten_messages([["a"], ["b", "c"]])
    assert messages == ["a", "b", "c"] and starts.tolist() == [0, 1]


def test_the_speaker_free_protocol_holds_the_same_sets_with_queries_typed_without_a_speaker():
    from thread_embed_pipeline.evaluation.eval_sets import build_protocol_eval_sets

    corpus = make_corpus("src_a", {"test": [8, 9, 12, 13, 20]})
    sets, _, _ = build_protocol_eval_sets({"src_a": corpus}, protocols=["pseudonymised", "speaker_free"], tasks=("thread", "response"))
    own = sets[sets["eval_set"] == "threadembed"].reset_index(drop=True)
    free = sets[sets["eval_set"] == "threadembed-speaker_free"].reset_index(drop=True)
    assert own["record_id"].tolist() == free["record_id"].tolist()  # the same queries, documents and pools
    queries = own["record_type"] == "query"
    assert (free.loc[~queries, "text"] == own.loc[~queries, "text"]).all()  # documents keep their speakers
    assert own.loc[queries, "text"].str.contains(r"^speaker_\d+: ", regex=True).sum() >= queries.sum() - 1
    assert not free.loc[queries, "text"].str.contains(r"(?m)^speaker_\d+: ", regex=True).any()
    assert (free.loc[queries, "text"] == own.loc[queries, "text"].map(without_speakers)).all()
