"""Cost of disentangling the IRC test split (10 files, 5,000 scored messages) with a trained scorer.

Times each step on this CPU, without the embedding cache (every line is encoded): reading the lines
into pseudonymised logs, encoding them, the candidate features, and linking (greedy decoding).

    python benchmarks/disentangle_speed.py --scorer data/disentanglement/fine_tuned
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from thread_embed_pipeline import storage  # noqa: E402
from thread_embed_pipeline.disentanglement.scorers import DisentangleScorer  # noqa: E402
from thread_embed_pipeline.disentanglement.logs import channel_logs  # noqa: E402
from thread_embed_pipeline.disentanglement.features import file_features  # noqa: E402
from thread_embed_pipeline.evaluation.embedders import load_local_embedder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scorer", type=Path, default=storage.data_dir() / "disentanglement" / "fine_tuned")
    args = parser.parse_args()
    scorer = DisentangleScorer.load(args.scorer)
    raw = pd.read_parquet(storage.data_dir() / "raw" / "irc_disentangle.parquet")
    times = {}
    start = time.perf_counter()
    logs = channel_logs(raw[raw["split_hint"] == "test"])
    times["logs_s"] = time.perf_counter() - start
    embed = load_local_embedder(scorer.chosen["model"], name="model", device="cpu").embed if scorer.dims else None  # no cache: every line encoded
    start = time.perf_counter()
    feats = file_features(logs, embed, scorer.dims, window=scorer.window)
    times["embed_and_features_s"] = time.perf_counter() - start
    start = time.perf_counter()
    links = {f: scorer.links(c) for f, c in feats.items()}
    times["link_s"] = time.perf_counter() - start
    times["total_s"] = sum(times.values())
    report = {"scorer": scorer.chosen.get("scorer"), "model": Path(str(scorer.chosen.get("model"))).name, "files": len(links),
              "messages": int(logs["scored"].sum()), "lines_encoded": int(sum(len(c.frame["candidate"].unique()) for c in feats.values())),
              **{k: round(v, 1) for k, v in times.items()}}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
