"""How far the CPU recipe goes with more pairs: all-MiniLM-L6-v2 fine-tuned on a GPU, scored on TEST.

    python benchmarks/gpu_scale_up.py --model <all-MiniLM-L6-v2 folder> --pairs-dir <data/pairs> \
        --eval-sets <data/eval_sets.parquet> --budget 60000 --out <folder>

Same pairs, decontamination, loss and eval protocol as the pipeline; only the pair budget (and the
device) differ from the CPU default. Writes results.parquet / comparisons.parquet and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    import pandas as pd
    import torch
    from sentence_transformers import SentenceTransformer

    from thread_embed_pipeline.evaluation.embedders import SentenceTransformerEmbedder
    from thread_embed_pipeline.evaluation.eval_sets import eval_texts
    from thread_embed_pipeline.evaluation.retrieval import rank_retrieval, summarize
    from thread_embed_pipeline.evaluation.statistics import compare_models
    from thread_embed_pipeline.pairs.builders import select_training_pairs
    from thread_embed_pipeline.training.settings import TrainingSettings
    from thread_embed_pipeline.training.trainer import train_matryoshka_model

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--pairs-dir", type=Path, required=True)
    parser.add_argument("--eval-sets", type=Path, required=True)
    parser.add_argument("--budget", type=int, default=60000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    base_dir = Path("/tmp/minilm_fp32")
    SentenceTransformer(str(args.model), device="cpu").float().save(str(base_dir))  # carried as fp16 to fit the transfer
    eval_sets = pd.read_parquet(args.eval_sets)
    pairs = pd.concat([pd.read_parquet(p) for p in sorted(args.pairs_dir.glob("*.parquet"))], ignore_index=True)
    train, stats = select_training_pairs(
        pairs, budget=args.budget, strategy_shares={"thread": 0.5, "query_response": 0.25, "adjacency": 0.25}, seed=7,
        eval_texts=eval_texts(eval_sets), eval_conversation_ids=set(eval_sets["conversation_id"]),
    )
    settings = TrainingSettings(base_model=str(base_dir), batch_size=128, epochs=args.epochs, bf16=True, batch_sampler="conversation_disjoint", logging_steps=50)
    started = time.perf_counter()
    _, result = train_matryoshka_model(train, settings, Path("/tmp/scaled"), log=lambda m: print(m, flush=True))
    embedders = {
        "base": SentenceTransformerEmbedder(SentenceTransformer(str(base_dir), device="cuda"), "base", batch_size=256),
        "fine_tuned": SentenceTransformerEmbedder(SentenceTransformer("/tmp/scaled", device="cuda"), "fine_tuned", batch_size=256),
    }
    per_query = rank_retrieval(eval_sets, embedders, dims=[384, 256, 128, 64], include_bm25=True, hybrids=["fine_tuned"], log=lambda m: print(m, flush=True))
    results = summarize(per_query, n_resamples=1000, seed=0)
    comparisons = compare_models(per_query, references=("base", "bm25"), seed=0)
    args.out.mkdir(parents=True, exist_ok=True)
    results.to_parquet(args.out / "results.parquet", index=False)
    comparisons.to_parquet(args.out / "comparisons.parquet", index=False)
    summary = {
        "device": torch.cuda.get_device_name(0),
        "train_pairs": result.train_pairs, "available_train_pairs": stats.as_dict()["available_by_strategy"],
        "train_seconds": result.seconds, "pairs_per_s": result.pairs_per_second, "peak_gpu_mb": result.peak_gpu_mb,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    irc = results[(results["source"] == "irc_disentangle") & (results["metric"] == "mrr@10")]
    print(irc.pivot_table(index=["model", "dim"], columns="task", values="value").round(3).to_string())
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
