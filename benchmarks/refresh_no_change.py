"""No-change refresh vs a full run: what the nightly refresh costs when no source changed.

    python benchmarks/refresh_no_change.py [--config configs/smoke.yaml] [--write docs/refresh_benchmark.md]

In a fresh Dagster instance and data folder (temporary), it times

1. a full run of ``thread_embed_job`` (``dagster job execute``, like scripts/run_main_job.sh);
2. the nightly refresh when nothing changed: ``observe_sources_job`` (hashes each source's file
   paths, sizes and mtimes) followed by one tick of the automation condition
   (``dg.evaluate_automation_conditions``, what the automation sensor evaluates), which must request
   nothing -- the script fails if it requests anything.

Target: the refresh costs at most 5% of the full run. Numbers depend on the machine; they are
recorded in docs/.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dagster(args: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dagster", *args, "-m", "thread_embed_pipeline.definitions"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def settle_then_refresh(env: dict) -> dict:
    """Tick once (the sensor's state after the full run), observe all sources, tick again: time both."""
    code = (
        "import json, subprocess, sys, time, dagster as dg\n"
        "from thread_embed_pipeline.definitions import defs\n"
        "instance = dg.DagsterInstance.get()\n"
        "graph = defs.resolve_asset_graph()\n"
        "cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor\n"
        "t = time.perf_counter()\n"
        "subprocess.run([sys.executable, '-m', 'dagster', 'job', 'execute', '-j', 'observe_sources_job', '-m', 'thread_embed_pipeline.definitions'], check=True, stdout=subprocess.DEVNULL)\n"
        "observe = time.perf_counter() - t\n"
        "t = time.perf_counter()\n"
        "result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)\n"
        "tick = time.perf_counter() - t\n"
        "requested = sorted(k.to_user_string() for k in graph.get_all_asset_keys() if result.get_num_requested(k))\n"
        "print(json.dumps({'observe_s': observe, 'tick_s': tick, 'requested': requested}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    import json

    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None, help="run config for the full run (default: the CPU default)")
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch) / "dagster_home"
        home.mkdir()
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "THREAD_EMBED_DATA_DIR": str(Path(scratch) / "data"),
            "THREAD_EMBED_MODELS_DIR": str(Path(scratch) / "models"),
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(ROOT),
        }
        full_args = ["job", "execute", "-j", "thread_embed_job"] + (["-c", str(args.config)] if args.config else [])
        print("full run ...", flush=True)
        full_s = dagster(full_args, env)
        print(f"full run: {full_s:.1f} s", flush=True)
        refresh = settle_then_refresh(env)
        if refresh["requested"]:
            print(f"a no-change refresh requested {refresh['requested']}", file=sys.stderr)
            return 1
        refresh_s = refresh["observe_s"] + refresh["tick_s"]
    ratio = refresh_s / full_s
    md = (
        "# No-change refresh vs a full run\n\n"
        f"Command: `python benchmarks/refresh_no_change.py{' --config ' + str(args.config) if args.config else ''}`\n\n"
        "| step | seconds |\n|---|---:|\n"
        f"| full run of `thread_embed_job` (`dagster job execute`) | {full_s:.1f} |\n"
        f"| `observe_sources_job` (`dagster job execute`, 8 sources) | {refresh['observe_s']:.1f} |\n"
        f"| one automation tick (nothing requested) | {refresh['tick_s']:.1f} |\n"
        f"| **no-change refresh** | **{refresh_s:.1f}** ({ratio:.1%} of the full run; target ≤ 5%) |\n"
    )
    print(md)
    if args.write:
        args.write.write_text(md, encoding="utf-8")
    return 0 if ratio <= 0.05 else 2


if __name__ == "__main__":
    raise SystemExit(main())
