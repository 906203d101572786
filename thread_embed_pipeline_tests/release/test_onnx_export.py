"""ONNX export of a checkpoint: files in the Hub layout, outputs that match PyTorch, loading as a model row."""

import numpy as np
import pytest

from thread_embed_pipeline.evaluation.embedders import load_local_embedder
from thread_embed_pipeline.evaluation.embedding_cache import EmbeddingCache
from thread_embed_pipeline.models import INT8_FILE, ONNX_FILE, load_onnx_model, onnx_specs, split_onnx_spec
from thread_embed_pipeline.release.onnx import export_onnx
from thread_embed_pipeline.release.hub import assemble_release
from thread_embed_pipeline.models import load_sentence_model

TEXTS = ["speaker_1: apt is broken again", "speaker_2: run apt --fix-broken install", "ok", "speaker_1: thanks, that fixed the held packages " * 6]


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "tiny-onnx"
    return export_onnx(tiny_model_dir, out, log=lambda m: None)


def test_export_writes_fp32_and_int8_files_beside_the_checkpoint_files(exported, tiny_model_dir):
    folder = exported["folder"]
    from pathlib import Path

    files = {p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file()}
    assert {ONNX_FILE, INT8_FILE, "modules.json", "model.safetensors"} <= files
    assert exported["inputs"][:2] == ["input_ids", "attention_mask"]
    # the int8 file is smaller: its MatMul weights are one byte each
    assert exported["variants"]["onnx_int8"]["bytes"] < exported["variants"]["onnx"]["bytes"]
    assert exported["variants"]["onnx"]["min_cosine_vs_pytorch"] >= 0.9999
    # ONNX Runtime fused each layer's attention into one Attention node (what makes the export fast)
    import json

    layers = json.loads((tiny_model_dir / "config.json").read_text())["num_hidden_layers"]
    assert exported["fused"].get("Attention") == layers and exported["fused"].get("SkipLayerNormalization")
    import onnx

    ops = {n.op_type for n in onnx.load(str(Path(folder) / INT8_FILE)).graph.node}
    assert "QAttention" in ops and "MatMulInteger" in ops  # the attention weights are int8 too


def test_onnx_models_match_pytorch_on_texts_and_batch_sizes_never_seen_at_export(exported, tiny_model_dir):
    reference = load_sentence_model(str(tiny_model_dir), device="cpu").encode(TEXTS, normalize_embeddings=True)
    fp32 = load_onnx_model(exported["folder"], ONNX_FILE).encode(TEXTS, batch_size=3, normalize_embeddings=True)
    int8 = load_onnx_model(exported["folder"], INT8_FILE).encode(TEXTS, batch_size=2, normalize_embeddings=True)
    assert fp32.shape == reference.shape == int8.shape
    np.testing.assert_allclose(fp32, reference, atol=1e-4)
    cosine = np.sum(int8 * reference, axis=1)
    assert cosine.min() > 0.9 and not np.allclose(int8, reference, atol=1e-6)  # close, and really quantised


def test_an_onnx_spec_is_a_model_row_with_its_own_cache_key(exported, tmp_path):
    specs = onnx_specs(exported["folder"], "fine_tuned")
    assert set(specs) == {"fine_tuned_onnx", "fine_tuned_onnx_int8"}
    assert split_onnx_spec(specs["fine_tuned_onnx_int8"])[1] == INT8_FILE
    assert split_onnx_spec(str(tmp_path)) is None
    cache = EmbeddingCache(tmp_path / "cache.duckdb")
    embedders = {name: load_local_embedder(spec, name=name, cache=cache) for name, spec in specs.items()}
    keys = {e.cache_model for e in embedders.values()}
    assert len(keys) == 2 and all(k.startswith("local:") for k in keys)
    vectors = embedders["fine_tuned_onnx"].embed(TEXTS, 16)
    assert vectors.shape == (len(TEXTS), 16)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_a_folder_without_an_export_says_what_to_materialise(tiny_model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="model_onnx"):
        load_onnx_model(tiny_model_dir, INT8_FILE)
    with pytest.raises(FileNotFoundError, match="modules.json"):
        export_onnx(tmp_path, tmp_path / "out")


def test_the_release_folder_ships_the_onnx_files_in_the_hub_layout(exported, tiny_model_dir, tmp_path):
    from pathlib import Path

    manifest = assemble_release(tiny_model_dir, tmp_path / "release", card="---\nlicense: apache-2.0\n---\n# card\n", onnx_dir=Path(exported["folder"]) / "onnx")
    paths = {f["path"] for f in manifest["files"]}
    assert {ONNX_FILE, INT8_FILE, "model.safetensors", "README.md"} <= paths
    got = load_onnx_model(tmp_path / "release", INT8_FILE).encode(TEXTS[:2])
    assert got.shape[0] == 2
    with pytest.raises(FileNotFoundError, match="model_onnx"):
        assemble_release(tiny_model_dir, tmp_path / "r2", card="# c\n", onnx_dir=tmp_path / "empty")
