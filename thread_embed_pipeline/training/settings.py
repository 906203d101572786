"""What a training run is told and what it reports: :class:`TrainingSettings` (every option, validated
before any weight is touched), :class:`TrainingResult`, and the CPU recipe's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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


def validate_settings(settings: TrainingSettings, embedding_dim: int) -> None:
    dims = list(settings.matryoshka_dims)
    if not dims:
        raise ValueError("matryoshka_dims is empty")
    if dims != sorted(dims, reverse=True) or len(set(dims)) != len(dims):
        raise ValueError(f"matryoshka_dims must be distinct and descending, got {dims}")
    if dims[0] > embedding_dim:
        raise ValueError(f"matryoshka_dims {dims} exceed the model's embedding size {embedding_dim}")
    if settings.batch_size < 2:
        raise ValueError("batch_size must be >= 2: MultipleNegativesRankingLoss needs in-batch negatives")
    validate_options(settings)


def validate_options(settings: TrainingSettings) -> None:
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
