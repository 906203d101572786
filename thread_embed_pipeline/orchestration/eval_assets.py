"""eval_sets, external eval sets, exports, and eval_report (every model × eval set × task × dim, with CIs)."""

from collections.abc import Mapping, Sequence
from typing import Optional

import dagster as dg
import pandas as pd

from thread_embed_pipeline import storage
from thread_embed_pipeline.orchestration.metadata import png_md, table
from thread_embed_pipeline.orchestration.automation import UPDATE_ON_CHANGE, versioned_output
from thread_embed_pipeline.orchestration.keys import corpus_key
from thread_embed_pipeline.evaluation.embedders import ENCODE_BATCH_SIZE
from thread_embed_pipeline.evaluation.embedding_cache import EmbeddingCache
from thread_embed_pipeline.evaluation.eval_sets import DEFAULT_EVAL_PROTOCOLS, OWN_EVAL_SET, build_protocol_eval_sets
from thread_embed_pipeline.evaluation.external import EvalSetFormatError, export_beir, export_pool_jsonl, read_external_eval_set
from thread_embed_pipeline.evaluation.precision import PRECISIONS, bytes_per_vector, check_precisions, precision_table
from thread_embed_pipeline.evaluation.report import compact_headline, headline_frame
from thread_embed_pipeline.evaluation.runner import EvaluationOutputs, build_embedders, label_results, model_specs, run_evaluation
from thread_embed_pipeline.release.published_report import PublishedReport, publish_report
from thread_embed_pipeline.evaluation.registry import ExternalEvalSet
from thread_embed_pipeline.models import onnx_specs
from thread_embed_pipeline.orchestration.io import WAREHOUSE_FILE, replace_tables
from thread_embed_pipeline.orchestration.resources import EmbeddingApisResource, TrainerResource
from thread_embed_pipeline.schemas import DEFAULT_EVAL_TASKS
from thread_embed_pipeline.sources.registry import SOURCES
from thread_embed_pipeline.versioning import code_version, frame_fingerprint
from thread_embed_pipeline.models import load_sentence_model


class EvalSetsConfig(dg.Config):
    """Protocols (how speakers are written) and tasks: the reference pools (1 positive + up to 99
    random distractors), concurrent threads and, optionally, full-corpus thread retrieval."""

    # of "pseudonymised" (the default: what the model trains on, exported), "names_visible" (configs/names_visible.yaml),
    # "per_conversation" (the reference's pseudonyms), "speaker_free" (queries without their speaker prefix, as a user types)
    protocols: list[str] = list(DEFAULT_EVAL_PROTOCOLS)
    tasks: list[str] = list(DEFAULT_EVAL_TASKS)
    thread_min_messages: int = 8
    response_min_messages: int = 12
    prefix_messages: int = 5
    continuation_messages: int = 5
    concurrent_window_minutes: int = 30
    pool_size: int = 100
    max_queries_per_set: Optional[int] = 300
    seed: int = 0


class DevEvalSetsConfig(EvalSetsConfig):
    """The same protocols on the dev split: what hybrid weights, the max-sim aggregation and the model
    check are chosen on. 60 queries per set, so the main job keeps its time target on a CPU without bf16."""

    tasks: list[str] = ["thread", "concurrent_thread", "response"]
    max_queries_per_set: Optional[int] = 60


class EvalReportConfig(dg.Config):
    """Which models to score besides the fine-tuned checkpoint, and how."""

    include_base_model: bool = True
    include_bm25: bool = True
    # BM25 + dense for base and fine-tuned: a convex mix of per-pool z-scores with the weight chosen
    # on dev_eval_sets (hybrid:<model>), and reciprocal-rank fusion (rrf:<model>, nothing to fit)
    hybrid: bool = True
    extra_models: list[str] = []  # checkpoint folders, Hub ids, "<folder>/onnx/<file>.onnx", "openai:<model>", "voyage:<model>"
    # model_onnx's fp32 and int8 files as model rows fine_tuned_onnx and fine_tuned_onnx_int8 (each
    # encodes every eval text again: off by default to keep the main job's time)
    onnx_variants: bool = False
    # the fine-tuned model's vectors also scored in an int8 / binary index, with and without
    # rescoring (rows fine_tuned@<precision>; the dims x precision table); costs no extra encoding
    embedding_precisions: list[str] = list(PRECISIONS)
    # <model>·maxsim rows: a thread scored by its messages, each encoded on its own (aggregation chosen on dev)
    maxsim: bool = True
    # the test tasks that get max-sim rows. Not response by default: on dev the 5-message windows score
    # higher as one text (MRR@10 0.887 truncated against 0.880 max+0.2doc, docs/results.md); dev scores
    # every task, so its aggregation table still shows response
    maxsim_tasks: list[str] = ["thread", "concurrent_thread", "thread_full_corpus"]
    batch_size: int = ENCODE_BATCH_SIZE
    bootstrap_resamples: int = 1000
    seed: int = 0
    use_embedding_cache: bool = True


def _build_eval_sets_asset(name: str, split: str, config_type: type[EvalSetsConfig], description: str, sources: Sequence[str] = tuple(SOURCES)) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        ins={f"corpus_{source}": dg.AssetIn(corpus_key(source)) for source in sources},
        group_name="evaluation",
        kinds={"parquet"},
        code_version=code_version("eval_sets"),
        automation_condition=UPDATE_ON_CHANGE,
        description=description,
    )
    def _eval_sets(context: dg.AssetExecutionContext, config: config_type, **corpora: pd.DataFrame) -> dg.Output[pd.DataFrame]:
        by_source = {key.removeprefix("corpus_"): frame for key, frame in corpora.items()}
        try:
            # every config field is a keyword of evaluation.eval_sets.build_eval_sets (test_settings_once)
            kwargs = config.model_dump(exclude={"max_queries_per_set"})
            frame, notes, _ = build_protocol_eval_sets(by_source, split=split, max_queries=config.max_queries_per_set, **kwargs)
        except ValueError as err:
            raise dg.Failure(description=f"{name}: {err}") from err
        for note in notes:
            context.log.warning(note)
        context.add_output_metadata(_eval_set_metadata(frame, notes))
        return versioned_output(frame)

    return _eval_sets


def build_eval_sets_assets(sources: Sequence[str] = tuple(SOURCES)) -> tuple[dg.AssetsDefinition, dg.AssetsDefinition]:
    """``eval_sets`` (test) and ``dev_eval_sets`` (dev) over the corpora of ``sources`` (the mirrored ones and the user's exports)."""
    test = _build_eval_sets_asset(
        "eval_sets",
        "test",
        EvalSetsConfig,
        "Thread, response and concurrent-thread retrieval queries, documents and pools from the held-out **test** conversations of every source, "
        "in each protocol: `threadembed` (pseudonymised speakers, the default and the only exported form) and `threadembed-names_visible`.",
        sources,
    )
    dev = _build_eval_sets_asset(
        "dev_eval_sets",
        "dev",
        DevEvalSetsConfig,
        "The same protocols and tasks on the **dev** conversations: hybrid weights and the model-vs-base check are chosen here, never on test.",
        sources,
    )
    return test, dev


eval_sets, dev_eval_sets = build_eval_sets_assets()


def _eval_set_metadata(frame: pd.DataFrame, notes: list[str]) -> dict:
    queries = frame[frame["record_type"] == "query"]
    counts = queries.groupby(["eval_set", "source", "task"]).size()
    meta: dict = {f"queries/{e}/{s}/{t}": int(n) for (e, s, t), n in counts.items()}
    meta["documents"] = int((frame["record_type"] == "document").sum())
    meta["mean_candidates_per_query"] = round(float(queries["candidate_ids"].map(len).mean()), 2) if len(queries) else 0.0
    meta["notes"] = dg.MetadataValue.md("\n".join(f"- {n}" for n in notes) or "none")
    return meta


def external_eval_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(["external_eval", name])


def build_external_eval_asset(entry: ExternalEvalSet) -> dg.AssetsDefinition:
    @dg.asset(
        key=external_eval_key(entry.name),
        group_name="evaluation",
        kinds={"parquet"},
        code_version=code_version("eval_sets"),
        automation_condition=UPDATE_ON_CHANGE,
        description=f"External eval set {entry.name} read from {entry.path.name} (pool .jsonl or BEIR folder).",
    )
    def external_eval(context: dg.AssetExecutionContext) -> dg.Output[pd.DataFrame]:
        try:
            frame, notes = read_external_eval_set(entry.path, name=entry.name)
        except (EvalSetFormatError, FileNotFoundError, ValueError) as err:
            raise dg.Failure(description=f"external eval set {entry.name}: {err}") from err
        for note in notes:
            context.log.warning(note)
        context.add_output_metadata(_eval_set_metadata(frame, notes))
        return versioned_output(frame)

    return external_eval


@dg.asset(
    group_name="evaluation",
    code_version=code_version("eval_sets"),
    automation_condition=UPDATE_ON_CHANGE,
    description="The project's own eval sets exported in the reference pool format (.jsonl) and the BEIR layout, under data/exports/.",
)
def eval_exports(context: dg.AssetExecutionContext, eval_sets: pd.DataFrame) -> dg.MaterializeResult:
    out = storage.data_dir() / "exports"
    # only the pseudonymised protocol leaves the project; names-visible sets stay internal, like the corpus
    exported = eval_sets[eval_sets["eval_set"] == OWN_EVAL_SET]
    pool_path = export_pool_jsonl(exported, out / "pools" / "threadembed.jsonl")
    beir_dirs = export_beir(exported, out / "beir")
    context.log.info(f"exported pools to {pool_path} and {len(beir_dirs)} BEIR folders")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(frame_fingerprint(exported)),  # a pure function of the exported sets
        metadata={
            "pool_jsonl": dg.MetadataValue.path(str(pool_path)),
            "beir_folders": dg.MetadataValue.md("\n".join(f"- `{p}`" for p in beir_dirs)),
        }
    )


def build_eval_report_asset(external_sets: list[ExternalEvalSet], platforms: Mapping[str, str] | None = None, predicted_labels: Sequence[str] = ()) -> dg.AssetsDefinition:
    """``eval_report`` over the own sets and ``external_sets``; ``platforms``: source -> platform (default: the
    mirrored sources'); ``predicted_labels``: sources whose conversations the disentangler made (said in the report)."""
    external_ins = {f"external_{e.name}": dg.AssetIn(external_eval_key(e.name)) for e in external_sets}
    platform_of = dict(platforms) if platforms is not None else {name: spec.platform for name, spec in SOURCES.items()}
    label_notes = [f"{name}: conversation labels are predicted by the project's disentangler (an IRC log has no native threads), not native" for name in predicted_labels]

    @dg.asset(
        ins={"eval_sets": dg.AssetIn("eval_sets"), "dev_eval_sets": dg.AssetIn("dev_eval_sets"), "model": dg.AssetIn("model"), "model_onnx": dg.AssetIn("model_onnx"), **external_ins},
        group_name="evaluation",
        kinds={"parquet", "duckdb"},
        code_version=code_version("eval_report"),
        automation_condition=UPDATE_ON_CHANGE,
        description=(
            "MRR@10, NDCG@10, Recall@1/5/10 with 95% bootstrap CIs and paired tests for the fine-tuned model, the base model, BM25, "
            "the BM25+dense hybrids (score fusion with its weight chosen on dev_eval_sets, and RRF) and API models, in both protocols "
            "(pseudonymised, names visible), at every Matryoshka dim; names the recommended retriever."
        ),
    )
    def eval_report(
        context: dg.AssetExecutionContext,
        config: EvalReportConfig,
        trainer: TrainerResource,
        embedding_apis: EmbeddingApisResource,
        eval_sets: pd.DataFrame,
        dev_eval_sets: pd.DataFrame,
        model: dict,
        model_onnx: dict,
        **external: pd.DataFrame,
    ) -> dg.Output[pd.DataFrame]:
        trainer.apply_environment()
        specs = model_specs(model, include_base=config.include_base_model, extra_models=config.extra_models)
        if config.onnx_variants:
            specs.update(onnx_specs(model_onnx["folder"], "fine_tuned"))
        cache = EmbeddingCache(storage.data_dir() / "embedding_cache.duckdb") if config.use_embedding_cache else None
        load_local = lambda spec: load_sentence_model(spec, device=trainer.device)  # noqa: E731
        embedders, skipped = build_embedders(specs, load_local=load_local, api=embedding_apis.settings(), cache=cache, batch_size=config.batch_size, log=context.log.info)
        for note in skipped:
            context.log.warning(note)
        platforms = list(model.get("training_platforms", []))
        outputs = run_evaluation(
            pd.concat([eval_sets, *external.values()], ignore_index=True),
            embedders,
            dims=[int(d) for d in model["matryoshka_dims"]],
            include_bm25=config.include_bm25,
            hybrid_with=["base", "fine_tuned"] if config.hybrid else [],
            dev_sets=dev_eval_sets,
            notes=[f"platforms seen in training: {', '.join(platforms) or 'unknown'} (column seen_in_training)", *label_notes, *skipped],
            n_resamples=config.bootstrap_resamples,
            seed=config.seed,
            precisions={"fine_tuned": check_precisions(config.embedding_precisions)},
            maxsim=config.maxsim,
            maxsim_tasks=config.maxsim_tasks,
            log=context.log.info,
        )
        outputs.results = label_results(outputs.results, platforms, platform_of)
        published = publish_report(outputs, model, storage.data_dir() / "reports")
        replace_tables(storage.data_dir() / WAREHOUSE_FILE, {"eval_results": outputs.results, "eval_comparisons": outputs.comparisons, "eval_per_query": outputs.per_query, "eval_fusion": outputs.fusion})
        context.add_output_metadata(_report_metadata(outputs, published, platforms=platforms, skipped=skipped))
        return versioned_output(outputs.results)

    return eval_report


def _report_metadata(outputs: EvaluationOutputs, published: PublishedReport, *, platforms: list[str], skipped: list[str]) -> dict:
    headline = headline_frame(outputs.results)
    recommended, improvement = published.recommended, published.improvement
    return {
        # inline on the asset page: the leaderboard at each model's best dim, CIs, the winner marked
        "leaderboard": table(compact_headline(headline)) if not headline.empty else "no results",
        "recommended_retriever": (
            f"hybrid:{recommended['dense_model']} at {recommended['dim']} dims, weight {recommended['weight']:.2f} "
            f"(held-out dev MRR@10 {recommended['dev_mrr10']:.3f}, scope {recommended['scope']})" if recommended else "none (no dev-tuned hybrid)"
        ),
        "thread_mrr10_vs_base": table(improvement) if not improvement.empty else "no thread eval sets",
        "hybrid_weights_chosen_on_dev": table(_full_dim(outputs.fusion)) if not outputs.fusion.empty else "no hybrid rows",
        "maxsim_aggregation": outputs.maxsim_aggregation or "off",
        "maxsim_chosen_on_dev": table(outputs.maxsim_dev) if not outputs.maxsim_dev.empty else "no dev sets with messages",
        "dims_x_precision": _precision_panel(outputs.results),
        "training_platforms": ", ".join(platforms) or "unknown",
        "skipped_models": ", ".join(skipped) if skipped else "none",
        "rows": len(outputs.results),
        "report": dg.MetadataValue.path(str(outputs.files["report"])),
        "model_card": dg.MetadataValue.path(str(published.model_card)),
        "matryoshka_plot": png_md(outputs.files["matryoshka_plot"], "MRR@10 vs Matryoshka dim"),
        "eval_set_bars": png_md(outputs.files["bars_plot"], "MRR@10 per eval set with 95% CIs"),
        # the long report (every dim, comparisons, method) without its relative image links
        "report_details": dg.MetadataValue.md("\n".join(line for line in outputs.markdown.splitlines() if not line.startswith("!["))),
    }


def _precision_panel(results: pd.DataFrame):
    """MRR@10 of each quantised model per task x dim x precision, averaged over the sources' pseudonymised
    test sets, with the bytes per vector of float32 / int8 / binary at that dim."""
    rows = precision_table(results[results["eval_set"] == OWN_EVAL_SET])
    if rows.empty:
        return "no quantised rows (embedding_precisions is empty)"
    mean = rows.groupby(["model", "task", "dim", "precision"], sort=False)["value"].mean().round(4).reset_index()
    panel = mean.pivot_table(index=["model", "task", "dim"], columns="precision", values="value", sort=False).reset_index()
    panel.columns.name = None
    panel["bytes_f32_int8_bin"] = [f"{bytes_per_vector(d, 'float32')} / {bytes_per_vector(d, 'int8')} / {bytes_per_vector(d, 'binary')}" for d in panel["dim"]]
    return table(panel.sort_values(["model", "task", "dim"], ascending=[True, True, False]))


def _full_dim(fusion: pd.DataFrame) -> pd.DataFrame:
    return fusion[fusion["dim"] == fusion.groupby("model")["dim"].transform("max")]
