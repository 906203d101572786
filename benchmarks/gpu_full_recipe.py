"""Throughput and memory of the full recipe's training step on a GPU (bge-base shape, dims 768..64).

    python benchmarks/gpu_full_recipe.py --pairs-dir <folder with pairs/*.parquet> \
        --tokenizer <folder with a BERT WordPiece tokenizer> --pairs 20000 --out result.json

The bge-base-en-v1.5 weights cannot be fetched where this runs, so the model is a randomly
initialised BERT-base of exactly bge-base's shape (12 layers, hidden 768, 12 heads, CLS pooling):
throughput and memory depend on the shape and sequence length, not on the weights' values.
Quality numbers need the real weights (configs/full_recipe.yaml with Hub access).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_bge_base_shaped_model(tokenizer_dir: Path, out_dir: Path) -> Path:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    tokenizer = BertTokenizerFast.from_pretrained(str(tokenizer_dir))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512)
    hf_dir = out_dir / "hf"
    BertModel(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=512)
    model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), pooling_mode="cls"), Normalize()])
    model.save(str(out_dir / "st"))
    return out_dir / "st"


def main() -> int:
    import pandas as pd
    import torch

    from thread_embed_pipeline.training.settings import TrainingSettings
    from thread_embed_pipeline.training.trainer import train_matryoshka_model

    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs-dir", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=20000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu_full_recipe"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    frames = [pd.read_parquet(p) for p in sorted(args.pairs_dir.glob("*.parquet"))]
    pairs = pd.concat(frames, ignore_index=True)
    pairs = pairs[pairs["split"] == "train"].drop_duplicates(["anchor", "positive"]).sample(n=args.pairs, random_state=0).reset_index(drop=True)
    model_dir = build_bge_base_shaped_model(args.tokenizer, args.work / "model")
    info = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "torch": torch.__version__, "pairs": len(pairs), "runs": []}
    variants = [
        ("full recipe: MNRL batch 128, seq 256, bf16", dict(loss="mnrl", batch_size=128)),
        ("CachedMNRL batch 512 (mini 128), conversation-disjoint, seq 256, bf16", dict(loss="cached_mnrl", batch_size=512, mini_batch_size=128, batch_sampler="conversation_disjoint")),
    ]
    for label, change in variants:
        settings = TrainingSettings(
            base_model=str(model_dir), matryoshka_dims=(768, 512, 256, 128, 64), learning_rate=2e-5, max_seq_length=256, bf16=True, logging_steps=20, **change
        )
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        _, result = train_matryoshka_model(pairs, settings, args.work / f"run_{len(info['runs'])}", log=lambda m: print(m, flush=True))
        info["runs"].append(
            {
                "variant": label,
                "pairs_per_s": result.pairs_per_second,
                "train_seconds": result.seconds,
                "wall_seconds": round(time.perf_counter() - started, 1),
                "steps": result.steps,
                "peak_gpu_mb": result.peak_gpu_mb,
                "peak_rss_mb": result.peak_rss_mb,
                "final_loss": result.final_loss,
            }
        )
        print(json.dumps(info["runs"][-1]), flush=True)
    args.out.write_text(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
