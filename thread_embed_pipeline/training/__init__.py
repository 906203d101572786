"""Training: pairs in, a fine-tuned Matryoshka checkpoint out (sentence-transformers' trainer,
``MatryoshkaLoss`` over ``MultipleNegativesRankingLoss``).

* :mod:`.settings`: :class:`TrainingSettings` (every option, validated) and :class:`TrainingResult`.
* :mod:`.trainer`: :func:`train_matryoshka_model` (resuming, DDP); :mod:`.budget` (the time budget);
  :mod:`.inputs` (checks, column choice, speaker dropout).
* :mod:`.batching`: batch samplers (conversation-disjoint, length-grouped, global batches across ranks).
* :mod:`.launch`: the program Dagster launches through Pipes (``python -m thread_embed_pipeline.training.launch``).

May import: the shared modules and ``pairs``. ``load_sentence_model`` and ``resolve_model_path`` live in
``thread_embed_pipeline.models`` since 0.6; importing them from here still works until 0.7.
"""

from __future__ import annotations

from thread_embed_pipeline.training.settings import BATCH_SAMPLERS, CPU_RECIPE, DEFAULT_CPU_TIME_BUDGET_S, LOSSES, TrainingResult, TrainingSettings, cpu_supports_bf16
from thread_embed_pipeline.training.budget import StepBudget, distributed_rank
from thread_embed_pipeline.training.inputs import check_training_inputs, drop_speakers
from thread_embed_pipeline.training.trainer import RESUME_STATE_FILE, train_matryoshka_model
from thread_embed_pipeline.models import BUNDLED_MODELS, default_device, load_sentence_model, resolve_model_path

__all__ = ["BATCH_SAMPLERS", "BUNDLED_MODELS", "CPU_RECIPE", "DEFAULT_CPU_TIME_BUDGET_S", "LOSSES", "RESUME_STATE_FILE", "StepBudget", "TrainingResult", "TrainingSettings", "check_training_inputs", "cpu_supports_bf16", "default_device", "distributed_rank", "drop_speakers", "load_sentence_model", "resolve_model_path", "train_matryoshka_model"]
