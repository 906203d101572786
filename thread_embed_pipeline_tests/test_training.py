import json

import numpy as np
import pandas as pd
import pytest
from sentence_transformers import SentenceTransformer

from thread_embed_pipeline.training import TrainingSettings, resolve_model_path, train_matryoshka_model


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
