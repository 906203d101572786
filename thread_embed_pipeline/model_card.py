"""The checkpoint's model card (README.md in the model folder, Hugging Face layout), regenerated from the eval report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

PROTOCOLS = """\
- **thread** (reference protocol): the middle message of a test conversation with ≥ 8 messages is the
  query; the target is the rest of that thread *without the query*; 99 random other threads are the
  distractors.
- **response**: the first 5 messages of a test conversation with ≥ 12 messages are the query; the target is
  the next 5; distractors are other conversations' 5-message continuations.
- **concurrent_thread**: for a message, the candidates are the threads of the same channel active in the
  previous 30 minutes, each shown up to the query's time (no future messages), the query removed from its
  own thread — the real disentanglement problem, harder than random pools.
- **thread_full_corpus** (when enabled): thread retrieval against every test thread of the source.
- External sets (pool .jsonl / BEIR) are evaluated as given; see docs/eval_formats.md.

Every number has n and a 95% bootstrap CI over queries; comparisons with the base model and BM25 use a
paired randomisation test. Hybrid = BM25 + dense by reciprocal-rank fusion (no weights fitted on test)."""

LIMITATIONS = """\
- Slack and Discord conversation ids come from an automatic disentangler (Elsner & Charniak, modified),
  not from gold annotation; IRC links are gold.
- The CPU default trains a few thousand pairs for one epoch; the full recipe (bge-base, 200K pairs) needs a GPU.
- Random-distractor pools are easy for BM25 on chat (speaker names, shared words); the concurrent-thread
  task is the harder, more realistic test.
- English technical chat only (Ubuntu, Clojure, Elm, Racket, Python communities)."""


def write_model_card(model_summary: dict, *, report_markdown: str, improvement: pd.DataFrame | None = None) -> Path:
    """Write ``<checkpoint_dir>/README.md`` from the training summary (model asset) and the eval report."""
    checkpoint = Path(model_summary["checkpoint_dir"])
    settings = model_summary.get("settings", {})
    dims = ", ".join(str(d) for d in model_summary.get("matryoshka_dims", []))
    training = {k: model_summary.get(k) for k in ("train_pairs", "steps", "train_seconds", "pairs_per_second", "final_loss", "bf16", "device")}
    data = {k: model_summary.get(k) for k in ("pairs_by_strategy", "pairs_by_source", "training_platforms")}
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        f"base_model: {model_summary.get('base_model')}",
        "tags: [sentence-transformers, matryoshka, chat, thread-retrieval]",
        "---",
        "",
        "# Chat-native Matryoshka embedding model (ThreadEmbed Pipeline)",
        "",
        f"Fine-tuned from `{model_summary.get('base_model')}` with `MatryoshkaLoss(MultipleNegativesRankingLoss)` at dims {dims}, "
        "on thread, query-response and temporal-adjacency pairs from public chat logs. Test conversations were held out "
        "of training, and no training text equals an eval query or positive.",
        "",
        "## Training data and config",
        "",
        "```json",
        json.dumps({"data": data, "config": settings, "run": training}, indent=2, default=str),
        "```",
        "",
    ]
    if improvement is not None and not improvement.empty:
        lines += ["## Thread retrieval MRR@10 per Matryoshka dim: fine-tuned vs. base, next to BM25", "", improvement.round(4).to_markdown(index=False), ""]
    results = report_markdown.split("\n", 1)[-1].strip()  # without the report's own title
    lines += ["## Eval protocols", "", PROTOCOLS, "", "## Results", "", results, "", "## Limitations", "", LIMITATIONS, ""]
    path = checkpoint / "README.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(path)
    return path
