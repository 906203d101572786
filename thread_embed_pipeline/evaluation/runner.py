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
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from thread_embed_pipeline.evaluation.api_embedders import build_embedder
from thread_embed_pipeline.evaluation.embedders import Embedder
from thread_embed_pipeline.evaluation.embedding_cache import EmbeddingCache
from thread_embed_pipeline.evaluation.eval_sets import protocol_of
from thread_embed_pipeline.evaluation.fusion import FUSION_COLUMNS, FusionByEvalSet, tune_fusion_per_eval_set
from thread_embed_pipeline.evaluation.maxsim import AGGREGATIONS, DEFAULT_AGGREGATION, SUFFIX, choose_aggregation, maxsim_name
from thread_embed_pipeline.evaluation.precision import FLOAT_PRECISION, split_variant
from thread_embed_pipeline.evaluation.report import plot_eval_set_bars, plot_matryoshka, report_markdown
from thread_embed_pipeline.evaluation.retrieval import add_maxsim, maxsim_dev_table, pool_scores, prepare_sets, rank_retrieval, summarize
from thread_embed_pipeline.evaluation.statistics import compare_models
from thread_embed_pipeline.schemas import EVAL_TASKS, OWN_EVAL_SET, Log
from thread_embed_pipeline.sources.registry import SOURCES
from thread_embed_pipeline.storage import atomic_write_bytes, atomic_write_text

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
    # the max-sim aggregation chosen on dev, and the dev table it was chosen from (maxsim_dev_table)
    maxsim_aggregation: str | None = None
    maxsim_dev: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass
class DevChoices:
    """What the dev split decided for a test run: fusion weights per (model, dim), and the max-sim aggregation."""

    fusion: dict[tuple[str, int], FusionByEvalSet]
    maxsim_aggregation: str | None = None
    maxsim_dev: pd.DataFrame = field(default_factory=pd.DataFrame)


# Where each API setting comes from: the environment variable of every ApiSettings field.
API_ENVIRONMENT: dict[str, str] = {
    "openai_api_key": "OPENAI_API_KEY",
    "voyage_api_key": "VOYAGE_API_KEY",
    "openai_base_url": "OPENAI_BASE_URL",
    "voyage_base_url": "VOYAGE_BASE_URL",
}
SECRET_FIELDS = ("openai_api_key", "voyage_api_key")


@dataclass(frozen=True)
class ApiSettings:
    openai_api_key: str | None = None
    voyage_api_key: str | None = None
    openai_base_url: str | None = None
    voyage_base_url: str | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> "ApiSettings":
        """Every field from its variable (:data:`API_ENVIRONMENT`); unset or empty is None."""
        environ = os.environ if environ is None else environ
        return cls(**{name: environ.get(variable) or None for name, variable in API_ENVIRONMENT.items()})


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
        embedder = build_embedder(spec, **asdict(api), cache=cache, load_local=load_local, log=log, name=name, local_batch_size=batch_size)
        if embedder is None:
            variable = API_ENVIRONMENT["openai_api_key" if spec.startswith("openai:") else "voyage_api_key"]
            notes.append(f"skipped {spec}: {variable} is not set")
            continue
        embedders[name] = embedder
    return embedders, notes


def tune_on_dev(
    dev_sets: pd.DataFrame,
    embedders: Mapping[str, Embedder],
    hybrids: Sequence[str],
    *,
    dims: Sequence[int],
    maxsim: bool = True,
    seed: int = 0,
    log: Log = print,
) -> DevChoices:
    """Score ``dev_sets`` with BM25 and the ``hybrids`` embedders; with ``maxsim``, choose the max-sim
    aggregation (:func:`.maxsim.choose_aggregation`, on the first hybrid model: the fine-tuned one in a
    report) and add the ``<model>·maxsim`` rows; then tune one :class:`FusionByEvalSet` per (model, dim),
    max-sim rows included. Empty choices without dev queries."""
    sets = prepare_sets(dev_sets)
    if not sets or not hybrids:
        return DevChoices(fusion={})
    # max-sim on dev for one model (the fine-tuned one in a report): its aggregation and its hybrid's weight
    reference = "fine_tuned" if "fine_tuned" in hybrids else hybrids[0]
    scores = pool_scores(sets, {h: embedders[h] for h in hybrids}, dims, bm25=True, maxsim=[reference] if maxsim else False, log=lambda m: log(f"dev: {m}"))
    aggregation, table = None, pd.DataFrame()
    names = list(hybrids)
    if maxsim and scores.message_top:
        table = maxsim_dev_table(scores, reference)
        pooled = table[table["task"] == "all"].set_index("aggregation")["mrr@10"].to_dict()
        aggregation = choose_aggregation({a: v for a, v in pooled.items() if a in AGGREGATIONS})
        log(f"dev: max-sim aggregation {aggregation} for {reference} (dev MRR@10 " + ", ".join(f"{a} {v:.3f}" for a, v in pooled.items()) + ")")
        scores = add_maxsim(scores, aggregation)
        names.append(maxsim_name(reference))
    choices: dict[tuple[str, int], FusionByEvalSet] = {}
    for name in names:
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
    return DevChoices(fusion=choices, maxsim_aggregation=aggregation, maxsim_dev=table)


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
    precisions: Mapping[str, Sequence[str]] | None = None,
    maxsim: bool = True,
    maxsim_tasks: Collection[str] | None = None,
    log: Log = print,
) -> EvaluationOutputs:
    """Rank ``eval_sets``, summarise and compare. ``dev_sets`` (same schema) are only used to tune the
    ``hybrid:`` fusion weights and to choose the max-sim aggregation; their queries never appear in
    ``per_query`` / ``results``. ``precisions`` adds quantised-index rows ``<model>@<precision>``
    (:mod:`.precision`). ``maxsim`` adds ``<model>·maxsim`` rows for every local or API model on every set
    whose documents are messages (:mod:`.maxsim`; without dev sets, the ``max`` aggregation); ``maxsim_tasks``
    limits those test rows to the sets of some tasks (dev still scores every task, for the aggregation table)."""
    if maxsim_tasks is not None and (unknown := sorted(set(maxsim_tasks) - set(EVAL_TASKS))):
        raise ValueError(f"maxsim_tasks names unknown tasks {unknown}; expected a subset of {EVAL_TASKS}")
    notes = list(notes)
    hybrids = [name for name in hybrid_with if name in embedders] if include_bm25 else []
    dev = DevChoices(fusion={})
    if hybrids:
        if dev_sets is not None and not dev_sets.empty:
            dev = tune_on_dev(dev_sets, embedders, hybrids, dims=dims, maxsim=maxsim, seed=seed, log=log)
        if not dev.fusion:
            notes.append(NO_DEV_SETS_NOTE)
    fusion = dev.fusion
    aggregation = (dev.maxsim_aggregation or DEFAULT_AGGREGATION) if maxsim else None
    if aggregation is not None:
        notes.append(f"max-sim rows (<model>{SUFFIX}): a document is scored by its messages, aggregation {aggregation} " + ("(chosen on dev)" if dev.maxsim_aggregation else "(no dev sets: the default)"))
    precisions = {name: p for name, p in (precisions or {}).items() if name in embedders and p}
    per_query = rank_retrieval(
        eval_sets, embedders, dims=dims, include_bm25=include_bm25, hybrids=hybrids, fusion=fusion, precisions=precisions, maxsim_aggregation=aggregation, maxsim_tasks=maxsim_tasks, log=log
    )
    log(f"bootstrap CIs and paired tests over {len(per_query)} query rows")
    results = summarize(per_query, n_resamples=n_resamples, seed=seed)
    # base·maxsim too: a max-sim model is compared with the base model scored the same way
    references = tuple(r for r in ("base", "bm25", maxsim_name("base")) if r in set(per_query["model"]))
    # the quantised variants are compared with their float32 model in the precision table, not here
    float_rows = per_query[[split_variant(m)[1] == FLOAT_PRECISION for m in per_query["model"]]] if not per_query.empty else per_query
    comparisons = compare_models(float_rows, references=references, n_resamples=n_resamples, seed=seed) if references else pd.DataFrame()
    eval_keys = (
        sorted(set(zip(per_query["eval_set"].astype(str), per_query["source"].astype(str), per_query["task"].astype(str))))
        if not per_query.empty
        else []
    )
    order = [*hybrids, *(maxsim_name(h) for h in hybrids)]
    frames = [choice.to_frame(extra_sets=eval_keys) for _, choice in sorted(fusion.items(), key=lambda kv: (order.index(kv[0][0]), -kv[0][1]))]
    fusion_table = pd.concat(frames, ignore_index=True) if frames else _empty_fusion()
    return EvaluationOutputs(per_query=per_query, results=results, comparisons=comparisons, notes=notes, fusion=fusion_table, maxsim_aggregation=aggregation, maxsim_dev=dev.maxsim_dev)


def write_report_files(outputs: EvaluationOutputs, out_dir: Path, *, title: str = "Eval report") -> EvaluationOutputs:
    """Markdown report, Parquet tables and PNG plots under ``out_dir`` (each written atomically)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "matryoshka_plot": plot_matryoshka(outputs.results, out_dir / "matryoshka_mrr10.png"),
        "bars_plot": plot_eval_set_bars(outputs.results, out_dir / "eval_sets_mrr10.png"),
    }
    plots = [files["matryoshka_plot"].name, files["bars_plot"].name]
    outputs.markdown = report_markdown(outputs.results, outputs.comparisons, outputs.notes, plots=plots, title=title, fusion=outputs.fusion, maxsim_dev=outputs.maxsim_dev)
    tables = (("results", outputs.results), ("comparisons", outputs.comparisons), ("per_query", outputs.per_query), ("fusion", outputs.fusion))
    for name, frame in tables:
        files[name] = atomic_write_bytes(out_dir / f"{name}.parquet", lambda tmp, frame=frame: frame.to_parquet(tmp, index=False))
    files["report"] = atomic_write_text(out_dir / "eval_report.md", outputs.markdown)
    outputs.files = files
    return outputs


def model_specs(model_summary: Mapping, *, include_base: bool, extra_models: Sequence[str]) -> dict[str, str]:
    """``{report name: spec}`` for a trained model: its base (optional), the checkpoint, extra specs."""
    specs = {"base": str(model_summary["base_model"])} if include_base else {}
    specs["fine_tuned"] = str(model_summary["checkpoint_dir"])
    specs.update({spec: spec for spec in extra_models})
    return specs


def label_results(results: pd.DataFrame, training_platforms: Sequence[str], platform_of: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Add ``platform`` (of the eval source; ``platform_of``: source -> platform, default the mirrored
    sources'), ``seen_in_training`` and ``protocol`` (how speakers are written in the own sets); all three
    are None/False for external sets."""
    platform_of = platform_of if platform_of is not None else {name: spec.platform for name, spec in SOURCES.items()}
    out = results.copy()
    out["platform"] = out["source"].map(platform_of)
    out["seen_in_training"] = out["platform"].isin(list(training_platforms)) & out["platform"].notna()
    return out.assign(protocol=out["eval_set"].map(protocol_of))


def compare_with_base(
    sets: pd.DataFrame,
    *,
    fine_tuned: Embedder,
    base: Embedder,
    n_resamples: int = 300,
    log: Log = None,
) -> pd.DataFrame:
    """MRR@10 of the fine-tuned and base models at their full dim on ``sets``, per (eval_set, source, task):
    every protocol (view of how speakers are written) the sets hold is compared on its own.

    Returns one row per (eval_set, source, task): ``base``, ``fine_tuned``, ``delta`` and the paired
    bootstrap CI of the delta (``delta_ci_low``, ``delta_ci_high``), and ``n``.
    """
    columns = ["eval_set", "source", "task", "base", "fine_tuned", "delta", "delta_ci_low", "delta_ci_high", "n"]
    if sets.empty:
        return pd.DataFrame(columns=columns)
    dim = min(fine_tuned.max_dim, base.max_dim)
    quiet = log or (lambda m: None)
    out = run_evaluation(sets, {"fine_tuned": fine_tuned, "base": base}, dims=(dim,), include_bm25=False, n_resamples=n_resamples, maxsim=False, log=quiet)
    keys = ["eval_set", "source", "task"]
    mrr = out.results[out.results["metric"] == "mrr@10"]
    frame = mrr.pivot_table(index=keys, columns="model", values="value").rename(columns=str).reset_index()
    n = mrr.groupby(keys)["n"].max()
    cmp = out.comparisons
    cmp = cmp[(cmp["metric"] == "mrr@10") & (cmp["model"] == "fine_tuned") & (cmp["reference"] == "base")].set_index(keys)
    index = list(zip(frame["eval_set"], frame["source"], frame["task"]))
    frame["delta"] = frame["fine_tuned"] - frame["base"]
    frame["delta_ci_low"] = [cmp.loc[k, "ci_low"] if k in cmp.index else float("nan") for k in index]
    frame["delta_ci_high"] = [cmp.loc[k, "ci_high"] if k in cmp.index else float("nan") for k in index]
    frame["n"] = [int(n.loc[k]) for k in index]
    return frame[columns]
