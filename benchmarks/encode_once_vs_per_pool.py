#!/usr/bin/env python
"""Benchmark: encode every unique eval text once and truncate per Matryoshka dim, vs. per-pool encoding.

    HF_HUB_OFFLINE=1 python benchmarks/encode_once_vs_per_pool.py [--mirror DIR] [--write docs/benchmarks.md]

(a) encode once: :func:`retrieval.rank_retrieval` with a :class:`SentenceTransformerEmbedder` -- each
    unique text of all eval sets is encoded once at full dim, then truncated + re-normalised for
    every dim and scored.
(b) per pool (the reference script's way): for every query and every dim, encode the query and
    its candidate pool's texts in one ``model.encode`` call, truncate to the dim and score.
    (b) is slow, so it is timed on ``--per-pool-queries`` queries per set and extrapolated
    linearly to all queries (the cost per query is the same: 1 + pool texts per dim).

Both variants include scoring (cosine + pessimistic-rank metrics); BM25 is not involved.
The mirror folder comes from ``--mirror``, else ``$THREAD_EMBED_MIRROR``, else ``../shared/datasets``
relative to the project root.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

SOURCES = ("irc_disentangle", "slack_dev_chats")
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
START, END = "<!-- encode_once_vs_per_pool:start -->", "<!-- encode_once_vs_per_pool:end -->"


class CountingModel:
    """Delegates to a SentenceTransformer, counting the texts passed to ``encode``."""

    def __init__(self, model):
        self._model = model
        self.n_encoded = 0

    def encode(self, texts, **kwargs):
        self.n_encoded += len(texts)
        return self._model.encode(texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self._model, name)


def default_mirror() -> Path:
    configured = os.environ.get("THREAD_EMBED_MIRROR")
    return Path(configured) if configured else PROJECT_ROOT.parent / "shared" / "datasets"


def build_sets(mirror: Path, *, max_queries: int, pool_size: int, seed: int) -> pd.DataFrame:
    from thread_embed_pipeline.corpus.builder import build_corpus
    from thread_embed_pipeline.evaluation.eval_sets import build_eval_sets
    from thread_embed_pipeline.sources.registry import get_source

    corpora = {}
    for name in SOURCES:
        spec = get_source(name)
        raw = spec.load_raw(mirror / spec.mirror_subdir)
        corpora[name], _ = build_corpus(raw, source=spec.name, platform=spec.platform)
    eval_sets, notes = build_eval_sets(
        corpora, tasks=("thread", "response"), pool_size=pool_size, max_queries=max_queries, seed=seed
    )
    for note in notes:
        print(f"note: {note}")
    return eval_sets


def run_encode_once(model, eval_sets: pd.DataFrame, dims: list[int], batch_size: int) -> tuple[pd.DataFrame, int, float]:
    from thread_embed_pipeline.evaluation.embedders import SentenceTransformerEmbedder
    from thread_embed_pipeline.evaluation.retrieval import rank_retrieval

    counting = CountingModel(model)
    embedder = SentenceTransformerEmbedder(counting, "minilm", batch_size=batch_size)
    t0 = time.perf_counter()
    per_query = rank_retrieval(eval_sets, {"minilm": embedder}, dims=dims, include_bm25=False)
    return per_query, counting.n_encoded, time.perf_counter() - t0


def run_per_pool(model, eval_sets: pd.DataFrame, dims: list[int], batch_size: int, per_set: int) -> tuple[pd.DataFrame, int, float, int]:
    """The reference way on the first ``per_set`` queries of each set. Returns (ranks, texts, seconds, queries)."""
    from thread_embed_pipeline.evaluation.embedders import l2_normalize, truncate_and_normalize
    from thread_embed_pipeline.evaluation.metrics import query_metrics
    from thread_embed_pipeline.evaluation.retrieval import prepare_sets

    sets = prepare_sets(eval_sets)
    rows, n_texts, n_queries = [], 0, 0
    t0 = time.perf_counter()
    for rs in sets:
        for i in range(min(per_set, len(rs.query_ids))):
            n_queries += 1
            texts = [rs.query_texts[i], *(rs.doc_texts[j] for j in rs.pools[i])]
            for dim in dims:
                emb = l2_normalize(model.encode(texts, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True))
                n_texts += len(texts)
                emb = truncate_and_normalize(emb, dim)
                m = query_metrics(emb[1:] @ emb[0], rs.relevant[i], rs.n_relevant[i])
                rows.append((rs.eval_set, rs.source, rs.task, dim, rs.query_ids[i], m["first_relevant_rank"], m["mrr@10"]))
    seconds = time.perf_counter() - t0
    cols = ["eval_set", "source", "task", "dim", "record_id", "first_relevant_rank", "mrr@10"]
    return pd.DataFrame(rows, columns=cols), n_texts, seconds, n_queries


def machine() -> str:
    model_name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPU cores ({model_name}), torch {torch.__version__} with {torch.get_num_threads()} threads, "
        f"no GPU; load average at the end {load} (other processes may share the cores)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mirror", type=Path, default=None, help="dataset mirror (default: $THREAD_EMBED_MIRROR or ../shared/datasets)")
    ap.add_argument("--max-queries", type=int, default=60, help="queries per (source, task) set")
    ap.add_argument("--pool-size", type=int, default=100)
    ap.add_argument("--dims", type=int, nargs="+", default=[384, 256, 128, 64])
    ap.add_argument("--per-pool-queries", type=int, default=2, help="queries per set timed for the per-pool variant")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", type=Path, default=None, help="markdown file to write the results section into")
    args = ap.parse_args()

    from thread_embed_pipeline.models import load_sentence_model

    mirror = args.mirror or default_mirror()
    eval_sets = build_sets(mirror, max_queries=args.max_queries, pool_size=args.pool_size, seed=args.seed)
    queries = eval_sets[eval_sets["record_type"] == "query"]
    n_sets = queries.groupby(["eval_set", "source", "task"]).ngroups
    n_queries = len(queries)
    mean_pool = float(queries["candidate_ids"].map(len).mean())
    print(f"{n_sets} sets, {n_queries} queries, mean pool {mean_pool:.1f}, {eval_sets['text'].nunique()} unique texts")

    model = load_sentence_model(MODEL, device="cpu")
    model.encode(["warm-up"], show_progress_bar=False)

    once_pq, once_texts, once_s = run_encode_once(model, eval_sets, args.dims, args.batch_size)
    print(f"(a) encode once: {once_texts} texts, {once_s:.1f} s")
    pool_pq, pool_texts, pool_s, pool_queries = run_per_pool(model, eval_sets, args.dims, args.batch_size, args.per_pool_queries)
    print(f"(b) per pool: {pool_texts} texts, {pool_s:.1f} s on {pool_queries} queries")

    scale = n_queries / pool_queries
    est_texts, est_s = pool_texts * scale, pool_s * scale
    # sanity: both ways rank the same (up to float noise between batch compositions)
    keys = ["eval_set", "source", "task", "dim", "record_id"]
    joined = pool_pq.merge(once_pq[[*keys, "first_relevant_rank", "mrr@10"]], on=keys, suffixes=("_pool", "_once"))
    agree = float((joined["first_relevant_rank_pool"] == joined["first_relevant_rank_once"]).mean())
    max_mrr_diff = float(np.abs(joined["mrr@10_pool"] - joined["mrr@10_once"]).max())

    dims = "/".join(map(str, args.dims))
    table = "\n".join(
        [
            "| variant | queries timed | texts encoded | seconds | texts encoded (all queries) | seconds (all queries) |",
            "|---|---:|---:|---:|---:|---:|",
            f"| (a) encode once, truncate to {dims} | {n_queries} | {once_texts:,} | {once_s:.1f} | {once_texts:,} | {once_s:.1f} |",
            f"| (b) per query pool and dim | {pool_queries} | {pool_texts:,} | {pool_s:.1f} | ~{est_texts:,.0f} (extrapolated) | ~{est_s:.0f} (extrapolated) |",
            f"| ratio (b) / (a) | | | | {est_texts / once_texts:.0f}x | {est_s / once_s:.0f}x |",
        ]
    )
    command = "HF_HUB_OFFLINE=1 python benchmarks/encode_once_vs_per_pool.py " + " ".join(
        a for a in sys.argv[1:] if not a.startswith("/")
    )
    section = "\n".join(
        [
            START,
            "## Encode once + truncate vs. per-pool encoding (Matryoshka eval)",
            "",
            f"- Command: `{command.strip()}` (dataset mirror from `$THREAD_EMBED_MIRROR` / `--mirror`)",
            f"- Date: {dt.date.today().isoformat()}",
            f"- Machine: {machine()}",
            f"- Model: `{MODEL}` (bundled), batch size {args.batch_size}",
            f"- Eval sets: {', '.join(SOURCES)} x thread/response, up to {args.max_queries} queries per set, "
            f"pool {args.pool_size} ({n_sets} sets, {n_queries} queries, mean pool {mean_pool:.1f}, "
            f"{eval_sets['text'].nunique():,} unique texts); dims {dims}"
            + (
                f". The effective pool is smaller than {args.pool_size}: distractors come from the sampled queries' "
                "conversations, so pool = min(pool size, queries per set)."
                if mean_pool < args.pool_size
                else ""
            ),
            f"- (b) was timed on the first {args.per_pool_queries} queries of each set ({pool_queries} queries) and "
            f"extrapolated linearly to all {n_queries} queries (each query costs the same: 1 + pool texts per dim).",
            f"- Both variants include scoring. Sanity check on the timed queries: first-relevant ranks agree on "
            f"{agree:.1%} of (query, dim) pairs, max |MRR@10 difference| {max_mrr_diff:.3g} (float noise between batch compositions).",
            "",
            table,
            "",
            END,
        ]
    )
    print()
    print(table)
    if args.write:
        path = args.write if args.write.is_absolute() else PROJECT_ROOT / args.write
        old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
        if START in old and END in old:
            new = old[: old.index(START)] + section + old[old.index(END) + len(END) :]
        else:
            new = old.rstrip("\n") + "\n\n" + section + "\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(new, encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
