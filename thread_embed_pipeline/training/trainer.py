"""Fine-tune a sentence-transformers model on chat pairs with MatryoshkaLoss(MultipleNegativesRankingLoss).

Matryoshka Representation Learning (Kusupati et al., 2022) trains the first ``d`` dimensions of the
embedding to work on their own for every ``d`` in ``matryoshka_dims``; the inner loss is
MultipleNegativesRankingLoss (Henderson et al., 2017): every other positive in the batch is a
negative. Training runs on sentence-transformers' ``SentenceTransformerTrainer``.

Options (all ``TrainingSettings`` fields; the defaults keep the original behaviour):

* ``batch_sampler="conversation_disjoint"``: no two pairs of one conversation and no repeated text in
  a batch (``thread_embed_pipeline.training.batching``), against in-batch false negatives.
* ``loss="cached_mnrl"``: CachedMultipleNegativesRankingLoss (GradCache) inside MatryoshkaLoss, so big
  batches (128-512) fit in memory; ``mini_batch_size`` rows are embedded with gradients at a time.
* ``matryoshka_weights``: per-dimension weights for MatryoshkaLoss.
* hard negatives: a ``negative`` column filled for every row trains on (anchor, positive, negative)
  triplets; see ``_select_columns`` for partially filled columns and ``use_negatives``.
* ``save_steps``: Trainer checkpoints in the work folder, and an interrupted run resumes from them.
* ``speaker_dropout``: each side of a pair loses its ``speaker_<k>:`` prefixes with that probability
  (seeded), so the model matches content rather than pseudonyms.
* ``time_budget_s``: the number of optimizer steps is sized from the step time measured in the first
  steps (:class:`StepBudget`), so a CPU without bf16 (about 3x slower) trains fewer pairs instead of
  blowing the main job's time target. ``None`` trains every pair.

Distributed data parallel (DDP): when ``torch.distributed`` is initialised (``torchrun``; the launched
program is :mod:`thread_embed_pipeline.training.launch`), every process trains on its own share of
each step's *global* batch of ``world_size x batch_size`` rows (``batch_size`` is per process, as in
the Trainer's ``per_device_train_batch_size``). The batch sampler plans global batches, so its
guarantees (no repeated text; no two rows of one conversation) hold across the ranks of a step
(:class:`~thread_embed_pipeline.training.batching.GlobalBatchShards`), and the loss gathers the embeddings of
every rank (``gather_across_devices``): N processes give N times the in-batch negatives. The data
order's seed is shared by all ranks; dropout and the other torch RNG draws use ``seed + rank``. The
time budget's decisions use the slowest rank's clock, so every rank stops at the same step. Only rank
0 clears or checks the resume folder and saves the model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from thread_embed_pipeline.models import default_device, load_sentence_model
from thread_embed_pipeline.schemas import NEGATIVE_COLUMN
from thread_embed_pipeline.training.budget import StepBudget, _barrier, _slowest, distributed_rank
from thread_embed_pipeline.training.inputs import _select_columns, check_training_inputs, drop_speakers
from thread_embed_pipeline.training.settings import TrainingResult, TrainingSettings, cpu_supports_bf16, validate_settings

RESUME_STATE_FILE = "resume_fingerprint.json"


def _fingerprint(settings: TrainingSettings, frame: pd.DataFrame) -> str:
    """What a checkpoint must match to be resumed: the settings and the exact training rows."""
    digest = hashlib.sha256(json.dumps(asdict(settings), sort_keys=True, default=str).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
    return digest.hexdigest()


def _resume_checkpoint(work_dir: Path, fingerprint: str, log: Callable[[str], None]) -> str | None:
    """The latest Trainer checkpoint of an interrupted run with the same fingerprint, else None.

    A work folder from a run with other settings or data is cleared, so it is never resumed.
    """
    from transformers.trainer_utils import get_last_checkpoint

    if not work_dir.is_dir():
        return None
    state_file = work_dir / RESUME_STATE_FILE
    saved = json.loads(state_file.read_text()).get("fingerprint") if state_file.exists() else None
    if saved != fingerprint:
        if any(work_dir.iterdir()):
            log(f"clearing {work_dir}: its checkpoints belong to a run with other settings or data")
        shutil.rmtree(work_dir)
        return None
    return get_last_checkpoint(str(work_dir))


def _share_trained(steps: int, resumed_from_step: int | None) -> float:
    if not resumed_from_step or not steps:
        return 1.0
    return max(steps - resumed_from_step, 0) / steps


def _freeze_lower_layers(model, n: int) -> int:
    """Freeze the embeddings and the lowest ``n`` encoder layers of a BERT-style transformer."""
    backbone = model[0].auto_model
    layers = backbone.encoder.layer
    if n > len(layers):
        raise ValueError(f"frozen_layers={n} but the model has {len(layers)} layers")
    for module in (backbone.embeddings, *layers[:n]):
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    return n


def _planned_steps(n_pairs: int, settings: TrainingSettings, world_size: int = 1) -> int:
    """Optimizer steps of ``epochs`` passes over ``n_pairs`` (the Trainer's own count; the last batch may
    be short), with global batches of ``world_size x batch_size`` rows."""
    per_epoch = math.ceil(n_pairs / (settings.batch_size * world_size))
    return max(1, math.ceil(per_epoch * settings.epochs / settings.gradient_accumulation_steps))


class _CandidateCounter:
    """Wraps a loss's similarity function and remembers the most candidates (columns) one call scored
    per anchor: what the loss actually saw, gathered across ranks or not."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.most = 0

    def __call__(self, anchors, candidates):
        self.most = max(self.most, int(candidates.shape[0]))
        return self.fn(anchors, candidates)


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def train_matryoshka_model(
    pairs: pd.DataFrame,
    settings: TrainingSettings,
    output_dir: Path,
    *,
    log: Callable[[str], None] = print,
    work_dir: Path | None = None,
    device: str | None = None,
    callbacks: Sequence = (),
):
    """Train on ``pairs`` (columns anchor, positive; optional negative, conversation_id) and save the model to ``output_dir`` (safetensors).

    The model is written to a temporary sibling folder and renamed into place, so an interrupted run
    leaves the previous checkpoint intact. With ``settings.save_steps`` the Trainer checkpoints into
    ``work_dir`` (default: the hidden sibling ``.<name>.trainer``), and a rerun with the same settings
    and pairs resumes from the latest checkpoint there; the folder is removed only once the model is
    saved. ``callbacks`` are extra ``transformers.TrainerCallback`` objects. Returns the trained model
    and a ``TrainingResult``.
    """
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss, MatryoshkaLoss, MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    from transformers import PrinterCallback, TrainerCallback

    from thread_embed_pipeline.training.batching import ConversationDisjointSamplerFactory, GlobalBatchSamplerFactory, LengthGroupedSamplerFactory

    check_training_inputs(pairs, settings)
    pairs, text_columns, dropped_without_negative = _select_columns(pairs, settings, log)
    if settings.speaker_dropout > 0:
        pairs, changed = drop_speakers(pairs, settings.speaker_dropout, settings.seed, text_columns)
        log(f"speaker dropout {settings.speaker_dropout:g}: {changed} of {len(pairs) * len(text_columns)} texts train without their speaker prefixes")
    rank, world = distributed_rank()
    check_training_inputs(pairs, settings, world)  # again: rows without a negative may have been dropped

    torch.manual_seed(settings.seed)
    device = device or default_device()
    if world > 1 and device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"  # one GPU per process
    model = load_sentence_model(settings.base_model, device=device)
    validate_settings(settings, model.get_embedding_dimension())
    eval_max_seq_length = model.max_seq_length
    model.max_seq_length = settings.max_seq_length
    if settings.frozen_layers:
        log(f"frozen: token embeddings and the lowest {_freeze_lower_layers(model, settings.frozen_layers)} transformer layers")
    bf16 = settings.bf16 if settings.bf16 is not None else (device == "cuda" or cpu_supports_bf16())

    if settings.loss == "cached_mnrl":
        # GradCache: embeds the batch without gradients, caches the loss gradient w.r.t. the
        # embeddings, then re-embeds mini_batch_size rows at a time with gradients. MatryoshkaLoss
        # detects it (uses_gradient_cache) and decorates its calculate_loss with the dims.
        inner_loss = CachedMultipleNegativesRankingLoss(model, mini_batch_size=settings.mini_batch_size, gather_across_devices=world > 1)
    else:
        # under DDP every rank's anchors are scored against every rank's candidates
        inner_loss = MultipleNegativesRankingLoss(model, gather_across_devices=world > 1)
    weights = list(settings.matryoshka_weights) if settings.matryoshka_weights is not None else None
    loss = MatryoshkaLoss(model, inner_loss, matryoshka_dims=list(settings.matryoshka_dims), matryoshka_weights=weights)
    # only the text columns reach the loss (column order = anchor, positive[, negative])
    dataset = Dataset.from_pandas(pairs[text_columns], preserve_index=False)
    if settings.batch_sampler == "conversation_disjoint":
        # the conversation ids ride in the sampler factory, aligned with the dataset rows
        batch_sampler = ConversationDisjointSamplerFactory(pairs["conversation_id"].tolist())
    elif settings.batch_sampler == "length_grouped":
        batch_sampler = LengthGroupedSamplerFactory()
    else:
        # no two identical texts in one batch: they would be false in-batch negatives
        batch_sampler = BatchSamplers.NO_DUPLICATES
    if world > 1:
        from sentence_transformers.base.sampler import NoDuplicatesBatchSampler

        batch_sampler = GlobalBatchSamplerFactory(NoDuplicatesBatchSampler if batch_sampler == BatchSamplers.NO_DUPLICATES else batch_sampler, world)

    output_dir = Path(output_dir)
    work_dir = Path(work_dir) if work_dir else output_dir.parent / f".{output_dir.name}.trainer"
    resume_from = None
    if settings.save_steps:
        fingerprint = _fingerprint(settings, pairs[[*text_columns, *(["conversation_id"] if "conversation_id" in pairs.columns else [])]])
        if rank == 0:  # one process clears or checks the shared work folder; the others follow
            resume_from = _resume_checkpoint(work_dir, fingerprint, log)
            work_dir.mkdir(parents=True, exist_ok=True)
            (work_dir / RESUME_STATE_FILE).write_text(json.dumps({"fingerprint": fingerprint}))
        _barrier()
        if rank != 0:
            resume_from = _resume_checkpoint(work_dir, fingerprint, log)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work_dir),
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        learning_rate=settings.learning_rate,
        warmup_steps=float(settings.warmup_ratio),  # a float < 1 is a ratio of all steps (transformers v5)
        bf16=bf16,
        seed=settings.seed,
        data_seed=settings.seed,
        # no two identical texts in one batch: they would be false in-batch negatives
        batch_sampler=batch_sampler,
        logging_steps=settings.logging_steps,
        save_strategy="steps" if settings.save_steps else "no",
        save_steps=settings.save_steps or 500,
        save_total_limit=2,
        report_to="none",
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )

    history: list[dict] = []

    class LogProgress(TrainerCallback):
        def on_log(self, _args, state, _control, logs=None, **_kwargs):
            if logs and "loss" in logs:
                entry = {"step": state.global_step, "loss": float(logs["loss"]), "elapsed_s": round(time.perf_counter() - started, 1)}
                history.append(entry)
                log(f"training step {state.global_step}/{state.max_steps}: loss {entry['loss']:.4f} ({entry['elapsed_s']} s)")

    planned = _planned_steps(len(pairs), settings, world)
    budget = StepBudget(planned, math.ceil(settings.warmup_ratio * planned), settings.time_budget_s)

    class BudgetedTrainer(SentenceTransformerTrainer):
        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.lr_scheduler is None:
                budget.replan(num_training_steps, math.ceil(settings.warmup_ratio * num_training_steps))
                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, budget.lr_factor)
            return self.lr_scheduler

    class EnforceBudget(TrainerCallback):
        def on_step_end(self, _args, state, control, **_kwargs):
            before = (budget.decided, budget.total_steps)
            elapsed = time.perf_counter() - started
            # every rank decides from the slowest rank's clock, so all stop at the same step
            budget.observe(state.global_step, _slowest(elapsed) if settings.time_budget_s and world > 1 else elapsed)
            if settings.time_budget_s and (budget.decided, budget.total_steps) != before:
                log(budget.reason)
            if state.global_step >= budget.total_steps:
                control.should_training_stop = True

    class RankSeed(TrainerCallback):
        def on_train_begin(self, _args, _state, _control, **_kwargs):
            from transformers import set_seed

            set_seed(settings.seed + rank)  # the data order's seed stays shared (args.seed)

    per_rank = [RankSeed()] if world > 1 else []
    trainer = BudgetedTrainer(model=model, args=args, train_dataset=dataset, loss=loss, callbacks=[EnforceBudget(), LogProgress(), *per_rank, *callbacks])
    trainer.remove_callback(PrinterCallback)  # LogProgress reports through `log` instead of stdout
    counter = _CandidateCounter(inner_loss.similarity_fct)
    inner_loss.similarity_fct = counter  # after the Trainer built the model card's loss config
    processes = f", {world} processes (global batch {settings.batch_size * world}), rank {rank}" if world > 1 else ""
    log(
        f"training {settings.base_model} on {len(pairs)} {'triplets' if NEGATIVE_COLUMN in text_columns else 'pairs'}, batch {settings.batch_size}, "
        f"dims {list(settings.matryoshka_dims)}, loss {settings.loss}, sampler {settings.batch_sampler}, bf16={bf16}, device={device}{processes}"
    )
    resumed_from_step = None
    if resume_from:
        resumed_from_step = int(Path(resume_from).name.rsplit("-", 1)[-1])
        log(f"resumed from checkpoint {resume_from} at step {resumed_from_step}")
    on_cuda = str(device).startswith("cuda")
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=resume_from)
    finally:
        inner_loss.similarity_fct = counter.fn
    seconds = time.perf_counter() - started
    peak_gpu_mb = round(torch.cuda.max_memory_allocated() / 2**20, 1) if on_cuda else None

    model.max_seq_length = eval_max_seq_length
    steps = int(trainer.state.global_step)
    planned_steps = budget.planned_steps
    if steps < planned_steps:
        trained_pairs = min(len(pairs), steps * settings.batch_size * settings.gradient_accumulation_steps * world)
    else:  # every batch; under DDP less the rows of uneven global batches (GlobalBatchShards)
        trained_pairs = len(pairs) - (batch_sampler.last.dropped_rows if world > 1 and batch_sampler.last else 0)
    result = TrainingResult(
        checkpoint_dir=output_dir,
        train_pairs=trained_pairs,
        steps=steps,
        seconds=round(seconds, 1),
        # rows trained in this call (a resumed run only trains the steps after its checkpoint)
        pairs_per_second=round(trained_pairs * (settings.epochs if steps >= planned_steps else 1.0) * _share_trained(steps, resumed_from_step) / seconds, 2) if seconds else 0.0,
        final_loss=history[-1]["loss"] if history else None,
        bf16=bool(bf16),
        device=device,
        loss_history=history,
        columns=text_columns,
        dropped_without_negative=dropped_without_negative,
        resumed_from_step=resumed_from_step,
        peak_rss_mb=_peak_rss_mb(),
        peak_gpu_mb=peak_gpu_mb,
        planned_steps=planned_steps,
        budget_reason=budget.reason or f"time budget {settings.time_budget_s:g} s: stopped before the step time was measured",
        processes=world,
        candidates_per_anchor=counter.most,
    )
    if rank == 0:
        _save_checkpoint(model, settings, result, output_dir, work_dir)
        log(f"saved {output_dir} after {result.steps} steps in {result.seconds} s ({result.pairs_per_second} pairs/s)")
    _barrier()  # every rank returns once the checkpoint is in place
    return model, result


def _save_checkpoint(model, settings: TrainingSettings, result: TrainingResult, output_dir: Path, work_dir: Path) -> None:
    """Write the model to a temporary sibling, rename it into place, then drop the Trainer's work folder."""
    from thread_embed_pipeline.storage import replace_dir

    tmp_dir = output_dir.parent / f".{output_dir.name}.tmp"
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(tmp_dir), safe_serialization=True)
    (tmp_dir / "training_config.json").write_text(json.dumps({"settings": asdict(settings), "result": _result_json(result)}, indent=2, default=str))
    replace_dir(tmp_dir, output_dir)
    shutil.rmtree(work_dir, ignore_errors=True)


def _result_json(result: TrainingResult) -> dict:
    data = asdict(result)
    data["checkpoint_dir"] = str(result.checkpoint_dir.name)
    data.pop("loss_history", None)
    return data
