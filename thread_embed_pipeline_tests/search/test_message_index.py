"""The workspace message index (``message_index.py``): exact when small, ANN with rescoring when large, incremental
updates equal to a rebuild, a new model rebuilds, threads ranked from their messages, and the Dagster asset."""

import hashlib

import numpy as np
import pandas as pd
import pytest

from thread_embed_pipeline.search.message_index import IndexSettings, MessageIndex, message_rows, update_index


def _text_table(n_threads: int, per_thread: int = 5, split: str = "test") -> pd.DataFrame:
    rows = [
        {"conversation_id": f"src/c{c:04d}", "message_idx": i, "author": f"speaker_{i % 3}", "text": f"thread {c} message {i} about topic {c % 17}", "split": split}
        for c in range(n_threads)
        for i in range(per_thread)
    ]
    return pd.DataFrame(rows)


class HashEncoder:
    """Deterministic unit vectors per text (clustered by the thread's topic), counting what it encodes."""

    def __init__(self, dim: int = 32):
        self.dim, self.calls = dim, []

    def __call__(self, texts):
        self.calls.append(list(texts))
        out = np.empty((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            topic = int(t.rsplit(" ", 1)[-1]) if t.rsplit(" ", 1)[-1].isdigit() else 0
            centre = np.random.default_rng(topic).normal(size=self.dim)
            noise = np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).normal(size=self.dim)
            v = centre + 0.8 * noise
            out[i] = v / np.linalg.norm(v)
        return out

    @property
    def encoded(self) -> int:
        return sum(len(c) for c in self.calls)


def _exact_top(index_vectors: np.ndarray, ids: list[str], query: np.ndarray, k: int) -> list[str]:
    return [ids[i] for i in np.argsort(-(index_vectors @ query), kind="stable")[:k]]


def test_message_rows_are_one_per_message_in_thread_order_and_refuse_duplicate_ids():
    rows = message_rows(_text_table(3, 4).sample(frac=1.0, random_state=0))
    assert len(rows) == 12 and rows["message_id"].iloc[0] == "src/c0000#0" and rows["position"].tolist()[:4] == [0, 1, 2, 3]
    assert rows["text"].iloc[0].startswith("speaker_0: ") and rows["text_sha256"].str.len().eq(64).all()
    table = _text_table(2, 2)
    with pytest.raises(ValueError, match="message ids repeat"):
        message_rows(pd.concat([table, table]))


def test_a_small_index_is_searched_exactly(tmp_path):
    rows = message_rows(_text_table(60))
    encode = HashEncoder()
    summary = update_index(tmp_path, rows, encode, model_id="m1", dim=32)
    assert summary["mode"] == "rebuild" and summary["messages"] == 300 and not summary["ann"]
    index = MessageIndex(tmp_path)
    vectors = encode(rows["text"].tolist())
    for q in vectors[:20]:
        got = index.search_messages(q, 10)["message_id"].tolist()
        assert got == _exact_top(vectors, rows["message_id"].tolist(), q, 10)  # recall 1.0, same order


def test_an_ann_index_with_rescoring_finds_the_exact_neighbours(tmp_path):
    rows = message_rows(_text_table(600))  # 3,000 messages
    encode = HashEncoder()
    summary = update_index(tmp_path, rows, encode, model_id="m1", dim=32, settings=IndexSettings(ann_min_rows=1000, num_partitions=2, ef=128, nprobes=2, refine_factor=10))
    assert summary["ann"]
    index = MessageIndex(tmp_path)
    assert index.table.list_indices()[0].index_type == "IvfHnswSq"
    vectors, ids = encode(rows["text"].tolist()), rows["message_id"].tolist()
    queries = HashEncoder()([f"a new question {t}" for t in range(40)])
    recall = np.mean([len(set(index.search_messages(q, 10)["message_id"]) & set(_exact_top(vectors, ids, q, 10))) / 10 for q in queries])
    exact = np.mean([len(set(index.search_messages(q, 10, exact=True)["message_id"]) & set(_exact_top(vectors, ids, q, 10))) / 10 for q in queries])
    assert exact == 1.0 and recall >= 0.95


def test_an_incremental_update_encodes_only_new_messages_and_equals_a_rebuild(tmp_path):
    full = _text_table(80)
    old = full[full["conversation_id"] < "src/c0070"].copy()
    old.loc[old.index[0], "text"] = "an edited message about topic 3"  # edited upstream since
    old = pd.concat([old, _text_table(1).assign(conversation_id="src/gone")])  # a thread deleted since
    encode = HashEncoder()
    update_index(tmp_path / "inc", message_rows(old), encode, model_id="m1", dim=32)
    before = encode.encoded
    summary = update_index(tmp_path / "inc", message_rows(full), encode, model_id="m1", dim=32)
    new_texts = set(message_rows(full)["text"]) - set(message_rows(old)["text"])
    assert summary["mode"] == "incremental" and summary["added"] == 10 * 5 + 1 and summary["removed"] == 5 + 1
    assert encode.encoded - before == summary["added"] and set(encode.calls[-1]) <= new_texts | {message_rows(full)["text"].iloc[0]}
    again = update_index(tmp_path / "inc", message_rows(full), encode, model_id="m1", dim=32)
    assert again["added"] == again["removed"] == 0 and len(encode.calls) == 2  # nothing new: nothing encoded
    update_index(tmp_path / "fresh", message_rows(full), HashEncoder(), model_id="m1", dim=32)

    def content(folder):
        t = MessageIndex(folder).table.search().select(["message_id", "text", "vector"]).limit(None).to_pandas().sort_values("message_id")
        return t["message_id"].tolist(), t["text"].tolist(), np.stack(t["vector"].to_numpy())

    inc, fresh = content(tmp_path / "inc"), content(tmp_path / "fresh")
    assert inc[0] == fresh[0] and inc[1] == fresh[1] and np.array_equal(inc[2], fresh[2])


def test_another_model_or_dim_rebuilds_the_index(tmp_path):
    rows = message_rows(_text_table(10))
    update_index(tmp_path, rows, HashEncoder(), model_id="m1", dim=32)
    encode = HashEncoder(16)
    summary = update_index(tmp_path, rows, encode, model_id="m2", dim=16)
    assert summary["mode"] == "rebuild" and encode.encoded == len(rows) and MessageIndex(tmp_path).model_id == "m2"
    with pytest.raises(ValueError, match="encode returned"):
        update_index(tmp_path, rows, HashEncoder(8), model_id="m3", dim=16)
    with pytest.raises(ValueError, match="index_type"):
        IndexSettings(index_type="HNSW")
    with pytest.raises(FileNotFoundError, match="no message index"):
        MessageIndex(tmp_path / "nowhere")


def test_the_index_carries_what_built_it_wherever_it_is_copied(tmp_path, monkeypatch):
    import shutil

    from thread_embed_pipeline.search.message_index import default_index_dir

    update_index(tmp_path / "a", message_rows(_text_table(4)), HashEncoder(), model_id="m1", dim=32)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # as a user syncs it to a bucket or another machine
    moved = MessageIndex(tmp_path / "b")
    assert (moved.model_id, moved.dim, moved.table.count_rows()) == ("m1", 32, 20) and moved.settings == IndexSettings()
    monkeypatch.setenv("THREAD_EMBED_MESSAGE_INDEX", "s3://bucket/thread-embed")
    assert default_index_dir() == "s3://bucket/thread-embed"


def test_thread_hits_rank_threads_by_their_best_message_fused_with_bm25(tiny_model_dir, tmp_path):
    from thread_embed_pipeline.text import TextSettings, prepare_text
    from thread_embed_pipeline.models import load_sentence_model
    from thread_embed_pipeline_tests.search.test_search import _chat_corpus

    text, _ = prepare_text(_chat_corpus(), TextSettings())
    model = load_sentence_model(str(tiny_model_dir), device="cpu")
    encode = lambda texts: model.encode(list(texts), normalize_embeddings=True)  # noqa: E731
    rows = message_rows(text)
    update_index(tmp_path, rows, encode, model_id="tiny", dim=model.get_embedding_dimension())
    index = MessageIndex(tmp_path)
    query = "another apt process is running, wait for it"
    hits = index.thread_hits(query, encode([query])[0], weight=0.0, k=2)  # BM25 only
    assert hits[0].conversation_id == "toy/log/apt" and len(hits) == 2
    stored = rows.loc[rows["message_id"] == "toy/log/apt#1", "text"].iloc[0]
    dense = index.thread_hits(stored, encode([stored])[0], weight=1.0, k=3)
    assert dense[0].text == stored  # the very message: cosine 1
    assert dense[0].message == 1 and dense[0].dense == pytest.approx(1.0, abs=1e-5)


def test_the_asset_builds_then_updates_incrementally_and_the_cli_searches_it(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import shutil

    import dagster as dg

    from thread_embed_pipeline.orchestration.keys import text_key
    from thread_embed_pipeline.orchestration.search_assets import build_message_index_asset, message_index_dir
    from thread_embed_pipeline.search.retriever import write_retriever_settings
    from thread_embed_pipeline.text import TextSettings, prepare_text
    from thread_embed_pipeline_tests.search.test_search import _chat_corpus

    monkeypatch.setenv("THREAD_EMBED_DATA_DIR", str(tmp_path / "data"))
    release = tmp_path / "data" / "release" / "model"
    shutil.copytree(tiny_model_dir, release)
    write_retriever_settings(release, weight=0.5, dim=16, chosen_on="dev", scope="global", maxsim="max")
    text, _ = prepare_text(_chat_corpus(), TextSettings())
    state = {"text": text[text["conversation_id"] != "toy/log/apt"]}

    @dg.asset(key=text_key("toy"))
    def toy_text():
        return state["text"]

    def run():
        result = dg.materialize([toy_text, build_message_index_asset(["toy"])], resources={"io_manager": dg.mem_io_manager})
        assert result.success
        return result.asset_materializations_for_node("message_index")[0].metadata

    first = run()
    assert first["mode"].value == "rebuild" and first["messages"].value == 6 and first["dim"].value == 16
    assert len(first["model_fingerprint"].value) == 12 and first["index_parameters"].value["index_type"] == "IVF_HNSW_SQ"
    state["text"] = text
    second = run()
    assert second["mode"].value == "incremental" and second["added"].value == 3 and second["messages"].value == 9
    assert MessageIndex(message_index_dir()).dim == 16
    from thread_embed_pipeline.search.cli import main

    capsys.readouterr()
    assert main(["another apt process is running, wait for it", "--index", "messages", "--k", "2", "--messages", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("1. toy/log/apt ") and "3 messages" in lines[0]
    assert lines[1].startswith("     > ") and "another apt process" in lines[1] and "frank" not in "\n".join(lines)  # the matched message, pseudonymised
    shutil.rmtree(message_index_dir())
    with pytest.raises(SystemExit):
        main(["apt", "--index", "messages"])
    assert "message_index_job" in capsys.readouterr().err
