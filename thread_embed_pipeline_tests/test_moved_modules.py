"""The 0.5 module paths keep working for one release (CHANGELOG.md, 0.6.0 "Deprecated"): each old path is the
new module itself, with a DeprecationWarning naming the new path, and the old ``python -m`` programs still run."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import thread_embed_pipeline
from thread_embed_pipeline import MOVED_MODULES

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_an_old_module_path_is_the_new_module_with_a_deprecation_warning(old):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(MOVED_MODULES[old])
    assert any(issubclass(w.category, DeprecationWarning) and MOVED_MODULES[old] in str(w.message) for w in caught)


def test_the_names_users_hold_still_import_from_the_old_paths():
    from thread_embed_pipeline.search import HybridRetriever, build_search_index
    from thread_embed_pipeline.search.retriever import HybridRetriever as Moved
    from thread_embed_pipeline.training import TrainingSettings, load_sentence_model, train_matryoshka_model
    from thread_embed_pipeline.training.settings import TrainingSettings as MovedSettings

    assert HybridRetriever is Moved and TrainingSettings is MovedSettings
    assert callable(build_search_index) and callable(load_sentence_model) and callable(train_matryoshka_model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from thread_embed_pipeline.onnx_export import export_onnx, load_onnx_model  # export moved to release, loading to models
        from thread_embed_pipeline.disentangle import LINK_CHUNK, fit_scorer
    from thread_embed_pipeline.models import load_onnx_model as loader
    from thread_embed_pipeline.release.onnx import export_onnx as exporter

    assert load_onnx_model is loader and export_onnx is exporter and callable(fit_scorer) and LINK_CHUNK > 0


def test_an_unknown_module_is_still_an_import_error():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f"{thread_embed_pipeline.__name__}.no_such_module")


@pytest.mark.parametrize("old", ["thread_embed_pipeline.evaluate", "thread_embed_pipeline.disentangle"])
def test_an_old_python_dash_m_program_still_runs(old):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", old, "--help"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage: python -m thread_embed_pipeline." in done.stdout
