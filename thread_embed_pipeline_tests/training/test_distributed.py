"""DDP training on CPU: two gloo processes under torchrun, launched by the ``model`` asset through
Dagster Pipes or by hand, with the tiny model."""

import json
import os
import re
import subprocess
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from thread_embed_pipeline.training.batching import ConversationDisjointBatchSampler, GlobalBatchShards
from thread_embed_pipeline.training.launch import launch_command, settings_to_json
from thread_embed_pipeline.orchestration.resources import TrainerResource
from thread_embed_pipeline.orchestration.training_assets import model
from thread_embed_pipeline.training.settings import TrainingSettings

PROBE = "thread_embed_pipeline_tests.ddp_probe"
BATCH = 4
N_PAIRS = 64


def _pairs(n: int = N_PAIRS) -> pd.DataFrame:
    return pd.DataFrame({
        "anchor": [f"question {i}: why does apt fail on mirror {i}?" for i in range(n)],
        "positive": [f"reply {i}: switch mirror {i} and run apt update" for i in range(n)],
        "conversation_id": [f"conv{i // 2}" for i in range(n)],  # two pairs per conversation
        "strategy": "thread", "source": "irc_disentangle",
    })


def _shards(inner, world: int) -> list[list[list[int]]]:
    """What accelerate's BatchSamplerShard hands each rank from GlobalBatchShards, per rank."""
    from accelerate.data_loader import BatchSamplerShard

    sampler = GlobalBatchShards(inner, world)
    return [list(BatchSamplerShard(sampler, num_processes=world, process_index=r, even_batches=False)) for r in range(world)]


def test_global_batches_keep_every_step_conversation_disjoint_across_ranks():
    groups = [f"c{i // 3}" for i in range(50)]  # 3 rows per conversation
    inner = ConversationDisjointBatchSampler(groups, batch_size=8, seed=3)  # a global batch: 2 ranks x 4
    ranks = _shards(inner, 2)
    assert len(ranks[0]) == len(ranks[1])
    for step, (a, b) in enumerate(zip(*ranks)):
        assert len(a) == len(b) and not set(a) & set(b), step
        step_groups = [groups[i] for i in a + b]
        assert len(step_groups) == len(set(step_groups)), f"step {step}: one conversation on both ranks"
    trained = sorted(i for rank in ranks for batch in rank for i in batch)
    assert trained == list(range(50))  # 50 rows: the last global batch (2 rows) splits 1 + 1, nothing lost


def test_an_uneven_last_global_batch_loses_only_its_remainder_and_counts_it():
    inner = ConversationDisjointBatchSampler(list(range(21)), batch_size=8, seed=0)  # batches of 8, 8, 5
    sampler = GlobalBatchShards(inner, 2)
    batches = list(sampler)
    assert [len(b) for b in batches] == [4, 4, 4, 4, 2, 2] and sampler.dropped_rows == 1
    with pytest.raises(ValueError, match="world_size"):
        GlobalBatchShards(inner, 0)


@pytest.fixture(scope="module")
def asset_runs(tmp_path_factory, tiny_model_dir):
    """The model asset with nproc_per_node 1 and 2 (through Dagster Pipes), recording each rank's batches."""
    base = tmp_path_factory.mktemp("ddp")
    pairs = _pairs()

    @dg.asset(name="training_pairs")
    def training_pairs() -> pd.DataFrame:
        return pairs

    runs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH")])))
        for n in (1, 2):
            probe = base / f"probe{n}"
            probe.mkdir()
            patch.setenv("DDP_PROBE_DIR", str(probe))
            config = {
                "base_model": str(tiny_model_dir), "matryoshka_dims": [32, 16], "batch_size": BATCH, "max_seq_length": 32, "bf16": False,
                "batch_sampler": "conversation_disjoint", "logging_steps": 1, "time_budget_s": 600.0,  # the budget's cross-rank clock runs, cuts nothing
                "nproc_per_node": n, "callbacks": [f"{PROBE}:RecordBatches"], "model_name": f"m{n}",
            }
            result = dg.materialize(
                [training_pairs, model],
                resources={"io_manager": dg.mem_io_manager, "trainer": TrainerResource(models_dir=str(base / "models"), device="cpu"), "pipes_subprocess_client": dg.PipesSubprocessClient()},
                run_config={"ops": {"model": {"config": config}}},
            )
            assert result.success
            records = {int(p.stem[4:]): [json.loads(line) for line in p.read_text().splitlines()] for p in sorted(probe.glob("rank*.jsonl"))}
            runs[n] = {"meta": result.asset_materializations_for_node("model")[0].metadata, "ranks": records, "models": base / "models"}
    return runs


def test_two_gloo_processes_train_disjoint_shares_of_each_step(asset_runs):
    ranks = asset_runs[2]["ranks"]
    assert sorted(ranks) == [0, 1]
    conversation = {row.anchor: row.conversation_id for row in _pairs().itertuples()}
    assert len(ranks[0]) == len(ranks[1]) == N_PAIRS // (2 * BATCH)
    for step, (a, b) in enumerate(zip(ranks[0], ranks[1])):
        assert len(a["anchors"]) == len(b["anchors"]) == BATCH
        assert not set(a["anchors"]) & set(b["anchors"]), f"step {step}: a row on both ranks"
        convs = [conversation[t] for t in a["anchors"] + b["anchors"]]
        assert len(convs) == len(set(convs)), f"step {step}: one conversation on both ranks (a false negative once gathered)"
    assert sorted(t for r in ranks.values() for step in r for t in step["anchors"]) == sorted(conversation)  # every pair once
    # seeds: the data order is shared, the torch RNG (dropout) is seed + rank
    assert {s["seed"] for s in ranks[0]} == {42} and {s["seed"] for s in ranks[1]} == {43}
    assert len(asset_runs[1]["ranks"][0]) == N_PAIRS // BATCH  # one process: twice the steps


def test_the_gathered_loss_scores_every_rank_and_the_metadata_keeps_its_schema(asset_runs):
    one, two = asset_runs[1]["meta"], asset_runs[2]["meta"]
    assert one["candidates_per_anchor"].value == BATCH and two["candidates_per_anchor"].value == 2 * BATCH  # 2x the negatives
    assert (one["processes"].value, two["processes"].value) == (1, 2)
    assert (one["steps"].value, two["steps"].value) == (N_PAIRS // BATCH, N_PAIRS // (2 * BATCH))
    assert one["train_pairs"].value == two["train_pairs"].value == N_PAIRS
    assert set(one) == set(two) and {k: type(v) for k, v in one.items()} == {k: type(v) for k, v in two.items()}
    for n in (1, 2):  # rank 0 alone saved: one checkpoint, no leftover temporary or work folders
        assert (asset_runs[n]["models"] / f"m{n}" / "model.safetensors").is_file()
    assert sorted(p.name for p in asset_runs[2]["models"].iterdir()) == ["m1", "m2"]


def test_an_interrupted_ddp_run_resumes_from_its_last_checkpoint(tmp_path, tiny_model_dir):
    settings = TrainingSettings(base_model=str(tiny_model_dir), matryoshka_dims=(32, 16), batch_size=BATCH, max_seq_length=32, bf16=False, logging_steps=1, save_steps=1, batch_sampler="conversation_disjoint")
    pairs, spec, out = tmp_path / "pairs.parquet", tmp_path / "settings.json", tmp_path / "m"
    _pairs().to_parquet(pairs, index=False)
    spec.write_text(settings_to_json(settings))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[2])}

    def launch(*callbacks: str) -> subprocess.CompletedProcess:
        command = launch_command(2, pairs=pairs, settings=spec, output_dir=out, device="cpu", callbacks=callbacks)
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    crashed = launch(f"{PROBE}:CrashAtStep3")
    assert crashed.returncode != 0 and "simulated interruption after step 3" in crashed.stderr
    assert not out.exists()
    assert sorted(p.name for p in (tmp_path / ".m.trainer").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]

    resumed = launch()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stderr  # two processes share stderr: lines can interleave, so match anywhere
    for rank in (0, 1):
        assert re.search(rf"\[rank {rank}/2\] resumed from checkpoint \S*checkpoint-2 at step 2", log)
    assert re.findall(r"\[rank (\d)/2\] saved ", log) == ["0"]  # rank 0 alone saved
    result = json.loads((out / "training_config.json").read_text())["result"]
    assert result["resumed_from_step"] == 2 and result["steps"] == N_PAIRS // (2 * BATCH) and result["processes"] == 2
    steps = [int(step) for step in re.findall(r"\[rank 0/2\] training step (\d+)/", log)]
    assert steps == list(range(3, N_PAIRS // (2 * BATCH) + 1))  # the global step continued, not restarted
    assert not (tmp_path / ".m.trainer").exists()
    from sentence_transformers import SentenceTransformer

    vectors = SentenceTransformer(str(out), device="cpu").encode(["apt fails"])
    assert vectors.shape == (1, 32) and np.isfinite(vectors).all()


def test_one_launched_process_trains_the_same_weights_as_in_process(asset_runs, tiny_model_dir, tmp_path):
    import hashlib

    from thread_embed_pipeline.orchestration.training_assets import ModelConfig
    from thread_embed_pipeline.training.trainer import train_matryoshka_model

    config = ModelConfig(base_model=str(tiny_model_dir), matryoshka_dims=[32, 16], batch_size=BATCH, max_seq_length=32, bf16=False, batch_sampler="conversation_disjoint", logging_steps=1, time_budget_s=600.0)
    train_matryoshka_model(_pairs(), config.settings(), tmp_path / "in_process", log=lambda _: None, device="cpu")
    digest = lambda folder: hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()  # noqa: E731
    assert digest(tmp_path / "in_process") == digest(asset_runs[1]["models"] / "m1")
    assert digest(asset_runs[1]["models"] / "m1") != digest(asset_runs[2]["models"] / "m2")  # DDP: other batches, other weights
