from pathlib import Path

import dagster as dg
import pytest
import yaml

from thread_embed_pipeline import storage
from thread_embed_pipeline.definitions import defs
from thread_embed_pipeline.sources.registry import SOURCES

ROOT = Path(__file__).resolve().parents[2]


def test_graph_has_one_chain_per_source_and_the_merged_assets():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    for name in SOURCES:
        assert {f"{name}/raw", f"{name}/corpus", f"{name}/text", f"{name}/pairs"} <= keys
        # pairs are built from the privacy-safe text stage, never from the corpus (which keeps upstream names)
        assert graph.get(dg.AssetKey([name, "pairs"])).parent_keys == {dg.AssetKey([name, "text"])}
    assert {"training_pairs", "eval_sets", "model", "eval_report"} <= keys
    assert dg.AssetKey(["irc_disentangle", "pairs"]) in graph.get(dg.AssetKey("training_pairs")).parent_keys
    assert graph.get(dg.AssetKey("eval_report")).parent_keys >= {dg.AssetKey("eval_sets"), dg.AssetKey("dev_eval_sets"), dg.AssetKey("model")}


def test_jobs_and_in_process_executor():
    assert defs.resolve_job_def("thread_embed_job") is not None
    for name in SOURCES:
        job = defs.resolve_job_def(f"refresh_{name}")
        assert job is not None
    assert defs.executor is dg.in_process_executor


def test_disentanglement_has_its_own_job_and_stays_out_of_the_main_one():
    def selected(job: str) -> set[str]:
        return {k.to_user_string() for k in defs.resolve_job_def(job).asset_layer.selected_asset_keys}

    variants = {"disentanglement/features_only", "disentanglement/base", "disentanglement/fine_tuned"}
    assert selected("disentangle_job") == variants | {"disentanglement/comparison"}
    assert not variants & selected("thread_embed_job")
    assert not variants & selected("refresh_irc_disentangle")  # a source refresh does not retrain the disentangler
    assert {"model_onnx", "release/model", "search_index/irc_disentangle"} <= selected("thread_embed_job")
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey(["disentanglement", "features_only"])).parent_keys == {dg.AssetKey(["irc_disentangle", "raw"])}
    assert dg.AssetKey("model") in graph.get(dg.AssetKey(["disentanglement", "fine_tuned"])).parent_keys
    assert graph.get(dg.AssetKey(["disentanglement", "comparison"])).parent_keys == {dg.AssetKey(["irc_disentangle", "raw"]), *(dg.AssetKey(v.split("/")) for v in variants)}


RUN_CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.yaml") if p.name not in ("external_eval_sets.yaml", "my_sources.yaml"))  # those two are lists, not run configs


@pytest.mark.parametrize("config_file", RUN_CONFIGS, ids=lambda p: p.name)
def test_committed_run_configs_are_valid_for_the_main_job(config_file):
    job = defs.resolve_job_def("thread_embed_job")
    dg.validate_run_config(job, yaml.safe_load(config_file.read_text()))


def test_full_recipe_is_bge_base_at_seed_scale():
    config = yaml.safe_load((ROOT / "configs" / "full_recipe.yaml").read_text())
    model = config["ops"]["model"]["config"]
    assert model["base_model"] == "BAAI/bge-base-en-v1.5"
    assert model["matryoshka_dims"] == [768, 512, 256, 128, 64]
    assert config["ops"]["training_pairs"]["config"]["budget"] == 200_000


def test_mirror_folder_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("THREAD_EMBED_MIRROR", str(tmp_path))
    assert storage.default_mirror_dir() == str(tmp_path)
    monkeypatch.setenv("THREAD_EMBED_MIRROR", "none")
    assert storage.default_mirror_dir() is None
    monkeypatch.delenv("THREAD_EMBED_MIRROR")
    assert storage.default_mirror_dir() == str(storage.PROJECT_ROOT.parent / "shared" / "datasets")


def test_dagster_yaml_disables_telemetry():
    assert yaml.safe_load((ROOT / "dagster.yaml").read_text())["telemetry"]["enabled"] is False


def test_external_eval_registry_parses_and_rejects_bad_entries(tmp_path):
    from thread_embed_pipeline.evaluation.registry import load_external_eval_sets

    assert load_external_eval_sets(ROOT / "configs" / "external_eval_sets.yaml") == []
    from thread_embed_pipeline.sources.user import load_user_sources

    assert load_user_sources(ROOT / "configs" / "my_sources.yaml") == []  # the committed list declares none: the default graph is the project's
    good = tmp_path / "ok.yaml"
    good.write_text("external_eval_sets:\n  - {name: chat_pools, path: some/pools.jsonl}\n  - {name: abs, path: /x/beir}\n")
    sets = load_external_eval_sets(good)
    assert [s.name for s in sets] == ["chat_pools", "abs"]
    assert sets[0].path == storage.PROJECT_ROOT / "some" / "pools.jsonl" and str(sets[1].path) == "/x/beir"
    bad = tmp_path / "bad.yaml"
    bad.write_text("external_eval_sets:\n  - {name: x}\n")
    with pytest.raises(ValueError, match="entry 1 needs"):
        load_external_eval_sets(bad)
    dup = tmp_path / "dup.yaml"
    dup.write_text("external_eval_sets:\n  - {name: a, path: p}\n  - {name: a, path: q}\n")
    with pytest.raises(ValueError, match="unique"):
        load_external_eval_sets(dup)


def test_registered_external_sets_become_assets_feeding_the_report(tmp_path):
    from thread_embed_pipeline.definitions import build_definitions
    from thread_embed_pipeline.evaluation.registry import ExternalEvalSet

    custom = build_definitions(external_eval_sets=[ExternalEvalSet("chat_pools", tmp_path / "p.jsonl")])
    graph = custom.resolve_asset_graph()
    key = dg.AssetKey(["external_eval", "chat_pools"])
    assert key in graph.get(dg.AssetKey("eval_report")).parent_keys


def test_model_config_switches_reach_the_training_settings():
    from thread_embed_pipeline.orchestration.training_assets import ModelConfig

    settings = ModelConfig(loss="cached_mnrl", batch_sampler="conversation_disjoint", matryoshka_weights=[1, 1, 1.5, 2], use_negatives=True, save_steps=20).settings()
    assert settings.loss == "cached_mnrl" and settings.batch_sampler == "conversation_disjoint"
    assert settings.matryoshka_weights == (1, 1, 1.5, 2) and settings.matryoshka_dims == (384, 256, 128, 64)
    assert settings.use_negatives and settings.save_steps == 20


def _dg(*args: str, tmp_path) -> "subprocess.CompletedProcess":
    import os
    import shutil
    import subprocess
    import sys

    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "HF_HUB_OFFLINE": "1", "THREAD_EMBED_DATA_DIR": str(tmp_path / "data")}
    dg_bin = Path(sys.executable).with_name("dg")
    return subprocess.run([str(dg_bin), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_dg_loads_the_project_as_pyproject_declares_it(tmp_path):
    """`[tool.dg]` makes the project a dg project: `dg check defs` passes and `dg list defs` lists the jobs and assets."""
    import json

    check = _dg("check", "defs", tmp_path=tmp_path)
    assert check.returncode == 0, check.stderr[-2000:]
    assert "All definitions loaded successfully" in check.stdout + check.stderr
    listed = json.loads(_dg("list", "defs", "--json", tmp_path=tmp_path).stdout)
    assert {"thread_embed_job", "message_index_job", "refresh_irc_disentangle"} <= {j["name"] for j in listed["jobs"]}
    assert {"model", "eval_report", "message_index"} <= {a["asset_key"] for a in listed["assets"]}
