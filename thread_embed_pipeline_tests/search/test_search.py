"""The released hybrid retriever: the eval's fusion and BM25 tokenisation on the user's own texts."""

import json

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from thread_embed_pipeline.evaluation.fusion import convex_fuse
from thread_embed_pipeline.evaluation.retrieval import RetrievalSet, bm25_pool_scores
from thread_embed_pipeline.search.retriever import SETTINGS_FILE, HybridRetriever, write_retriever_settings

DOCS = [
    "speaker_1: grub fails to boot after the upgrade\nspeaker_2: reinstall grub-pc from a live cd",
    "speaker_3: my wifi driver is broken on the laptop\nspeaker_4: try the backports kernel",
    "speaker_5: apt install fails with a lock error\nspeaker_6: another apt process is running",
]


def test_scores_are_the_eval_fusion_of_the_eval_bm25_and_cosine(tiny_model_dir):
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    retriever = HybridRetriever(model, weight=0.3, dim=16).index(DOCS)
    query = "speaker_7: grub error after upgrading, how do I reinstall grub?"
    # BM25 exactly as the eval scores a pool of all three documents
    rset = RetrievalSet("s", "src", "thread", ("q",), (query,), ("d0", "d1", "d2"), tuple(DOCS), (np.arange(3),), (np.array([True, False, False]),), (1,))
    (bm25,) = bm25_pool_scores(rset)
    emb = model.encode([query, *DOCS], convert_to_numpy=True)[:, :16]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    dense = emb[1:] @ emb[0]
    np.testing.assert_allclose(retriever.scores(query), convex_fuse(bm25, dense, 0.3), rtol=1e-5, atol=1e-6)
    lexical_only = HybridRetriever(model, weight=0.0).index(DOCS)
    assert lexical_only.search(query, k=1)[0][0] == 0  # weight 0 is BM25, which finds the grub thread


def test_from_checkpoint_reads_the_dev_chosen_weight(tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("THREAD_EMBED_DATA_DIR", str(tmp_path / "data"))
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, checkpoint)
    with pytest.raises(FileNotFoundError, match=SETTINGS_FILE):
        HybridRetriever.from_checkpoint(checkpoint)
    write_retriever_settings(checkpoint, weight=0.45, dim=16, chosen_on="dev", scope="global")
    assert json.loads((checkpoint / SETTINGS_FILE).read_text())["chosen_on"] == "dev"
    retriever = HybridRetriever.from_checkpoint(checkpoint, device="cpu")
    assert (retriever.weight, retriever.dim) == (0.45, 16)
    with pytest.raises(RuntimeError, match="index"):
        retriever.search("anything")
    with pytest.raises(ValueError, match="weight"):
        HybridRetriever(retriever.model, weight=1.5)


def test_from_checkpoint_finds_the_eval_reports_settings_or_an_explicit_file(tiny_model_dir, tmp_path, monkeypatch):
    # eval_report writes into its own folder, not into the checkpoint (which belongs to the model asset)
    monkeypatch.setenv("THREAD_EMBED_DATA_DIR", str(tmp_path / "data"))
    write_retriever_settings(tmp_path / "data" / "reports", weight=0.6, dim=8, chosen_on="dev", scope="global")
    assert not (tiny_model_dir / SETTINGS_FILE).exists()
    from_report = HybridRetriever.from_checkpoint(tiny_model_dir, device="cpu")
    assert (from_report.weight, from_report.dim) == (0.6, 8)
    other = write_retriever_settings(tmp_path / "elsewhere", weight=0.2, dim=16, chosen_on="dev", scope="per_set")
    retriever = HybridRetriever.from_checkpoint(tiny_model_dir, settings=other, device="cpu")
    assert (retriever.weight, retriever.dim) == (0.2, 16)


def test_from_checkpoint_refuses_a_weight_chosen_for_another_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    from thread_embed_pipeline.evaluation.embedders import model_fingerprint

    monkeypatch.setenv("THREAD_EMBED_DATA_DIR", str(tmp_path / "data"))
    reports = tmp_path / "data" / "reports"
    write_retriever_settings(reports, weight=0.6, dim=8, chosen_on="dev", scope="global", fingerprint=model_fingerprint(tiny_model_dir))
    assert json.loads((reports / SETTINGS_FILE).read_text())["model_fingerprint"] == model_fingerprint(tiny_model_dir)
    assert HybridRetriever.from_checkpoint(tiny_model_dir, device="cpu").weight == 0.6  # the checkpoint it was chosen for
    write_retriever_settings(reports, weight=0.6, dim=8, chosen_on="dev", scope="global", fingerprint="0" * 64)
    with pytest.raises(ValueError, match="another checkpoint"):
        HybridRetriever.from_checkpoint(tiny_model_dir, device="cpu")


def _chat_corpus():
    from thread_embed_pipeline_tests.chat_fixtures import make_corpus

    conversations = {
        "toy/log/grub": [("alice", "grub fails to boot after the upgrade", None), ("bob", "reinstall grub-pc from a live cd", 0), ("alice", "thanks, grub works", 1)],
        "toy/log/wifi": [("carol", "my wifi driver is broken", None), ("dave", "try the backports kernel", 0), ("carol", "wifi is back", 1)],
        "toy/log/apt": [("erin", "apt install fails with a lock error", None), ("frank", "another apt process is running, wait for it", 0), ("erin", "ok apt works now", 1)],
    }
    return make_corpus(conversations, split_of=lambda cid: "test")


def test_search_cli_answers_with_threads_and_messages_and_reuses_its_index(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from thread_embed_pipeline.search.cli import main

    monkeypatch.setenv("THREAD_EMBED_DATA_DIR", str(tmp_path / "data"))
    corpus = tmp_path / "mychat.parquet"
    _chat_corpus().to_parquet(corpus, index=False)
    argv = ["how do I fix a broken apt lock?", "--corpus", str(corpus), "--model", str(tiny_model_dir), "--weight", "0", "--k", "2", "--messages", "1"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("1. toy/log/apt ") and "3 messages, test" in lines[0]
    assert "apt install fails with a lock error" in lines[1] and "erin" not in out and "speaker_" in lines[1]  # pseudonymised, as trained
    assert len([line for line in lines if line[:2] in ("1.", "2.")]) == 2
    assert "building the search index of 3 threads" in err
    index = tmp_path / "data" / "search" / "mychat__test.parquet"
    import pyarrow.parquet as pq

    meta = pq.read_schema(index).metadata
    assert meta[b"dim"] == b"32" and meta[b"precision"] == b"float32" and len(meta[b"model_id"]) == 64  # the checkpoint's fingerprint
    assert main(argv) == 0
    again, err = capsys.readouterr()
    assert again == out and "search index" in err and "building" not in err  # the index is reused, same answer
    assert main([*argv, "--dim", "16"]) == 0
    assert "building the search index" in capsys.readouterr().err  # another dim is another index


def test_search_cli_says_what_to_materialise_without_data(tmp_path, monkeypatch, capsys):
    from thread_embed_pipeline.search.cli import main

    monkeypatch.setenv("THREAD_EMBED_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(SystemExit):
        main(["grub?", "--source", "irc_disentangle"])
    assert "materialise irc_disentangle/text first, or pass --corpus" in capsys.readouterr().err


def test_search_index_asset_indexes_with_the_release_and_the_cli_answers_from_it(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import shutil

    import dagster as dg
    import pyarrow.parquet as pq

    from thread_embed_pipeline.orchestration.keys import text_key
    from thread_embed_pipeline.orchestration.release_assets import build_search_index_asset
    from thread_embed_pipeline.search.cli import main
    from thread_embed_pipeline.text import TextSettings, prepare_text

    data = tmp_path / "data"
    monkeypatch.setenv("THREAD_EMBED_DATA_DIR", str(data))
    release = data / "release" / "model"
    shutil.copytree(tiny_model_dir, release)
    write_retriever_settings(release, weight=0.5, dim=16, chosen_on="dev", scope="global")
    text, _ = prepare_text(_chat_corpus(), TextSettings())

    @dg.asset(key=text_key("toy"))
    def toy_text():
        return text

    result = dg.materialize([toy_text, build_search_index_asset("toy")], resources={"io_manager": dg.mem_io_manager})
    assert result.success
    meta = result.asset_materializations_for_node("search_index__toy")[0].metadata
    assert meta["threads"].value == 3 and meta["dim"].value == 16 and meta["precision"].value == "float32" and meta["weight"].value == 0.5
    index = data / "search" / "toy__test.parquet"
    assert pq.read_schema(index).metadata[b"dim"] == b"16"
    # the CLI (default model: the release folder) finds the asset's index and does not re-encode
    (data / "text").mkdir()
    text.to_parquet(data / "text" / "toy.parquet", index=False)
    capsys.readouterr()  # drop the run's own log lines
    assert main(["apt lock error", "--source", "toy", "--k", "1"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("1. toy/log/apt ") and "building" not in err and "search index" in err
    bad = dg.materialize([toy_text, build_search_index_asset("toy")], resources={"io_manager": dg.mem_io_manager}, run_config={"ops": {"search_index__toy": {"config": {"split": "everything"}}}}, raise_on_error=False)
    assert not bad.success


class _WordModel:
    """A stand-in SentenceTransformer that sees words (``test_maxsim.BagOfWords``), reading the first 12 only."""

    def __init__(self):
        from thread_embed_pipeline_tests.evaluation.test_maxsim import BagOfWords

        self._bow = BagOfWords()

    def get_embedding_dimension(self):
        return self._bow.max_dim

    def encode(self, texts, **kwargs):
        return self._bow.embed(list(texts), self._bow.max_dim)


def test_a_maxsim_hit_says_which_message_matched_even_past_the_truncation_point():
    chatter = [f"speaker_{i}: sound pulse printer cups" for i in range(6)]
    messages = [[*chatter, "speaker_1: grub boot error after the kernel update"], ["speaker_2: wifi driver", "speaker_3: ssh key"]]
    docs = ["\n".join(m) for m in messages]
    truncated = HybridRetriever(_WordModel(), weight=1.0).index(docs)
    maxsim = HybridRetriever(_WordModel(), weight=1.0, maxsim="max").index(docs, messages=messages)
    query = "speaker_9: grub boot error"
    assert truncated.hits(query, k=1)[0].message is None and truncated.scores(query)[0] <= truncated.scores(query)[1]  # never read it
    hit = maxsim.hits(query, k=1)[0]
    assert (hit.document, hit.message) == (0, 6)  # the thread, and its last message
    with pytest.raises(ValueError, match="needs every document's messages"):
        HybridRetriever(_WordModel(), weight=0.5, maxsim="max").index(docs)


def test_search_cli_shows_the_matching_message_first_with_a_maxsim_retriever(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import shutil

    from thread_embed_pipeline.search.cli import main

    monkeypatch.setenv("THREAD_EMBED_DATA_DIR", str(tmp_path / "data"))
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, checkpoint)
    write_retriever_settings(checkpoint, weight=0.0, dim=16, chosen_on="dev", scope="global", maxsim="max")
    corpus = tmp_path / "mychat.parquet"
    _chat_corpus().to_parquet(corpus, index=False)
    assert main(["another apt process is running, wait for it", "--corpus", str(corpus), "--model", str(checkpoint), "--k", "1", "--messages", "2"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("1. toy/log/apt ")
    assert lines[1].startswith("     > ") and len(lines) == 3 and not lines[2].startswith("     > ")  # the matching message, marked, first
    assert "message by message" in err
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp_path / "data" / "search" / "mychat__test.messages.parquet")
    assert rows.num_rows == 9 and rows.schema.metadata[b"dim"] == b"16"  # one row per message, beside the threads


def test_the_search_index_reads_what_the_eval_encoded_from_the_embedding_cache(tiny_model_dir, tmp_path, monkeypatch):
    """The messages eval_report encoded with the released model are read from the cache, not encoded
    again, and the index holds the same vectors as one built without the cache."""
    import shutil

    import pyarrow.parquet as pq

    from thread_embed_pipeline.evaluation.embedders import load_local_embedder
    from thread_embed_pipeline.evaluation.embedding_cache import EmbeddingCache
    from thread_embed_pipeline.search.retriever import build_search_index, thread_documents
    from thread_embed_pipeline.text import TextSettings, prepare_text

    monkeypatch.setenv("THREAD_EMBED_DATA_DIR", str(tmp_path / "data"))
    release = tmp_path / "release"
    shutil.copytree(tiny_model_dir, release)
    write_retriever_settings(release, weight=0.5, dim=16, chosen_on="dev", scope="global", maxsim="max")
    text, _ = prepare_text(_chat_corpus(), TextSettings())
    messages = [m for ms in thread_documents(text)["messages"] for m in ms]
    cache = EmbeddingCache(None)
    load_local_embedder(str(release), name="fine_tuned", cache=cache).embed(messages, 16)  # what the eval left
    logged = []
    build_search_index(text, release, tmp_path / "cached.parquet", cache=cache, log=logged.append)
    encoded = [line for line in logged if "encoding" in line and "unique texts" in line]
    assert any(f"{len(set(messages))} of" in line and "found in the embedding cache" in line for line in logged)
    assert encoded and all(f"encoding {len(set(messages))} " not in line for line in encoded)  # only the thread texts
    build_search_index(text, release, tmp_path / "plain.parquet", log=lambda _: None)
    for name in ("cached", "plain"):
        assert (tmp_path / f"{name}.messages.parquet").is_file()
    stack = lambda p: np.stack(pq.read_table(p).column("embedding").to_numpy(zero_copy_only=False))  # noqa: E731
    assert np.allclose(stack(tmp_path / "cached.messages.parquet"), stack(tmp_path / "plain.messages.parquet"), atol=1e-5)
    assert np.allclose(stack(tmp_path / "cached.parquet"), stack(tmp_path / "plain.parquet"), atol=1e-5)
