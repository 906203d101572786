"""One evaluation run, shared by the ``eval_report`` asset and the ``evaluate`` CLI.

Builds the embedders named by model specs (local folders / Hub ids / bundled models,
``openai:<model>``, ``voyage:<model>``), ranks every eval set with them, BM25 and the hybrids,
summarises with bootstrap CIs and paired tests, and writes the report files.

Hybrids: ``rrf:<model>`` (reciprocal-rank fusion, nothing tuned) always; ``hybrid:<model>``
(convex mix of z-scored BM25 and dense scores, :mod:`.fusion`) only when dev sets are given:
its weight is tuned per (model, dim) on the dev queries, never on the eval (test) queries.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from thread_embed_pipeline.evaluation.api_embedders import build_embedder
from thread_embed_pipeline.evaluation.embedders import Embedder, SentenceTransformerEmbedder
from thread_embed_pipeline.evaluation.embedding_cache import EmbeddingCache
from thread_embed_pipeline.evaluation.report import plot_eval_set_bars, plot_matryoshka, report_markdown
from thread_embed_pipeline.evaluation.fusion import FUSION_COLUMNS, FusionByEvalSet, tune_fusion_per_eval_set
from thread_embed_pipeline.schemas import OWN_EVAL_SET
from thread_embed_pipeline.evaluation.retrieval import prepare_sets, rank_retrieval, pool_scores, summarize
from thread_embed_pipeline.evaluation.statistics import compare_models

Log = Callable[[str], None]

NO_DEV_SETS_NOTE = (
    "no dev sets: the score-fusion hybrid needs a dev split to choose its weight; only RRF rows"
)


def _empty_fusion() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in FUSION_COLUMNS})


@dataclass
class EvaluationOutputs:
    per_query: pd.DataFrame
    results: pd.DataFrame
    comparisons: pd.DataFrame
    notes: list[str]
    fusion: pd.DataFrame = field(default_factory=_empty_fusion)
    markdown: str = ""
    files: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class ApiSettings:
    openai_api_key: str | None = None
    voyage_api_key: str | None = None
    openai_base_url: str | None = None
    voyage_base_url: str | None = None


def build_embedders(
    model_specs: Mapping[str, str],
    *,
    load_local: Callable[[str], object],
    api: ApiSettings,
    cache: EmbeddingCache | None,
    batch_size: int,
    log: Log,
) -> tuple[dict[str, Embedder], list[str]]:
    """``{report name: spec}`` → embedders; API models without a key are skipped with a note."""
    embedders: dict[str, Embedder] = {}
    notes: list[str] = []
    for name, spec in model_specs.items():
        if spec.startswith(("openai:", "voyage:")):
            embedder = build_embedder(
                spec,
                openai_api_key=api.openai_api_key,
                voyage_api_key=api.voyage_api_key,
                openai_base_url=api.openai_base_url,
                voyage_base_url=api.voyage_base_url,
                cache=cache,
                log=log,
            )
            if embedder is None:
                variable = "OPENAI_API_KEY" if spec.startswith("openai:") else "VOYAGE_API_KEY"
                notes.append(f"skipped {spec}: {variable} is not set")
                continue
            embedders[name] = embedder
        else:
            embedders[name] = SentenceTransformerEmbedder(load_local(spec), name, batch_size=batch_size, log=log, cache=cache, cache_key=local_cache_key(spec))
    return embedders, notes


def local_cache_key(spec: str) -> str | None:
    from thread_embed_pipeline.evaluation.embedders import model_fingerprint
    from thread_embed_pipeline.training import resolve_model_path

    path = Path(resolve_model_path(spec))
    return model_fingerprint(path) if path.is_dir() else None


def tune_fusion_on_dev(
    dev_sets: pd.DataFrame,
    embedders: Mapping[str, Embedder],
    hybrids: Sequence[str],
    *,
    dims: Sequence[int],
    seed: int = 0,
    log: Log = print,
) -> dict[tuple[str, int], FusionByEvalSet]:
    """Score ``dev_sets`` with BM25 and the ``hybrids`` embedders and tune one
    :class:`FusionByEvalSet` per (hybrid model, dim) on them (empty without dev queries)."""
    sets = prepare_sets(dev_sets)
    if not sets or not hybrids:
        return {}
    scores = pool_scores(sets, {h: embedders[h] for h in hybrids}, dims, bm25=True, log=lambda m: log(f"dev: {m}"))
    choices: dict[tuple[str, int], FusionByEvalSet] = {}
    for name in hybrids:
        for dim in scores.dims:
            dense = scores.dense.get((name, dim))
            if dense is None:
                continue
            choice = tune_fusion_per_eval_set(sets, scores.bm25, dense, model=name, dim=dim, fallback=OWN_EVAL_SET, seed=seed)
            choices[(name, dim)] = choice
            for eval_set, c in sorted(choice.by_eval_set.items()):
                log(
                    f"[{name}] dim={dim} {eval_set}: fusion scope={c.scope} global weight={c.global_weight:.2f} "
                    f"(held-out dev MRR@10 global {c.dev_mrr10_global:.3f}, per set {c.dev_mrr10_per_set:.3f}; {c.n_dev_queries} dev queries)"
                )
    return choices


def run_evaluation(
    eval_sets: pd.DataFrame,
    embedders: Mapping[str, Embedder],
    *,
    dims: Sequence[int],
    include_bm25: bool = True,
    hybrid_with: Sequence[str] = (),
    dev_sets: pd.DataFrame | None = None,
    notes: Sequence[str] = (),
    n_resamples: int = 1000,
    seed: int = 0,
    log: Log = print,
) -> EvaluationOutputs:
    """Rank ``eval_sets``, summarise and compare. ``dev_sets`` (same schema) are only used to tune the
    ``hybrid:`` fusion weights; their queries never appear in ``per_query`` / ``results``."""
    notes = list(notes)
    hybrids = [name for name in hybrid_with if name in embedders] if include_bm25 else []
    fusion: dict[tuple[str, int], FusionByEvalSet] = {}
    if hybrids:
        if dev_sets is not None and not dev_sets.empty:
            fusion = tune_fusion_on_dev(dev_sets, embedders, hybrids, dims=dims, seed=seed, log=log)
        if not fusion:
            notes.append(NO_DEV_SETS_NOTE)
    per_query = rank_retrieval(eval_sets, embedders, dims=dims, include_bm25=include_bm25, hybrids=hybrids, fusion=fusion, log=log)
    log(f"bootstrap CIs and paired tests over {len(per_query)} query rows")
    results = summarize(per_query, n_resamples=n_resamples, seed=seed)
    references = tuple(r for r in ("base", "bm25") if r in set(per_query["model"]))
    comparisons = compare_models(per_query, references=references, n_resamples=n_resamples, seed=seed) if references else pd.DataFrame()
    eval_keys = (
        sorted(set(zip(per_query["eval_set"].astype(str), per_query["source"].astype(str), per_query["task"].astype(str))))
        if not per_query.empty
        else []
    )
    frames = [choice.to_frame(extra_sets=eval_keys) for _, choice in sorted(fusion.items(), key=lambda kv: (list(hybrids).index(kv[0][0]), -kv[0][1]))]
    fusion_table = pd.concat(frames, ignore_index=True) if frames else _empty_fusion()
    return EvaluationOutputs(per_query=per_query, results=results, comparisons=comparisons, notes=notes, fusion=fusion_table)


def write_report_files(outputs: EvaluationOutputs, out_dir: Path, *, title: str = "Eval report") -> EvaluationOutputs:
    """Markdown report, Parquet tables and PNG plots under ``out_dir`` (each written atomically)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "matryoshka_plot": plot_matryoshka(outputs.results, out_dir / "matryoshka_mrr10.png"),
        "bars_plot": plot_eval_set_bars(outputs.results, out_dir / "eval_sets_mrr10.png"),
    }
    plots = [files["matryoshka_plot"].name, files["bars_plot"].name]
    outputs.markdown = report_markdown(outputs.results, outputs.comparisons, outputs.notes, plots=plots, title=title, fusion=outputs.fusion)
    tables = (("results", outputs.results), ("comparisons", outputs.comparisons), ("per_query", outputs.per_query), ("fusion", outputs.fusion))
    for name, frame in tables:
        path = out_dir / f"{name}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
        files[name] = path
    report = out_dir / "eval_report.md"
    tmp = report.with_suffix(".md.tmp")
    tmp.write_text(outputs.markdown, encoding="utf-8")
    os.replace(tmp, report)
    files["report"] = report
    outputs.files = files
    return outputs


def compare_with_base(
    sets: pd.DataFrame,
    *,
    fine_tuned: Embedder,
    base: Embedder,
    n_resamples: int = 300,
    log: Log = None,
) -> pd.DataFrame:
    """MRR@10 of the fine-tuned and base models at their full dim on ``sets``, per (source, task).

    Returns one row per (source, task): ``base``, ``fine_tuned``, ``delta`` and the paired
    bootstrap CI of the delta (``delta_ci_low``, ``delta_ci_high``), and ``n``.
    """
    if sets.empty:
        return pd.DataFrame(columns=["source", "task", "base", "fine_tuned", "delta", "delta_ci_low", "delta_ci_high", "n"])
    dim = min(fine_tuned.max_dim, base.max_dim)
    quiet = log or (lambda m: None)
    out = run_evaluation(sets, {"fine_tuned": fine_tuned, "base": base}, dims=(dim,), include_bm25=False, n_resamples=n_resamples, log=quiet)
    res = out.results[out.results["metric"] == "mrr@10"].pivot_table(index=["source", "task"], columns="model", values="value")
    n = out.results[out.results["metric"] == "mrr@10"].groupby(["source", "task"])["n"].max()
    cmp = out.comparisons
    cmp = cmp[(cmp["metric"] == "mrr@10") & (cmp["model"] == "fine_tuned") & (cmp["reference"] == "base")].set_index(["source", "task"])
    frame = res.rename(columns=str).reset_index()
    frame["delta"] = frame["fine_tuned"] - frame["base"]
    frame["delta_ci_low"] = [cmp.loc[(s, t), "ci_low"] if (s, t) in cmp.index else float("nan") for s, t in zip(frame["source"], frame["task"])]
    frame["delta_ci_high"] = [cmp.loc[(s, t), "ci_high"] if (s, t) in cmp.index else float("nan") for s, t in zip(frame["source"], frame["task"])]
    frame["n"] = [int(n.loc[(s, t)]) for s, t in zip(frame["source"], frame["task"])]
    return frame[["source", "task", "base", "fine_tuned", "delta", "delta_ci_low", "delta_ci_high", "n"]]
