"""Training ablation on the DEV split, in both eval protocols: which switches make the CPU default.

    HF_HUB_OFFLINE=1 python benchmarks/ablation.py --variants 0 1 2 3 4 6 --write docs/ablation_chat.md

Every variant trains the bundled base model on train-split pairs built from the text stage's output
(decontaminated against the dev eval sets) with the same time budget as the main job, so a switch
that makes steps cheaper shows up as more pairs trained. Each is scored on dev thread /
concurrent-thread retrieval of every source in the pseudonymised and names-visible protocols with
95% bootstrap CIs, next to the base model and BM25 (scored once). Test conversations are never
touched. Records the pairs trained, throughput (pairs/s) and why training stopped.
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

from thread_embed_pipeline.orchestration.eval_assets import DevEvalSetsConfig  # noqa: E402
from thread_embed_pipeline.training import DEFAULT_CPU_TIME_BUDGET_S  # noqa: E402
from thread_embed_pipeline.corpus import build_corpus  # noqa: E402
from thread_embed_pipeline.evaluation.embedders import SentenceTransformerEmbedder  # noqa: E402
from thread_embed_pipeline.evaluation.eval_sets import build_protocol_eval_sets, eval_texts  # noqa: E402
from thread_embed_pipeline.evaluation.runner import run_evaluation  # noqa: E402
from thread_embed_pipeline.pairs import build_pairs, select_training_pairs  # noqa: E402
from thread_embed_pipeline.sources.registry import SOURCES  # noqa: E402
from thread_embed_pipeline.text import TextSettings, prepare_text  # noqa: E402
from thread_embed_pipeline.training import TrainingSettings, load_sentence_model, train_matryoshka_model  # noqa: E402

SHARES = {"thread": 0.5, "query_response": 0.25, "adjacency": 0.25}

EQUAL_SOURCES = {"irc_disentangle": 1 / 3, "slack_dev_chats": 1 / 3, "discord_disco": 1 / 3}
GROUPED = {"batch_sampler": "length_grouped"}

# (label, speakers scheme of the training text, training settings, source shares of the pairs)
VARIANTS: list[tuple[str, str, dict, dict | None]] = [
    ("names in the training text (the old default)", "original", {}, None),
    ("pseudonymised training text (per channel log)", "per_timeline", {}, None),
    ("+ length-grouped batches", "per_timeline", GROUPED, None),
    ("+ length-grouped, equal source shares", "per_timeline", GROUPED, EQUAL_SOURCES),
    ("+ length-grouped, equal shares, Matryoshka weights 1/1/2/3", "per_timeline", {**GROUPED, "matryoshka_weights": (1.0, 1.0, 2.0, 3.0)}, EQUAL_SOURCES),
    ("+ length-grouped, equal shares, max_seq_length 256", "per_timeline", {**GROUPED, "max_seq_length": 256}, EQUAL_SOURCES),
    ("+ length-grouped, equal shares, lowest 3 layers frozen", "per_timeline", {**GROUPED, "frozen_layers": 3}, EQUAL_SOURCES),
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
    parser.add_argument("--budget", type=int, default=4000, help="most pairs (the main job's training_pairs budget)")
    parser.add_argument("--time-budget", type=float, default=DEFAULT_CPU_TIME_BUDGET_S, help="seconds of training per variant (the main job's model.time_budget_s)")
    parser.add_argument("--max-queries", type=int, default=DevEvalSetsConfig().max_queries_per_set, help="queries per dev set (dev_eval_sets' default)")
    parser.add_argument("--variants", type=int, nargs="*", help="indices of VARIANTS to run (default all)")
    parser.add_argument("--bf16", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--device", default=None)
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "ablation")
    parser.add_argument("--write", type=Path, default=None, help="markdown file to write the results into")
    parser.add_argument("--bootstrap-resamples", type=int, default=1000)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    started = time.perf_counter()
    corpora = load_corpora(args.mirror)
    dev_sets, notes, _ = build_protocol_eval_sets(corpora, split="dev", tasks=DevEvalSetsConfig().tasks, max_queries=args.max_queries, seed=0)
    print(f"dev sets ready in {time.perf_counter() - started:.0f} s", flush=True)
    pairs_by_scheme: dict[str, pd.DataFrame] = {}

    def training_pairs(scheme: str, source_shares: dict | None) -> pd.DataFrame:
        if scheme not in pairs_by_scheme:
            texts = {name: prepare_text(c, TextSettings(speakers=scheme))[0] for name, c in corpora.items()}
            pairs_by_scheme[scheme] = pd.concat([build_pairs(t, seed=13)[0] for t in texts.values()], ignore_index=True)
        train, _ = select_training_pairs(
            pairs_by_scheme[scheme], budget=args.budget, strategy_shares=SHARES, seed=7, eval_texts=eval_texts(dev_sets),
            eval_conversation_ids=set(dev_sets["conversation_id"]), source_shares=source_shares,
        )
        return train

    dims = (384, 256, 128, 64)
    rows, summaries = [], []
    selected = args.variants if args.variants else list(range(len(VARIANTS)))
    bf16 = {"auto": None, "on": True, "off": False}[args.bf16]
    fields = {f.name for f in dataclasses.fields(TrainingSettings)}
    for index, (label, scheme, change, source_shares) in enumerate(VARIANTS):
        if index not in selected:
            continue
        settings = TrainingSettings(base_model=args.base_model, matryoshka_dims=dims, bf16=bf16, time_budget_s=args.time_budget, **{k: v for k, v in change.items() if k in fields})
        print(f"== v{index} {label}: {settings}", flush=True)
        out = args.work / f"variant_{index}"
        _, result = train_matryoshka_model(training_pairs(scheme, source_shares), settings, out, log=lambda m: print(m, flush=True), device=args.device)
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
                "steps": f"{result.steps}/{result.planned_steps}",
                "seconds": result.seconds,
                "pairs_per_s": result.pairs_per_second,
                "bf16": result.bf16,
                "peak_rss_mb": result.peak_rss_mb,
            }
        )
        print(pd.DataFrame(summaries).to_markdown(index=False), flush=True)
        pd.concat(rows, ignore_index=True).to_parquet(args.work / "results.parquet", index=False)

    results = pd.concat(rows, ignore_index=True)
    md = render(results, pd.DataFrame(summaries), notes, args)
    print(md)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(md, encoding="utf-8")
    return 0


def render(results: pd.DataFrame, summaries: pd.DataFrame, notes, args) -> str:
    def cell(r):
        return f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"

    mrr = results[results["metric"] == "mrr@10"].copy()
    mrr["cell"] = mrr.apply(cell, axis=1)
    mrr["protocol"] = mrr["eval_set"].map({"threadembed": "pseudonymised", "threadembed-names_visible": "names_visible"})
    wide = mrr.pivot_table(index=["protocol", "model", "dim"], columns=["source", "task"], values="cell", aggfunc="first")
    wide.columns = [f"{s}/{t}" for s, t in wide.columns]
    return "\n".join(
        [
            "# Chat-text ablation (dev split, both protocols)",
            "",
            f"Command: `python benchmarks/ablation.py --budget {args.budget} --time-budget {args.time_budget:g} --max-queries {args.max_queries} --bf16 {args.bf16}` "
            f"(base `{args.base_model}`, CPU, 2 cores). Every variant trains at most {args.budget} train-split pairs within {args.time_budget:g} s "
            "(the main job's defaults), decontaminated against the dev sets; scores are MRR@10 with 95% bootstrap CIs on DEV queries.",
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
