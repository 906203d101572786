import json

import numpy as np
import pandas as pd
import pytest
from sentence_transformers import SentenceTransformer

from thread_embed_pipeline.training.settings import TrainingSettings
from thread_embed_pipeline.models import resolve_model_path
from thread_embed_pipeline.training.trainer import train_matryoshka_model


def _pairs(n: int) -> pd.DataFrame:
    topics = ["grub boot error", "wifi driver broken", "apt install fails", "mount usb disk", "sound not working", "xorg screen blank", "ssh key denied", "python import error"]
    rows = []
    for i in range(n):
        t = topics[i % len(topics)]
        rows.append({"anchor": f"user{i}: help with {t} number {i}?", "positive": f"helper{i}: for {t} try the fix {i}\nuser{i}: thanks, {t} solved"})
    return pd.DataFrame(rows)


def test_training_writes_a_loadable_safetensors_checkpoint_that_changed(tiny_model_dir, tmp_path):
    settings = TrainingSettings(base_model=str(tiny_model_dir), matryoshka_dims=(32, 16, 8), batch_size=8, epochs=1, max_seq_length=32, learning_rate=1e-3, bf16=False, logging_steps=1)
    out = tmp_path / "models" / "toy"
    logs: list[str] = []
    _, result = train_matryoshka_model(_pairs(48), settings, out, log=logs.append, device="cpu")
    assert (out / "model.safetensors").exists()
    assert result.steps == 6 and result.train_pairs == 48
    assert result.final_loss is not None and np.isfinite(result.final_loss)
    assert any("training step" in line for line in logs)
    config = json.loads((out / "training_config.json").read_text())
    assert config["settings"]["matryoshka_dims"] == [32, 16, 8]

    base, tuned = SentenceTransformer(str(tiny_model_dir), device="cpu"), SentenceTransformer(str(out), device="cpu")
    text = ["user1: help with grub boot error?"]
    assert not np.allclose(base.encode(text), tuned.encode(text))
    # eval keeps the base model's max_seq_length, not the shorter training truncation
    assert tuned.max_seq_length == base.max_seq_length
    assert not list(tmp_path.joinpath("models").glob(".toy.*"))  # no temp or trainer folders left behind


def test_retraining_replaces_the_checkpoint_atomically(tiny_model_dir, tmp_path):
    settings = TrainingSettings(base_model=str(tiny_model_dir), matryoshka_dims=(32, 16), batch_size=8, max_seq_length=32, bf16=False)
    out = tmp_path / "m"
    train_matryoshka_model(_pairs(16), settings, out, log=lambda _: None, device="cpu")
    first = (out / "model.safetensors").read_bytes()
    train_matryoshka_model(_pairs(16), TrainingSettings(**{**settings.__dict__, "seed": 5, "learning_rate": 1e-2}), out, log=lambda _: None, device="cpu")
    assert (out / "model.safetensors").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


@pytest.mark.parametrize(
    "dims, message",
    [((16, 32), "descending"), ((64, 32), "exceed"), ((), "empty")],
)
def test_bad_matryoshka_dims_are_rejected(tiny_model_dir, tmp_path, dims, message):
    settings = TrainingSettings(base_model=str(tiny_model_dir), matryoshka_dims=dims, batch_size=4, bf16=False)
    with pytest.raises(ValueError, match=message):
        train_matryoshka_model(_pairs(8), settings, tmp_path / "x", log=lambda _: None, device="cpu")


def test_too_few_pairs_for_one_batch_is_a_clear_error(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="fewer than one batch"):
        train_matryoshka_model(_pairs(3), TrainingSettings(base_model=str(tiny_model_dir), batch_size=8), tmp_path / "x", device="cpu")


def test_bundled_minilm_resolves_to_the_package_weights():
    path = resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")
    assert path.endswith("model")
    assert resolve_model_path("BAAI/bge-base-en-v1.5") == "BAAI/bge-base-en-v1.5"


def _conversation_pairs(n: int, per_conversation: int = 3, negatives: bool = True) -> pd.DataFrame:
    frame = _pairs(n)
    frame["conversation_id"] = [f"conv{i // per_conversation}" for i in range(n)]
    frame["strategy"], frame["source"], frame["split"] = "thread", "toy", "train"
    if negatives:  # a hard negative from another conversation, half-way round
        frame["negative"] = [frame["positive"][(i + n // 2) % n].replace("helper", "other") for i in range(n)]
    return frame


def test_conversation_disjoint_cached_mnrl_weighted_triplet_run(tiny_model_dir, tmp_path, monkeypatch):
    from thread_embed_pipeline.training import batching

    seen: list[list[int]] = []
    plan = batching.ConversationDisjointBatchSampler.plan
    monkeypatch.setattr(batching.ConversationDisjointBatchSampler, "plan", lambda self: seen.extend(batches := plan(self)) or batches)
    pairs = _conversation_pairs(16, per_conversation=2)  # 2 batches: a conversation can have at most 2 pairs
    settings = TrainingSettings(
        base_model=str(tiny_model_dir), matryoshka_dims=(32, 16, 8), matryoshka_weights=(1.0, 0.5, 0.25), batch_size=8,
        max_seq_length=32, learning_rate=1e-3, bf16=False, logging_steps=1,
        batch_sampler="conversation_disjoint", loss="cached_mnrl", mini_batch_size=4,
    )
    logs: list[str] = []
    _, result = train_matryoshka_model(pairs, settings, tmp_path / "m", log=logs.append, device="cpu")
    assert result.steps == 2 and result.columns == ["anchor", "positive", "negative"]
    assert result.final_loss is not None and np.isfinite(result.final_loss)
    assert any("triplets" in line for line in logs)
    assert result.peak_rss_mb and result.peak_rss_mb > 10 and result.peak_gpu_mb is None
    assert seen, "the conversation-disjoint sampler was not used"
    for batch in seen:
        assert len(set(pairs["conversation_id"][batch])) == len(batch)
    config = json.loads((tmp_path / "m" / "training_config.json").read_text())
    assert config["settings"]["loss"] == "cached_mnrl" and config["result"]["peak_rss_mb"] == result.peak_rss_mb


def test_partial_negatives_train_as_pairs_unless_use_negatives(tiny_model_dir):
    from thread_embed_pipeline.training.inputs import _select_columns

    pairs = _conversation_pairs(10)
    pairs.loc[[1, 4, 7], "negative"] = [None, "", np.nan]
    logs: list[str] = []
    frame, columns, dropped = _select_columns(pairs, TrainingSettings(), logs.append)
    assert columns == ["anchor", "positive"] and len(frame) == 10 and dropped == 0 and "7 of 10" in logs[-1]
    frame, columns, dropped = _select_columns(pairs, TrainingSettings(use_negatives=True), logs.append)
    assert columns == ["anchor", "positive", "negative"] and len(frame) == 7 and dropped == 3
    assert list(frame.index) == list(range(7)) and frame["negative"].map(bool).all()
    with pytest.raises(ValueError, match="no 'negative' column"):
        _select_columns(_pairs(4), TrainingSettings(use_negatives=True), logs.append)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"matryoshka_weights": (1.0, 0.5)}, "one weight per dim"),
        ({"matryoshka_weights": (1.0, 0.0, 1.0)}, "positive"),
        ({"batch_sampler": "random"}, "batch_sampler must be"),
        ({"loss": "triplet"}, "loss must be"),
        ({"save_steps": 0}, "save_steps"),
    ],
)
def test_bad_options_are_rejected(tiny_model_dir, tmp_path, overrides, message):
    settings = TrainingSettings(base_model=str(tiny_model_dir), matryoshka_dims=(32, 16, 8), batch_size=4, bf16=False, **overrides)
    with pytest.raises(ValueError, match=message):
        train_matryoshka_model(_pairs(8), settings, tmp_path / "x", log=lambda _: None, device="cpu")


def test_conversation_disjoint_needs_conversation_ids(tmp_path):
    with pytest.raises(ValueError, match="conversation_id"):
        train_matryoshka_model(_pairs(8), TrainingSettings(batch_size=4, batch_sampler="conversation_disjoint"), tmp_path / "x", device="cpu")


def test_an_interrupted_run_resumes_from_its_last_checkpoint(tiny_model_dir, tmp_path):
    from transformers import TrainerCallback

    class Crash(TrainerCallback):
        def on_step_end(self, _args, state, _control, **_kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt("simulated interruption after step 3")

    settings = TrainingSettings(base_model=str(tiny_model_dir), matryoshka_dims=(32, 16), batch_size=4, max_seq_length=32, bf16=False, logging_steps=1, save_steps=1, batch_sampler="conversation_disjoint")
    pairs, out = _conversation_pairs(16, per_conversation=2, negatives=False), tmp_path / "m"
    work = tmp_path / ".m.trainer"
    with pytest.raises(KeyboardInterrupt):
        train_matryoshka_model(pairs, settings, out, log=lambda _: None, device="cpu", callbacks=[Crash()])
    assert not out.exists()
    assert sorted(p.name for p in work.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]  # the last 2 kept; step 3 crashed before its save

    logs: list[str] = []
    _, result = train_matryoshka_model(pairs, settings, out, log=logs.append, device="cpu")
    assert result.resumed_from_step == 2 and result.steps == 4
    assert any("resumed from checkpoint" in line and "checkpoint-2" in line for line in logs)
    assert [entry["step"] for entry in result.loss_history] == [3, 4]  # global step continued, not restarted
    assert (out / "model.safetensors").exists() and not work.exists()  # work folder gone after the save


def test_step_budget_sizes_the_run_from_the_measured_step_time():
    from thread_embed_pipeline.training.budget import StepBudget

    budget = StepBudget(planned_steps=63, warmup_steps=6, time_budget_s=300, calibration_steps=3, step_quantum=4)
    budget.observe(1, 30.0)  # the first step carries start-up costs and is not measured
    for step in (2, 3):
        budget.observe(step, 30.0 + 20.0 * (step - 1))
        assert not budget.decided and budget.total_steps == 63
    budget.observe(4, 90.0)  # 20 s/step over steps 2-4: 4 + (300 - 90) // 20 = 14 steps fit -> 12 (quantum 4)
    assert budget.decided and budget.total_steps == 12
    assert "20.00 s/step" in budget.reason and "12 of 63" in budget.reason
    # the schedule is complete for the new total: warm-up, then linear decay to 0 at step 12
    assert budget.lr_factor(0) < budget.lr_factor(5) <= 1.0
    assert budget.lr_factor(6) == pytest.approx(1.0) and budget.lr_factor(12) == 0.0
    budget.observe(8, 120.0)  # faster than planned later on: never raised
    assert budget.total_steps == 12
    budget.observe(9, 500.0)  # far slower: cut to what is left (at least one more step)
    assert budget.total_steps == 10 and "cut to 10" in budget.reason


def test_step_budget_keeps_every_step_when_they_fit_or_without_a_budget():
    from thread_embed_pipeline.training.budget import StepBudget

    fast = StepBudget(planned_steps=20, warmup_steps=2, time_budget_s=300)
    for step, t in ((1, 5.0), (2, 6.0), (3, 7.0), (4, 8.0)):
        fast.observe(step, t)
    assert fast.decided and fast.total_steps == 20 and "all 20 steps fit" in fast.reason
    unlimited = StepBudget(planned_steps=20, warmup_steps=2, time_budget_s=None)
    assert unlimited.decided and unlimited.total_steps == 20
    slow = StepBudget(planned_steps=20, warmup_steps=2, time_budget_s=10)
    for step, t in ((1, 5.0), (2, 15.0), (3, 25.0), (4, 35.0)):
        slow.observe(step, t)
    assert slow.total_steps == slow.min_steps == 4  # never below the steps already taken to measure
    with pytest.raises(ValueError, match="time_budget_s"):
        StepBudget(planned_steps=5, warmup_steps=0, time_budget_s=0)


def test_a_time_budget_trains_fewer_steps_and_records_why(tiny_model_dir, tmp_path):
    pairs = pd.DataFrame({"anchor": [f"question {i} about topic {i}" for i in range(160)], "positive": [f"answer {i} on topic {i}" for i in range(160)]})
    settings = TrainingSettings(base_model=str(tiny_model_dir), matryoshka_dims=(32, 16), batch_size=8, max_seq_length=16, bf16=False, time_budget_s=1e-6, batch_sampler="length_grouped")
    _, result = train_matryoshka_model(pairs, settings, tmp_path / "m", log=lambda m: None)
    assert result.planned_steps == 20 and result.steps == 4  # calibrated on steps 2-4, then stopped
    assert result.train_pairs == 32 and "4 of 20 steps" in result.budget_reason
    assert (tmp_path / "m" / "model.safetensors").exists()


def test_frozen_layers_stay_unchanged_and_the_rest_trains(tiny_model_dir, tmp_path):
    pairs = pd.DataFrame({"anchor": [f"question {i} about topic {i}" for i in range(32)], "positive": [f"answer {i} on topic {i}" for i in range(32)]})
    settings = TrainingSettings(base_model=str(tiny_model_dir), matryoshka_dims=(32, 16), batch_size=8, max_seq_length=16, bf16=False, frozen_layers=1)
    before = SentenceTransformer(str(tiny_model_dir), device="cpu")[0].auto_model.state_dict()
    model, _ = train_matryoshka_model(pairs, settings, tmp_path / "m", log=lambda m: None)
    after = model[0].auto_model.state_dict()
    frozen = [k for k in before if k.startswith(("embeddings.", "encoder.layer.0."))]
    trained = [k for k in before if k.startswith("encoder.layer.1.")]
    assert frozen and trained
    assert all(np.array_equal(before[k].numpy(), after[k].cpu().numpy()) for k in frozen)
    assert any(not np.array_equal(before[k].numpy(), after[k].cpu().numpy()) for k in trained)
    with pytest.raises(ValueError, match="frozen_layers"):
        train_matryoshka_model(pairs, TrainingSettings(base_model=str(tiny_model_dir), matryoshka_dims=(32,), batch_size=8, frozen_layers=9), tmp_path / "x", log=lambda m: None)


def test_step_budget_cuts_the_run_when_later_steps_are_slower_than_the_first():
    from thread_embed_pipeline.training.budget import StepBudget

    budget = StepBudget(planned_steps=60, warmup_steps=2, time_budget_s=100, calibration_steps=3, step_quantum=2)
    budget.observe(1, 10.0)
    for step in (2, 3, 4):
        budget.observe(step, 10.0 + 2.0 * (step - 1))  # 2 s/step: 4 + 84 // 2 = 46 steps fit
    assert budget.total_steps == 46
    t = 16.0
    for step in range(5, 60):
        t += 6.0  # the later batches are longer: 6 s/step
        budget.observe(step, t)
        if step >= budget.total_steps:
            break
    assert budget.total_steps < 46 and "cut to" in budget.reason
    assert t <= 100 * 1.05 + 6.0  # ends within the budget (plus at most one step)
