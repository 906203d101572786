"""Training as a launched program: the ``model`` asset runs this module through Dagster Pipes, in one
process or, under ``torchrun``, in N processes (DDP).

    python -m thread_embed_pipeline.training.launch --pairs pairs.parquet --settings settings.json --output-dir models/NAME
    torchrun --standalone --nproc_per_node 2 -m thread_embed_pipeline.training.launch ...   # DDP

The program reads the training pairs (Parquet) and the :class:`~thread_embed_pipeline.training.TrainingSettings`
(JSON), trains with :func:`~thread_embed_pipeline.training.train_matryoshka_model` and writes the
checkpoint. Under ``torchrun`` (``WORLD_SIZE`` > 1) it first joins the process group: NCCL on GPUs,
gloo on CPUs. When Dagster launched it (``PipesSubprocessClient``), rank 0 opens Dagster Pipes: its
log lines (the progress) go to the run's logs, and at the end it reports the training result as the
materialisation's metadata (``training_result``), from which the asset builds the same metadata as
ever. The other ranks log to stderr, which Dagster keeps in the step's compute logs. Launched by hand,
every rank logs to stderr and the result is in ``<output-dir>/training_config.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path

RESULT_KEY = "training_result"  # the Pipes metadata entry with the TrainingResult as JSON
MODULE = "thread_embed_pipeline.training.launch"


def settings_to_json(settings) -> str:
    return json.dumps(asdict(settings), indent=2, sort_keys=True)


def settings_from_json(text: str):
    """The :class:`TrainingSettings` of :func:`settings_to_json` (unknown fields are an error)."""
    from thread_embed_pipeline.training.settings import TrainingSettings

    values = json.loads(text)
    known = {f.name for f in fields(TrainingSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown training settings {unknown}; known: {sorted(known)}")
    for name in ("matryoshka_dims", "matryoshka_weights"):
        if values.get(name) is not None:
            values[name] = tuple(values[name])
    return TrainingSettings(**values)


def result_to_json(result) -> dict:
    """A :class:`TrainingResult` as plain JSON (the checkpoint folder by path)."""
    data = asdict(result)
    data["checkpoint_dir"] = str(result.checkpoint_dir)
    return data


def result_from_json(data: dict):
    from thread_embed_pipeline.training.settings import TrainingResult

    return TrainingResult(**{**data, "checkpoint_dir": Path(data["checkpoint_dir"])})


def launch_command(
    nproc_per_node: int, *, pairs: Path, settings: Path, output_dir: Path, device: str | None = None, callbacks: Sequence[str] = ()
) -> list[str]:
    """The command line that trains: this module in one process, or under ``torchrun --standalone
    --nproc_per_node N`` (``python -m torch.distributed.run``, the same interpreter) for N > 1."""
    if nproc_per_node < 1:
        raise ValueError(f"nproc_per_node must be >= 1, got {nproc_per_node}")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}", "-m", MODULE]
    args = ["--pairs", str(pairs), "--settings", str(settings), "--output-dir", str(output_dir)]
    if device:
        args += ["--device", device]
    for callback in callbacks:
        args += ["--callback", callback]
    return [*(launcher if nproc_per_node > 1 else [sys.executable, "-m", MODULE]), *args]


def write_launch_files(pairs, settings, folder: Path) -> tuple[Path, Path]:
    """The program's two inputs in ``folder``: ``pairs.parquet`` and ``settings.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs_path, settings_path = folder / "pairs.parquet", folder / "settings.json"
    pairs.to_parquet(pairs_path, index=False)
    settings_path.write_text(settings_to_json(settings) + "\n")
    return pairs_path, settings_path


def launch_environment(nproc_per_node: int, device: str | None, environ=os.environ) -> dict[str, str]:
    """Extra environment for the launch: with several CPU processes, the cores split between them
    (``OMP_NUM_THREADS``, unless set; torchrun would give each process 1 thread)."""
    if nproc_per_node > 1 and device in (None, "cpu") and "OMP_NUM_THREADS" not in environ:
        return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc_per_node))}
    return {}


def _callback(spec: str):
    """``package.module:Class``: a ``transformers.TrainerCallback`` class, instantiated without arguments."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"callback {spec!r}: expected 'package.module:Class'")
    return getattr(importlib.import_module(module), name)()


def _join_process_group(device: str | None) -> None:
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        gpu = device != "cpu" and torch.cuda.is_available()
        if gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if gpu else "gloo")


def _pipes(rank: int):
    """Dagster Pipes on rank 0 when Dagster launched this process, else None."""
    from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

    if rank != 0 or not PipesEnvVarParamsLoader().is_dagster_pipes_process():
        return None
    return open_dagster_pipes()


def _stderr_log(prefix: str):
    def log(message: str) -> None:
        print(prefix + message, file=sys.stderr, flush=True)

    return log


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=Path, required=True, help="training pairs (Parquet: anchor, positive[, negative, conversation_id])")
    parser.add_argument("--settings", type=Path, required=True, help="TrainingSettings as JSON")
    parser.add_argument("--output-dir", type=Path, required=True, help="the checkpoint folder to write")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--callback", action="append", default=[], help="package.module:Class, a transformers TrainerCallback (repeatable)")
    args = parser.parse_args(argv)

    import pandas as pd
    import torch.distributed as dist

    from thread_embed_pipeline.training.budget import distributed_rank
    from thread_embed_pipeline.training.trainer import train_matryoshka_model

    settings = settings_from_json(args.settings.read_text())
    callbacks = [_callback(spec) for spec in args.callback]
    _join_process_group(args.device)
    rank, world = distributed_rank()
    try:
        # an error inside reaches Dagster through Pipes (rank 0) and fails the launch either way
        with _pipes(rank) or contextlib.nullcontext() as pipes:
            log = pipes.log.info if pipes is not None else _stderr_log(f"[rank {rank}/{world}] " if world > 1 else "")
            pairs = pd.read_parquet(args.pairs)
            _, result = train_matryoshka_model(pairs, settings, args.output_dir, log=log, device=args.device, callbacks=callbacks)
            if pipes is not None:
                pipes.report_asset_materialization(metadata={RESULT_KEY: {"raw_value": result_to_json(result), "type": "json"}})
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
