"""Training throughput of the launched training program at 1 and N processes (DDP), in pairs/s.

Every run is the ``model`` asset's own path: :func:`~thread_embed_pipeline.launch_training.launch_command`
(one process, or ``torchrun --standalone --nproc_per_node N``) on the same real training pairs (the
first ``--pairs`` rows of ``training_pairs``), with the CPU recipe's settings (``ModelConfig``) except
the batch size and no time budget, so every run trains every pair. Configurations, ``processes x
per-process batch``:

* ``1x64``: the CPU default (64 in-batch candidates per anchor);
* ``Nx(64/N)``: the same global batch of 64 split over N processes (the same optimisation, more processes);
* ``Nx64``: N times the global batch and the in-batch negatives.

pairs/s is the program's own figure (trained pairs / seconds of optimizer steps, model load excluded);
``wall_s`` includes start-up. On a CPU machine the processes share its cores (``OMP_NUM_THREADS`` =
cores / N); on a GPU machine pass ``--device cuda`` and N <= the GPU count.

    python benchmarks/ddp_throughput.py --processes 1 2 --out docs/ddp_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thread_embed_pipeline import storage  # noqa: E402
from thread_embed_pipeline.training.launch import launch_command, launch_environment, write_launch_files  # noqa: E402
from thread_embed_pipeline.orchestration.training_assets import ModelConfig  # noqa: E402
from thread_embed_pipeline.training.settings import cpu_supports_bf16  # noqa: E402


def run(pairs: pd.DataFrame, processes: int, batch: int, device: str | None, folder: Path, bf16: bool | None) -> dict:
    settings = ModelConfig(batch_size=batch, time_budget_s=None, bf16=bf16).settings()
    pairs_path, settings_path = write_launch_files(pairs, settings, folder)
    out = folder / "model"
    command = launch_command(processes, pairs=pairs_path, settings=settings_path, output_dir=out, device=device)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1]), **launch_environment(processes, device)}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{processes}x{batch} failed:\n{done.stderr[-4000:]}")
    result = json.loads((out / "training_config.json").read_text())["result"]
    return {
        "config": f"{processes}x{batch}", "processes": processes, "batch_per_process": batch, "global_batch": processes * batch,
        "candidates_per_anchor": result["candidates_per_anchor"], "steps": result["steps"], "train_pairs": result["train_pairs"],
        "train_seconds": result["seconds"], "pairs_per_second": result["pairs_per_second"], "wall_s": round(wall, 1),
        "final_loss": result["final_loss"], "bf16": result["bf16"], "device": result["device"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=512, help="training pairs per run (the first N of training_pairs)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--bf16", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--out", type=Path, default=Path("docs/ddp_throughput.json"))
    args = parser.parse_args()
    pairs = pd.read_parquet(storage.data_dir() / "training_pairs.parquet").head(args.pairs)
    bf16 = {"auto": None, "on": True, "off": False}[args.bf16]
    configs = [(1, 64)] + [(n, b) for n in args.processes if n > 1 for b in (64 // n, 64)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (n, b) in enumerate(configs):
            rows.append(run(pairs, n, b, args.device, Path(tmp) / str(k), bf16))
            print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["pairs_per_second"]
    for row in rows:
        row["speedup_vs_1x64"] = round(row["pairs_per_second"] / base, 2) if base else None
    report = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "cpu_bf16": cpu_supports_bf16()},
        "pairs": len(pairs), "bf16": args.bf16, "runs": rows,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(pd.DataFrame(rows)[["config", "global_batch", "candidates_per_anchor", "steps", "train_seconds", "pairs_per_second", "speedup_vs_1x64", "wall_s"]].to_markdown(index=False))


if __name__ == "__main__":
    main()
