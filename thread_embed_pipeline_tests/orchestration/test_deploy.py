"""The Kubernetes deployment files (docs/deploy.md): the definitions load with the k8s executor, and
the shipped run config validates against them. No cluster is needed: this is Dagster's own config check."""

from pathlib import Path

import dagster as dg
import pytest
import yaml

from thread_embed_pipeline.definitions import build_definitions, select_executor
from thread_embed_pipeline.orchestration.source_chain import STAGE_TAG

ROOT = Path(__file__).resolve().parents[2]
RUN_CONFIG = ROOT / "deploy" / "k8s" / "run_config.yaml"
VALUES = ROOT / "deploy" / "k8s" / "values.yaml"


def _merged(*paths: Path) -> dict:
    """Run-config files merged as ``dagster job execute -c a -c b`` merges them (later files win)."""
    from dagster._utils.merger import deep_merge_dicts

    out: dict = {}
    for path in paths:
        out = deep_merge_dicts(out, yaml.safe_load(path.read_text()))
    return out


@pytest.fixture(scope="module")
def k8s_defs():
    pytest.importorskip("dagster_k8s")
    return build_definitions(external_eval_sets=[], streamed_sources=(), executor="k8s")


def test_the_k8s_run_config_validates_against_the_main_job(k8s_defs):
    from dagster_k8s import k8s_job_executor

    job = k8s_defs.resolve_job_def("thread_embed_job")
    assert job.executor_def is k8s_job_executor
    config = _merged(ROOT / "configs" / "full_recipe.yaml", RUN_CONFIG)
    dg.validate_run_config(job, config)  # raises DagsterInvalidConfigError on any unknown or mistyped field
    execution = config["execution"]["config"]
    assert execution["per_step_k8s_config"]["model"]["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == config["ops"]["model"]["config"]["nproc_per_node"]
    assert "model" in {node.name for node in job.nodes_in_topological_order}  # the per-step key names a real step


def test_a_broken_run_config_is_caught(k8s_defs):
    job = k8s_defs.resolve_job_def("thread_embed_job")
    broken = yaml.safe_load(RUN_CONFIG.read_text())
    broken["execution"]["config"]["max_concurrency"] = 4  # typo of max_concurrent
    with pytest.raises(dg.DagsterInvalidConfigError, match="max_concurrency"):
        dg.validate_run_config(job, broken)


def test_the_tag_limit_matches_the_chain_steps_tags(k8s_defs):
    job = k8s_defs.resolve_job_def("sources_parallel_job")
    limits = yaml.safe_load(RUN_CONFIG.read_text())["execution"]["config"]["tag_concurrency_limits"]
    dg.validate_run_config(job, {"execution": {"config": {"tag_concurrency_limits": limits}}})
    tagged = {node.name: node.definition.tags.get(STAGE_TAG) for node in job.nodes_in_topological_order}
    for limit in limits:
        assert limit["key"] == STAGE_TAG and sum(value == limit["value"] for value in tagged.values()) == 3  # one raw step per mirrored source


def test_the_helm_values_and_the_run_config_agree():
    values, run = yaml.safe_load(VALUES.read_text()), yaml.safe_load(RUN_CONFIG.read_text())["execution"]["config"]
    deployment = values["dagster-user-deployments"]["deployments"][0]
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["THREAD_EMBED_EXECUTOR"] == "k8s"
    assert {f"{k}={v}" for k, v in env.items() if k.startswith("THREAD_EMBED_") and k != "THREAD_EMBED_EXECUTOR"} <= set(run["env_vars"])
    claim = deployment["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert claim == run["volumes"][0]["persistent_volume_claim"]["claim_name"] == values["runLauncher"]["config"]["k8sRunLauncher"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "thread_embed_pipeline.definitions"]
    limit = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"][0]
    defs = build_definitions(external_eval_sets=[], streamed_sources=())
    for name in ("thread_embed_job", "retrain_and_eval_job"):  # the jobs that train carry the queue's tag
        assert defs.resolve_job_def(name).tags.get(limit["key"]) == limit["value"]


def test_an_unknown_executor_is_a_clear_error():
    with pytest.raises(ValueError, match="THREAD_EMBED_EXECUTOR='celery'"):
        select_executor("celery")
    assert select_executor("in_process")[0] is dg.in_process_executor


def test_the_ddp_config_validates_on_the_local_jobs():
    defs = build_definitions(external_eval_sets=[], streamed_sources=())
    config = _merged(ROOT / "configs" / "full_recipe.yaml", ROOT / "configs" / "ddp.yaml")
    for name in ("thread_embed_job",):  # full_recipe.yaml also configures eval_sets, which only the main job has
        dg.validate_run_config(defs.resolve_job_def(name), config)
    assert config["ops"]["model"]["config"]["nproc_per_node"] > 1
