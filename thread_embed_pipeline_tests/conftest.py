"""Shared fixtures: the local dataset mirror and a tiny sentence-transformers model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _mirror_root() -> Path:
    configured = os.environ.get("THREAD_EMBED_MIRROR")
    return Path(configured) if configured else (PROJECT_ROOT.parent / "shared" / "datasets")


@pytest.fixture(scope="session")
def mirror_root() -> Path:
    """The real-data mirror. Skips outside CI when absent; under CI=true it must exist."""
    root = _mirror_root()
    if not root.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"dataset mirror {root} is missing under CI=true; set THREAD_EMBED_MIRROR")
        pytest.skip(f"dataset mirror {root} not found (set THREAD_EMBED_MIRROR to run real-format tests)")
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-init BERT sentence-transformer saved to disk (see tiny_model.py); loads offline."""
    from thread_embed_pipeline_tests.tiny_model import build_tiny_sentence_transformer

    return build_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny_model") / "model")
