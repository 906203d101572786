"""The whole asset graph on a slice of the real mirror with the tiny model, in an ephemeral instance."""

import dagster as dg
import pandas as pd
import pytest

from thread_embed_pipeline.definitions import defs
from thread_embed_pipeline.io import ParquetIOManager
from thread_embed_pipeline.resources import ChatSourcesResource, TrainerResource
from thread_embed_pipeline.sources.registry import SOURCES


def _run_config(tiny_model_dir) -> dict:
    return {
        "ops": {
            "training_pairs": {"config": {"budget": 96}},
            "model": {"config": {"base_model": str(tiny_model_dir), "matryoshka_dims": [32, 16], "batch_size": 16, "max_seq_length": 32, "bf16": False}},
            "eval_sets": {"config": {"max_queries_per_set": 20, "pool_size": 20}},
        }
    }


@pytest.fixture(scope="module")
def graph_run(tmp_path_factory, mirror_root, tiny_model_dir):
    """Materialise everything once; returns (instance, resources, run result, data dir)."""
    base = tmp_path_factory.mktemp("e2e")
    resources = {
        "io_manager": ParquetIOManager(base_dir=str(base / "data")),
        "chat_sources": ChatSourcesResource(mirror_dir=str(mirror_root), max_files_per_folder=1),
        "trainer": TrainerResource(models_dir=str(base / "models"), device="cpu"),
    }
    instance = dg.DagsterInstance.ephemeral()
    assets = list(defs.assets)
    result = dg.materialize([*assets, *defs.asset_checks], instance=instance, resources=resources, run_config=_run_config(tiny_model_dir))
    return instance, resources, result, base, assets


def test_whole_graph_materialises_and_report_covers_every_model_task_dim(graph_run, monkeypatch):
    _, _, result, base, _ = graph_run
    assert result.success
    report = pd.read_parquet(base / "data" / "eval_report.parquet")
    eval_sets = pd.read_parquet(base / "data" / "eval_sets.parquet")
    tasks = eval_sets.groupby(["source", "task"]).size().index
    assert len(tasks) >= 4  # every source's thread and response sets that have enough test conversations
    for model in ("base", "fine_tuned", "bm25"):
        for source, task in tasks:
            for dim in (32, 16):
                rows = report[(report["model"] == model) & (report["source"] == source) & (report["task"] == task) & (report["dim"] == dim)]
                assert set(rows["metric"]) == {"mrr@10", "ndcg@10", "recall@1", "recall@5", "recall@10"}, (model, source, task, dim)
    assert report["value"].between(0, 1).all()
    assert (report["n"] > 0).all()
    checkpoint = base / "models" / "thread-embed-minilm"
    assert (checkpoint / "model.safetensors").exists()
    card = (checkpoint / "README.md").read_text()
    assert "fine_tuned" in card and "bm25" in card
    # every asset's metadata accounts for its input: read = kept + dropped
    for name in SOURCES:
        mats = result.asset_materializations_for_node(f"corpus__{name}")
        meta = mats[0].metadata
        assert meta["read"].value == meta["kept"].value + meta["dropped_total"].value
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)


def test_rematerialising_one_source_reruns_only_its_chain_and_the_merged_assets(graph_run, tiny_model_dir):
    instance, resources, _, _, assets = graph_run
    selection = dg.AssetSelection.assets(dg.AssetKey(["raw", "slack_dev_chats"])).downstream()
    result = dg.materialize(assets, selection=selection, instance=instance, resources=resources, run_config=_run_config(tiny_model_dir))
    assert result.success
    materialised = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events() for m in [m.event_specific_data.materialization]}
    assert materialised == {"raw/slack_dev_chats", "corpus/slack_dev_chats", "pairs/slack_dev_chats", "eval_sets", "training_pairs", "model", "eval_report"}
