"""The model card (Hugging Face layout: YAML front matter, then Markdown) written from the training summary and the eval report.

``eval_report`` writes it into its own folder (``data/reports/model_card.md``), never into the
checkpoint folder, which belongs to the ``model`` asset."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from thread_embed_pipeline.storage import atomic_write_text

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

Every set is scored in two **protocols** (the `protocol` column; eval set `threadembed` and
`threadembed-names_visible`): **pseudonymised** — speakers written `speaker_<k>`, numbered per channel
log, mentions rewritten, the text this model was trained on and the only form that is exported — and
**names_visible**, the upstream nicks (where name overlap makes BM25 look stronger than it is on content).
URLs, e-mails and secrets are redacted and bots dropped in both.

Every number has n and a 95% bootstrap CI over queries; comparisons with the base model and BM25 use a
paired randomisation test. `hybrid:<model>` = a convex mix of per-pool z-scored BM25 and dense scores,
its weight chosen by 2-fold cross-validation on the **dev** split (never on test); `rrf:<model>` =
reciprocal-rank fusion, with nothing to fit."""

LIMITATIONS = """\
- Slack and Discord conversation ids come from an automatic disentangler (Elsner & Charniak, modified),
  not from gold annotation; IRC links are gold.
- The CPU default trains a few thousand pairs for one epoch; the full recipe (bge-base, 200K pairs) needs a GPU.
- Random-distractor pools are easy for BM25 on chat (speaker names, shared words); the concurrent-thread
  task is the harder, more realistic test.
- English technical chat only (Ubuntu, Clojure, Elm, Racket, Python communities)."""


USAGE = """\
```python
from thread_embed_pipeline.search import HybridRetriever
from thread_embed_pipeline.schemas import format_message

retriever = HybridRetriever.from_checkpoint("{checkpoint}")   # weight, dim and max-sim from hybrid_retriever.json
messages = [[format_message("speaker_1", "grub fails after the upgrade"), format_message("speaker_2", "reinstall grub-pc")], ...]
retriever.index(["\\n".join(m) for m in messages], messages=messages)   # a thread and its messages
retriever.hits("speaker_3: grub error 17 after upgrading?", k=5)    # [SearchHit(document, score, message), ...]
```

With max-sim (`"maxsim"` in hybrid_retriever.json) a thread's dense score is that of its messages, each
encoded on its own, and a hit names the message that matched.

BM25 is `bm25s` with the eval's tokenisation (lowercase, English stop words, no stemming); texts are one
`speaker: text` line per message with pseudonymised speakers, as in training (`thread_embed_pipeline.text`
prepares a corpus that way). The dense model alone is a plain Sentence Transformer:
`SentenceTransformer("{checkpoint}", truncate_dim={dim})`."""


def write_model_card(model_summary: dict, path: Path, *, report_markdown: str, improvement: pd.DataFrame | None = None, recommended: dict | None = None) -> Path:
    """Write the card to ``path`` from the training summary (model asset) and the eval report."""
    checkpoint = Path(model_summary["checkpoint_dir"])
    settings = model_summary.get("settings", {})
    dims = ", ".join(str(d) for d in model_summary.get("matryoshka_dims", []))
    training = {k: model_summary.get(k) for k in ("train_pairs", "train_pairs_reason", "steps", "planned_steps", "train_seconds", "pairs_per_second", "final_loss", "bf16", "device")}
    # offered pairs; a time budget may train fewer of them (run.train_pairs, run.train_pairs_reason)
    data = {f"offered_{k}" if k.startswith("pairs_") else k: model_summary.get(k) for k in ("pairs_by_strategy", "pairs_by_source", "training_platforms")}
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
    if recommended:
        lines += [
            "## Recommended retriever (chosen on the dev split)",
            "",
            f"`hybrid:{recommended['dense_model']}` at {recommended['dim']} dims: BM25 and the dense model"
            + (" (each thread scored by its messages: max-sim)" if recommended["dense_model"].endswith("·maxsim") else "")
            + " fused with dense weight "
            f"**{recommended['weight']:.2f}**, the best single weight on the dev queries of the pseudonymised protocol (held-out dev "
            f"MRR@10 {recommended['dev_mrr10']:.3f}; the report's `hybrid:` rows use the dev choice of scope, here {recommended['scope']}). "
            "The test numbers below only report.",
            "",
            USAGE.format(checkpoint=checkpoint.name, dim=recommended["dim"]),
            "",
        ]
    results = report_markdown.split("\n", 1)[-1].strip()  # without the report's own title
    lines += ["## Eval protocols", "", PROTOCOLS, "", "## Results", "", results, "", "## Limitations", "", LIMITATIONS, ""]
    return atomic_write_text(path, "\n".join(lines))
