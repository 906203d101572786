"""Does thread context length limit the fine-tuned model? Two checks on the DEV split (IRC).

    HF_HUB_OFFLINE=1 python benchmarks/long_context.py eval --model models/thread-embed-minilm
    HF_HUB_OFFLINE=1 python benchmarks/long_context.py train --budget 4000 --out data/ablation/context_pairs

* ``eval``: score a trained model (and the base model, and BM25) on IRC dev thread and
  concurrent-thread retrieval with documents encoded at 256 and at 512 tokens. 70% of IRC thread
  documents are longer than 256 tokens, and BM25 sees all of them.
* ``train``: train the CPU default recipe on *task-shaped* thread pairs -- anchor: one message;
  positive: up to 16 messages before it (the concurrent-thread shape) or the 8 messages on each side
  (the thread shape) -- with ``max_seq_length`` 256 instead of 128, then score it like ``eval``.

Results are recorded in docs/ablation.md ("Longer thread context").
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ablation import load_corpora  # noqa: E402

import thread_embed_pipeline.pairs.builders as pairs_module  # noqa: E402
from thread_embed_pipeline.evaluation.embedders import SentenceTransformerEmbedder  # noqa: E402
from thread_embed_pipeline.evaluation.eval_sets import build_eval_sets, eval_texts  # noqa: E402
from thread_embed_pipeline.evaluation.runner import run_evaluation  # noqa: E402
from thread_embed_pipeline.schemas import format_window  # noqa: E402
from thread_embed_pipeline.training.settings import TrainingSettings  # noqa: E402
from thread_embed_pipeline.models import load_sentence_model  # noqa: E402
from thread_embed_pipeline.training.trainer import train_matryoshka_model  # noqa: E402

BASE = "sentence-transformers/all-MiniLM-L6-v2"


def context_thread_pairs(authors, texts, rng, settings):
    """Anchor: one message; positive: its preceding 16 messages, or the 8 on each side of it."""
    n = len(texts)
    out = []
    if n < 2:
        return out
    for a in rng.permutation(n)[: settings.thread_pairs_per_conversation]:
        a = int(a)
        if rng.random() < 0.5:
            ctx = list(range(max(0, a - 16), a)) or list(range(a + 1, min(n, a + 17)))
        else:
            ctx = [i for i in range(max(0, a - 8), min(n, a + 9)) if i != a]
        out.append((format_window([authors[a]], [texts[a]]), format_window([authors[i] for i in ctx], [texts[i] for i in ctx])))
    return out


def dev_sets(corpora):
    irc = {"irc_disentangle": corpora["irc_disentangle"]}
    sets, _ = build_eval_sets(irc, split="dev", max_queries=300, seed=0)
    return sets[sets["task"].isin(["thread", "concurrent_thread"])]


def score(sets, model_paths: dict[str, str], resamples: int) -> pd.DataFrame:
    models = {}
    for name, path in model_paths.items():
        for length in (256, 512):
            model = load_sentence_model(path, device="cpu")
            model.max_seq_length = length
            models[f"{name}@{length}"] = SentenceTransformerEmbedder(model, f"{name}@{length}")
    out = run_evaluation(sets, models, dims=(384, 64), include_bm25=True, hybrid_with=[], n_resamples=resamples, log=lambda m: None)
    r = out.results
    return r[r["metric"] == "mrr@10"].pivot_table(index=["model", "dim"], columns="task", values="value").round(3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["eval", "train"])
    parser.add_argument("--model", default=str(ROOT / "models" / "thread-embed-minilm"))
    parser.add_argument("--budget", type=int, default=4000)
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "ablation" / "context_pairs")
    parser.add_argument("--mirror", type=Path, default=Path(os.environ.get("THREAD_EMBED_MIRROR", ROOT.parent / "shared" / "datasets")))
    parser.add_argument("--bootstrap-resamples", type=int, default=300)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    corpora = load_corpora(args.mirror)
    sets = dev_sets(corpora)
    if args.mode == "eval":
        print(score(sets, {"base": BASE, "fine-tuned": args.model}, args.bootstrap_resamples).to_markdown())
        return 0
    pairs_module._thread_pairs = context_thread_pairs  # the experiment's one change to pair building
    all_dev, _ = build_eval_sets(corpora, split="dev", max_queries=150, seed=0)
    pairs = pd.concat([pairs_module.build_pairs(c, seed=13)[0] for c in corpora.values()], ignore_index=True)
    train, _ = pairs_module.select_training_pairs(
        pairs,
        budget=args.budget,
        strategy_shares={"thread": 0.5, "query_response": 0.25, "adjacency": 0.25},
        seed=7,
        eval_texts=eval_texts(all_dev) | eval_texts(sets),
        eval_conversation_ids=set(all_dev["conversation_id"]) | set(sets["conversation_id"]),
    )
    started = time.perf_counter()
    _, result = train_matryoshka_model(train, TrainingSettings(base_model=BASE, max_seq_length=256), args.out, log=print, device="cpu")
    print(f"trained {result.train_pairs} pairs in {time.perf_counter() - started:.0f} s ({result.pairs_per_second:.2f} pairs/s)")
    print(score(sets, {"context-pairs": str(args.out)}, args.bootstrap_resamples).to_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
