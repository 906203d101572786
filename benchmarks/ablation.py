"""Training ablation on the DEV split: which switches make the CPU default.

    HF_HUB_OFFLINE=1 python benchmarks/ablation.py --variants 4 7 8 9 11 --protocols pseudonymised per_conversation speaker_free --maxsim --write docs/ablation_maxsim.md

Every variant trains the bundled base model on train-split pairs built from the text stage's output
(decontaminated against the dev eval sets) with the same time budget as the main job, so a switch
that makes steps cheaper shows up as more pairs trained. Each is scored on the dev sets (thread,
concurrent-thread, response) of every source in the chosen protocols (views of how speakers are
written: ``pseudonymised``, ``names_visible``, ``per_conversation``, ``speaker_free`` queries) with 95%
bootstrap CIs, next to the base model and BM25 (scored once); with ``--maxsim`` also message by message
(``<model>·maxsim``, the ``max`` aggregation). Test conversations are never touched. Records the pairs
trained, throughput (pairs/s) and why training stopped.
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
from thread_embed_pipeline.training.settings import DEFAULT_CPU_TIME_BUDGET_S  # noqa: E402
from thread_embed_pipeline.corpus.builder import build_corpus  # noqa: E402
from thread_embed_pipeline.evaluation.embedders import SentenceTransformerEmbedder  # noqa: E402
from thread_embed_pipeline.evaluation.eval_sets import build_protocol_eval_sets, eval_texts, protocol_of  # noqa: E402
from thread_embed_pipeline.evaluation.runner import run_evaluation  # noqa: E402
from thread_embed_pipeline.pairs.builders import PairBuilderSettings, build_pairs, select_training_pairs  # noqa: E402
from thread_embed_pipeline.sources.registry import SOURCES  # noqa: E402
from thread_embed_pipeline.text import TextSettings, prepare_text  # noqa: E402
from thread_embed_pipeline.training.settings import TrainingSettings  # noqa: E402
from thread_embed_pipeline.models import load_sentence_model  # noqa: E402
from thread_embed_pipeline.training.trainer import train_matryoshka_model  # noqa: E402

SHARES = {"thread": 0.5, "query_response": 0.25, "adjacency": 0.25}

EQUAL_SOURCES = {"irc_disentangle": 1 / 3, "slack_dev_chats": 1 / 3, "discord_disco": 1 / 3}
GROUPED = {"batch_sampler": "length_grouped"}

DEFAULT = {**GROUPED, "matryoshka_weights": (1.0, 1.0, 2.0, 3.0)}  # the CPU default's training switches (v4)
MESSAGE_TO_MESSAGE = {"thread_anchor_messages": (1, 1), "thread_positive_messages": 1}
MESSAGE_TO_THREAD = {"thread_anchor_messages": (1, 1), "thread_positive_messages": 40}

# (label, speakers scheme of the training text, training settings, source shares of the pairs, pair-builder
# settings, time budget factor): v4 is the CPU default
VARIANTS: list[tuple[str, str, dict, dict | None, dict, float]] = [
    ("names in the training text (the old default)", "original", {}, None, {}, 1.0),
    ("pseudonymised training text (per channel log)", "per_timeline", {}, None, {}, 1.0),
    ("+ length-grouped batches", "per_timeline", GROUPED, None, {}, 1.0),
    ("+ length-grouped, equal source shares", "per_timeline", GROUPED, EQUAL_SOURCES, {}, 1.0),
    ("+ length-grouped, equal shares, Matryoshka weights 1/1/2/3 (the CPU default)", "per_timeline", DEFAULT, EQUAL_SOURCES, {}, 1.0),
    ("+ length-grouped, equal shares, max_seq_length 256", "per_timeline", {**GROUPED, "max_seq_length": 256}, EQUAL_SOURCES, {}, 1.0),
    ("+ length-grouped, equal shares, lowest 3 layers frozen", "per_timeline", {**GROUPED, "frozen_layers": 3}, EQUAL_SOURCES, {}, 1.0),
    ("CPU default, thread pairs message -> another message of the thread", "per_timeline", DEFAULT, EQUAL_SOURCES, MESSAGE_TO_MESSAGE, 1.0),
    ("CPU default, thread pairs message -> the rest of the thread (up to 40 messages)", "per_timeline", DEFAULT, EQUAL_SOURCES, MESSAGE_TO_THREAD, 1.0),
    ("CPU default + speaker dropout 0.3", "per_timeline", {**DEFAULT, "speaker_dropout": 0.3}, EQUAL_SOURCES, {}, 1.0),
    ("CPU default + speaker dropout 0.5", "per_timeline", {**DEFAULT, "speaker_dropout": 0.5}, EQUAL_SOURCES, {}, 1.0),
    ("CPU default, 3x the pairs: 12,000 offered, 3x the time budget", "per_timeline", DEFAULT, EQUAL_SOURCES, {}, 3.0),
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
    parser.add_argument("--protocols", nargs="+", default=["pseudonymised", "names_visible"], help="eval protocols (views) of the dev sets")
    parser.add_argument("--tasks", nargs="+", default=["thread", "concurrent_thread", "response"])
    parser.add_argument("--maxsim", action="store_true", help="also score every model message by message (<model>·maxsim)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    started = time.perf_counter()
    corpora = load_corpora(args.mirror)
    dev_sets, notes, _ = build_protocol_eval_sets(corpora, protocols=args.protocols, split="dev", tasks=args.tasks, max_queries=args.max_queries, seed=0)
    print(f"dev sets ready in {time.perf_counter() - started:.0f} s", flush=True)
    pairs_by_scheme: dict[tuple, pd.DataFrame] = {}

    def training_pairs(scheme: str, source_shares: dict | None, pair_settings: dict, budget: int) -> pd.DataFrame:
        key = (scheme, tuple(sorted(pair_settings.items())))
        if key not in pairs_by_scheme:
            texts = {name: prepare_text(c, TextSettings(speakers=scheme))[0] for name, c in corpora.items()}
            settings = PairBuilderSettings(**pair_settings)
            pairs_by_scheme[key] = pd.concat([build_pairs(t, seed=13, settings=settings)[0] for t in texts.values()], ignore_index=True)
        train, _ = select_training_pairs(
            pairs_by_scheme[key], budget=budget, strategy_shares=SHARES, seed=7, eval_texts=eval_texts(dev_sets),
            eval_conversation_ids=set(dev_sets["conversation_id"]), source_shares=source_shares,
        )
        return train

    dims = (384, 256, 128, 64)
    rows, summaries = [], []
    selected = args.variants if args.variants else list(range(len(VARIANTS)))
    bf16 = {"auto": None, "on": True, "off": False}[args.bf16]
    fields = {f.name for f in dataclasses.fields(TrainingSettings)}
    for index, (label, scheme, change, source_shares, pair_settings, factor) in enumerate(VARIANTS):
        if index not in selected:
            continue
        settings = TrainingSettings(
            base_model=args.base_model, matryoshka_dims=dims, bf16=bf16, time_budget_s=args.time_budget * factor, **{k: v for k, v in change.items() if k in fields}
        )
        print(f"== v{index} {label}: {settings} {pair_settings}", flush=True)
        out = args.work / f"variant_{index}"
        pairs = training_pairs(scheme, source_shares, pair_settings, int(args.budget * factor))
        _, result = train_matryoshka_model(pairs, settings, out, log=lambda m: print(m, flush=True), device=args.device)
        models = {f"v{index}": SentenceTransformerEmbedder(load_sentence_model(str(out), device=args.device), f"v{index}")}
        if not summaries:  # base model and BM25 once
            models = {"base": SentenceTransformerEmbedder(load_sentence_model(args.base_model, device=args.device), "base"), **models}
        outputs = run_evaluation(
            dev_sets, models, dims=dims, include_bm25=not summaries, hybrid_with=[], n_resamples=args.bootstrap_resamples, maxsim=args.maxsim, log=lambda m: None
        )
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
    mrr["protocol"] = mrr["eval_set"].map(protocol_of)
    wide = mrr.pivot_table(index=["protocol", "model", "dim"], columns=["source", "task"], values="cell", aggfunc="first")
    wide.columns = [f"{s}/{t}" for s, t in wide.columns]
    return "\n".join(
        [
            f"# Chat-text ablation (dev split; views: {', '.join(args.protocols)})",
            "",
            f"Command: `python benchmarks/ablation.py --budget {args.budget} --time-budget {args.time_budget:g} --max-queries {args.max_queries} --bf16 {args.bf16} "
            f"--protocols {' '.join(args.protocols)} --tasks {' '.join(args.tasks)}{' --maxsim' if args.maxsim else ''}` "
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
