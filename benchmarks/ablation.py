"""Training ablation: the reference recipe, then each improvement switched on, scored on the DEV split.

    HF_HUB_OFFLINE=1 python benchmarks/ablation.py --budget 1500 --write docs/ablation.md

Every variant trains the same base model on the same train-split pairs (decontaminated against the
dev eval sets), then is evaluated on dev thread / response / concurrent-thread retrieval of every
source with 95% bootstrap CIs, next to the base model and BM25. Test conversations are never
touched. Records training throughput (pairs/s) and peak memory per variant.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from thread_embed_pipeline.corpus import build_corpus  # noqa: E402
from thread_embed_pipeline.evaluation.embedders import SentenceTransformerEmbedder  # noqa: E402
from thread_embed_pipeline.evaluation.eval_sets import build_eval_sets, eval_texts  # noqa: E402
from thread_embed_pipeline.evaluation.runner import run_evaluation  # noqa: E402
from thread_embed_pipeline.hard_negatives import add_chat_hard_negatives  # noqa: E402
from thread_embed_pipeline.pairs import build_pairs, select_training_pairs  # noqa: E402
from thread_embed_pipeline.sources.registry import SOURCES  # noqa: E402
from thread_embed_pipeline.training import TrainingSettings, load_sentence_model, train_matryoshka_model  # noqa: E402

REFERENCE = dict(batch_size=32, gradient_accumulation_steps=2, batch_sampler="no_duplicates", loss="mnrl", bf16=False)

# Cumulative: each variant adds one switch to the previous one.
VARIANTS: list[tuple[str, dict]] = [
    ("reference (MNRL, batch 32 x accum 2, fp32)", {}),
    ("+ conversation-disjoint batches", {"batch_sampler": "conversation_disjoint"}),
    ("+ CachedMNRL batch 128", {"loss": "cached_mnrl", "batch_size": 128, "gradient_accumulation_steps": 1, "mini_batch_size": 32}),
    ("+ chat hard negatives", {"use_negatives": True}),
    ("+ bf16 autocast", {"bf16": True}),
    ("+ Matryoshka weights 1/1/1.5/2", {"matryoshka_weights": (1.0, 1.0, 1.5, 2.0)}),
]


def load_corpora(mirror: Path) -> dict[str, pd.DataFrame]:
    corpora = {}
    for name, spec in SOURCES.items():
        raw = spec.load_raw(mirror / spec.mirror_subdir)
        corpora[name], _ = build_corpus(raw, source=name, platform=spec.platform)
    return corpora


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mirror", type=Path, default=Path(os.environ.get("THREAD_EMBED_MIRROR", ROOT.parent / "shared" / "datasets")))
    parser.add_argument("--base-model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--budget", type=int, default=1500)
    parser.add_argument("--max-queries", type=int, default=150)
    parser.add_argument("--variants", type=int, nargs="*", help="indices of VARIANTS to run (default all)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "ablation")
    parser.add_argument("--write", type=Path, default=None, help="markdown file to write the results into")
    parser.add_argument("--bootstrap-resamples", type=int, default=1000)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    started = time.perf_counter()
    corpora = load_corpora(args.mirror)
    dev_sets, notes = build_eval_sets(corpora, split="dev", max_queries=args.max_queries, seed=0)
    pairs = pd.concat([build_pairs(c, seed=13)[0] for c in corpora.values()], ignore_index=True)
    train, _ = select_training_pairs(
        pairs,
        budget=args.budget,
        strategy_shares={"thread": 0.5, "query_response": 0.25, "adjacency": 0.25},
        seed=7,
        eval_texts=eval_texts(dev_sets),
        eval_conversation_ids=set(dev_sets["conversation_id"]),
    )
    train, negative_counts = add_chat_hard_negatives(train, pd.concat(corpora.values(), ignore_index=True), seed=7)
    print(f"data ready in {time.perf_counter() - started:.0f} s: {len(train)} train pairs; negatives {negative_counts}", flush=True)

    dims = (384, 256, 128, 64)
    rows, summaries = [], []
    selected = args.variants if args.variants else list(range(len(VARIANTS)))
    settings_values = dict(REFERENCE)
    for index, (label, change) in enumerate(VARIANTS):
        settings_values.update(change)
        if index not in selected:
            continue
        fields = {f.name for f in dataclasses.fields(TrainingSettings)}
        settings = TrainingSettings(base_model=args.base_model, matryoshka_dims=dims, **{k: v for k, v in settings_values.items() if k in fields})
        print(f"== {label}: {settings}", flush=True)
        out = args.work / f"variant_{index}"
        _, result = train_matryoshka_model(train, settings, out, log=lambda m: print(m, flush=True), device=args.device)
        models = {f"v{index}": SentenceTransformerEmbedder(load_sentence_model(str(out), device=args.device), f"v{index}")}
        if not summaries:  # base model and BM25 once
            models = {"base": SentenceTransformerEmbedder(load_sentence_model(args.base_model, device=args.device), "base"), **models}
        outputs = run_evaluation(dev_sets, models, dims=dims, include_bm25=not summaries, hybrid_with=[], n_resamples=args.bootstrap_resamples, log=lambda m: None)
        rows.append(outputs.results)
        summaries.append(
            {
                "variant": f"v{index}",
                "label": label,
                "train_pairs": result.train_pairs,
                "seconds": result.seconds,
                "pairs_per_s": result.pairs_per_second,
                "peak_rss_mb": getattr(result, "peak_rss_mb", None),
                "peak_gpu_mb": getattr(result, "peak_gpu_mb", None),
                "device": result.device,
                "bf16": result.bf16,
            }
        )
        print(pd.DataFrame(summaries).to_markdown(index=False), flush=True)

    results = pd.concat(rows, ignore_index=True)
    md = render(results, pd.DataFrame(summaries), notes, negative_counts, args)
    print(md)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(md, encoding="utf-8")
    return 0


def render(results: pd.DataFrame, summaries: pd.DataFrame, notes, negative_counts, args) -> str:
    def cell(r):
        return f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"

    mrr = results[results["metric"] == "mrr@10"].copy()
    mrr["cell"] = mrr.apply(cell, axis=1)
    wide = mrr.pivot_table(index=["model", "dim"], columns=["source", "task"], values="cell", aggfunc="first")
    wide.columns = [f"{s}/{t}" for s, t in wide.columns]
    return "\n".join(
        [
            "# Training ablation (dev split)",
            "",
            f"Command: `python benchmarks/ablation.py --budget {args.budget} --max-queries {args.max_queries}` "
            f"(base `{args.base_model}`, {summaries['device'].iloc[0] if len(summaries) else '?'}). Each variant adds one switch to the one above; "
            "all train on the same train-split pairs, decontaminated against the dev sets; scores are MRR@10 with 95% bootstrap CIs on DEV queries.",
            "",
            f"Hard negatives found: {negative_counts}",
            "",
            "## Variants",
            "",
            summaries.to_markdown(index=False),
            "",
            "## MRR@10 [95% CI] on dev",
            "",
            wide.reset_index().to_markdown(index=False),
            "",
            "## Notes",
            "",
            *[f"- {n}" for n in notes],
            "",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
