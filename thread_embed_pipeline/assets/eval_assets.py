"""eval_sets (test-conversation pools of every source) and eval_report (base vs. fine-tuned vs. BM25, per dim)."""

from typing import Optional

import dagster as dg
import duckdb
import pandas as pd

from thread_embed_pipeline import paths
from thread_embed_pipeline.assets.metadata import png_md
from thread_embed_pipeline.assets.source_assets import corpus_key
from thread_embed_pipeline.evaluation.eval_sets import build_eval_sets
from thread_embed_pipeline.evaluation.report import improvement_summary, markdown_leaderboard, plot_matryoshka
from thread_embed_pipeline.evaluation.retrieval import rank_retrieval, summarize_ranks
from thread_embed_pipeline.io import WAREHOUSE_FILE, atomic_write_bytes
from thread_embed_pipeline.resources import TrainerResource
from thread_embed_pipeline.sources.registry import SOURCES
from thread_embed_pipeline.training import TrainingSettings, load_sentence_model, write_model_card


class EvalSetsConfig(dg.Config):
    """The reference protocol: 1 positive + up to 99 random distractors per query, on test conversations."""

    split: str = "test"
    thread_min_messages: int = 8
    response_min_messages: int = 12
    prefix_messages: int = 5
    continuation_messages: int = 5
    pool_size: int = 100
    max_queries_per_set: Optional[int] = 300
    seed: int = 0


class EvalReportConfig(dg.Config):
    batch_size: int = 64
    include_bm25: bool = True
    include_base_model: bool = True


@dg.asset(
    ins={f"corpus_{name}": dg.AssetIn(corpus_key(name)) for name in SOURCES},
    group_name="evaluation",
    kinds={"parquet"},
    description="Thread- and response-retrieval queries and documents from held-out conversations of every source (BEIR-like: queries, documents, pools).",
)
def eval_sets(context: dg.AssetExecutionContext, config: EvalSetsConfig, **corpora: pd.DataFrame) -> pd.DataFrame:
    by_source = {name.removeprefix("corpus_"): frame for name, frame in corpora.items()}
    frame, notes = build_eval_sets(
        by_source,
        split=config.split,
        thread_min_messages=config.thread_min_messages,
        prefix_messages=config.prefix_messages,
        continuation_messages=config.continuation_messages,
        response_min_messages=config.response_min_messages,
        pool_size=config.pool_size,
        max_queries=config.max_queries_per_set,
        seed=config.seed,
    )
    for note in notes:
        context.log.warning(note)
    queries = frame[frame["record_type"] == "query"]
    counts = queries.groupby(["source", "task"]).size()
    meta: dict = {f"queries/{s}/{t}": int(n) for (s, t), n in counts.items()}
    meta["documents"] = int((frame["record_type"] == "document").sum())
    meta["skipped"] = dg.MetadataValue.md("\n".join(f"- {n}" for n in notes) or "none")
    context.add_output_metadata(meta)
    return frame


@dg.asset(
    group_name="evaluation",
    kinds={"parquet", "duckdb"},
    description="MRR@10, NDCG@10, Recall@1/5/10 of the base model, the fine-tuned model and BM25 at every Matryoshka dim.",
)
def eval_report(context: dg.AssetExecutionContext, config: EvalReportConfig, trainer: TrainerResource, eval_sets: pd.DataFrame, model: dict) -> pd.DataFrame:
    trainer.apply_environment()
    dims = [int(d) for d in model["matryoshka_dims"]]
    models = {"fine_tuned": load_sentence_model(model["checkpoint_dir"], device=trainer.device)}
    if config.include_base_model:
        models = {"base": load_sentence_model(model["base_model"], device=trainer.device), **models}
    per_query = rank_retrieval(eval_sets, models, dims=dims, include_bm25=config.include_bm25, batch_size=config.batch_size, log=context.log.info)
    results = summarize_ranks(per_query)

    reports_dir = paths.data_dir() / "reports"
    reports_dir.mkdir(parents=True, exist_ok=True)
    leaderboard = markdown_leaderboard(results)
    plot_path = plot_matryoshka(results, reports_dir / "matryoshka_mrr10.png")
    improvements = [improvement_summary(results, task="thread", source=s) for s in sorted(results["source"].unique())]
    improvement = pd.concat(improvements, ignore_index=True) if improvements else pd.DataFrame()
    improvement_md = improvement.round(4).to_markdown(index=False) if not improvement.empty else ""
    report_md = "\n\n".join(["# Eval report", "## Thread retrieval MRR@10: fine-tuned vs. base, next to BM25", improvement_md, "## Leaderboard", leaderboard])
    atomic_write_bytes(reports_dir / "eval_report.md", lambda tmp: tmp.write_text(report_md, encoding="utf-8"))
    with duckdb.connect(str(paths.data_dir() / WAREHOUSE_FILE)) as con:
        con.register("results_frame", results)
        con.execute("CREATE OR REPLACE TABLE eval_results AS SELECT * FROM results_frame")
        con.register("per_query_frame", per_query)
        con.execute("CREATE OR REPLACE TABLE eval_per_query AS SELECT * FROM per_query_frame")

    settings = TrainingSettings(**{k: (tuple(v) if k == "matryoshka_dims" else v) for k, v in model["settings"].items() if k in TrainingSettings.__dataclass_fields__})
    write_model_card(
        model["checkpoint_dir"],
        settings=settings,
        result={k: model[k] for k in ("train_pairs", "steps", "train_seconds", "pairs_per_second", "final_loss", "bf16", "device")},
        training_summary={"pairs_by_strategy": model["pairs_by_strategy"], "pairs_by_source": model["pairs_by_source"]},
        eval_markdown=leaderboard,
        improvement_markdown=improvement_md,
    )
    meta: dict = {
        "report": dg.MetadataValue.path(str(reports_dir / "eval_report.md")),
        "leaderboard": dg.MetadataValue.md(leaderboard),
        "thread_mrr10_vs_base": dg.MetadataValue.md(improvement_md or "no thread eval sets"),
        "matryoshka_plot": png_md(plot_path, "MRR@10 vs Matryoshka dim"),
        "rows": len(results),
    }
    irc = improvement[improvement["source"] == "irc_disentangle"] if not improvement.empty else improvement
    for _, row in irc.iterrows():
        meta[f"irc_thread_mrr10/dim{int(row['dim'])}/delta_vs_base"] = float(row["delta"])
    context.add_output_metadata(meta)
    return results
