"""External eval-set formats: pool JSONL and BEIR readers, writers, round trips and malformed input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from thread_embed_pipeline.evaluation.eval_sets import build_eval_sets
from thread_embed_pipeline.evaluation.external import (
    EvalSetFormatError,
    export_beir,
    export_pool_jsonl,
    pool_document_id,
    read_beir,
    read_external_eval_set,
    read_pool_jsonl,
)
from thread_embed_pipeline.schemas import EVAL_SET_COLUMNS, EVAL_TASKS, OWN_EVAL_SET
from thread_embed_pipeline_tests.evaluation.test_eval_sets import make_corpus, random_timelines


def _queries(df):
    return df[df["record_type"] == "query"]


def _docs(df):
    return df[df["record_type"] == "document"]


def _write_jsonl(path: Path, objs, raw_lines=()) -> Path:
    lines = [json.dumps(o) if not isinstance(o, str) else o for o in objs] + list(raw_lines)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _own_sets() -> pd.DataFrame:
    es, _ = build_eval_sets(
        {"src_a": make_corpus("src_a"), "src_c": random_timelines(3)}, tasks=EVAL_TASKS, pool_size=4, seed=0
    )
    assert set(es["task"]) == set(EVAL_TASKS)
    return es


def _pools_as_text(es: pd.DataFrame) -> list[tuple]:
    """Per query, in order: (source, conversation_id, query text, positive text, candidate texts)."""
    out = []
    for (_, source, _), g in es.groupby(["eval_set", "source", "task"], sort=True):
        docs = dict(zip(_docs(g)["record_id"], _docs(g)["text"]))
        for _, q in _queries(g).iterrows():
            out.append((source, q["conversation_id"], q["text"], docs[q["positive_id"]], [docs[c] for c in q["candidate_ids"]]))
    return out


GOOD = {"query": "how do I x?", "corpus": ["a: try y", "b: unrelated"], "relevant_idx": 0, "source": "s1", "conversation_id": "s1/f/1"}


# ---------------------------------------------------------------------------------------------
# pool JSONL


def test_read_pool_jsonl_rows_dedupe_and_ids(tmp_path):
    path = _write_jsonl(
        tmp_path / "pool.jsonl",
        [
            GOOD,
            {"query": "q2", "corpus": ["b: unrelated", "c: answer", "b: unrelated"], "relevant_idx": 1, "source": "s1", "conversation_id": "s1/f/2"},
            {"query": "q3", "corpus": ["a: try y"], "relevant_idx": 0, "source": "s2", "conversation_id": "s2/f/1"},
        ],
        raw_lines=["", "   "],
    )
    df, notes = read_pool_jsonl(path, name="ref")
    assert list(df.columns) == list(EVAL_SET_COLUMNS)
    assert set(df["eval_set"]) == {"ref"} and set(df["task"]) == {"pool"}
    q = _queries(df).set_index("record_id")
    assert list(q.index) == ["q:1", "q:2", "q:3"]
    assert q.loc["q:1", "source"] == "s1" and q.loc["q:3", "source"] == "s2"
    assert list(q.loc["q:1", "candidate_ids"]) == [pool_document_id("a: try y"), pool_document_id("b: unrelated")]
    assert q.loc["q:1", "positive_id"] == pool_document_id("a: try y")
    # the repeated text in q2's pool is collapsed; candidate order is corpus order
    assert list(q.loc["q:2", "candidate_ids"]) == [pool_document_id("b: unrelated"), pool_document_id("c: answer")]
    assert list(q.loc["q:2", "relevant_ids"]) == [pool_document_id("c: answer")]
    # one document per unique text within (eval_set, source): "a: try y" exists in s1 and s2
    d = _docs(df)
    assert sorted(zip(d["source"], d["text"])) == [("s1", "a: try y"), ("s1", "b: unrelated"), ("s1", "c: answer"), ("s2", "a: try y")]
    assert not d.duplicated(["source", "record_id"]).any()
    assert d.set_index(["source", "text"]).loc[("s1", "a: try y"), "conversation_id"] == "s1/f/1"
    assert d.set_index(["source", "text"]).loc[("s1", "b: unrelated"), "conversation_id"] is None
    assert all(d["positive_id"].isna()) and all(len(c) == 0 for c in d["candidate_ids"])
    assert "3 queries" in notes[0] and "4 unique documents" in notes[0]
    assert any("1 line(s)" in n and "collapsed" in n for n in notes)
    # deterministic
    again, _ = read_pool_jsonl(path, name="ref")
    assert again.to_dict("records") == df.to_dict("records")


BAD_POOL_LINES = [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "JSON object"),
    ({**GOOD, "query": 3}, '"query" to be a string'),
    ({k: v for k, v in GOOD.items() if k != "query"}, 'key "query"'),
    ({k: v for k, v in GOOD.items() if k != "corpus"}, 'key "corpus"'),
    ({k: v for k, v in GOOD.items() if k != "relevant_idx"}, 'key "relevant_idx"'),
    ({k: v for k, v in GOOD.items() if k != "source"}, 'key "source"'),
    ({k: v for k, v in GOOD.items() if k != "conversation_id"}, 'key "conversation_id"'),
    ({**GOOD, "corpus": "a: try y"}, '"corpus" to be a list of strings'),
    ({**GOOD, "corpus": ["a", 2]}, '"corpus" to be a list of strings'),
    ({**GOOD, "relevant_idx": "0"}, '"relevant_idx" to be an integer'),
    ({**GOOD, "relevant_idx": 0.0}, '"relevant_idx" to be an integer'),
    ({**GOOD, "relevant_idx": True}, '"relevant_idx" to be an integer'),
    ({**GOOD, "source": None}, '"source" to be a string'),
    ({**GOOD, "conversation_id": 7}, '"conversation_id" to be a string'),
    ({**GOOD, "relevant_idx": 2}, '"relevant_idx" in [0, 1]'),
    ({**GOOD, "relevant_idx": -1}, '"relevant_idx" in [0, 1]'),
    ({**GOOD, "corpus": []}, "non-empty"),
]


@pytest.mark.parametrize("bad, expected", BAD_POOL_LINES)
def test_read_pool_jsonl_malformed_line_names_file_and_line(tmp_path, bad, expected):
    path = _write_jsonl(tmp_path / "pool.jsonl", [GOOD, "", bad, GOOD])
    with pytest.raises(EvalSetFormatError) as info:
        read_pool_jsonl(path, name="ref")
    assert str(info.value).startswith(f"{path}:3: ")
    assert expected in str(info.value)
    assert info.value.line == 3 and info.value.path == path


def test_pool_round_trip_of_our_sets(tmp_path):
    es = _own_sets()
    notes: list[str] = []
    out = export_pool_jsonl(es, tmp_path / "out" / "pool.jsonl", notes=notes)
    assert out == tmp_path / "out" / "pool.jsonl" and notes == []
    assert len(out.read_text().splitlines()) == len(_queries(es))
    back, _ = read_pool_jsonl(tmp_path / "out" / "pool.jsonl", name="rt")
    assert set(back["task"]) == {"pool"} and set(back["eval_set"]) == {"rt"}
    # same queries, positives and candidate pools (compared as texts, in order)
    original = _pools_as_text(es)
    docs = dict(zip(zip(_docs(back)["source"], _docs(back)["record_id"]), _docs(back)["text"]))
    restored = [
        (q["source"], q["conversation_id"], q["text"], docs[(q["source"], q["positive_id"])], [docs[(q["source"], c)] for c in q["candidate_ids"]])
        for _, q in _queries(back).iterrows()
    ]
    assert restored == original
    assert not list(tmp_path.glob("out/.*.tmp"))  # no temp files left behind


def test_export_pool_skips_sets_with_several_relevant_documents(tmp_path):
    beir = _beir_folder(tmp_path / "beir")
    df, _ = read_beir(beir, name="ext")
    own = _own_sets()
    notes: list[str] = []
    out = export_pool_jsonl(pd.concat([own, df], ignore_index=True), tmp_path / "pool.jsonl", notes=notes)
    assert len(out.read_text().splitlines()) == len(_queries(own))
    assert export_pool_jsonl(df, tmp_path / "none.jsonl").read_text() == ""  # notes are optional
    assert len(notes) == 1 and "ext/ext/beir" in notes[0] and "exactly one relevant" in notes[0]


# ---------------------------------------------------------------------------------------------
# BEIR


def _beir_folder(folder: Path, *, corpus=None, queries=None, qrels=None, split="test") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    corpus = corpus if corpus is not None else [
        json.dumps({"_id": "d1", "title": "Install", "text": "apt install foo"}),
        json.dumps({"_id": "d2", "title": "", "text": "reboot it"}),
        json.dumps({"_id": 3, "text": "no title here"}),
    ]
    queries = queries if queries is not None else [
        json.dumps({"_id": "q1", "text": "how to install foo"}),
        json.dumps({"_id": "q2", "text": "it hangs"}),
        json.dumps({"_id": "q3", "text": "not judged"}),
        json.dumps({"_id": "q4", "text": "only a zero"}),
    ]
    qrels = qrels if qrels is not None else ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q2\t3\t0", "q2\td2\t2", "q2\t3\t1", "q4\td1\t0"]
    (folder / "corpus.jsonl").write_text("".join(line + "\n" for line in corpus), encoding="utf-8")
    (folder / "queries.jsonl").write_text("".join(line + "\n" for line in queries), encoding="utf-8")
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / f"{split}.tsv").write_text("".join(line + "\n" for line in qrels), encoding="utf-8")
    return folder


def test_read_beir(tmp_path):
    folder = _beir_folder(tmp_path / "b")
    df, notes = read_beir(folder, name="ext")
    assert list(df.columns) == list(EVAL_SET_COLUMNS)
    assert set(df["eval_set"]) == {"ext"} and set(df["source"]) == {"ext"} and set(df["task"]) == {"beir"}
    d = _docs(df).set_index("record_id")
    assert list(d.index) == ["d:d1", "d:d2", "d:3"]
    assert d.loc["d:d1", "text"] == "Install\napt install foo"
    assert d.loc["d:d2", "text"] == "reboot it" and d.loc["d:3", "text"] == "no title here"
    q = _queries(df).set_index("record_id")
    assert list(q.index) == ["q:q1", "q:q2"]
    assert list(q.loc["q:q1", "relevant_ids"]) == ["d:d1"] and q.loc["q:q1", "positive_id"] == "d:d1"
    # score 0 is not relevant; qrels order is kept
    assert list(q.loc["q:q2", "relevant_ids"]) == ["d:d2", "d:3"] and q.loc["q:q2", "positive_id"] == "d:d2"
    assert all(list(c) == ["d:d1", "d:d2", "d:3"] for c in q["candidate_ids"])  # full corpus
    assert any("dropped 1 of 4 queries absent from qrels/test.tsv" in n for n in notes)
    assert any("dropped 1 of 4 queries with no qrels score > 0" in n for n in notes)
    # dispatch
    via, _ = read_external_eval_set(folder, name="ext")
    assert via.to_dict("records") == df.to_dict("records")


def test_read_beir_other_split(tmp_path):
    folder = _beir_folder(tmp_path / "b", split="dev")
    df, _ = read_beir(folder, name="ext", split="dev")
    assert len(_queries(df)) == 2
    with pytest.raises(EvalSetFormatError, match="test.tsv: file not found"):
        read_beir(folder, name="ext")


def _bad_beir_cases():
    ok_corpus = [json.dumps({"_id": "d1", "text": "x"}), json.dumps({"_id": "d2", "text": "y"})]
    ok_queries = [json.dumps({"_id": "q1", "text": "z"}), json.dumps({"_id": "q2", "text": "w"})]
    ok_qrels = ["query-id\tcorpus-id\tscore", "q1\td1\t1"]
    return [
        ("corpus.jsonl", 2, dict(corpus=[ok_corpus[0], "{oops"]), "invalid JSON"),
        ("corpus.jsonl", 2, dict(corpus=[ok_corpus[0], json.dumps({"text": "y"})]), 'key "_id"'),
        ("corpus.jsonl", 2, dict(corpus=[ok_corpus[0], json.dumps({"_id": "d2"})]), 'key "text"'),
        ("corpus.jsonl", 2, dict(corpus=[ok_corpus[0], json.dumps({"_id": "d2", "text": 5})]), '"text" to be a string'),
        ("corpus.jsonl", 2, dict(corpus=[ok_corpus[0], json.dumps({"_id": "d2", "text": "y", "title": 1})]), '"title" to be a string'),
        ("corpus.jsonl", 2, dict(corpus=[ok_corpus[0], json.dumps({"_id": "d1", "text": "y"})]), 'unique "_id"'),
        ("queries.jsonl", 2, dict(corpus=ok_corpus, queries=[ok_queries[0], '"just a string"']), "JSON object"),
        ("queries.jsonl", 2, dict(corpus=ok_corpus, queries=[ok_queries[0], json.dumps({"_id": "q2"})]), 'key "text"'),
        ("qrels/test.tsv", 1, dict(corpus=ok_corpus, queries=ok_queries, qrels=["q1\td1\t1"]), "header"),
        ("qrels/test.tsv", 3, dict(corpus=ok_corpus, queries=ok_queries, qrels=[*ok_qrels, "q2 d2 1"]), "3 tab-separated fields"),
        ("qrels/test.tsv", 3, dict(corpus=ok_corpus, queries=ok_queries, qrels=[*ok_qrels, "q2\td2\thigh"]), "integer score"),
        ("qrels/test.tsv", 3, dict(corpus=ok_corpus, queries=ok_queries, qrels=[*ok_qrels, "q9\td2\t1"]), "query-id 'q9' is not in queries.jsonl"),
        ("qrels/test.tsv", 3, dict(corpus=ok_corpus, queries=ok_queries, qrels=[*ok_qrels, "q2\td9\t1"]), "corpus-id 'd9' is not in corpus.jsonl"),
    ]


@pytest.mark.parametrize("file, line, kwargs, expected", _bad_beir_cases())
def test_read_beir_malformed_names_file_and_line(tmp_path, file, line, kwargs, expected):
    folder = _beir_folder(tmp_path / "b", **kwargs)
    with pytest.raises(EvalSetFormatError) as info:
        read_beir(folder, name="ext")
    assert str(info.value).startswith(f"{folder / file}:{line}: ")
    assert expected in str(info.value)


def test_read_external_dispatch_and_errors(tmp_path):
    pool = _write_jsonl(tmp_path / "p.jsonl", [GOOD])
    df, _ = read_external_eval_set(pool, name="ref")
    assert set(df["task"]) == {"pool"}
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "data.csv").write_text("a,b\n")
    for bad in (tmp_path / "empty_dir", tmp_path / "data.csv", tmp_path / "missing.jsonl"):
        with pytest.raises(EvalSetFormatError, match="pool-format .jsonl file or a BEIR folder"):
            read_external_eval_set(bad, name="x")


def test_beir_round_trip_of_our_sets(tmp_path):
    es = _own_sets()
    folders = export_beir(es, tmp_path / "beir")
    groups = sorted(es.groupby(["eval_set", "source", "task"]).groups)
    assert [f.name for f in folders] == [f"{e}__{s}__{t}" for e, s, t in groups]
    for folder, (eval_set, source, task) in zip(folders, groups):
        assert (folder / "corpus.jsonl").is_file() and (folder / "queries.jsonl").is_file()
        assert (folder / "qrels" / "test.tsv").read_text().splitlines()[0] == "query-id\tcorpus-id\tscore"
        back, notes = read_beir(folder, name=eval_set)
        assert not any("dropped" in n for n in notes)
        orig = es[(es["eval_set"] == eval_set) & (es["source"] == source) & (es["task"] == task)]
        cols = ["record_id", "conversation_id", "text", "positive_id", "relevant_ids"]
        assert _queries(back)[cols].to_dict("records") == _queries(orig)[cols].to_dict("records")
        assert _docs(back)[["record_id", "conversation_id", "text"]].to_dict("records") == _docs(orig)[["record_id", "conversation_id", "text"]].to_dict("records")
        # BEIR has no pools: every query is ranked against the whole exported corpus
        all_docs = _docs(back)["record_id"].tolist()
        assert all(list(c) == all_docs for c in _queries(back)["candidate_ids"])
        assert set(back["eval_set"]) == {OWN_EVAL_SET}
    assert not list((tmp_path / "beir").rglob(".*.tmp"))
    # overwriting in place works (atomic replace)
    assert export_beir(es, tmp_path / "beir") == folders
