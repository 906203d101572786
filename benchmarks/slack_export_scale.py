"""Scale benchmark of a user source: a synthetic Slack workspace export, raw -> corpus, the chain's own code.

    python benchmarks/slack_export_scale.py --messages 100000 1000000 --write docs/slack_export_benchmark.md

For each size a synthetic export in Slack's real layout is generated first
(``thread_embed_pipeline.sources.exports.synthetic``: users.json, channels.json, indented
``<channel>/<YYYY-MM-DD>.json`` day files with profiles and blocks, threads across day files, joins, bots,
tombstones, mentions), as a folder and (``--zip``) also zipped. Then a fresh Python process runs what the
``<name>/raw`` and ``<name>/corpus`` assets run -- ``write_raw_stream`` over the ``slack_export`` reader,
``build_corpus_stream`` -- and reports messages/s for both together and the process's peak RSS
(``ru_maxrss``). Generation time is not counted. Not a test: the numbers depend on the machine and are
recorded in docs/ with its CPU.
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
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_chain(export: Path, work: Path) -> dict:
    """Runs in a fresh process: the raw and corpus stages of a user source over ``export``."""
    import resource

    from thread_embed_pipeline.sources.user import UserSourceSpec
    from thread_embed_pipeline.sources.hf import Sampling
    from thread_embed_pipeline.corpus.streaming import build_corpus_stream
    from thread_embed_pipeline.sources.raw_stream import write_raw_stream

    os.environ["THREAD_EMBED_DATA_DIR"] = str(work / "data")  # where a zip is unpacked
    spec = UserSourceSpec(name="bench_slack", format="slack_export", path=export)
    quiet = lambda m: None  # noqa: E731
    t0 = time.perf_counter()
    raw = write_raw_stream(spec, export, [], Sampling(), work / "raw.parquet", log=quiet)
    t1 = time.perf_counter()
    rss_raw_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    corpus = build_corpus_stream(work / "raw.parquet", work / "corpus.parquet", source=spec.name, platform=spec.platform, cut_keys=spec.corpus_cut_keys, batch_rows=spec.piece_rows, log=quiet)
    t2 = time.perf_counter()
    return {
        "raw_rows": raw["read"],
        "corpus_messages": corpus["kept"],
        "conversations": sum(corpus["conversations"].values()),
        "raw_s": round(t1 - t0, 2),
        "corpus_s": round(t2 - t1, 2),
        "raw_plus_corpus_msgs_per_s": round(raw["read"] / (t2 - t0)),
        "peak_rss_raw_mb": round(rss_raw_mb),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "replies_linked": raw["counts"].get("threads/replies", 0),
    }


def _zip(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for path in sorted(folder.rglob("*.json")):
            z.write(path, path.relative_to(folder).as_posix())
    return target


def _child(export: Path, work: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, __file__, "--child", str(export), str(work)], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--zip", action="store_true", help="also read each export as a zip (unpacked once, timed)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp folder)")
    parser.add_argument("--write", type=Path, default=None, help="markdown file for the results")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_chain(Path(args.child[0]), Path(args.child[1]))))
        return 0

    from thread_embed_pipeline.sources.exports.synthetic import generate_slack_export

    rows = []
    with tempfile.TemporaryDirectory(dir=args.work) as scratch:
        for n in args.messages:
            export = Path(scratch) / f"export_{n}"
            t = time.perf_counter()
            gen = generate_slack_export(export, n)
            print(f"generated {gen} in {time.perf_counter() - t:.0f} s", flush=True)
            kinds = [("folder", export)]
            if args.zip:
                kinds.append(("zip", _zip(export, Path(scratch) / f"export_{n}.zip")))
            for kind, path in kinds:
                work = Path(scratch) / f"work_{n}_{kind}"
                work.mkdir(parents=True)
                result = {"messages_generated": n, "export": kind, "export_mb": round(gen["bytes"] / 1e6), "day_files": gen["day_files"], **_child(path, work)}
                print(result, flush=True)
                rows.append(result)
    md = render(rows)
    print(md)
    if args.write:
        write_between_markers(args.write, md)
    return 0


START, END = "<!-- slack_export_scale:start -->", "<!-- slack_export_scale:end -->"


def write_between_markers(path: Path, md: str) -> None:
    """Replace the generated part of ``path`` (between the markers), keeping what was written around it."""
    block = f"{START}\n{md.rstrip()}\n{END}\n"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if START in old and END in old:
        head, rest = old.split(START, 1)
        block = head + block + rest.split(END, 1)[1]
    else:
        block = old + block
    path.write_text(block, encoding="utf-8")


def cpu_description() -> str:
    """The CPU model and its vector extensions (the figures differ between AVX2-only and AVX-512 machines)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    vector = "AVX-512" if "avx512f" in flags else "AVX2 only" if "avx2" in flags else "no AVX2"
    return f"{model}, {vector}{', AMX' if 'amx_tile' in flags else ''}"


def render(rows: list[dict]) -> str:
    import pandas as pd

    cols = ["messages_generated", "export", "export_mb", "day_files", "raw_rows", "corpus_messages", "conversations", "raw_s", "corpus_s", "raw_plus_corpus_msgs_per_s", "peak_rss_raw_mb", "peak_rss_mb"]
    table = pd.DataFrame(rows)[cols].astype(object).to_markdown(index=False)
    cpu = cpu_description()
    return (
        "## Measured\n\n"
        "Command: `python benchmarks/slack_export_scale.py --messages " + " ".join(str(n) for n in sorted({r["messages_generated"] for r in rows}))
        + (" --zip" if any(r["export"] == "zip" for r in rows) else "") + " --write docs/slack_export_benchmark.md`\n\n"
        f"Machine: {os.cpu_count()} CPU cores ({cpu}).\n\n{table}\n\n"
        "- `raw_plus_corpus_msgs_per_s` = raw_rows / (raw_s + corpus_s): every message, system event and bot post of the export\n"
        "  read from its day files (DuckDB's JSON reader), threads linked across day files, written as raw Parquet, then grouped\n"
        "  into conversations. A zip is unpacked first (counted in raw_s).\n"
        "- `peak_rss_mb`: the process's peak resident memory (ru_maxrss) after both stages.\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())
